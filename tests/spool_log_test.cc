// The spool log format: framing, round trips across block boundaries, torn
// tails and damaged blocks (pure, over byte buffers).
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "service/store/spool/spool_log_format.h"
#include "service/store/spool/spool_log_reader.h"
#include "service/store/spool/spool_log_writer.h"

namespace batchfetch {
namespace {

// A log of `records` and where each one's framing starts.
struct Log {
  std::string bytes;
  std::vector<uint64_t> starts;
};

Log Write(const std::vector<std::string>& records) {
  Log log;
  uint64_t length = 0;
  for (const std::string& r : records) {
    log.starts.push_back(length);
    const uint64_t expected = SpoolFramedRecordSize(length, r.size());
    AppendSpoolFramedRecord(r, &length, &log.bytes);
    EXPECT_EQ(length, log.bytes.size());
    EXPECT_EQ(log.starts.back() + expected, length);
  }
  return log;
}

std::vector<std::string> Read(absl::string_view bytes,
                              SpoolReadStats* stats = nullptr) {
  std::vector<std::string> out;
  SpoolReadStats s = ReadSpoolRecords(
      bytes, [&](absl::string_view r) { out.emplace_back(r); });
  EXPECT_EQ(s.records, out.size());
  if (stats != nullptr) *stats = s;
  return out;
}

// Distinct content, so a record stitched from the wrong pieces shows.
std::string Payload(size_t size, int seed) {
  std::string s(size, '\0');
  for (size_t i = 0; i < size; ++i) {
    s[i] = static_cast<char>((i * 31 + static_cast<size_t>(seed) * 17) & 0xff);
  }
  return s;
}

TEST(SpoolLogTest, SmallRecordsRoundTrip) {
  const std::vector<std::string> records = {"", "a", "hello", Payload(1000, 1)};
  SpoolReadStats stats;
  EXPECT_EQ(Read(Write(records).bytes, &stats), records);
  EXPECT_EQ(stats.corrupt_bytes, 0u);
  EXPECT_EQ(stats.torn_tail_bytes, 0u);
}

TEST(SpoolLogTest, EmptyLogHasNoRecords) {
  SpoolReadStats stats;
  EXPECT_TRUE(Read("", &stats).empty());
  EXPECT_EQ(stats.corruptions, 0u);
}

TEST(SpoolLogTest, RecordsLargerThanABlockAreSplitAndReassembled) {
  const std::vector<std::string> records = {
      Payload(10, 1), Payload(kSpoolBlockSize * 3 + 5, 2), Payload(20, 3),
      Payload(kSpoolBlockSize, 4)};
  const Log log = Write(records);
  // FIRST, MIDDLE…, LAST fragments: the second record spans four blocks.
  EXPECT_GT(log.bytes.size(), 4 * kSpoolBlockSize);
  SpoolReadStats stats;
  EXPECT_EQ(Read(log.bytes, &stats), records);
  EXPECT_EQ(stats.corruptions, 0u);
}

TEST(SpoolLogTest, RecordsEndingExactlyAtABlockBoundaryRoundTrip) {
  // The first fills its block exactly; the next starts the next block.
  const std::string exact(kSpoolBlockSize - kSpoolHeaderSize, 'x');
  const std::vector<std::string> records = {exact, "after", exact, exact};
  const Log log = Write(records);
  EXPECT_EQ(log.starts[1], kSpoolBlockSize);
  EXPECT_EQ(Read(log.bytes), records);
}

TEST(SpoolLogTest, LessThanAHeaderLeftInABlockBecomesTheTrailer) {
  for (size_t left = 0; left <= kSpoolHeaderSize; ++left) {
    // The first record leaves `left` bytes in block 0.
    const std::string first(kSpoolBlockSize - kSpoolHeaderSize - left, 'a');
    const std::vector<std::string> records = {first, "b", Payload(100, 5)};
    const Log log = Write(records);
    // Record 1's framing starts where record 0's ended.
    ASSERT_EQ(log.starts[1], kSpoolBlockSize - left) << left;
    if (left < kSpoolHeaderSize) {
      // Zero padding, then record 1 whole at the start of block 1.
      EXPECT_EQ(log.bytes.substr(kSpoolBlockSize - left, left),
                std::string(left, '\0'));
      EXPECT_EQ(log.bytes[kSpoolBlockSize + kSpoolHeaderSize - 1],
                static_cast<char>(SpoolFragmentType::kFull))
          << left;
    } else {
      // Exactly a header's room: an empty FIRST fragment, then the LAST.
      EXPECT_EQ(log.bytes[kSpoolBlockSize - 1],
                static_cast<char>(SpoolFragmentType::kFirst));
      EXPECT_EQ(log.bytes[kSpoolBlockSize + kSpoolHeaderSize - 1],
                static_cast<char>(SpoolFragmentType::kLast));
    }
    SpoolReadStats stats;
    EXPECT_EQ(Read(log.bytes, &stats), records) << left;
    EXPECT_EQ(stats.corruptions, 0u) << left;
  }
}

// A crash mid-append leaves a prefix of the last record: the earlier records
// all come back, the partial one never does, and it is not damage.
TEST(SpoolLogTest, TornTailAtEveryOffsetOfTheLastRecordKeepsEarlierRecords) {
  for (size_t last_size : {size_t{50}, kSpoolBlockSize + 100}) {
    const std::vector<std::string> records = {Payload(100, 1),
                                              Payload(kSpoolBlockSize - 200, 2),
                                              Payload(last_size, 3)};
    const Log log = Write(records);
    const std::vector<std::string> earlier(records.begin(), records.end() - 1);
    for (size_t cut = log.starts.back(); cut < log.bytes.size(); ++cut) {
      SpoolReadStats stats;
      ASSERT_EQ(Read(absl::string_view(log.bytes).substr(0, cut), &stats),
                earlier)
          << "cut at " << cut;
      EXPECT_EQ(stats.corruptions, 0u) << "cut at " << cut;
      EXPECT_EQ(stats.torn_tail_bytes + log.starts.back(), cut)
          << "cut at " << cut;
    }
    EXPECT_EQ(Read(log.bytes), records);
  }
}

TEST(SpoolLogTest, AFlippedByteInAMiddleBlockDropsOnlyTheRecordsInIt) {
  // Blocks 0, 1 and 2 each hold records; one record crosses 1 → 2.
  std::vector<std::string> records;
  for (int i = 0; i < 12; ++i) records.push_back(Payload(7000, i));
  const Log log = Write(records);
  ASSERT_GT(log.bytes.size(), 2 * kSpoolBlockSize);
  // Flip a byte in the payload of the first record that starts in block 1.
  size_t victim = 0;
  while (log.starts[victim] < kSpoolBlockSize) ++victim;
  std::string damaged = log.bytes;
  damaged[log.starts[victim] + kSpoolHeaderSize + 10] ^= 0x40;

  SpoolReadStats stats;
  const std::vector<std::string> read = Read(damaged, &stats);
  // Lost: the damaged record and the rest of block 1 (the records that
  // start after it in block 1, the last of them crossing into block 2).
  // Kept: all the others in order, the one crossing 0 → 1 too (its last
  // fragment precedes the damage).
  std::vector<std::string> expected;
  for (size_t i = 0; i < records.size(); ++i) {
    const bool lost = log.starts[i] >= log.starts[victim] &&
                      log.starts[i] < 2 * kSpoolBlockSize;
    if (!lost) expected.push_back(records[i]);
  }
  ASSERT_LT(log.starts[victim - 1], kSpoolBlockSize);  // crosses 0 → 1
  EXPECT_EQ(read, expected);
  EXPECT_LT(expected.size(), records.size());
  EXPECT_GT(expected.size(), 0u);
  EXPECT_GE(stats.corruptions, 1u);
  EXPECT_GT(stats.corrupt_bytes, 0u);
  EXPECT_EQ(stats.torn_tail_bytes, 0u);
}

TEST(SpoolLogTest, ADamagedLengthInAFullBlockIsCorruptionNotTheEnd) {
  const std::vector<std::string> records = {"one", Payload(kSpoolBlockSize, 1),
                                            "three"};
  const Log log = Write(records);
  std::string damaged = log.bytes;
  damaged[4] = '\xff';  // the first record's length: 0xff03, past the block
  damaged[5] = '\xff';
  SpoolReadStats stats;
  EXPECT_EQ(Read(damaged, &stats), std::vector<std::string>{"three"});
  EXPECT_GE(stats.corruptions, 1u);
}

TEST(SpoolLogTest, ZeroFilledBlocksAreSkipped) {
  const std::string zeros(kSpoolBlockSize, '\0');
  const Log after = Write({"x", "y"});
  SpoolReadStats stats;
  EXPECT_EQ(Read(zeros + after.bytes, &stats),
            (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(stats.corrupt_bytes, kSpoolBlockSize);
  // Zeros at the end (space never written before a crash): the end.
  EXPECT_EQ(Read(after.bytes + std::string(100, '\0'), &stats),
            (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(stats.corruptions, 0u);
}

TEST(SpoolLogTest, GarbageNeverCrashesOrInventsRecords) {
  // Deterministic pseudo-random bytes of many lengths; the fuzz target
  // covers this further.
  uint64_t state = 12345;
  for (size_t size :
       {size_t{1}, size_t{6}, size_t{7}, size_t{100}, kSpoolBlockSize - 1,
        kSpoolBlockSize, kSpoolBlockSize * 2 + 3}) {
    std::string garbage(size, '\0');
    for (char& c : garbage) {
      state = state * 6364136223846793005u + 1442695040888963407u;
      c = static_cast<char>(state >> 56);
    }
    SpoolReadStats stats;
    EXPECT_TRUE(Read(garbage, &stats).empty()) << size;
    EXPECT_EQ(stats.corrupt_bytes + stats.torn_tail_bytes, size) << size;
  }
}

TEST(SpoolLogTest, FragmentsOutOfOrderAreDroppedAsCorruption) {
  const std::string big = Payload(kSpoolBlockSize * 2, 9);
  const Log log = Write({big, "tail"});
  // Drop the first block: the log now starts with MIDDLE, LAST fragments.
  SpoolReadStats stats;
  EXPECT_EQ(Read(log.bytes.substr(kSpoolBlockSize), &stats),
            std::vector<std::string>{"tail"});
  EXPECT_GE(stats.corruptions, 1u);
}

std::string ReadFile(int fd) {
  std::string bytes;
  char buf[4096];
  ssize_t n;
  off_t at = 0;
  while ((n = ::pread(fd, buf, sizeof(buf), at)) > 0) {
    bytes.append(buf, static_cast<size_t>(n));
    at += n;
  }
  return bytes;
}

// A write that fails part-way (here: the file size limit) must not leave a
// torn record in front of the next one.
TEST(SpoolLogWriterTest, AFailedWriteLeavesNoTornRecordBehind) {
  std::string path = ::testing::TempDir() + "/spool_writer_XXXXXX";
  const int fd = ::mkstemp(path.data());
  ASSERT_GE(fd, 0);
  SpoolLogWriter writer(fd, 0);
  ASSERT_TRUE(writer.AddRecord("first").ok());

  rlimit old_limit;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  rlimit small = old_limit;
  // Past two blocks: the write stops inside the record's second fragment.
  small.rlim_cur = 2 * kSpoolBlockSize + 100;
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  const absl::Status failed =
      writer.AddRecord(std::string(3 * kSpoolBlockSize, 'x'));
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &old_limit), 0);
  std::signal(SIGXFSZ, old_handler);

  EXPECT_FALSE(failed.ok());
  EXPECT_NE(failed.message().find("spool write of"), std::string::npos)
      << failed;
  EXPECT_FALSE(writer.broken());
  EXPECT_EQ(writer.file_length(), kSpoolHeaderSize + 5);
  EXPECT_EQ(ReadFile(fd).size(), kSpoolHeaderSize + 5);
  ASSERT_TRUE(writer.AddRecord("second").ok());

  SpoolReadStats stats;
  EXPECT_EQ(Read(ReadFile(fd), &stats),
            (std::vector<std::string>{"first", "second"}));
  EXPECT_EQ(stats.corruptions, 0u);
  ::close(fd);
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace batchfetch

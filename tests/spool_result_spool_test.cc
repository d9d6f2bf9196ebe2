// ResultSpool on a private temp dir: append, replay, reclaim, restart, the
// byte bound, group commit on a fake clock, concurrent appends.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "service/base/log.h"
#include "service/store/spool/result_spool.h"
#include "service/store/spool/spool_log_format.h"
#include "tests/support/fake_clock.h"

namespace batchfetch {
namespace {

std::string MakeTempDir() {
  std::string pattern = ::testing::TempDir() + "/spool_test_XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp failed";
    return pattern;
  }
  return pattern + "/spool";  // ResultSpool::Open creates this level
}

SpoolRecord ResultRecord(const std::string& id, size_t body = 10) {
  return SpoolRecord::Result(id, absl::FromUnixSeconds(1'700'000'000),
                             std::string(body, 'r'));
}

uint64_t FileSize(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return static_cast<uint64_t>(st.st_size);
}

class ResultSpoolTest : public ::testing::Test {
 protected:
  ResultSpoolTest() : dir_(MakeTempDir()) {}
  ~ResultSpoolTest() override {
    std::error_code ignored;
    std::filesystem::remove_all(std::filesystem::path(dir_).parent_path(),
                                ignored);
  }

  ResultSpoolOptions Options() {
    ResultSpoolOptions options;
    options.dir = dir_;
    options.clock = &clock_;
    // No syncs unless a test asks for them.
    options.max_unsynced_records = 1'000'000;
    options.max_sync_delay = absl::Hours(1);
    options.datasync = [this](int fd) {
      ++syncs_;
      return ::fdatasync(fd);
    };
    return options;
  }

  std::unique_ptr<ResultSpool> OpenSpool(ResultSpoolOptions options) {
    absl::StatusOr<std::unique_ptr<ResultSpool>> spool =
        ResultSpool::Open(std::move(options));
    EXPECT_TRUE(spool.ok()) << spool.status();
    return spool.ok() ? *std::move(spool) : nullptr;
  }

  // The batch ids (results) or "created:"/"finished:" + id, in replay order;
  // the segments are released.
  std::vector<std::string> ReplayAll(ResultSpool& spool) {
    std::vector<std::string> seen;
    absl::StatusOr<SpoolSegmentReplay> replay =
        spool.ReplayAndRelease([&](const SpoolRecord& r) {
          switch (r.kind) {
            case SpoolRecord::Kind::kBatchCreated:
              seen.push_back("created:" + r.batch.batch_id);
              break;
            case SpoolRecord::Kind::kBatchFinished:
              seen.push_back("finished:" + r.batch.batch_id);
              break;
            case SpoolRecord::Kind::kResult:
              seen.push_back(r.batch_id);
              break;
          }
          return absl::OkStatus();
        });
    EXPECT_TRUE(replay.ok()) << replay.status();
    return seen;
  }

  const std::string dir_;
  testing::FakeClock clock_;
  std::atomic<int> syncs_{0};
};

TEST_F(ResultSpoolTest, ReplayReturnsEveryKindInAppendOrderAndReclaimsSpace) {
  auto spool = OpenSpool(Options());
  BatchRecord batch;
  batch.batch_id = "b1";
  batch.owner = "team-a";
  ASSERT_TRUE(spool->Append(SpoolRecord::BatchCreated(batch)).ok());
  ASSERT_TRUE(spool->Append(ResultRecord("r1")).ok());
  ASSERT_TRUE(spool->Append(ResultRecord("r2")).ok());
  batch.state = v1::BATCH_STATE_DONE;
  absl::StatusOr<uint64_t> last =
      spool->Append(SpoolRecord::BatchFinished(batch));
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(*last, 4u);

  const ResultSpoolStats before = spool->Stats();
  EXPECT_EQ(before.segments, 1u);
  EXPECT_EQ(before.used_bytes, FileSize(ResultSpool::SegmentPath(dir_, 1)));
  EXPECT_GT(before.used_bytes, 0u);

  EXPECT_EQ(ReplayAll(*spool), (std::vector<std::string>{"created:b1", "r1",
                                                         "r2", "finished:b1"}));
  const ResultSpoolStats after = spool->Stats();
  EXPECT_EQ(after.used_bytes, 0u);
  EXPECT_EQ(after.segments, 0u);
  EXPECT_FALSE(std::filesystem::exists(ResultSpool::SegmentPath(dir_, 1)));
}

TEST_F(ResultSpoolTest, TheSegmentBeingAppendedToIsRolledOverBeforeReplay) {
  auto spool = OpenSpool(Options());
  ASSERT_TRUE(spool->Append(ResultRecord("first")).ok());
  // Still being appended to: not replayable.
  EXPECT_TRUE(absl::IsNotFound(
      spool
          ->ReplaySegment(1,
                          [](const SpoolRecord&) { return absl::OkStatus(); })
          .status()));
  absl::StatusOr<std::vector<uint64_t>> sealed = spool->SealForReplay();
  ASSERT_TRUE(sealed.ok()) << sealed.status();
  EXPECT_EQ(*sealed, std::vector<uint64_t>{1});
  // Sealing synced it.
  EXPECT_EQ(spool->Stats().durable_sequence, 1u);
  // Later appends go to a new segment, outside this replay.
  ASSERT_TRUE(spool->Append(ResultRecord("second")).ok());
  std::vector<std::string> seen;
  absl::StatusOr<SpoolSegmentReplay> replay =
      spool->ReplaySegment(1, [&](const SpoolRecord& r) {
        seen.push_back(r.batch_id);
        return absl::OkStatus();
      });
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_EQ(seen, std::vector<std::string>{"first"});
  EXPECT_EQ(replay->records, 1u);
  ASSERT_TRUE(spool->ReleaseSegment(1).ok());
  EXPECT_EQ(spool->Stats().used_bytes,
            FileSize(ResultSpool::SegmentPath(dir_, 2)));
  EXPECT_TRUE(absl::IsNotFound(spool->ReleaseSegment(1)));
  EXPECT_EQ(ReplayAll(*spool), std::vector<std::string>{"second"});
}

TEST_F(ResultSpoolTest, SegmentsRollOverAtTheSegmentSize) {
  ResultSpoolOptions options = Options();
  options.segment_bytes = 1000;
  auto spool = OpenSpool(std::move(options));
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    ids.push_back(absl::StrCat("r", i));
    ASSERT_TRUE(spool->Append(ResultRecord(ids.back(), 200)).ok());
  }
  EXPECT_GE(spool->Stats().segments, 4u);
  absl::StatusOr<std::vector<uint64_t>> sealed = spool->SealForReplay();
  ASSERT_TRUE(sealed.ok());
  ASSERT_GE(sealed->size(), 4u);
  // Releasing one gives back exactly its file's bytes.
  const uint64_t used = spool->Stats().used_bytes;
  const uint64_t first = FileSize(ResultSpool::SegmentPath(dir_, (*sealed)[0]));
  ASSERT_TRUE(spool->ReleaseSegment((*sealed)[0]).ok());
  EXPECT_EQ(spool->Stats().used_bytes, used - first);
  // The rest replays in order, without the released records.
  const std::vector<std::string> rest = ReplayAll(*spool);
  ASSERT_FALSE(rest.empty());
  EXPECT_EQ(rest, std::vector<std::string>(ids.end() - rest.size(), ids.end()));
}

TEST_F(ResultSpoolTest, ReopeningContinuesNumberingAndReplaysWhatIsThere) {
  {
    auto spool = OpenSpool(Options());
    ASSERT_TRUE(spool->Append(ResultRecord("a")).ok());
    ASSERT_TRUE(spool->Append(ResultRecord("b")).ok());
  }
  // Not a segment: ignored.
  { std::ofstream(dir_ + "/notes.txt") << "hello"; }
  auto spool = OpenSpool(Options());
  EXPECT_EQ(spool->Stats().used_bytes,
            FileSize(ResultSpool::SegmentPath(dir_, 1)));
  ASSERT_TRUE(spool->Append(ResultRecord("c")).ok());
  // A new segment: never appended after a possibly torn old one.
  EXPECT_TRUE(std::filesystem::exists(ResultSpool::SegmentPath(dir_, 2)));
  EXPECT_EQ(ReplayAll(*spool), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/notes.txt"));
}

TEST_F(ResultSpoolTest, ACrashKeepsEverythingSyncedWhateverOfTheRestIsLost) {
  uint64_t synced_length = 0;
  uint64_t full_length = 0;
  const std::string segment = ResultSpool::SegmentPath(dir_, 1);
  {
    auto spool = OpenSpool(Options());
    ASSERT_TRUE(spool->Append(ResultRecord("a")).ok());
    absl::StatusOr<uint64_t> b = spool->Append(ResultRecord("b", 5000));
    ASSERT_TRUE(b.ok());
    ASSERT_TRUE(spool->WaitDurable(*b).ok());
    EXPECT_EQ(spool->Stats().durable_sequence, 2u);
    synced_length = FileSize(segment);
    ASSERT_TRUE(spool->Append(ResultRecord("c", 3000)).ok());
    full_length = FileSize(segment);
  }
  // The crash lost any part of what followed the sync.
  std::string original;
  {
    std::ifstream in(segment, std::ios::binary);
    original.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_EQ(original.size(), full_length);
  for (uint64_t cut = synced_length; cut <= full_length; cut += 97) {
    {
      std::ofstream out(segment, std::ios::binary | std::ios::trunc);
      out.write(original.data(), static_cast<std::streamsize>(cut));
    }
    auto spool = OpenSpool(Options());
    absl::StatusOr<SpoolSegmentReplay> replay;
    std::vector<std::string> seen;
    replay = spool->ReplaySegment(1, [&](const SpoolRecord& r) {
      seen.push_back(r.batch_id);
      return absl::OkStatus();
    });
    ASSERT_TRUE(replay.ok()) << replay.status();
    const std::vector<std::string> expected =
        cut == full_length ? std::vector<std::string>{"a", "b", "c"}
                           : std::vector<std::string>{"a", "b"};
    EXPECT_EQ(seen, expected) << "cut at " << cut;
    EXPECT_EQ(replay->log.corruptions, 0u) << "cut at " << cut;
    if (cut + 97 > full_length && cut != full_length) cut = full_length - 97;
  }
}

TEST_F(ResultSpoolTest, AppendsBeyondMaxBytesAreRefusedUntilSpaceIsReleased) {
  ResultSpoolOptions options = Options();
  // Exactly two records fit.
  const uint64_t one =
      SpoolFramedRecordSize(0, EncodeSpoolRecord(ResultRecord("x")).size());
  options.max_bytes = 2 * one;
  auto spool = OpenSpool(std::move(options));
  ASSERT_TRUE(spool->Append(ResultRecord("x")).ok());
  ASSERT_TRUE(spool->Append(ResultRecord("y")).ok());
  absl::StatusOr<uint64_t> full = spool->Append(ResultRecord("z"));
  EXPECT_TRUE(absl::IsResourceExhausted(full.status())) << full.status();
  EXPECT_NE(full.status().message().find("--spool_max_bytes="),
            std::string::npos)
      << full.status();
  // Nothing of the refused record was written.
  EXPECT_EQ(spool->Stats().used_bytes, 2 * one);
  EXPECT_EQ(FileSize(ResultSpool::SegmentPath(dir_, 1)), 2 * one);
  EXPECT_EQ(spool->Stats().appended_sequence, 2u);

  EXPECT_EQ(ReplayAll(*spool), (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(spool->Append(ResultRecord("z")).ok());
}

TEST_F(ResultSpoolTest, GroupCommitSyncsEveryNRecordsOrAfterTheDelay) {
  ResultSpoolOptions options = Options();
  options.max_unsynced_records = 3;
  options.max_sync_delay = absl::Milliseconds(5);
  auto spool = OpenSpool(std::move(options));

  ASSERT_TRUE(spool->Append(ResultRecord("1")).ok());
  ASSERT_TRUE(spool->Append(ResultRecord("2")).ok());
  EXPECT_EQ(syncs_, 0);
  EXPECT_EQ(spool->Stats().durable_sequence, 0u);
  ASSERT_TRUE(spool->Append(ResultRecord("3")).ok());  // the third pending
  EXPECT_EQ(syncs_, 1);
  EXPECT_EQ(spool->Stats().durable_sequence, 3u);

  ASSERT_TRUE(spool->Append(ResultRecord("4")).ok());
  clock_.Advance(absl::Milliseconds(4));
  ASSERT_TRUE(spool->SyncIfDue().ok());
  EXPECT_EQ(syncs_, 1);  // not yet due
  clock_.Advance(absl::Milliseconds(1));
  ASSERT_TRUE(spool->SyncIfDue().ok());
  EXPECT_EQ(syncs_, 2);
  EXPECT_EQ(spool->Stats().durable_sequence, 4u);

  ASSERT_TRUE(spool->Append(ResultRecord("5")).ok());
  clock_.Advance(absl::Milliseconds(5));
  // The first append after the delay syncs itself and what waited.
  ASSERT_TRUE(spool->Append(ResultRecord("6")).ok());
  EXPECT_EQ(syncs_, 3);
  EXPECT_EQ(spool->Stats().durable_sequence, 6u);

  // Waiting for a durable record costs nothing; for a pending one, one sync.
  ASSERT_TRUE(spool->WaitDurable(6).ok());
  EXPECT_EQ(syncs_, 3);
  absl::StatusOr<uint64_t> seven = spool->Append(ResultRecord("7"));
  ASSERT_TRUE(seven.ok());
  ASSERT_TRUE(spool->WaitDurable(*seven).ok());
  EXPECT_EQ(syncs_, 4);
  EXPECT_EQ(spool->Stats().durable_sequence, 7u);
}

TEST_F(ResultSpoolTest, AppendsGoOnDuringASyncAndLaterWaitersShareOneSync) {
  absl::Notification sync_entered;
  absl::Notification release_sync;
  ResultSpoolOptions options = Options();
  // Appends 2 and 3 find a sync due, but one is running: they must not wait.
  options.max_unsynced_records = 2;
  options.datasync = [&](int fd) {
    if (++syncs_ == 1) {
      sync_entered.Notify();
      release_sync.WaitForNotification();
    }
    return ::fdatasync(fd);
  };
  auto spool = OpenSpool(std::move(options));
  ASSERT_TRUE(spool->Append(ResultRecord("1")).ok());
  std::thread first([&] { EXPECT_TRUE(spool->WaitDurable(1).ok()); });
  sync_entered.WaitForNotification();
  // The first sync is blocked; appends do not wait for it.
  ASSERT_TRUE(spool->Append(ResultRecord("2")).ok());
  ASSERT_TRUE(spool->Append(ResultRecord("3")).ok());
  std::thread second([&] { EXPECT_TRUE(spool->WaitDurable(3).ok()); });
  std::thread third([&] { EXPECT_TRUE(spool->WaitDurable(2).ok()); });
  release_sync.Notify();
  first.join();
  second.join();
  third.join();
  // Records 2 and 3 came after the first sync began: one more covers both.
  EXPECT_EQ(syncs_, 2);
  EXPECT_EQ(spool->Stats().durable_sequence, 3u);
}

TEST_F(ResultSpoolTest, AFailedSyncIsStickyAndNamed) {
  ResultSpoolOptions options = Options();
  options.datasync = [](int) {
    errno = EIO;
    return -1;
  };
  auto spool = OpenSpool(std::move(options));
  absl::StatusOr<uint64_t> one = spool->Append(ResultRecord("1"));
  ASSERT_TRUE(one.ok());
  const absl::Status failed = spool->WaitDurable(*one);
  EXPECT_TRUE(absl::IsUnavailable(failed)) << failed;
  EXPECT_NE(failed.message().find("fdatasync failed"), std::string::npos)
      << failed;
  EXPECT_TRUE(absl::IsUnavailable(spool->Append(ResultRecord("2")).status()));
  EXPECT_EQ(spool->Stats().durable_sequence, 0u);
}

// A sequence not appended yet cannot be made durable: OK would lie (it did
// when no segment was active, e.g. right after a roll-over or at start).
TEST_F(ResultSpoolTest, WaitingForASequenceNotYetAppendedIsInvalid) {
  auto spool = OpenSpool(Options());
  EXPECT_TRUE(absl::IsInvalidArgument(spool->WaitDurable(1)));
  absl::StatusOr<uint64_t> one = spool->Append(ResultRecord("1"));
  ASSERT_TRUE(one.ok());
  const absl::Status ahead = spool->WaitDurable(*one + 1);
  EXPECT_TRUE(absl::IsInvalidArgument(ahead)) << ahead;
  EXPECT_NE(ahead.message().find("only 1 records were appended"),
            std::string::npos)
      << ahead;
  ASSERT_TRUE(spool->SealForReplay().ok());  // no active segment now
  EXPECT_TRUE(absl::IsInvalidArgument(spool->WaitDurable(*one + 1)));
  EXPECT_TRUE(spool->WaitDurable(*one).ok());
}

// A damaged segment is released all the same (nothing can recover it), and
// says so with the counts.
TEST_F(ResultSpoolTest, ReleasingADamagedSegmentLogsAWarningWithTheCounts) {
  const std::string segment = ResultSpool::SegmentPath(dir_, 1);
  uint64_t second_starts = 0;
  {
    auto spool = OpenSpool(Options());
    ASSERT_TRUE(spool->Append(ResultRecord("a")).ok());
    second_starts = FileSize(segment);
    ASSERT_TRUE(spool->Append(ResultRecord("b", 100)).ok());
    ASSERT_TRUE(spool->Append(ResultRecord("c")).ok());
  }
  {
    // Flip a byte of the second record's payload: its checksum fails.
    std::fstream file(segment, std::ios::binary | std::ios::in | std::ios::out);
    const auto at =
        static_cast<std::streamoff>(second_starts + kSpoolHeaderSize + 20);
    file.seekg(at);
    char byte = 0;
    file.read(&byte, 1);
    byte = static_cast<char>(byte ^ 0x5a);
    file.seekp(at);
    file.write(&byte, 1);
  }
  std::vector<std::string> log;
  SetLogSinkForTest([&](std::string_view line) { log.emplace_back(line); });
  auto spool = OpenSpool(Options());
  const std::vector<std::string> seen = ReplayAll(*spool);
  SetLogSinkForTest(nullptr);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.front(), "a");
  EXPECT_FALSE(std::filesystem::exists(segment));
  std::string warning;
  for (const std::string& line : log) {
    if (line.find("\"event\":\"spool_segment_released_with_damage\"") !=
        std::string::npos) {
      warning = line;
    }
  }
  ASSERT_FALSE(warning.empty()) << "no warning logged";
  EXPECT_NE(warning.find("\"segment\":1"), std::string::npos) << warning;
  EXPECT_NE(warning.find("\"corruptions\":1"), std::string::npos) << warning;
  EXPECT_NE(warning.find("\"undecodable_records\":0"), std::string::npos)
      << warning;
}

// An intact segment is released without a warning.
TEST_F(ResultSpoolTest, ReleasingAnIntactSegmentLogsNoWarning) {
  auto spool = OpenSpool(Options());
  ASSERT_TRUE(spool->Append(ResultRecord("a")).ok());
  std::vector<std::string> log;
  SetLogSinkForTest([&](std::string_view line) { log.emplace_back(line); });
  EXPECT_EQ(ReplayAll(*spool), (std::vector<std::string>{"a"}));
  SetLogSinkForTest(nullptr);
  for (const std::string& line : log) {
    EXPECT_EQ(line.find("spool_segment_released_with_damage"),
              std::string::npos)
        << line;
  }
}

TEST_F(ResultSpoolTest, ASecondSpoolOnTheSameDirIsRefused) {
  auto spool = OpenSpool(Options());
  absl::StatusOr<std::unique_ptr<ResultSpool>> second =
      ResultSpool::Open(Options());
  EXPECT_TRUE(absl::IsFailedPrecondition(second.status())) << second.status();
  spool.reset();
  EXPECT_TRUE(ResultSpool::Open(Options()).ok());
}

TEST_F(ResultSpoolTest, ConcurrentAppendsAreEachReplayedExactlyOnce) {
  ResultSpoolOptions options = Options();
  options.segment_bytes = 4096;  // roll over while appending
  options.max_unsynced_records = 16;
  auto spool = OpenSpool(std::move(options));
  constexpr int kThreads = 4;
  constexpr int kPerThread = 250;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        absl::StatusOr<uint64_t> seq =
            spool->Append(ResultRecord(absl::StrCat(t, "-", i), 50));
        ASSERT_TRUE(seq.ok()) << seq.status();
        if (i % 10 == 0) {
          ASSERT_TRUE(spool->WaitDurable(*seq).ok());
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(spool->Stats().appended_sequence,
            static_cast<uint64_t>(kThreads * kPerThread));

  const std::vector<std::string> seen = ReplayAll(*spool);
  EXPECT_EQ(seen.size(), static_cast<size_t>(kThreads * kPerThread));
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(),
            seen.size());
  // Each thread's records replay in the order it appended them.
  std::vector<int> next(kThreads, 0);
  for (const std::string& id : seen) {
    const int t = id[0] - '0';
    ASSERT_EQ(id, absl::StrCat(t, "-", next[t]));
    ++next[t];
  }
  EXPECT_EQ(spool->Stats().used_bytes, 0u);
}

}  // namespace
}  // namespace batchfetch

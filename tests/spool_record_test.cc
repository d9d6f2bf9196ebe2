// The spool record codec: round trips of each kind and rejection of
// truncated, garbage and inconsistent input.
#include "service/store/spool/spool_record.h"

#include <string>

#include "gtest/gtest.h"

namespace batchfetch {
namespace {

BatchRecord SampleBatch() {
  BatchRecord b;
  b.batch_id = "0190aaaa-bbbb-7ccc-8ddd-eeeeffff0000";
  b.owner = "team-a";
  b.state = v1::BATCH_STATE_DONE;
  b.total = 2000;
  b.succeeded = 1990;
  b.failed = 10;
  b.stored = 1999;
  b.created_at = absl::FromUnixMicros(1'700'000'000'123'456);
  b.finished_at = absl::FromUnixMicros(1'700'000'100'654'321);
  return b;
}

void ExpectSameBatch(const BatchRecord& a, const BatchRecord& b) {
  EXPECT_EQ(a.batch_id, b.batch_id);
  EXPECT_EQ(a.owner, b.owner);
  EXPECT_EQ(a.state, b.state);
  EXPECT_EQ(a.total, b.total);
  EXPECT_EQ(a.succeeded, b.succeeded);
  EXPECT_EQ(a.failed, b.failed);
  EXPECT_EQ(a.stored, b.stored);
  EXPECT_EQ(a.created_at, b.created_at);
  EXPECT_EQ(a.finished_at, b.finished_at);
}

TEST(SpoolRecordTest, BatchCreatedRoundTripsWithOwnerAndUnsetFinishTime) {
  BatchRecord batch = SampleBatch();
  batch.state = v1::BATCH_STATE_RUNNING;
  batch.finished_at = absl::InfinitePast();
  absl::StatusOr<SpoolRecord> back =
      DecodeSpoolRecord(EncodeSpoolRecord(SpoolRecord::BatchCreated(batch)));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->kind, SpoolRecord::Kind::kBatchCreated);
  ExpectSameBatch(back->batch, batch);
}

TEST(SpoolRecordTest, TheRequestOfACreatedBatchRoundTripsAndIsOptional) {
  BatchRecord batch = SampleBatch();
  batch.state = v1::BATCH_STATE_RUNNING;
  batch.request =
      std::make_shared<const std::string>(std::string("\0req\xff", 5));
  batch.requests_sha256 = std::string(64, 'a');
  batch.spooled = 7;
  absl::StatusOr<SpoolRecord> back =
      DecodeSpoolRecord(EncodeSpoolRecord(SpoolRecord::BatchCreated(batch)));
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameBatch(back->batch, batch);
  ASSERT_NE(back->batch.request, nullptr);
  EXPECT_EQ(*back->batch.request, *batch.request);
  EXPECT_EQ(back->batch.requests_sha256, batch.requests_sha256);
  EXPECT_EQ(back->batch.spooled, 7u);

  // Without them (and as version-1 records written before they existed).
  absl::StatusOr<SpoolRecord> plain = DecodeSpoolRecord(
      EncodeSpoolRecord(SpoolRecord::BatchCreated(SampleBatch())));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->batch.request, nullptr);
  EXPECT_EQ(plain->batch.requests_sha256, "");
  EXPECT_EQ(plain->batch.spooled, 0u);
}

TEST(SpoolRecordTest, BatchFinishedRoundTrips) {
  const BatchRecord batch = SampleBatch();
  absl::StatusOr<SpoolRecord> back =
      DecodeSpoolRecord(EncodeSpoolRecord(SpoolRecord::BatchFinished(batch)));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->kind, SpoolRecord::Kind::kBatchFinished);
  ExpectSameBatch(back->batch, batch);
}

TEST(SpoolRecordTest, ResultRoundTripsWithBinaryBytes) {
  v1::FetchResult result;
  result.set_index(41);
  result.set_url("https://example.test/a");
  std::string bytes = result.SerializeAsString();
  bytes.push_back('\0');  // any bytes survive, NULs included
  const absl::Time fetched_at = absl::FromUnixMicros(1'700'000'000'000'001);
  absl::StatusOr<SpoolRecord> back = DecodeSpoolRecord(
      EncodeSpoolRecord(SpoolRecord::Result("batch-1", fetched_at, bytes)));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->kind, SpoolRecord::Kind::kResult);
  EXPECT_EQ(back->batch_id, "batch-1");
  EXPECT_EQ(back->fetched_at, fetched_at);
  EXPECT_EQ(back->result_bytes, bytes);
}

TEST(SpoolRecordTest, InfiniteTimesRoundTrip) {
  for (absl::Time t :
       {absl::InfinitePast(), absl::InfiniteFuture(), absl::UnixEpoch()}) {
    absl::StatusOr<SpoolRecord> back =
        DecodeSpoolRecord(EncodeSpoolRecord(SpoolRecord::Result("b", t, "")));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->fetched_at, t);
  }
}

TEST(SpoolRecordTest, EveryTruncationIsRejected) {
  for (const SpoolRecord& record :
       {SpoolRecord::BatchCreated(SampleBatch()),
        SpoolRecord::Result("batch-1", absl::UnixEpoch(), "payload")}) {
    const std::string bytes = EncodeSpoolRecord(record);
    for (size_t cut = 0; cut < bytes.size(); ++cut) {
      absl::StatusOr<SpoolRecord> back =
          DecodeSpoolRecord(absl::string_view(bytes).substr(0, cut));
      EXPECT_TRUE(absl::IsDataLoss(back.status())) << "cut at " << cut;
    }
  }
}

TEST(SpoolRecordTest, ErrorsNameWhatIsWrong) {
  std::string bytes =
      EncodeSpoolRecord(SpoolRecord::Result("b", absl::UnixEpoch(), "r"));
  std::string wrong_version = bytes;
  wrong_version[0] = 2;
  EXPECT_EQ(DecodeSpoolRecord(wrong_version).status().message(),
            "malformed spool record: unsupported version 2");
  std::string wrong_kind = bytes;
  wrong_kind[1] = 9;
  EXPECT_EQ(DecodeSpoolRecord(wrong_kind).status().message(),
            "malformed spool record: unknown kind 9");
  // A batch id field claiming more bytes than there are.
  std::string overlong = bytes;
  overlong[3] = '\x7f';
  EXPECT_EQ(DecodeSpoolRecord(overlong).status().message(),
            "malformed spool record: field batch_id (tag 1) is longer than "
            "the record");
}

TEST(SpoolRecordTest, RepeatedMissingAndForeignFieldsAreRejected) {
  const std::string result =
      EncodeSpoolRecord(SpoolRecord::Result("b", absl::UnixEpoch(), "r"));
  // Field layout of a result: [2-byte prefix] batch_id(5+1) fetched_at(5+8)
  // result(5+1).
  const std::string batch_id_field = result.substr(2, 6);
  EXPECT_EQ(DecodeSpoolRecord(result + batch_id_field).status().message(),
            "malformed spool record: field batch_id repeated");
  const std::string without_result = result.substr(0, 2 + 6 + 13);
  EXPECT_EQ(DecodeSpoolRecord(without_result).status().message(),
            "malformed spool record: missing field result");
  // An owner (tag 2) does not belong in a result.
  const std::string owner_field("\x02\x01\x00\x00\x00x", 6);
  EXPECT_EQ(DecodeSpoolRecord(result + owner_field).status().message(),
            "malformed spool record: field owner in a record of kind 2");
}

TEST(SpoolRecordTest, WrongWidthsAndInvalidStatesAreRejected) {
  const std::string batch =
      EncodeSpoolRecord(SpoolRecord::BatchCreated(SampleBatch()));
  // The state field follows batch_id and owner.
  const size_t state_at =
      2 + 5 + SampleBatch().batch_id.size() + 5 + SampleBatch().owner.size();
  ASSERT_EQ(batch[state_at], 3);
  std::string bad_state = batch;
  bad_state[state_at + 5] = 99;
  EXPECT_EQ(DecodeSpoolRecord(bad_state).status().message(),
            "malformed spool record: field state has invalid value 99");
  std::string bad_width = batch;
  bad_width[state_at + 1] = 3;  // claims 3 bytes: the rest no longer parses
  EXPECT_TRUE(absl::IsDataLoss(DecodeSpoolRecord(bad_width).status()));
}

TEST(SpoolRecordTest, UnknownFieldsOfALaterWriterAreSkipped) {
  const std::string future_field(
      "\x30\x03\x00\x00\x00"
      "abc",
      8);
  absl::StatusOr<SpoolRecord> back = DecodeSpoolRecord(
      EncodeSpoolRecord(SpoolRecord::Result("b", absl::UnixEpoch(), "r")) +
      future_field);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->result_bytes, "r");
}

TEST(SpoolRecordTest, GarbageNeverCrashes) {
  uint64_t state = 99;
  for (int round = 0; round < 2000; ++round) {
    std::string garbage(static_cast<size_t>(round % 64), '\0');
    for (char& c : garbage) {
      state = state * 6364136223846793005u + 1442695040888963407u;
      c = static_cast<char>(state >> 56);
    }
    if (garbage.size() >= 2) {
      garbage[0] = 1;  // get past the version check most of the time
      garbage[1] = static_cast<char>(1 + round % 3);
    }
    EXPECT_FALSE(DecodeSpoolRecord(garbage).ok()) << round;
  }
}

}  // namespace
}  // namespace batchfetch

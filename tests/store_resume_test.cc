// MysqlResultStore's side of resume (FetchBatchRequest.resume) against a real
// private MariaDB: the requests stored with a batch (migration 6) and
// BeginResume's checks and effects. Part of the store_test executable (one
// MariaDB for the process; each test uses its own database).
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "service/store/mysql/mysql_reader.h"
#include "service/store/mysql/mysql_result_store.h"
#include "tests/support/local_mariadb.h"
#include "tests/support/store_test_support.h"

namespace batchfetch {
namespace {

using testing::LocalMariaDb;
using testing::SharedMariaDb;
using testing::WaitForWrite;

const std::string kSha(64, 'a');
const std::string kOtherSha(64, 'b');

class StoreResumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = SharedMariaDb();
    static std::atomic<int> counter{0};
    database_ = absl::StrCat("store_resume_test_", getpid(), "_", counter++);
  }

  std::unique_ptr<MysqlResultStore> Open(
      const std::string& replica_id = "replica-a",
      absl::Duration lease = absl::Seconds(30)) {
    MysqlResultStore::Options o = testing::StoreOptions(*db_, database_);
    o.replica_id = replica_id;
    o.lease_duration = lease;
    auto store = MysqlResultStore::Open(o);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  std::string Sql(const std::string& sql) {
    auto out = db_->Execute(sql, database_);
    EXPECT_TRUE(out.ok()) << sql << ": " << out.status();
    return out.ok() ? std::string(absl::StripAsciiWhitespace(*out)) : "";
  }

  static BatchRecord Batch(const std::string& id, uint32_t total,
                           const std::string& owner = "") {
    BatchRecord b;
    b.batch_id = id;
    b.owner = owner;
    b.total = total;
    b.created_at = absl::FromUnixMicros(1'700'000'000'000'001);
    b.requests_sha256 = kSha;
    b.request = std::make_shared<const std::string>("the request");
    return b;
  }

  static absl::Status Append(ResultStore& store, const std::string& id,
                             uint32_t index, v1::Outcome outcome) {
    auto r = std::make_shared<v1::FetchResult>();
    r->set_index(index);
    r->set_url(absl::StrCat("http://example.test/", index));
    r->set_outcome(outcome);
    return WaitForWrite([&](ResultStore::Done done) {
      store.AppendResult(id, r, absl::Now(), std::move(done));
    });
  }

  static absl::Status Finish(ResultStore& store, BatchRecord record,
                             v1::BatchState state) {
    record.state = state;
    record.finished_at = absl::FromUnixMicros(1'700'000'000'500'000);
    return WaitForWrite([&](ResultStore::Done done) {
      store.FinishBatch(record, std::move(done));
    });
  }

  LocalMariaDb* db_ = nullptr;
  std::string database_;
};

TEST_F(StoreResumeTest, CreateBatchStoresTheHashAndTheRequestInChunks) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  BatchRecord b = Batch("chunked", 3);
  // Two full chunks and a bit: three rows, reassembled byte for byte.
  std::string request(2 * MysqlReader::kRequestChunkBytes + 10, 'x');
  request[5] = '\0';
  request[MysqlReader::kRequestChunkBytes] = 'y';
  b.request = std::make_shared<const std::string>(request);
  ASSERT_TRUE(store->CreateBatch(b).ok());
  EXPECT_EQ(Sql("SELECT requests_sha256 FROM batches WHERE batch_id = "
                "'chunked'"),
            kSha);
  EXPECT_EQ(Sql("SELECT GROUP_CONCAT(chunk ORDER BY chunk) FROM "
                "batch_requests WHERE batch_id = 'chunked'"),
            "0,1,2");
  absl::StatusOr<std::string> read = store->ReadRequest("chunked");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, request);
}

TEST_F(StoreResumeTest, TakenIdStoresNoSecondRequest) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Batch("taken", 1)).ok());
  BatchRecord again = Batch("taken", 1);
  again.request = std::make_shared<const std::string>("another request");
  EXPECT_TRUE(absl::IsAlreadyExists(store->CreateBatch(again)));
  absl::StatusOr<std::string> read = store->ReadRequest("taken");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, "the request");
  // The failed transaction was rolled back: the pooled connection works.
  EXPECT_TRUE(store->CreateBatch(Batch("next", 1)).ok());
}

TEST_F(StoreResumeTest,
       ReadStoredBatchGivesTheTakeoverItsRequestOwnerAndLease) {
  auto store = Open("replica-a");
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Batch("orphan", 2, "alice")).ok());
  Sql(absl::StrCat("UPDATE batches SET state = ",
                   static_cast<int>(v1::BATCH_STATE_INTERRUPTED),
                   ", cancel_requested = 1 WHERE batch_id = 'orphan'"));
  // Another replica reads it (unscoped: the service's own read).
  auto other = Open("replica-b");
  ASSERT_NE(other, nullptr);
  absl::StatusOr<StoredBatch> stored = other->ReadStoredBatch("orphan");
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->request, "the request");
  EXPECT_EQ(stored->owner, "alice");
  EXPECT_EQ(stored->lease_owner, "replica-a");
  EXPECT_EQ(stored->state, v1::BATCH_STATE_INTERRUPTED);
  EXPECT_TRUE(stored->cancel_requested);
  EXPECT_TRUE(absl::IsNotFound(other->ReadStoredBatch("unknown").status()));
  // A batch stored without its request (not detached) is still found, with
  // an empty request: the takeover decides it was not detached.
  BatchRecord streamed = Batch("streamed", 2, "alice");
  streamed.request = nullptr;
  ASSERT_TRUE(store->CreateBatch(streamed).ok());
  absl::StatusOr<StoredBatch> without = other->ReadStoredBatch("streamed");
  ASSERT_TRUE(without.ok()) << without.status();
  EXPECT_EQ(without->request, "");
  EXPECT_EQ(without->owner, "alice");
}

TEST_F(StoreResumeTest, BeginResumeDeletesTheNonOkResultsAndReturnsTheOkOnes) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  BatchRecord b = Batch("partial", 4);
  ASSERT_TRUE(store->CreateBatch(b).ok());
  ASSERT_TRUE(Append(*store, "partial", 0, v1::OUTCOME_OK).ok());
  ASSERT_TRUE(Append(*store, "partial", 1, v1::OUTCOME_HTTP_ERROR).ok());
  ASSERT_TRUE(Append(*store, "partial", 2, v1::OUTCOME_CANCELLED).ok());
  ASSERT_TRUE(Append(*store, "partial", 3, v1::OUTCOME_OK).ok());
  ASSERT_TRUE(Finish(*store, b, v1::BATCH_STATE_CANCELLED).ok());

  absl::StatusOr<ResumePlan> plan =
      store->BeginResume("partial", ReadScope::AnyOwner(), kSha);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->ok_indices, (std::vector<uint32_t>{0, 3}));
  EXPECT_EQ(plan->total, 4u);
  EXPECT_EQ(plan->previous_state, v1::BATCH_STATE_CANCELLED);
  EXPECT_EQ(absl::ToUnixMicros(plan->created_at), 1'700'000'000'000'001);
  EXPECT_EQ(Sql("SELECT GROUP_CONCAT(idx ORDER BY idx) FROM fetch_results "
                "WHERE batch_id = 'partial'"),
            "0,3");
  // RUNNING again under this replica's lease, not finished.
  EXPECT_EQ(Sql("SELECT CONCAT(state, ' ', lease_owner, ' ', "
                "lease_expires_at > NOW(6), ' ', finished_at IS NULL) "
                "FROM batches WHERE batch_id = 'partial'"),
            absl::StrCat(v1::BATCH_STATE_RUNNING, " replica-a 1 1"));
  // A refetched index can be written again now that its failure is gone.
  ASSERT_TRUE(Append(*store, "partial", 1, v1::OUTCOME_OK).ok());
  EXPECT_EQ(Sql("SELECT outcome FROM fetch_results WHERE batch_id = "
                "'partial' AND idx = 1"),
            absl::StrCat(v1::OUTCOME_OK));
}

TEST_F(StoreResumeTest,
       BeginResumeOfADifferentRequestListIsFailedPrecondition) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  BatchRecord b = Batch("mismatch", 2);
  ASSERT_TRUE(store->CreateBatch(b).ok());
  ASSERT_TRUE(Append(*store, "mismatch", 0, v1::OUTCOME_HTTP_ERROR).ok());
  ASSERT_TRUE(Finish(*store, b, v1::BATCH_STATE_DONE).ok());
  absl::StatusOr<ResumePlan> plan =
      store->BeginResume("mismatch", ReadScope::AnyOwner(), kOtherSha);
  EXPECT_TRUE(absl::IsFailedPrecondition(plan.status())) << plan.status();
  EXPECT_NE(plan.status().message().find("differs"), std::string::npos);
  // Nothing changed.
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM fetch_results WHERE batch_id = "
                "'mismatch'"),
            "1");
  EXPECT_EQ(Sql("SELECT state FROM batches WHERE batch_id = 'mismatch'"),
            absl::StrCat(v1::BATCH_STATE_DONE));
}

TEST_F(StoreResumeTest, BeginResumeOfABatchWithoutAStoredHashIsRefused) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  BatchRecord b = Batch("old", 1);
  b.requests_sha256.clear();
  ASSERT_TRUE(store->CreateBatch(b).ok());
  ASSERT_TRUE(Finish(*store, b, v1::BATCH_STATE_CANCELLED).ok());
  absl::StatusOr<ResumePlan> plan =
      store->BeginResume("old", ReadScope::AnyOwner(), kSha);
  EXPECT_TRUE(absl::IsFailedPrecondition(plan.status())) << plan.status();
}

TEST_F(StoreResumeTest, BeginResumeOfAnUnknownOrAnotherOwnersBatchIsNotFound) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  BatchRecord b = Batch("alices", 1, "alice");
  ASSERT_TRUE(store->CreateBatch(b).ok());
  ASSERT_TRUE(Finish(*store, b, v1::BATCH_STATE_CANCELLED).ok());
  EXPECT_TRUE(absl::IsNotFound(
      store->BeginResume("nobody", ReadScope::AnyOwner(), kSha).status()));
  EXPECT_TRUE(absl::IsNotFound(
      store->BeginResume("alices", ReadScope::OwnedBy("bob"), kSha).status()));
  EXPECT_TRUE(
      store->BeginResume("alices", ReadScope::OwnedBy("alice"), kSha).ok());
}

TEST_F(StoreResumeTest, BeginResumeOfARunningBatchWithALiveLeaseIsRefused) {
  auto store = Open("replica-a", absl::Seconds(60));
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Batch("live", 2)).ok());
  ASSERT_TRUE(Append(*store, "live", 0, v1::OUTCOME_HTTP_ERROR).ok());
  absl::StatusOr<ResumePlan> plan =
      store->BeginResume("live", ReadScope::AnyOwner(), kSha);
  EXPECT_TRUE(absl::IsFailedPrecondition(plan.status())) << plan.status();
  EXPECT_NE(plan.status().message().find("RUNNING"), std::string::npos);
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM fetch_results WHERE batch_id = 'live'"),
            "1");
}

TEST_F(StoreResumeTest, BeginResumeTakesOverARunningBatchWhoseLeaseExpired) {
  auto store = Open("replica-b");
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Batch("orphan", 2)).ok());
  // Its replica died long ago.
  Sql("UPDATE batches SET lease_owner = 'dead-replica', lease_expires_at = "
      "NOW(6) - INTERVAL 1 MINUTE WHERE batch_id = 'orphan'");
  absl::StatusOr<ResumePlan> plan =
      store->BeginResume("orphan", ReadScope::AnyOwner(), kSha);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->previous_state, v1::BATCH_STATE_RUNNING);
  EXPECT_EQ(Sql("SELECT lease_owner FROM batches WHERE batch_id = 'orphan'"),
            "replica-b");
}

TEST_F(StoreResumeTest, BeginResumeOfAnInterruptedBatchSucceeds) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Batch("interrupted", 1)).ok());
  Sql(absl::StrCat("UPDATE batches SET state = ", v1::BATCH_STATE_INTERRUPTED,
                   ", state_reason = 'lease expired', lease_expires_at = NULL "
                   "WHERE batch_id = 'interrupted'"));
  absl::StatusOr<ResumePlan> plan =
      store->BeginResume("interrupted", ReadScope::AnyOwner(), kSha);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->previous_state, v1::BATCH_STATE_INTERRUPTED);
  EXPECT_EQ(Sql("SELECT CONCAT(state, '|', state_reason, '|') FROM batches "
                "WHERE batch_id = 'interrupted'"),
            absl::StrCat(v1::BATCH_STATE_RUNNING, "||"));
}

}  // namespace
}  // namespace batchfetch

// MysqlResultStore's retention (ResultStore::DeleteExpiredBatches, through
// MysqlRetention) against a real private MariaDB: old finished batches go
// with every row of theirs, recent, RUNNING and spooled ones stay, and rows
// go in chunks. Part of the store_test executable (one MariaDB for the
// process; each test uses its own database).
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "service/store/mysql/mysql_result_store.h"
#include "service/store/mysql/mysql_retention.h"
#include "service/store/mysql/mysql_values.h"
#include "tests/support/local_mariadb.h"
#include "tests/support/store_test_support.h"

namespace batchfetch {
namespace {

using testing::LocalMariaDb;
using testing::SharedMariaDb;
using testing::WaitForWrite;

class StoreRetentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = SharedMariaDb();
    static std::atomic<int> counter{0};
    database_ = absl::StrCat("store_retention_test_", getpid(), "_", counter++);
    MysqlResultStore::Options o = testing::StoreOptions(*db_, database_);
    o.replica_id = "replica-a";
    auto store = MysqlResultStore::Open(o);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  std::string Sql(const std::string& sql) {
    auto out = db_->Execute(sql, database_);
    EXPECT_TRUE(out.ok()) << sql << ": " << out.status();
    return out.ok() ? std::string(absl::StripAsciiWhitespace(*out)) : "";
  }
  int Count(const std::string& table, const std::string& batch_id) {
    return std::atoi(Sql(absl::StrCat("SELECT COUNT(*) FROM ", table,
                                      " WHERE batch_id = '", batch_id, "'"))
                         .c_str());
  }
  int RowsOf(const std::string& batch_id) {
    return Count("batches", batch_id) + Count("fetch_results", batch_id) +
           Count("batch_requests", batch_id);
  }

  // A batch created at `created_at` with `results` stored results and its
  // request; finished in `state` at `finished_at` unless RUNNING.
  void AddBatch(const std::string& id, int results, v1::BatchState state,
                absl::Time created_at, absl::Time finished_at) {
    BatchRecord b;
    b.batch_id = id;
    b.total = static_cast<uint32_t>(results);
    b.created_at = created_at;
    b.requests_sha256 = std::string(64, 'a');
    b.request = std::make_shared<const std::string>("the request");
    ASSERT_TRUE(store_->CreateBatch(b).ok());
    for (int i = 0; i < results; ++i) {
      auto r = std::make_shared<v1::FetchResult>();
      r->set_index(static_cast<uint32_t>(i));
      r->set_url(absl::StrCat("http://example.test/", i));
      r->set_outcome(v1::OUTCOME_OK);
      ASSERT_TRUE(WaitForWrite([&](ResultStore::Done done) {
                    store_->AppendResult(id, r, created_at, std::move(done));
                  }).ok());
    }
    if (state == v1::BATCH_STATE_RUNNING) return;
    b.state = state;
    b.finished_at = finished_at;
    ASSERT_TRUE(WaitForWrite([&](ResultStore::Done done) {
                  store_->FinishBatch(b, std::move(done));
                }).ok());
  }

  LocalMariaDb* db_ = nullptr;
  std::string database_;
  std::unique_ptr<MysqlResultStore> store_;
  const absl::Time now_ = absl::Now();
  const absl::Time cutoff_ = now_ - absl::Hours(24 * 30);
  const absl::Time long_ago_ = now_ - absl::Hours(24 * 40);
};

TEST_F(StoreRetentionTest, OldEndedBatchesGoWithAllTheirRowsAndOthersStay) {
  AddBatch("old-done", 3, v1::BATCH_STATE_DONE, long_ago_, long_ago_);
  AddBatch("old-cancelled", 2, v1::BATCH_STATE_CANCELLED, long_ago_,
           long_ago_ + absl::Minutes(1));
  AddBatch("old-failed", 1, v1::BATCH_STATE_FAILED, long_ago_, long_ago_);
  // Interrupted by a lease sweep: no finished_at; its lease expired long ago.
  AddBatch("old-interrupted", 2, v1::BATCH_STATE_RUNNING, long_ago_, long_ago_);
  Sql(absl::StrCat("UPDATE batches SET state = ", v1::BATCH_STATE_INTERRUPTED,
                   ", lease_expires_at = '",
                   FormatDateTime(long_ago_ + absl::Minutes(1)),
                   "' WHERE batch_id = 'old-interrupted'"));
  // Created long ago but finished recently: kept.
  AddBatch("recent-done", 2, v1::BATCH_STATE_DONE, long_ago_,
           now_ - absl::Hours(24));
  // Interrupted recently (its lease expired a day ago): kept.
  AddBatch("recent-interrupted", 1, v1::BATCH_STATE_RUNNING, long_ago_,
           long_ago_);
  Sql(absl::StrCat("UPDATE batches SET state = ", v1::BATCH_STATE_INTERRUPTED,
                   ", lease_expires_at = '",
                   FormatDateTime(now_ - absl::Hours(24)),
                   "' WHERE batch_id = 'recent-interrupted'"));
  // Still running (its lease expired long ago, yet nobody swept it): kept.
  AddBatch("old-running", 2, v1::BATCH_STATE_RUNNING, long_ago_, long_ago_);
  Sql(absl::StrCat("UPDATE batches SET lease_expires_at = '",
                   FormatDateTime(long_ago_),
                   "' WHERE batch_id = 'old-running'"));
  // Results still in some replica's spool: kept until they are replayed.
  AddBatch("old-spooled", 1, v1::BATCH_STATE_DONE, long_ago_, long_ago_);
  Sql("UPDATE batches SET spooled = 1 WHERE batch_id = 'old-spooled'");

  absl::StatusOr<RetentionPass> pass =
      store_->DeleteExpiredBatches(cutoff_, 100);
  ASSERT_TRUE(pass.ok()) << pass.status();
  EXPECT_EQ(pass->batches, 4u);
  // Results 3 + 2 + 1 + 2, and one request row each.
  EXPECT_EQ(pass->rows, 8u + 4u);
  EXPECT_FALSE(pass->more);
  for (const char* gone :
       {"old-done", "old-cancelled", "old-failed", "old-interrupted"}) {
    EXPECT_EQ(RowsOf(gone), 0) << gone;
    EXPECT_TRUE(absl::IsNotFound(
        store_->GetBatch(gone, ReadScope::AnyOwner()).status()))
        << gone;
  }
  EXPECT_EQ(RowsOf("recent-done"), 1 + 2 + 1);
  EXPECT_EQ(RowsOf("recent-interrupted"), 1 + 1 + 1);
  EXPECT_EQ(RowsOf("old-running"), 1 + 2 + 1);
  EXPECT_EQ(RowsOf("old-spooled"), 1 + 1 + 1);

  // Nothing more is due.
  pass = store_->DeleteExpiredBatches(cutoff_, 100);
  ASSERT_TRUE(pass.ok()) << pass.status();
  EXPECT_EQ(pass->batches, 0u);
  EXPECT_EQ(pass->rows, 0u);
}

TEST_F(StoreRetentionTest, Migration7IndexesBatchesByWhenTheyFinished) {
  EXPECT_EQ(Sql("SELECT GROUP_CONCAT(COLUMN_NAME) FROM "
                "information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
                "AND TABLE_NAME = 'batches' AND INDEX_NAME = "
                "'batches_finished_at'"),
            "finished_at");
}

TEST_F(StoreRetentionTest, APassStopsAtItsBatchLimitAndSaysMoreAreDue) {
  for (int i = 0; i < 3; ++i) {
    AddBatch(absl::StrCat("old-", i), 1, v1::BATCH_STATE_DONE, long_ago_,
             long_ago_ + absl::Seconds(i));
  }
  absl::StatusOr<RetentionPass> pass = store_->DeleteExpiredBatches(cutoff_, 2);
  ASSERT_TRUE(pass.ok()) << pass.status();
  EXPECT_EQ(pass->batches, 2u);
  EXPECT_TRUE(pass->more);
  // Oldest first.
  EXPECT_EQ(RowsOf("old-0") + RowsOf("old-1"), 0);
  EXPECT_EQ(RowsOf("old-2"), 3);
  pass = store_->DeleteExpiredBatches(cutoff_, 2);
  ASSERT_TRUE(pass.ok()) << pass.status();
  EXPECT_EQ(pass->batches, 1u);
  EXPECT_FALSE(pass->more);
  EXPECT_EQ(RowsOf("old-2"), 0);
}

TEST_F(StoreRetentionTest, RowsGoInChunksOfTheConfiguredSize) {
  AddBatch("big", 10, v1::BATCH_STATE_DONE, long_ago_, long_ago_);
  MysqlRetention::Options options;
  options.session = testing::SessionOptions(*db_, database_);
  options.result_rows_per_chunk = 3;
  MysqlRetention retention(options);
  const auto deletes = [this] {
    return std::atoi(
        std::string(
            absl::StripPrefix(Sql("SHOW GLOBAL STATUS LIKE 'Com_delete'"),
                              "Com_delete"))
            .c_str());
  };
  const int before = deletes();
  absl::StatusOr<RetentionPass> pass = retention.DeleteExpired(cutoff_, 10);
  ASSERT_TRUE(pass.ok()) << pass.status();
  EXPECT_EQ(pass->batches, 1u);
  EXPECT_EQ(pass->rows, 11u);
  EXPECT_EQ(RowsOf("big"), 0);
  // fetch_results: 3 + 3 + 3 + 1; batch_requests: 1; batches: 1.
  EXPECT_EQ(deletes() - before, 6);
}

TEST_F(StoreRetentionTest, ABatchBeingDeletedCanNoLongerBeResumed) {
  AddBatch("old", 2, v1::BATCH_STATE_DONE, long_ago_, long_ago_);
  // A pass that lost its connection after step 1 (the row stays, marked).
  Sql("UPDATE batches SET requests_sha256 = '' WHERE batch_id = 'old'");
  absl::StatusOr<ResumePlan> resumed =
      store_->BeginResume("old", ReadScope::AnyOwner(), std::string(64, 'a'));
  EXPECT_TRUE(absl::IsFailedPrecondition(resumed.status())) << resumed.status();
  // The next pass finishes it.
  absl::StatusOr<RetentionPass> pass =
      store_->DeleteExpiredBatches(cutoff_, 10);
  ASSERT_TRUE(pass.ok()) << pass.status();
  EXPECT_EQ(pass->batches, 1u);
  EXPECT_EQ(RowsOf("old"), 0);
}

}  // namespace
}  // namespace batchfetch

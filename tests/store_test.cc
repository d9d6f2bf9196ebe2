// MysqlResultStore and its parts against a real private MariaDB (started
// once for the whole process; each test uses its own database).
#include <cppconn/resultset.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "service/store/mysql/mysql_reader.h"
#include "service/store/mysql/mysql_result_store.h"
#include "service/store/mysql/mysql_schema.h"
#include "service/store/mysql/mysql_session.h"
#include "service/store/mysql/mysql_values.h"
#include "tests/support/local_mariadb.h"
#include "tests/support/store_test_support.h"
#include "tests/support/tcp_black_hole_proxy.h"

namespace batchfetch {
namespace {

using testing::LocalMariaDb;
using testing::SharedMariaDb;
using testing::TcpBlackHoleProxy;

const ReadScope kAnyOwner = ReadScope::AnyOwner();

// "1,2,...,N" for the latest schema version N.
std::string AllSchemaVersions() {
  std::string versions;
  for (int v = 1; v <= MysqlResultStore::LatestSchemaVersion(); ++v) {
    absl::StrAppend(&versions, v == 1 ? "" : ",", v);
  }
  return versions;
}

// Collects the status a `done` callback reports. The callback shares its
// state, so a callback that runs late (after a failed test) stays safe.
class DoneWaiter {
 public:
  ResultStore::Done Callback() {
    return [state = state_](ResultStore::WriteOutcome outcome) {
      state->status = outcome.status();
      state->durability =
          outcome.ok() ? *outcome : ResultStore::Durability::kCommitted;
      state->at = absl::Now();
      state->done.Notify();
    };
  }
  bool Wait(absl::Duration timeout) {
    return state_->done.WaitForNotificationWithTimeout(timeout);
  }
  const absl::Status& status() const { return state_->status; }
  absl::Time at() const { return state_->at; }

 private:
  struct State {
    absl::Notification done;
    absl::Status status = absl::UnknownError("not called");
    ResultStore::Durability durability = ResultStore::Durability::kCommitted;
    absl::Time at;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

// Destroys `store` on another thread; false if that takes longer than
// `timeout` (the thread is then left running, owning the store).
bool DestroyWithin(std::unique_ptr<MysqlResultStore> store,
                   absl::Duration timeout) {
  auto destroyed = std::make_shared<absl::Notification>();
  std::thread destroy([store = std::move(store), destroyed]() mutable {
    store.reset();
    destroyed->Notify();
  });
  if (!destroyed->WaitForNotificationWithTimeout(timeout)) {
    destroy.detach();
    return false;
  }
  destroy.join();
  return true;
}

std::shared_ptr<v1::FetchResult> Result(uint32_t index,
                                        v1::Outcome outcome = v1::OUTCOME_OK) {
  auto r = std::make_shared<v1::FetchResult>();
  r->set_index(index);
  r->set_url(absl::StrCat("http://example.test/item/", index));
  r->set_outcome(outcome);
  r->set_http_status(outcome == v1::OUTCOME_OK ? 200 : 500);
  if (outcome == v1::OUTCOME_OK) {
    r->set_json(absl::StrCat(R"({"n":)", index, "}"));
  } else {
    r->set_body("oops");
    r->set_error("HTTP 500");
  }
  r->set_content_type("application/json");
  r->set_attempts(1);
  r->mutable_elapsed()->set_nanos(1234000);
  if (index % 2 == 0) {
    r->set_final_url(r->url());
    r->mutable_timings()->mutable_dns()->set_nanos(1000);
    r->mutable_timings()->mutable_connect()->set_nanos(2000);
    r->mutable_timings()->mutable_tls()->set_nanos(0);
    r->mutable_timings()->mutable_first_byte()->set_nanos(4000);
    r->mutable_timings()->mutable_total()->set_nanos(5000);
  }
  return r;
}

BatchRecord Running(const std::string& id, uint32_t total) {
  BatchRecord b;
  b.batch_id = id;
  b.total = total;
  b.created_at = absl::FromUnixMicros(1'700'000'000'000'001);
  return b;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = SharedMariaDb();
    static std::atomic<int> counter{0};
    database_ = absl::StrCat("store_test_", getpid(), "_", counter++);
  }

  MysqlResultStore::Options Options(int port = 0) const {
    MysqlResultStore::Options o = testing::StoreOptions(*db_, database_);
    if (port != 0) o.port = port;
    return o;
  }

  std::unique_ptr<MysqlResultStore> Open(const MysqlResultStore::Options& o) {
    auto store = MysqlResultStore::Open(o);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  // Runs `sql` in the test database; returns stdout trimmed.
  std::string Sql(const std::string& sql) {
    auto out = db_->Execute(sql, database_);
    EXPECT_TRUE(out.ok()) << sql << ": " << out.status();
    return out.ok() ? std::string(absl::StripAsciiWhitespace(*out)) : "";
  }

  absl::Status Append(ResultStore& store, const std::string& batch_id,
                      std::shared_ptr<v1::FetchResult> r) {
    DoneWaiter waiter;
    store.AppendResult(batch_id, std::move(r), absl::Now(), waiter.Callback());
    if (!waiter.Wait(absl::Seconds(30))) {
      return absl::DeadlineExceededError("done never ran");
    }
    return waiter.status();
  }

  LocalMariaDb* db_ = nullptr;
  std::string database_;
};

TEST_F(StoreTest, RoundTrip) {
  auto store = Open(Options());
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Running("rt", 5)).ok());
  std::vector<std::unique_ptr<DoneWaiter>> waiters;
  std::vector<std::shared_ptr<v1::FetchResult>> written;
  for (uint32_t i = 0; i < 5; ++i) {
    written.push_back(
        Result(i, i == 3 ? v1::OUTCOME_HTTP_ERROR : v1::OUTCOME_OK));
    waiters.push_back(std::make_unique<DoneWaiter>());
    store->AppendResult("rt", written.back(), absl::Now(),
                        waiters.back()->Callback());
  }
  BatchRecord done = Running("rt", 5);
  done.state = v1::BATCH_STATE_DONE;
  done.succeeded = 4;
  done.failed = 1;
  done.stored = 5;
  done.finished_at = absl::FromUnixMicros(1'700'000'100'000'000);
  DoneWaiter finish;
  store->FinishBatch(done, finish.Callback());
  ASSERT_TRUE(finish.Wait(absl::Seconds(30)));
  EXPECT_TRUE(finish.status().ok()) << finish.status();
  for (auto& w : waiters) {
    ASSERT_TRUE(w->Wait(absl::Seconds(1)));
    EXPECT_TRUE(w->status().ok()) << w->status();
    // FinishBatch commits after every result appended before it.
    EXPECT_LE(w->at(), finish.at());
  }

  auto summary = store->GetBatch("rt", kAnyOwner);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(summary->total(), 5u);
  EXPECT_EQ(summary->succeeded(), 4u);
  EXPECT_EQ(summary->failed(), 1u);
  EXPECT_EQ(summary->stored(), 5u);
  EXPECT_EQ(summary->created_at().seconds(), 1'700'000'000);
  EXPECT_EQ(summary->created_at().nanos(), 1000);
  EXPECT_EQ(summary->finished_at().seconds(), 1'700'000'100);

  std::vector<v1::FetchResult> read;
  int64_t from = 0;
  int pages = 0;
  while (from >= 0) {
    auto page =
        store->ListResults("rt", kAnyOwner, static_cast<uint32_t>(from), 2);
    ASSERT_TRUE(page.ok()) << page.status();
    for (auto& r : page->results) read.push_back(r);
    from = page->next_index;
    ++pages;
  }
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(read.size(), 5u);
  for (uint32_t i = 0; i < 5; ++i) {
    EXPECT_EQ(read[i].SerializeAsString(), written[i]->SerializeAsString())
        << read[i].ShortDebugString() << "\n"
        << written[i]->ShortDebugString();
  }
}

TEST_F(StoreTest, CreateBatchTwiceIsAlreadyExists) {
  auto store = Open(Options());
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Running("dup", 1)).ok());
  absl::Status again = store->CreateBatch(Running("dup", 1));
  EXPECT_TRUE(absl::IsAlreadyExists(again)) << again;
  EXPECT_EQ(again.message(), "batch_id 'dup' already exists");
}

TEST_F(StoreTest, UnknownBatchIsNotFound) {
  auto store = Open(Options());
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(absl::IsNotFound(store->GetBatch("nope", kAnyOwner).status()));
  EXPECT_TRUE(
      absl::IsNotFound(store->ListResults("nope", kAnyOwner, 0, 10).status()));
}

TEST_F(StoreTest, AppendingTheSameIndexTwiceKeepsTheFirst) {
  auto store = Open(Options());
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Running("twice", 1)).ok());
  ASSERT_TRUE(Append(*store, "twice", Result(0)).ok());
  EXPECT_TRUE(Append(*store, "twice", Result(0, v1::OUTCOME_HTTP_ERROR)).ok());
  auto page = store->ListResults("twice", kAnyOwner, 0, 10);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->results.size(), 1u);
  EXPECT_EQ(page->results[0].outcome(), v1::OUTCOME_OK);
}

TEST_F(StoreTest, OwnerScopedReadsSeeOnlyTheOwnersBatches) {
  auto store = Open(Options());
  ASSERT_NE(store, nullptr);
  BatchRecord alices = Running("alices", 1);
  alices.owner = "alice";
  ASSERT_TRUE(store->CreateBatch(alices).ok());
  ASSERT_TRUE(Append(*store, "alices", Result(0)).ok());

  auto mine = store->GetBatch("alices", ReadScope::OwnedBy("alice"));
  ASSERT_TRUE(mine.ok()) << mine.status();
  EXPECT_EQ(mine->total(), 1u);
  auto my_page =
      store->ListResults("alices", ReadScope::OwnedBy("alice"), 0, 10);
  ASSERT_TRUE(my_page.ok()) << my_page.status();
  EXPECT_EQ(my_page->results.size(), 1u);
  // Without auth every batch is visible.
  EXPECT_TRUE(store->GetBatch("alices", kAnyOwner).ok());

  // Another owner gets exactly what an unknown id gets.
  for (const std::string owner : {"bob", "", "Alice"}) {
    absl::Status theirs =
        store->GetBatch("alices", ReadScope::OwnedBy(owner)).status();
    EXPECT_TRUE(absl::IsNotFound(theirs)) << owner << ": " << theirs;
    EXPECT_EQ(theirs.message(), "no batch with id 'alices'");
    absl::Status listed =
        store->ListResults("alices", ReadScope::OwnedBy(owner), 0, 10).status();
    EXPECT_TRUE(absl::IsNotFound(listed)) << owner << ": " << listed;
    EXPECT_EQ(listed.message(), "no batch with id 'alices'");
  }
  EXPECT_EQ(store->GetBatch("nope", kAnyOwner).status().message(),
            "no batch with id 'nope'");
  EXPECT_EQ(Sql("SELECT owner FROM batches WHERE batch_id = 'alices'"),
            "alice");
}

TEST_F(StoreTest, TakenIdIsAlreadyExistsWhoeverOwnsIt) {
  auto store = Open(Options());
  ASSERT_NE(store, nullptr);
  BatchRecord alices = Running("taken", 1);
  alices.owner = "alice";
  ASSERT_TRUE(store->CreateBatch(alices).ok());
  BatchRecord bobs = alices;
  bobs.owner = "bob";
  absl::Status again = store->CreateBatch(bobs);
  EXPECT_TRUE(absl::IsAlreadyExists(again)) << again;
  EXPECT_EQ(again.message(), "batch_id 'taken' already exists");
  EXPECT_EQ(Sql("SELECT owner FROM batches WHERE batch_id = 'taken'"), "alice");
}

// Migration 3 on a database that has batches already: they get the empty
// owner (created without auth), which no identity's scope matches.
TEST_F(StoreTest, OwnerMigrationKeepsExistingBatchesUnowned) {
  {
    auto store = Open(Options());
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->CreateBatch(Running("old", 1)).ok());
  }
  Sql("ALTER TABLE batches DROP COLUMN owner; "
      "DELETE FROM schema_migrations WHERE version = 3");
  auto store = Open(Options());
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM schema_migrations"),
            absl::StrCat(MysqlResultStore::LatestSchemaVersion()));
  EXPECT_EQ(Sql("SELECT CONCAT('[', owner, ']') FROM batches"), "[]");
  EXPECT_TRUE(store->GetBatch("old", kAnyOwner).ok());
  EXPECT_TRUE(absl::IsNotFound(
      store->GetBatch("old", ReadScope::OwnedBy("alice")).status()));
}

// Fix e: the live count binds v1::OUTCOME_OK instead of "outcome = 1".
TEST_F(StoreTest, RunningBatchCountsOutcomesLive) {
  auto store = Open(Options());
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Running("live", 10)).ok());
  ASSERT_TRUE(Append(*store, "live", Result(0)).ok());
  ASSERT_TRUE(Append(*store, "live", Result(1, v1::OUTCOME_HTTP_ERROR)).ok());
  ASSERT_TRUE(Append(*store, "live", Result(2, v1::OUTCOME_TIMEOUT)).ok());
  ASSERT_TRUE(Append(*store, "live", Result(3)).ok());
  auto summary = store->GetBatch("live", kAnyOwner);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->state(), v1::BATCH_STATE_RUNNING);
  EXPECT_EQ(summary->stored(), 4u);
  EXPECT_EQ(summary->succeeded(), 2u);
  EXPECT_EQ(summary->failed(), 2u);
  EXPECT_FALSE(summary->has_finished_at());
}

// Fix d: a DATETIME that is no valid time leaves the field unset instead of
// giving an out-of-range Timestamp.
TEST_F(StoreTest, ZeroDateLeavesTimestampUnset) {
  auto store = Open(Options());
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Running("zero", 1)).ok());
  Sql("SET SESSION sql_mode = ''; UPDATE batches SET created_at = "
      "'0000-00-00 00:00:00', finished_at = '0000-00-00 00:00:00', state = 2 "
      "WHERE batch_id = 'zero'");
  auto summary = store->GetBatch("zero", kAnyOwner);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_FALSE(summary->has_created_at()) << summary->ShortDebugString();
  EXPECT_FALSE(summary->has_finished_at()) << summary->ShortDebugString();
  EXPECT_EQ(summary->total(), 1u);
}

TEST_F(StoreTest, MigrationsAreRecorded) {
  auto store = Open(Options());
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(Sql("SELECT GROUP_CONCAT(version ORDER BY version) FROM "
                "schema_migrations"),
            "1,2,3,4,5,6,7,8");
  EXPECT_EQ(MysqlResultStore::LatestSchemaVersion(), 8);
}

// Fix b: a crash between migration 2's DDL and its record (simulated by
// deleting the record) used to make every later start fail with
// "Duplicate column name".
TEST_F(StoreTest, MigrationRerunsAfterItsRecordWasLost) {
  Open(Options()).reset();
  Sql("DELETE FROM schema_migrations WHERE version = 2");
  auto store = Open(Options());
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(Sql("SELECT GROUP_CONCAT(version ORDER BY version) FROM "
                "schema_migrations"),
            AllSchemaVersions());
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM information_schema.COLUMNS WHERE "
                "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'fetch_results'"),
            "18");
  ASSERT_TRUE(store->CreateBatch(Running("after", 1)).ok());
  ASSERT_TRUE(Append(*store, "after", Result(0)).ok());
  auto page = store->ListResults("after", kAnyOwner, 0, 10);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->results.size(), 1u);
  EXPECT_TRUE(page->results[0].has_timings());
}

// A crash in the middle of a multi-column step (some columns there).
TEST_F(StoreTest, MigrationAddsOnlyTheMissingColumns) {
  Open(Options()).reset();
  Sql("ALTER TABLE fetch_results DROP COLUMN total_us, DROP COLUMN tls_us; "
      "DELETE FROM schema_migrations WHERE version = 2");
  auto store = Open(Options());
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM information_schema.COLUMNS WHERE "
                "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'fetch_results' "
                "AND COLUMN_NAME IN ('tls_us', 'total_us')"),
            "2");
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM schema_migrations"),
            absl::StrCat(MysqlResultStore::LatestSchemaVersion()));
}

TEST_F(StoreTest, ReopeningIsANoOp) {
  Open(Options()).reset();
  Open(Options()).reset();
  auto store = Open(Options());
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM schema_migrations"),
            absl::StrCat(MysqlResultStore::LatestSchemaVersion()));
}

TEST_F(StoreTest, NewerSchemaIsRefused) {
  Open(Options()).reset();
  Sql("INSERT INTO schema_migrations VALUES (99, 'from the future', NOW(6))");
  auto store = MysqlResultStore::Open(Options());
  EXPECT_TRUE(absl::IsFailedPrecondition(store.status())) << store.status();
}

TEST_F(StoreTest, UnreachableDatabaseIsUnavailableAfterStartupWait) {
  MysqlResultStore::Options o = Options(/*port=*/1);
  o.startup_wait = absl::Seconds(1);
  const absl::Time start = absl::Now();
  auto store = MysqlResultStore::Open(o);
  EXPECT_TRUE(absl::IsUnavailable(store.status())) << store.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

// One row the database refuses fails only its own result.
TEST_F(StoreTest, PermanentErrorFailsOnlyTheBadRow) {
  auto store = Open(Options());
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Running("bad-row", 3)).ok());
  std::vector<std::unique_ptr<DoneWaiter>> waiters;
  for (uint32_t i = 0; i < 3; ++i) {
    auto r = Result(i);
    // Not valid utf8mb4: strict SQL mode refuses it (1366). (An oversized
    // value no longer fails: the writer cuts it to fit.)
    if (i == 1) r->set_error("bad \xFF byte");
    waiters.push_back(std::make_unique<DoneWaiter>());
    store->AppendResult("bad-row", r, absl::Now(), waiters.back()->Callback());
  }
  for (auto& w : waiters) ASSERT_TRUE(w->Wait(absl::Seconds(30)));
  EXPECT_TRUE(waiters[0]->status().ok()) << waiters[0]->status();
  EXPECT_TRUE(absl::IsInternal(waiters[1]->status())) << waiters[1]->status();
  EXPECT_TRUE(waiters[2]->status().ok()) << waiters[2]->status();
  EXPECT_EQ(Sql("SELECT GROUP_CONCAT(idx ORDER BY idx) FROM fetch_results "
                "WHERE batch_id = 'bad-row'"),
            "0,2");
}

// Every text column gets a value that fits it, whatever its size, under the
// strict SQL modes of both supported servers (their defaults): the row is
// stored, cut with a marker that gives the original size.
TEST_F(StoreTest, OversizedFieldsAreCutToFitTheirColumnsInStrictMode) {
  const std::string url = "http://h/" + std::string(70000 - 9, 'u');
  const std::string final_url = "http://f/" + std::string(100000 - 9, 'f');
  const std::string error(9000, 'e');
  std::string content_type = "application/json; x=";
  content_type.resize(300, 'c');
  int batches = 0;
  for (const char* sql_mode :
       {// MariaDB 10.11's default
        "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,"
        "NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION",
        // MySQL 8's default
        "ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
        "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"}) {
    SCOPED_TRACE(sql_mode);
    // Global: the store's own (new) connections get it.
    ASSERT_TRUE(
        db_->Execute(absl::StrCat("SET GLOBAL sql_mode = '", sql_mode, "'"))
            .ok());
    auto store = Open(Options());
    ASSERT_NE(store, nullptr);
    const std::string id = absl::StrCat("oversized-", ++batches);
    ASSERT_TRUE(store->CreateBatch(Running(id, 1)).ok());
    auto r = Result(0, v1::OUTCOME_INVALID_REQUEST);
    r->set_url(url);
    r->set_final_url(final_url);
    r->set_error(error);
    r->set_content_type(content_type);
    absl::Status appended = Append(*store, id, r);
    ASSERT_TRUE(appended.ok()) << appended;
    auto page = store->ListResults(id, kAnyOwner, 0, 10);
    ASSERT_TRUE(page.ok()) << page.status();
    ASSERT_EQ(page->results.size(), 1u);
    const v1::FetchResult& stored = page->results[0];
    EXPECT_EQ(stored.url().size(), kMaxStoredUrlBytes);
    EXPECT_EQ(stored.url(), FitColumn(url, kMaxStoredUrlBytes));
    EXPECT_TRUE(absl::EndsWith(stored.url(), "[truncated: 70000 bytes]"));
    EXPECT_TRUE(
        absl::EndsWith(stored.final_url(), "[truncated: 100000 bytes]"));
    EXPECT_EQ(stored.final_url().size(), kMaxStoredUrlBytes);
    EXPECT_EQ(stored.error().size(), kMaxStoredErrorBytes);
    EXPECT_TRUE(absl::EndsWith(stored.error(), "[truncated: 9000 bytes]"));
    EXPECT_EQ(stored.content_type().size(), kMaxStoredContentTypeBytes);
    EXPECT_TRUE(
        absl::EndsWith(stored.content_type(), "[truncated: 300 bytes]"));
    store.reset();
  }
  ASSERT_TRUE(db_->Execute("SET GLOBAL sql_mode = DEFAULT").ok());
}

TEST_F(StoreTest, ReconnectsAfterItsConnectionsAreKilled) {
  auto store = Open(Options());
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Running("killed", 2)).ok());
  ASSERT_TRUE(Append(*store, "killed", Result(0)).ok());
  auto ids = db_->Execute(
      absl::StrCat("SELECT id FROM information_schema.processlist WHERE db='",
                   database_, "' AND id <> CONNECTION_ID()"));
  ASSERT_TRUE(ids.ok()) << ids.status();
  int killed = 0;
  for (absl::string_view id : absl::StrSplit(*ids, '\n', absl::SkipEmpty())) {
    if (db_->Execute(absl::StrCat("KILL ", id)).ok()) ++killed;
  }
  EXPECT_GE(killed, 2);  // the writer's and the pooled reader's
  EXPECT_TRUE(Append(*store, "killed", Result(1)).ok());
  auto summary = store->GetBatch("killed", kAnyOwner);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->stored(), 2u);
}

// The connection drops while the writer sends COMMIT: the server rolls the
// group back, so its rows must not be acknowledged; the writer reconnects
// and replays them. Connector/C++ 1.1's sql::Connection::commit() ignores
// the failure, and the writer used to ack every row OK although none was
// stored (seen once as stored=60 in the summary but 57 rows in MySQL).
TEST_F(StoreTest, CreateBatchWhoseAnswerWasLostIsNotATakenId) {
  // The INSERT reaches the server and commits, but its answer is lost: the
  // retry on a fresh connection finds our own row, which is success, not
  // ALREADY_EXISTS.
  auto proxy = TcpBlackHoleProxy::Start(db_->port());
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  auto store = Open(Options((*proxy)->port()));
  ASSERT_NE(store, nullptr);
  // The execute packet carries the id (the prepare does not).
  (*proxy)->CutAfterClientBytes("answer-lost");
  EXPECT_TRUE(store->CreateBatch(Running("answer-lost", 2)).ok());
  EXPECT_EQ((*proxy)->cuts(), 1);
  // Someone else's row with that id is still taken.
  BatchRecord other = Running("answer-lost", 5);
  EXPECT_TRUE(absl::IsAlreadyExists(store->CreateBatch(other)));
}

TEST_F(StoreTest, CommitLostInFlightIsReplayedNotAcknowledged) {
  auto proxy = TcpBlackHoleProxy::Start(db_->port());
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  auto store = Open(Options((*proxy)->port()));
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Running("lost-commit", 3)).ok());
  // COM_QUERY (0x03) "COMMIT": only the writer sends it.
  const std::string commit_packet = std::string("\x03") + "COMMIT";

  (*proxy)->CutOnClientBytes(commit_packet);
  std::vector<std::unique_ptr<DoneWaiter>> waiters;
  for (uint32_t i = 0; i < 3; ++i) {
    waiters.push_back(std::make_unique<DoneWaiter>());
    store->AppendResult("lost-commit", Result(i), absl::Now(),
                        waiters.back()->Callback());
  }
  for (auto& w : waiters) {
    ASSERT_TRUE(w->Wait(absl::Seconds(30)));
    EXPECT_TRUE(w->status().ok()) << w->status();
  }
  EXPECT_EQ((*proxy)->cuts(), 1);
  // Acked OK means committed: visible to any new connection.
  EXPECT_EQ(Sql("SELECT GROUP_CONCAT(idx ORDER BY idx) FROM fetch_results "
                "WHERE batch_id = 'lost-commit'"),
            "0,1,2");

  // The same for the final batch row.
  (*proxy)->CutOnClientBytes(commit_packet);
  BatchRecord finish = Running("lost-commit", 3);
  finish.state = v1::BATCH_STATE_DONE;
  finish.succeeded = 3;
  finish.stored = 3;
  finish.finished_at = absl::Now();
  DoneWaiter finished;
  store->FinishBatch(finish, finished.Callback());
  ASSERT_TRUE(finished.Wait(absl::Seconds(30)));
  EXPECT_TRUE(finished.status().ok()) << finished.status();
  EXPECT_EQ((*proxy)->cuts(), 2);
  EXPECT_EQ(Sql("SELECT state, `stored` FROM batches "
                "WHERE batch_id = 'lost-commit'"),
            absl::StrCat(static_cast<int>(v1::BATCH_STATE_DONE), "\t3"));
}

// autocommit = false is applied by a statement whose failure is seen, and
// it holds on the session.
TEST_F(StoreTest, SessionWithoutAutocommitReallyHasItOff) {
  Open(Options()).reset();  // creates the database
  MysqlSession::Options o = testing::SessionOptions(*db_, database_);
  o.autocommit = false;
  auto session = MysqlSession::Connect(o);
  ASSERT_TRUE(session.ok()) << session.status();
  std::string autocommit;
  MysqlStatus status = MysqlSession::Guard("reading @@autocommit", [&] {
    auto rs = (*session)->Query("SELECT @@session.autocommit");
    if (rs->next()) autocommit = rs->getString(1).asStdString();
    return absl::OkStatus();
  });
  ASSERT_TRUE(status.ok()) << status.status;
  EXPECT_EQ(autocommit, "0");
}

TEST_F(StoreTest, ReadPoolNeverOpensMoreThanItsBound) {
  Open(Options()).reset();  // migrate
  MysqlReader::Options o;
  o.session = testing::SessionOptions(*db_, database_);
  o.max_read_connections = 2;
  MysqlReader reader(o);
  ASSERT_TRUE(reader.CreateBatch(Running("pool", 1)).ok());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        if (!reader.GetBatch("pool", kAnyOwner).ok()) ++failures;
        if (!reader.ListResults("pool", kAnyOwner, 0, 10).ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_LE(reader.peak_open_connections(), 2);
  EXPECT_GE(reader.peak_open_connections(), 1);
  EXPECT_LE(reader.open_connections(), 2);
}

// The seam a spooling decorator will use: a group the writer gives up on
// goes to the handler instead of failing.
TEST_F(StoreTest, GivenUpGroupsGoToTheHandler) {
  auto proxy = TcpBlackHoleProxy::Start(db_->port());
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  absl::Mutex mu;
  std::vector<WriteOp> taken;
  absl::Status given_up_with;
  MysqlResultStore::Options o = Options((*proxy)->port());
  o.io_timeout = absl::Seconds(1);
  o.connect_timeout = absl::Seconds(1);
  o.retry_budget = absl::Seconds(2);
  o.on_group_given_up = [&](std::vector<WriteOp>&& group,
                            const absl::Status& status) {
    absl::MutexLock lock(&mu);
    for (WriteOp& op : group) taken.push_back(std::move(op));
    given_up_with = status;
  };
  auto store = Open(o);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Running("spool", 1)).ok());
  (*proxy)->StartBlackHole();
  DoneWaiter waiter;
  store->AppendResult("spool", Result(0), absl::Now(), waiter.Callback());
  {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(mu.AwaitWithTimeout(
        absl::Condition(
            +[](std::vector<WriteOp>* v) { return !v->empty(); }, &taken),
        absl::Seconds(20)));
    ASSERT_EQ(taken.size(), 1u);
    EXPECT_EQ(taken[0].batch_id, "spool");
    EXPECT_EQ(taken[0].result->index(), 0u);
    EXPECT_TRUE(absl::IsUnavailable(given_up_with)) << given_up_with;
  }
  EXPECT_FALSE(waiter.Wait(absl::ZeroDuration()));  // the handler owns it now
  std::move(taken[0].done)(ResultStore::Durability::kCommitted);
  EXPECT_TRUE(waiter.Wait(absl::ZeroDuration()));
}

// Fix a: without read/write timeouts a half-open connection hung the writer
// (and with it the store's destructor) forever.
TEST_F(StoreTest, BlackHoledDatabaseFailsWritesAndShutdownIsPrompt) {
  auto proxy = TcpBlackHoleProxy::Start(db_->port());
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  MysqlResultStore::Options o = Options((*proxy)->port());
  o.io_timeout = absl::Seconds(1);
  o.connect_timeout = absl::Seconds(1);
  o.retry_budget = absl::Seconds(3);
  auto store = Open(o);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Running("hole", 2)).ok());
  ASSERT_TRUE(Append(*store, "hole", Result(0)).ok());  // writer connected

  (*proxy)->StartBlackHole();
  const absl::Time start = absl::Now();
  DoneWaiter waiter;
  store->AppendResult("hole", Result(1), absl::Now(), waiter.Callback());
  if (!waiter.Wait(absl::Seconds(20))) {
    store.release();  // leaked: destroying it would hang too
    FAIL() << "the writer hangs";
  }
  EXPECT_FALSE(waiter.status().ok());
  EXPECT_TRUE(absl::IsUnavailable(waiter.status())) << waiter.status();
  EXPECT_LT(waiter.at() - start, absl::Seconds(10));

  // Reads fail too, instead of hanging on a pooled connection.
  const absl::Time read_start = absl::Now();
  auto summary = store->GetBatch("hole", kAnyOwner);
  EXPECT_TRUE(absl::IsUnavailable(summary.status())) << summary.status();
  EXPECT_LT(absl::Now() - read_start, absl::Seconds(10));

  EXPECT_TRUE(DestroyWithin(std::move(store), absl::Seconds(5)))
      << "~MysqlResultStore hangs";
}

// Shutdown while a write is stuck on a half-open connection: the drain is
// bounded by about one retry budget.
TEST_F(StoreTest, DestructorDrainsPromptlyWhileAWriteIsStuck) {
  auto proxy = TcpBlackHoleProxy::Start(db_->port());
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  MysqlResultStore::Options o = Options((*proxy)->port());
  o.io_timeout = absl::Seconds(1);
  o.connect_timeout = absl::Seconds(1);
  o.retry_budget = absl::Seconds(3);
  // One op per group, so the drain has several groups to give up.
  o.max_group_rows = 1;
  auto store = Open(o);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Running("stuck", 3)).ok());
  ASSERT_TRUE(Append(*store, "stuck", Result(0)).ok());

  (*proxy)->StartBlackHole();
  DoneWaiter first, second;
  store->AppendResult("stuck", Result(1), absl::Now(), first.Callback());
  store->AppendResult("stuck", Result(2), absl::Now(), second.Callback());
  BatchRecord finish = Running("stuck", 3);
  finish.state = v1::BATCH_STATE_DONE;
  finish.finished_at = absl::Now();
  DoneWaiter finished;
  store->FinishBatch(finish, finished.Callback());

  const absl::Time start = absl::Now();
  ASSERT_TRUE(DestroyWithin(std::move(store), absl::Seconds(20)))
      << "~MysqlResultStore hangs";
  // About one budget plus one try's timeouts, not one budget per group.
  EXPECT_LT(absl::Now() - start, absl::Seconds(8));
  for (DoneWaiter* w : {&first, &second, &finished}) {
    ASSERT_TRUE(w->Wait(absl::ZeroDuration()));
    EXPECT_TRUE(absl::IsUnavailable(w->status())) << w->status();
  }
}

// The server's drain starts the store's drain early (before the reactors wait
// for their acks): queued groups against a black-holed database share one
// budget from StartDraining, instead of one budget each, while the store
// is still alive.
TEST_F(StoreTest, StartDrainingGivesUpQueuedWritesWithinAboutOneBudget) {
  auto proxy = TcpBlackHoleProxy::Start(db_->port());
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  MysqlResultStore::Options o = Options((*proxy)->port());
  o.io_timeout = absl::Seconds(1);
  o.connect_timeout = absl::Seconds(1);
  o.retry_budget = absl::Seconds(3);
  o.max_group_rows = 1;  // one group per op: five budgets without the drain
  auto store = Open(o);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Running("draining", 6)).ok());
  ASSERT_TRUE(Append(*store, "draining", Result(0)).ok());

  (*proxy)->StartBlackHole();
  std::vector<std::unique_ptr<DoneWaiter>> waiters;
  for (uint32_t i = 1; i <= 5; ++i) {
    waiters.push_back(std::make_unique<DoneWaiter>());
    store->AppendResult("draining", Result(i), absl::Now(),
                        waiters.back()->Callback());
  }
  const absl::Time start = absl::Now();
  store->StartDraining();
  // About one budget plus one try's timeouts.
  const absl::Time limit = start + absl::Seconds(8);
  for (auto& w : waiters) {
    ASSERT_TRUE(w->Wait(std::max(limit - absl::Now(), absl::ZeroDuration())))
        << "a queued write was not given up within about one budget of "
           "StartDraining";
    EXPECT_TRUE(absl::IsUnavailable(w->status())) << w->status();
  }
  EXPECT_TRUE(DestroyWithin(std::move(store), absl::Seconds(5)));
}

// --- StoreStats: what the writer counts for the metrics endpoint ---------

TEST_F(StoreTest, WriterCountsCommittedRowsAndTheirCommitTime) {
  StoreStats stats;
  MysqlResultStore::Options o = Options();
  o.stats = &stats;
  auto store = Open(o);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Running("counted", 3)).ok());
  for (uint32_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(Append(*store, "counted", Result(i)).ok());
  }
  DoneWaiter finished;
  store->FinishBatch(Running("counted", 3), finished.Callback());
  ASSERT_TRUE(finished.Wait(absl::Seconds(30)));
  EXPECT_EQ(stats.rows.value(), 3u);  // result rows, not the batch update
  EXPECT_GE(stats.commit_seconds.snapshot().count, 2u);
  EXPECT_EQ(stats.errors.value(), 0u);
  EXPECT_EQ(stats.queue_depth.value(), 0);
}

TEST_F(StoreTest, WriterCountsFailedWritesAndNotTheRowsTheyFailed) {
  StoreStats stats;
  MysqlResultStore::Options o = Options();
  o.stats = &stats;
  auto store = Open(o);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Running("bad-counted", 3)).ok());
  std::vector<std::unique_ptr<DoneWaiter>> waiters;
  for (uint32_t i = 0; i < 3; ++i) {
    auto r = Result(i);
    if (i == 1) r->set_error("bad \xFF byte");  // refused: not utf8mb4
    waiters.push_back(std::make_unique<DoneWaiter>());
    store->AppendResult("bad-counted", r, absl::Now(),
                        waiters.back()->Callback());
  }
  for (auto& w : waiters) ASSERT_TRUE(w->Wait(absl::Seconds(30)));
  EXPECT_EQ(stats.rows.value(), 2u);
  // The bad row fails once alone, and once more if it shared a group.
  EXPECT_GE(stats.errors.value(), 1u);
  EXPECT_LE(stats.errors.value(), 2u);
}

TEST_F(StoreTest, QueueDepthCountsWritesWaitingBehindAStuckGroup) {
  auto proxy = TcpBlackHoleProxy::Start(db_->port());
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  StoreStats stats;
  MysqlResultStore::Options o = Options((*proxy)->port());
  o.io_timeout = absl::Seconds(1);
  o.connect_timeout = absl::Seconds(1);
  o.retry_budget = absl::Seconds(3);
  o.stats = &stats;
  auto store = Open(o);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Running("deep", 4)).ok());
  ASSERT_TRUE(Append(*store, "deep", Result(0)).ok());  // writer connected
  (*proxy)->StartBlackHole();
  std::vector<std::unique_ptr<DoneWaiter>> waiters;
  const auto append = [&](uint32_t index) {
    waiters.push_back(std::make_unique<DoneWaiter>());
    store->AppendResult("deep", Result(index), absl::Now(),
                        waiters.back()->Callback());
  };
  append(1);
  // The writer takes it and is stuck on the silent connection (>= 1 s).
  const absl::Time give_up = absl::Now() + absl::Seconds(5);
  while (stats.queue_depth.value() != 0 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  append(2);
  append(3);
  EXPECT_EQ(stats.queue_depth.value(), 2);
  for (auto& w : waiters) ASSERT_TRUE(w->Wait(absl::Seconds(30)));
  EXPECT_EQ(stats.rows.value(), 1u);
  EXPECT_GE(stats.errors.value(), 1u);
  EXPECT_EQ(stats.queue_depth.value(), 0);
  EXPECT_TRUE(DestroyWithin(std::move(store), absl::Seconds(10)));
}

// ---- Batch leases (migration 5, MysqlLeases) ----

// A store acting as replica `replica_id` with a `lease` long lease.
MysqlResultStore::Options AsReplica(MysqlResultStore::Options o,
                                    const std::string& replica_id,
                                    absl::Duration lease = absl::Seconds(30)) {
  o.replica_id = replica_id;
  o.lease_duration = lease;
  return o;
}

// Moves a batch's lease into the past (as if its owner stopped renewing).
std::string ExpireLeaseSql(const std::string& batch_id) {
  return absl::StrCat(
      "UPDATE batches SET lease_expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 "
      "MINUTE WHERE batch_id = '",
      batch_id, "'");
}

// How far a batch's lease lies ahead of the database's clock, in seconds.
std::string LeaseSecondsLeftSql(const std::string& batch_id) {
  return absl::StrCat(
      "SELECT ROUND(TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), "
      "lease_expires_at) / 1000000) FROM batches WHERE batch_id = '",
      batch_id, "'");
}

void FinishAs(ResultStore& store, BatchRecord record, v1::BatchState state) {
  record.state = state;
  record.finished_at = absl::Now();
  DoneWaiter finish;
  store.FinishBatch(record, finish.Callback());
  ASSERT_TRUE(finish.Wait(absl::Seconds(30)));
  ASSERT_TRUE(finish.status().ok()) << finish.status();
}

TEST_F(StoreTest, CreateBatchLeasesTheBatchToThisReplicaByTheDatabaseClock) {
  auto store = Open(AsReplica(Options(), "replica-a", absl::Seconds(20)));
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateBatch(Running("leased", 1)).ok());
  EXPECT_EQ(Sql("SELECT lease_owner FROM batches WHERE batch_id = 'leased'"),
            "replica-a");
  EXPECT_EQ(Sql(LeaseSecondsLeftSql("leased")), "20");
}

TEST_F(StoreTest, WithoutAReplicaIdTheStoreMakesAUniqueOne) {
  auto first = Open(Options());
  auto second = Open(Options());
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(first->CreateBatch(Running("one", 1)).ok());
  ASSERT_TRUE(second->CreateBatch(Running("two", 1)).ok());
  const std::string owner_one =
      Sql("SELECT lease_owner FROM batches WHERE batch_id = 'one'");
  const std::string owner_two =
      Sql("SELECT lease_owner FROM batches WHERE batch_id = 'two'");
  EXPECT_FALSE(owner_one.empty());
  EXPECT_NE(owner_one, owner_two);
  EXPECT_TRUE(absl::StrContains(owner_one, absl::StrCat("-", getpid(), "-")))
      << owner_one;
  EXPECT_LE(MysqlResultStore::NewReplicaId().size(), 64u);
}

TEST_F(StoreTest, RenewLeasesExtendsOnlyThisReplicasRunningBatches) {
  auto a = Open(AsReplica(Options(), "replica-a", absl::Seconds(40)));
  auto b = Open(AsReplica(Options(), "replica-b", absl::Seconds(40)));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(a->CreateBatch(Running("a-running", 1)).ok());
  ASSERT_TRUE(a->CreateBatch(Running("a-done", 1)).ok());
  FinishAs(*a, Running("a-done", 1), v1::BATCH_STATE_DONE);
  ASSERT_TRUE(b->CreateBatch(Running("b-running", 1)).ok());
  for (const char* id : {"a-running", "a-done", "b-running"}) {
    Sql(
        absl::StrCat("UPDATE batches SET lease_expires_at = UTC_TIMESTAMP(6) "
                     "+ INTERVAL 5 SECOND WHERE batch_id = '",
                     id, "'"));
  }
  ASSERT_TRUE(a->RenewLeases().ok());
  EXPECT_EQ(Sql(LeaseSecondsLeftSql("a-running")), "40");
  EXPECT_EQ(Sql(LeaseSecondsLeftSql("a-done")), "5");
  EXPECT_EQ(Sql(LeaseSecondsLeftSql("b-running")), "5");
}

TEST_F(StoreTest, OnlyBatchesRunningInThisProcessKeepTheirLease) {
  auto a = Open(AsReplica(Options(), "replica-a", absl::Seconds(40)));
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(a->CreateBatch(Running("live", 1)).ok());
  // A final row the store acknowledged but that left the row RUNNING (as
  // when it could not be written): the batch no longer runs here.
  ASSERT_TRUE(a->CreateBatch(Running("ended", 1)).ok());
  FinishAs(*a, Running("ended", 1), v1::BATCH_STATE_RUNNING);
  // A spooled creation replayed after its process died.
  BatchRecord orphan = Running("orphan", 1);
  orphan.orphaned = true;
  ASSERT_TRUE(a->CreateBatch(orphan).ok());
  for (const char* id : {"live", "ended"}) Sql(ExpireLeaseSql(id));

  // The sweep leaves this process's live batch alone (it is only late),
  // and takes the ones nothing runs, even though this replica owns them.
  absl::SleepFor(absl::Milliseconds(20));  // NOW(6) passes the orphan's
  auto interrupted = a->InterruptExpiredLeases();
  ASSERT_TRUE(interrupted.ok()) << interrupted.status();
  std::vector<std::string> got = *interrupted;
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"ended", "orphan"}));
  ASSERT_TRUE(a->RenewLeases().ok());
  EXPECT_EQ(Sql(LeaseSecondsLeftSql("live")), "40");
}

TEST_F(StoreTest, InterruptExpiredLeasesMarksOnlyExpiredForeignRunningBatches) {
  auto a = Open(AsReplica(Options(), "replica-a"));
  auto b = Open(AsReplica(Options(), "replica-b"));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  for (const char* id : {"a-expired", "a-live", "a-done", "a-cancelled"}) {
    ASSERT_TRUE(a->CreateBatch(Running(id, 1)).ok());
  }
  ASSERT_TRUE(b->CreateBatch(Running("b-own-expired", 1)).ok());
  FinishAs(*a, Running("a-done", 1), v1::BATCH_STATE_DONE);
  FinishAs(*a, Running("a-cancelled", 1), v1::BATCH_STATE_CANCELLED);
  ASSERT_TRUE(Append(*a, "a-expired", Result(0)).ok());
  // A batch from before migration 5 has no lease: never touched.
  ASSERT_TRUE(a->CreateBatch(Running("pre-lease", 1)).ok());
  Sql("UPDATE batches SET lease_expires_at = NULL, lease_owner = '' "
      "WHERE batch_id = 'pre-lease'");
  for (const char* id :
       {"a-expired", "a-done", "a-cancelled", "b-own-expired"}) {
    Sql(ExpireLeaseSql(id));
  }

  auto interrupted = b->InterruptExpiredLeases();
  ASSERT_TRUE(interrupted.ok()) << interrupted.status();
  EXPECT_EQ(*interrupted, std::vector<std::string>{"a-expired"});

  auto summary = b->GetBatch("a-expired", kAnyOwner);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->state(), v1::BATCH_STATE_INTERRUPTED);
  EXPECT_TRUE(absl::StartsWith(summary->state_reason(),
                               "lease of replica replica-a expired at "))
      << summary->state_reason();
  EXPECT_TRUE(absl::EndsWith(summary->state_reason(),
                             ": the replica stopped (crash or lost database)"))
      << summary->state_reason();
  // Its counters were never written: what is stored is counted live.
  EXPECT_EQ(summary->stored(), 1u);
  EXPECT_EQ(summary->succeeded(), 1u);

  EXPECT_EQ(b->GetBatch("a-live", kAnyOwner)->state(), v1::BATCH_STATE_RUNNING);
  EXPECT_EQ(b->GetBatch("a-done", kAnyOwner)->state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(b->GetBatch("a-cancelled", kAnyOwner)->state(),
            v1::BATCH_STATE_CANCELLED);
  EXPECT_EQ(b->GetBatch("b-own-expired", kAnyOwner)->state(),
            v1::BATCH_STATE_RUNNING);
  EXPECT_EQ(b->GetBatch("pre-lease", kAnyOwner)->state(),
            v1::BATCH_STATE_RUNNING);
  EXPECT_EQ(b->GetBatch("a-live", kAnyOwner)->state_reason(), "");

  // Once interrupted, a batch is neither returned again nor renewed back.
  auto again = b->InterruptExpiredLeases();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->empty());
  ASSERT_TRUE(a->RenewLeases().ok());
  EXPECT_EQ(b->GetBatch("a-expired", kAnyOwner)->state(),
            v1::BATCH_STATE_INTERRUPTED);
}

TEST_F(StoreTest, ReplicasSweepingAtOnceInterruptEachBatchExactlyOnce) {
  auto a = Open(AsReplica(Options(), "replica-a"));
  ASSERT_NE(a, nullptr);
  constexpr int kBatches = 60;
  for (int i = 0; i < kBatches; ++i) {
    ASSERT_TRUE(a->CreateBatch(Running(absl::StrCat("x", i), 1)).ok());
  }
  Sql("UPDATE batches SET lease_expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 "
      "MINUTE");
  std::vector<std::unique_ptr<MysqlResultStore>> sweepers;
  for (int i = 0; i < 4; ++i) {
    sweepers.push_back(Open(AsReplica(Options(), absl::StrCat("sweeper-", i))));
    ASSERT_NE(sweepers.back(), nullptr);
  }
  std::vector<std::vector<std::string>> found(sweepers.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < sweepers.size(); ++i) {
    threads.emplace_back([&, i] {
      MysqlSession::ThreadInit();
      auto ids = sweepers[i]->InterruptExpiredLeases();
      EXPECT_TRUE(ids.ok()) << ids.status();
      if (ids.ok()) found[i] = *ids;
      MysqlSession::ThreadEnd();
    });
  }
  for (std::thread& t : threads) t.join();
  std::vector<std::string> all;
  for (const auto& ids : found) all.insert(all.end(), ids.begin(), ids.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all.size(), static_cast<size_t>(kBatches));
  EXPECT_EQ(std::unique(all.begin(), all.end()), all.end());  // no repeats
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM batches WHERE state = 5"),
            absl::StrCat(kBatches));
}

// A live owner that was wrongly interrupted (it lost the database for
// longer than its lease) finishes its batch normally.
TEST_F(StoreTest, FinishBatchAfterInterruptedWinsAndClearsTheReason) {
  auto a = Open(AsReplica(Options(), "replica-a"));
  auto b = Open(AsReplica(Options(), "replica-b"));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(a->CreateBatch(Running("slow", 2)).ok());
  Sql(ExpireLeaseSql("slow"));
  auto interrupted = b->InterruptExpiredLeases();
  ASSERT_TRUE(interrupted.ok()) << interrupted.status();
  ASSERT_EQ(*interrupted, std::vector<std::string>{"slow"});

  ASSERT_TRUE(Append(*a, "slow", Result(0)).ok());
  ASSERT_TRUE(Append(*a, "slow", Result(1)).ok());
  BatchRecord done = Running("slow", 2);
  done.succeeded = 2;
  done.stored = 2;
  FinishAs(*a, done, v1::BATCH_STATE_DONE);
  auto summary = b->GetBatch("slow", kAnyOwner);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(summary->state_reason(), "");
  EXPECT_EQ(summary->stored(), 2u);
}

TEST_F(StoreTest, LeaseMigrationRerunsAfterItsRecordWasLost) {
  Open(Options()).reset();
  Sql("DELETE FROM schema_migrations WHERE version = 5");
  auto store = Open(Options());
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(Sql("SELECT COUNT(DISTINCT INDEX_NAME) FROM "
                "information_schema.STATISTICS WHERE TABLE_SCHEMA = "
                "DATABASE() AND TABLE_NAME = 'batches' AND INDEX_NAME = "
                "'batches_state_lease'"),
            "1");
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM schema_migrations WHERE version = 5"),
            "1");
}

}  // namespace
}  // namespace batchfetch

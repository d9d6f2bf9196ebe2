// SpoolingResultStore over a scripted inner store (no database): what MySQL
// cannot take is spooled durably and acknowledged kSpooled, a batch can
// start while the database is away, replay goes in append order and is
// idempotent, a full spool parks writes and refuses new batches, and a
// spooled batch never mixes into another batch that took its id.

#include "service/store/spooling_result_store.h"

#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace batchfetch {
namespace {

using Durability = ResultStore::Durability;
using WriteOutcome = ResultStore::WriteOutcome;

std::string MakeTempDir() {
  std::string pattern = ::testing::TempDir() + "/spooling_store_XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp";
  return pattern;
}

// The database as the spooling store sees it. "Up": writes are queued
// until the test commits them (or commits at once with `auto_commit`);
// "down": CreateBatch and Ping answer UNAVAILABLE. Thread-safe: the
// replayer and spooler threads call it.
class ScriptedInner : public ResultStore {
 public:
  struct Row {
    std::string owner;
    absl::Time created_at;
    bool finished = false;
    std::map<uint32_t, std::string> results;  // index -> url (first kept)
  };

  absl::Status CreateBatch(const BatchRecord& batch) override {
    absl::MutexLock lock(&mu_);
    events_.push_back("create " + batch.batch_id);
    if (!up_) return absl::UnavailableError("connection refused");
    if (rows_.count(batch.batch_id) != 0) {
      return absl::AlreadyExistsError("taken");
    }
    rows_[batch.batch_id] = Row{batch.owner, batch.created_at, false, {}};
    return absl::OkStatus();
  }
  void AppendResult(const std::string& batch_id,
                    std::shared_ptr<const v1::FetchResult> result, absl::Time,
                    Done done) override {
    absl::MutexLock lock(&mu_);
    events_.push_back("result " + batch_id + "/" +
                      std::to_string(result->index()));
    if (give_up_at_once_) {
      // The writer gives it up at once (the database is gone again).
      std::vector<WriteOp> group;
      group.push_back(WriteOp::Result(batch_id, std::move(result),
                                      absl::UnixEpoch(), std::move(done)));
      given_up_(std::move(group), absl::UnavailableError("gone again"));
      return;
    }
    if (refuse_index_ >= 0 &&
        result->index() == static_cast<uint32_t>(refuse_index_)) {
      // A row MySQL refuses for good (the writer isolates and fails it).
      std::move(done)(absl::InvalidArgumentError("Data too long"));
      return;
    }
    Pending p{batch_id, std::move(result), {}, std::move(done)};
    pending_.push_back(std::move(p));
    if (auto_commit_) CommitAllLocked();
  }
  void FinishBatch(const BatchRecord& batch, Done done) override {
    absl::MutexLock lock(&mu_);
    events_.push_back("finish " + batch.batch_id);
    pending_.push_back(
        Pending{batch.batch_id, nullptr, batch, std::move(done)});
    if (auto_commit_) CommitAllLocked();
  }
  absl::StatusOr<v1::BatchSummary> GetBatch(const std::string& batch_id,
                                            const ReadScope& scope) override {
    absl::MutexLock lock(&mu_);
    if (!up_) return absl::UnavailableError("connection refused");
    auto it = rows_.find(batch_id);
    if (it == rows_.end() ||
        (scope.owner.has_value() && *scope.owner != it->second.owner)) {
      return absl::NotFoundError("no such batch");
    }
    v1::BatchSummary summary;
    summary.set_batch_id(batch_id);
    const int64_t micros = absl::ToUnixMicros(it->second.created_at);
    summary.mutable_created_at()->set_seconds(micros / 1000000);
    summary.mutable_created_at()->set_nanos(
        static_cast<int32_t>(micros % 1000000) * 1000);
    return summary;
  }
  absl::StatusOr<ResultPage> ListResults(const std::string&, const ReadScope&,
                                         uint32_t, uint32_t) override {
    return absl::UnimplementedError("not used");
  }
  absl::Status Ping() override {
    absl::MutexLock lock(&mu_);
    return up_ ? absl::OkStatus() : absl::UnavailableError("down");
  }
  absl::Status RecountStored(const std::string& batch_id) override {
    absl::MutexLock lock(&mu_);
    events_.push_back("recount " + batch_id);
    return absl::OkStatus();
  }

  // What the inner writer does after its retry budget: hands every queued
  // write to the spooling store's handler.
  void GiveUpAll() {
    std::vector<WriteOp> group;
    {
      absl::MutexLock lock(&mu_);
      for (Pending& p : pending_) {
        group.push_back(
            p.result != nullptr
                ? WriteOp::Result(p.batch_id, std::move(p.result),
                                  absl::UnixEpoch(), std::move(p.done))
                : WriteOp::FinishBatch(p.record, std::move(p.done)));
      }
      pending_.clear();
    }
    given_up_(std::move(group), absl::UnavailableError("MySQL away"));
  }
  void CommitAll() {
    absl::MutexLock lock(&mu_);
    CommitAllLocked();
  }

  void set_up(bool up) {
    absl::MutexLock lock(&mu_);
    up_ = up;
  }
  void set_give_up_at_once(bool on) {
    absl::MutexLock lock(&mu_);
    give_up_at_once_ = on;
  }
  void set_refuse_index(int64_t index) {
    absl::MutexLock lock(&mu_);
    refuse_index_ = index;
  }
  void set_auto_commit(bool on) {
    absl::MutexLock lock(&mu_);
    auto_commit_ = on;
    if (on) CommitAllLocked();
  }
  std::vector<std::string> TakeEvents() {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> out;
    out.swap(events_);
    return out;
  }
  std::map<uint32_t, std::string> Results(const std::string& batch_id) {
    absl::MutexLock lock(&mu_);
    return rows_[batch_id].results;
  }
  bool Finished(const std::string& batch_id) {
    absl::MutexLock lock(&mu_);
    return rows_[batch_id].finished;
  }
  void AddRow(const std::string& batch_id, const std::string& owner,
              absl::Time created_at = absl::FromUnixSeconds(1)) {
    absl::MutexLock lock(&mu_);
    rows_[batch_id] = Row{owner, created_at, false, {}};
  }

  GivenUpHandler given_up_;

 private:
  struct Pending {
    std::string batch_id;
    std::shared_ptr<const v1::FetchResult> result;
    BatchRecord record;
    Done done;
  };
  void CommitAllLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (Pending& p : pending_) {
      Row& row = rows_[p.batch_id];
      if (p.result != nullptr) {
        row.results.emplace(p.result->index(), p.result->url());
      } else {
        row.finished = true;
      }
      std::move(p.done)(Durability::kCommitted);
    }
    pending_.clear();
  }

  absl::Mutex mu_;
  bool up_ = true;
  bool give_up_at_once_ = false;
  int64_t refuse_index_ = -1;
  bool auto_commit_ = false;
  std::vector<Pending> pending_;
  std::vector<std::string> events_;
  std::map<std::string, Row> rows_;
};

// Collects one write's outcome.
struct Outcome {
  absl::Mutex mu;
  std::optional<WriteOutcome> got;
  ResultStore::Done Callback() {
    return [this](WriteOutcome outcome) {
      absl::MutexLock lock(&mu);
      got = std::move(outcome);
    };
  }
  bool Wait(absl::Duration timeout = absl::Seconds(10)) {
    absl::MutexLock lock(&mu);
    auto has = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return got.has_value();
    };
    return mu.AwaitWithTimeout(absl::Condition(&has), timeout);
  }
  bool Has() {
    absl::MutexLock lock(&mu);
    return got.has_value();
  }
};

std::shared_ptr<const v1::FetchResult> Result(uint32_t index) {
  auto r = std::make_shared<v1::FetchResult>();
  r->set_index(index);
  r->set_url("http://a.test/" + std::to_string(index));
  r->set_body(std::string(200, 'x'));
  return r;
}

BatchRecord Batch(const std::string& id, const std::string& owner = "team") {
  BatchRecord b;
  b.batch_id = id;
  b.owner = owner;
  b.total = 3;
  b.created_at = absl::FromUnixMicros(1'700'000'000'123'456);
  return b;
}

class SpoolingResultStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir(); }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Opens the store over a new ScriptedInner (kept in inner_).
  void Open(uint64_t max_bytes = 1 << 20,
            absl::Duration replay_interval = absl::Hours(1)) {
    SpoolingResultStore::Options options;
    options.spool.dir = dir_;
    options.spool.max_bytes = max_bytes;
    options.spool.segment_bytes = 4096;
    options.replay_interval = replay_interval;
    auto opened = SpoolingResultStore::Open(
        options,
        [this](GivenUpHandler handler)
            -> absl::StatusOr<std::unique_ptr<ResultStore>> {
          auto inner = std::make_unique<ScriptedInner>();
          inner->given_up_ = std::move(handler);
          if (next_inner_up_.has_value()) inner->set_up(*next_inner_up_);
          if (next_inner_auto_commit_) inner->set_auto_commit(true);
          if (next_inner_gives_up_) inner->set_give_up_at_once(true);
          inner_ = inner.get();
          return std::unique_ptr<ResultStore>(std::move(inner));
        });
    ASSERT_TRUE(opened.ok()) << opened.status();
    store_ = *std::move(opened);
  }

  // Appends results 0..n-1 of `batch_id`, then has the inner writer give
  // them all up (to the spool).
  std::vector<std::unique_ptr<Outcome>> GiveUpResults(
      const std::string& batch_id, uint32_t n) {
    std::vector<std::unique_ptr<Outcome>> outcomes;
    for (uint32_t i = 0; i < n; ++i) {
      outcomes.push_back(std::make_unique<Outcome>());
      store_->AppendResult(batch_id, Result(i), absl::Now(),
                           outcomes.back()->Callback());
    }
    inner_->GiveUpAll();
    return outcomes;
  }

  // Polls `done` (the replayer and spooler threads act on their own).
  static bool WaitUntil(const std::function<bool()>& done) {
    const absl::Time until = absl::Now() + absl::Seconds(10);
    while (!done()) {
      if (absl::Now() > until) return false;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return true;
  }

  std::string dir_;
  std::optional<bool> next_inner_up_;
  bool next_inner_auto_commit_ = false;
  bool next_inner_gives_up_ = false;
  ScriptedInner* inner_ = nullptr;  // owned by store_
  std::unique_ptr<SpoolingResultStore> store_;
};

TEST_F(SpoolingResultStoreTest,
       GivenUpWritesAreAcknowledgedSpooledOnceDurable) {
  Open();
  ASSERT_TRUE(store_->CreateBatch(Batch("b")).ok());
  Outcome one, two;
  store_->AppendResult("b", Result(0), absl::Now(), one.Callback());
  store_->AppendResult("b", Result(1), absl::Now(), two.Callback());
  EXPECT_FALSE(one.Has());
  inner_->GiveUpAll();
  ASSERT_TRUE(one.Wait());
  ASSERT_TRUE(two.Wait());
  EXPECT_EQ(**one.got, Durability::kSpooled);
  EXPECT_EQ(**two.got, Durability::kSpooled);
  const ResultSpoolStats stats = store_->SpoolStats();
  EXPECT_EQ(stats.appended_sequence, 2u);
  EXPECT_EQ(stats.durable_sequence, 2u) << "acknowledged before fsync";
  EXPECT_GT(stats.used_bytes, 0u);
}

TEST_F(SpoolingResultStoreTest, ReplayWritesEveryRecordOnceAndEmptiesTheSpool) {
  Open();
  ASSERT_TRUE(store_->CreateBatch(Batch("b")).ok());
  std::vector<std::unique_ptr<Outcome>> outcomes;
  for (uint32_t i = 0; i < 3; ++i) {
    outcomes.push_back(std::make_unique<Outcome>());
    store_->AppendResult("b", Result(i), absl::Now(),
                         outcomes.back()->Callback());
  }
  Outcome finish;
  store_->FinishBatch(Batch("b"), finish.Callback());
  inner_->GiveUpAll();
  ASSERT_TRUE(finish.Wait());
  EXPECT_EQ(**finish.got, Durability::kSpooled);
  inner_->TakeEvents();

  inner_->set_auto_commit(true);
  absl::StatusOr<SpoolingResultStore::ReplayReport> report =
      store_->ReplayNow();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->records, 4u);
  EXPECT_EQ(inner_->Results("b").size(), 3u);
  EXPECT_TRUE(inner_->Finished("b"));
  EXPECT_EQ(inner_->TakeEvents(),
            (std::vector<std::string>{"result b/0", "result b/1", "result b/2",
                                      "finish b", "recount b"}));
  EXPECT_EQ(store_->SpoolStats().used_bytes, 0u);

  // Nothing left: a second replay writes nothing.
  report = store_->ReplayNow();
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->records, 0u);
  EXPECT_TRUE(inner_->TakeEvents().empty());
}

TEST_F(SpoolingResultStoreTest,
       ABatchStartsWhileTheDatabaseIsAwayAndReplaysInOrder) {
  Open();
  inner_->set_up(false);
  ASSERT_TRUE(store_->CreateBatch(Batch("new")).ok());
  // Its writes go to the spool at once, never to the database before its
  // row exists.
  Outcome result, finish;
  store_->AppendResult("new", Result(0), absl::Now(), result.Callback());
  store_->FinishBatch(Batch("new"), finish.Callback());
  ASSERT_TRUE(result.Wait());
  ASSERT_TRUE(finish.Wait());
  EXPECT_EQ(**result.got, Durability::kSpooled);
  EXPECT_EQ(inner_->TakeEvents(), std::vector<std::string>{"create new"});

  inner_->set_up(true);
  inner_->set_auto_commit(true);
  ASSERT_TRUE(store_->ReplayNow().ok());
  EXPECT_EQ(inner_->TakeEvents(),
            (std::vector<std::string>{"create new", "result new/0",
                                      "finish new", "recount new"}));
  // Replayed: later writes of the batch go straight to the database.
  Outcome later;
  store_->AppendResult("new", Result(1), absl::Now(), later.Callback());
  ASSERT_TRUE(later.Wait());
  EXPECT_EQ(**later.got, Durability::kCommitted);
}

TEST_F(SpoolingResultStoreTest, ALostCreateAnswerIsRecognisedAsOurOwnRow) {
  Open();
  inner_->set_up(false);
  ASSERT_TRUE(store_->CreateBatch(Batch("b")).ok());  // spooled
  Outcome result;
  store_->AppendResult("b", Result(0), absl::Now(), result.Callback());
  ASSERT_TRUE(result.Wait());
  inner_->set_up(true);
  inner_->set_auto_commit(true);
  // What the CreateBatch whose answer was lost had committed after all.
  inner_->AddRow("b", "team", Batch("b").created_at);
  absl::StatusOr<SpoolingResultStore::ReplayReport> report =
      store_->ReplayNow();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->conflicts, 0u);
  EXPECT_EQ(inner_->Results("b").size(), 1u);
}

TEST_F(SpoolingResultStoreTest, ASpooledBatchWhoseIdWasTakenIsNeverMixedIn) {
  Open();
  inner_->set_up(false);
  ASSERT_TRUE(store_->CreateBatch(Batch("b", "team-a")).ok());
  Outcome result;
  store_->AppendResult("b", Result(0), absl::Now(), result.Callback());
  ASSERT_TRUE(result.Wait());
  inner_->set_up(true);
  inner_->AddRow("b", "team-b");  // another caller took the id meanwhile
  inner_->set_auto_commit(true);
  absl::StatusOr<SpoolingResultStore::ReplayReport> report =
      store_->ReplayNow();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->conflicts, 2u);  // the create and the result
  EXPECT_TRUE(inner_->Results("b").empty()) << "mixed into team-b's batch";
  EXPECT_EQ(store_->SpoolStats().used_bytes, 0u);
}

TEST_F(SpoolingResultStoreTest, WhatAnEarlierProcessSpooledIsReplayedAtStart) {
  Open();
  ASSERT_TRUE(store_->CreateBatch(Batch("b")).ok());
  Outcome result;
  store_->AppendResult("b", Result(2), absl::Now(), result.Callback());
  inner_->GiveUpAll();
  ASSERT_TRUE(result.Wait());
  store_.reset();  // the process ends with the record in the spool

  next_inner_auto_commit_ = true;
  Open();
  EXPECT_EQ(inner_->Results("b").size(), 1u);
  EXPECT_EQ(store_->SpoolStats().used_bytes, 0u);
}

TEST_F(SpoolingResultStoreTest,
       AFullSpoolParksWritesRefusesBatchesAndRecovers) {
  // Room for the first few records only.
  Open(/*max_bytes=*/4096, /*replay_interval=*/absl::Milliseconds(20));
  ASSERT_TRUE(store_->CreateBatch(Batch("b")).ok());
  inner_->set_up(false);
  std::vector<std::unique_ptr<Outcome>> outcomes = GiveUpResults("b", 40);
  ASSERT_TRUE(outcomes[0]->Wait());
  EXPECT_EQ(**outcomes[0]->got, Durability::kSpooled);
  // The rest waits in memory, unacknowledged: nothing is dropped.
  ASSERT_TRUE(WaitUntil([&] { return store_->parked() > 0; }));
  EXPECT_TRUE(store_->spool_full());
  EXPECT_FALSE(outcomes.back()->Has());
  absl::Status refused = store_->CreateBatch(Batch("another"));
  EXPECT_TRUE(absl::IsUnavailable(refused)) << refused;
  EXPECT_NE(refused.message().find("--spool_max_bytes"), std::string::npos)
      << refused;
  EXPECT_TRUE(absl::IsUnavailable(store_->Ping()));

  // The database comes back: the replayer replays the spool and hands the
  // parked writes to it; every write is acknowledged.
  inner_->set_auto_commit(true);
  inner_->set_up(true);
  for (auto& outcome : outcomes) ASSERT_TRUE(outcome->Wait());
  for (auto& outcome : outcomes) EXPECT_TRUE(outcome->got->ok());
  // The spooled ones arrive with the replay.
  WaitUntil([&] {
    return !store_->spool_full() && store_->SpoolStats().used_bytes == 0;
  });
  EXPECT_EQ(inner_->Results("b").size(), 40u);
  EXPECT_FALSE(store_->spool_full());
  EXPECT_TRUE(store_->Ping().ok());
}

TEST_F(SpoolingResultStoreTest, ParkedWritesFailLoudlyWhenTheStoreIsDestroyed) {
  Open(/*max_bytes=*/4096);
  ASSERT_TRUE(store_->CreateBatch(Batch("b")).ok());
  std::vector<std::unique_ptr<Outcome>> outcomes = GiveUpResults("b", 40);
  ASSERT_TRUE(outcomes[0]->Wait());
  store_.reset();
  for (auto& outcome : outcomes) ASSERT_TRUE(outcome->Has());
  EXPECT_TRUE(absl::IsUnavailable(outcomes.back()->got->status()));
}

TEST_F(SpoolingResultStoreTest,
       AStartUpReplayTheDatabaseGivesUpAgainIsSpooledAgainNotHung) {
  Open();
  ASSERT_TRUE(store_->CreateBatch(Batch("b")).ok());
  std::vector<std::unique_ptr<Outcome>> outcomes = GiveUpResults("b", 3);
  for (auto& outcome : outcomes) ASSERT_TRUE(outcome->Wait());
  store_.reset();

  // The database answers Ping at start, then gives every write up again.
  next_inner_gives_up_ = true;
  Open();  // returns: the spooler took the writes back
  EXPECT_GT(store_->SpoolStats().used_bytes, 0u);
  EXPECT_TRUE(inner_->Results("b").empty());
}

TEST_F(SpoolingResultStoreTest, LaterWritesOfABatchWhoseIdWasTakenAreRefused) {
  Open();
  inner_->set_up(false);
  ASSERT_TRUE(store_->CreateBatch(Batch("b", "team-a")).ok());
  inner_->set_up(true);
  inner_->AddRow("b", "team-b");
  inner_->set_auto_commit(true);
  ASSERT_TRUE(store_->ReplayNow().ok());
  // The batch is still running here: its next writes must not reach the
  // other batch's rows.
  Outcome result, finish;
  store_->AppendResult("b", Result(7), absl::Now(), result.Callback());
  store_->FinishBatch(Batch("b", "team-a"), finish.Callback());
  ASSERT_TRUE(result.Wait());
  ASSERT_TRUE(finish.Wait());
  EXPECT_TRUE(absl::IsFailedPrecondition(result.got->status()))
      << result.got->status();
  EXPECT_TRUE(absl::IsFailedPrecondition(finish.got->status()));
  EXPECT_TRUE(inner_->Results("b").empty());
  EXPECT_FALSE(inner_->Finished("b"));
}

TEST_F(SpoolingResultStoreTest, AnIdSpooledAndNotYetReplayedIsTaken) {
  Open();
  inner_->set_up(false);
  ASSERT_TRUE(store_->CreateBatch(Batch("b")).ok());
  absl::Status again = store_->CreateBatch(Batch("b"));
  EXPECT_TRUE(absl::IsAlreadyExists(again)) << again;
}

TEST_F(SpoolingResultStoreTest, ResumeWaitsUntilTheSpoolIsReplayed) {
  Open();
  ASSERT_TRUE(store_->CreateBatch(Batch("b")).ok());
  std::vector<std::unique_ptr<Outcome>> outcomes = GiveUpResults("b", 1);
  ASSERT_TRUE(outcomes[0]->Wait());
  absl::StatusOr<ResumePlan> plan =
      store_->BeginResume("b", ReadScope::AnyOwner(), "hash");
  EXPECT_TRUE(absl::IsUnavailable(plan.status())) << plan.status();
  inner_->set_auto_commit(true);
  ASSERT_TRUE(store_->ReplayNow().ok());
  plan = store_->BeginResume("b", ReadScope::AnyOwner(), "hash");
  EXPECT_TRUE(absl::IsUnimplemented(plan.status()))  // the inner fake's
      << plan.status();
}

TEST_F(SpoolingResultStoreTest,
       ARecordMySqlRefusesForGoodDoesNotBlockTheSpool) {
  Open();
  ASSERT_TRUE(store_->CreateBatch(Batch("b")).ok());
  std::vector<std::unique_ptr<Outcome>> outcomes = GiveUpResults("b", 3);
  for (auto& outcome : outcomes) ASSERT_TRUE(outcome->Wait());
  inner_->set_auto_commit(true);
  inner_->set_refuse_index(1);
  absl::StatusOr<SpoolingResultStore::ReplayReport> report =
      store_->ReplayNow();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->unstorable, 1u);
  EXPECT_EQ(inner_->Results("b").size(), 2u);
  EXPECT_EQ(store_->SpoolStats().used_bytes, 0u) << "the segment was kept";
}

TEST_F(SpoolingResultStoreTest, HealthStaysReadyWhileTheSpoolHasRoom) {
  Open();
  inner_->set_up(false);
  EXPECT_TRUE(store_->Ping().ok()) << "batches can still start";
  inner_->set_up(true);
  EXPECT_TRUE(store_->Ping().ok());
}

}  // namespace
}  // namespace batchfetch

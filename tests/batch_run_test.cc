// BatchRun with a fake engine handle, a fake store and a fake observer, all
// on the test thread: no sleeps, no network, time from a FakeClock.
#include "service/batch/batch_run.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "service/base/log.h"
#include "tests/support/fake_clock.h"

namespace batchfetch {
namespace {

// Every fake checks, on each call the run makes into it, that the run does
// not hold its lock (the tests are single-threaded, so a held lock is held by
// the caller).
class LockProbe {
 public:
  void Watch(const BatchRun* run) { run_ = run; }
  void ExpectUnlocked(const char* where) const {
    if (run_ != nullptr) {
      EXPECT_FALSE(run_->IsLockedForTesting())
          << "called out under lock: " << where;
    }
  }
  bool Locked() const { return run_ != nullptr && run_->IsLockedForTesting(); }

 private:
  const BatchRun* run_ = nullptr;
};

class FakeHandle : public FetchBatchHandle {
 public:
  explicit FakeHandle(const LockProbe* probe) : probe_(probe) {}
  void Cancel() override {
    probe_->ExpectUnlocked("Cancel");
    ++cancels;
  }
  void EndAtDeadline() override {
    probe_->ExpectUnlocked("EndAtDeadline");
    ++deadline_ends;
  }
  void Release(int n) override {
    probe_->ExpectUnlocked("Release");
    released += n;
  }
  int cancels = 0;
  int deadline_ends = 0;
  int released = 0;

 private:
  const LockProbe* probe_;
};

// Keeps what the run queues; the test acknowledges writes when it wants
// (as the store's writer thread would), or at once with `inline_acks`.
class FakeStore : public ResultStore {
 public:
  explicit FakeStore(const LockProbe* probe) : probe_(probe) {}

  struct Append {
    std::string batch_id;
    std::shared_ptr<const v1::FetchResult> result;
    absl::Time fetched_at;
    Done done;
  };
  struct Finish {
    BatchRecord record;
    Done done;
  };

  absl::Status CreateBatch(const BatchRecord&) override {
    return absl::UnimplementedError("not used");
  }
  void AppendResult(const std::string& batch_id,
                    std::shared_ptr<const v1::FetchResult> result,
                    absl::Time fetched_at, Done done) override {
    probe_->ExpectUnlocked("AppendResult");
    if (inline_acks && !probe_->Locked()) {
      std::move(done)(Durability::kCommitted);
      return;
    }
    appends.push_back(
        {batch_id, std::move(result), fetched_at, std::move(done)});
  }
  void FinishBatch(const BatchRecord& batch, Done done) override {
    probe_->ExpectUnlocked("FinishBatch");
    records.push_back(batch);
    if (inline_acks && !probe_->Locked()) {
      std::move(done)(Durability::kCommitted);
      return;
    }
    finishes.push_back({batch, std::move(done)});
  }
  absl::StatusOr<v1::BatchSummary> GetBatch(const std::string&,
                                            const ReadScope&) override {
    return absl::UnimplementedError("not used");
  }
  absl::StatusOr<ResultPage> ListResults(const std::string&, const ReadScope&,
                                         uint32_t, uint32_t) override {
    return absl::UnimplementedError("not used");
  }

  // Acknowledges the i-th queued result write; the store drops its copy.
  void Ack(size_t i, WriteOutcome outcome = Durability::kCommitted) {
    Append& a = appends.at(i);
    a.result.reset();
    std::move(a.done)(std::move(outcome));
  }
  void AckFinish(WriteOutcome outcome = Durability::kCommitted) {
    std::move(finishes.at(0).done)(std::move(outcome));
  }

  bool inline_acks = false;
  std::vector<Append> appends;
  std::vector<Finish> finishes;
  std::vector<BatchRecord> records;  // every FinishBatch, acked or not

 private:
  const LockProbe* probe_;
};

class FakeObserver : public BatchObserver {
 public:
  explicit FakeObserver(const LockProbe* probe) : probe_(probe) {}

  void OnAccepted(std::shared_ptr<const v1::FetchBatchEvent> event) override {
    probe_->ExpectUnlocked("OnAccepted");
    EXPECT_TRUE(event->has_accepted());
    EXPECT_EQ(calls, 0) << "accepted must come first";
    ++calls;
    accepted = event->accepted();
  }
  void OnResult(std::shared_ptr<const v1::FetchBatchEvent> event) override {
    probe_->ExpectUnlocked("OnResult");
    EXPECT_EQ(calls > 0, true) << "a result before accepted";
    EXPECT_FALSE(finished) << "a result after OnFinished";
    ++calls;
    ASSERT_TRUE(event->has_result());
    results.push_back(event->result());
    if (keep_events) kept.push_back(std::move(event));
    if (cancel_on_result != nullptr) cancel_on_result->Cancel();
  }
  void OnFinished(const v1::BatchSummary& s, const absl::Status& st) override {
    probe_->ExpectUnlocked("OnFinished");
    EXPECT_FALSE(finished) << "OnFinished twice";
    ++calls;
    finished = true;
    summary = s;
    status = st;
  }

  bool keep_events = false;
  BatchRun* cancel_on_result = nullptr;  // re-enters the run from a callback
  int calls = 0;
  v1::BatchAccepted accepted;
  std::vector<v1::FetchResult> results;
  std::vector<std::shared_ptr<const v1::FetchBatchEvent>> kept;
  bool finished = false;
  v1::BatchSummary summary;
  absl::Status status;

 private:
  const LockProbe* probe_;
};

FetchedResponse Ok(uint32_t index) {
  FetchedResponse r;
  r.index = index;
  r.url = absl::StrCat("http://h/", index);
  r.result = TransferResult::kResponse;
  r.http_status = 200;
  r.body = "{}";
  r.attempts = 1;
  return r;
}

FetchedResponse Failed(uint32_t index, TransferResult result) {
  FetchedResponse r;
  r.index = index;
  r.url = absl::StrCat("http://h/", index);
  r.result = result;
  r.error = "failed";
  r.attempts = 1;
  return r;
}

class BatchRunTest : public ::testing::Test {
 protected:
  // The fakes may still be called (a slot released as the store's queue is
  // destroyed) after run_ is gone: stop probing it first.
  ~BatchRunTest() override { probe_.Watch(nullptr); }

  // A run of `total` requests; `with_store` false: --store=none.
  void Make(uint32_t total, bool with_store = true) {
    BatchRun::Params params;
    params.batch_id = "b-1";
    params.total = total;
    params.created_at = created_at_;
    params.store = with_store ? &store_ : nullptr;
    params.clock = &clock_;
    params.stats = &stats_;
    run_ =
        std::make_shared<BatchRun>(std::move(params), *JsonCleaner::Create({}));
    probe_.Watch(run_.get());
  }
  // Starts the run; the "engine" keeps the sink and returns handle_.
  void Start(BatchObserver* observer) {
    run_->Start(observer, [&](std::shared_ptr<FetchSink> sink) {
      sink_ = std::move(sink);
      return handle_;
    });
  }
  // What the engine's delivery thread does.
  void Deliver(FetchedResponse response) {
    sink_->OnFetched(std::move(response), handle_);
  }

  const absl::Time created_at_ = absl::FromUnixMicros(1'700'000'000'000'000);
  testing::FakeClock clock_{absl::FromUnixMicros(1'700'000'000'000'000)};
  LockProbe probe_;
  std::shared_ptr<FakeHandle> handle_ = std::make_shared<FakeHandle>(&probe_);
  FakeStore store_{&probe_};
  FakeObserver observer_{&probe_};
  BatchStats stats_;  // outlives run_ (declared before it)
  std::shared_ptr<BatchRun> run_;
  std::shared_ptr<FetchSink> sink_;
};

TEST_F(BatchRunTest, CountsAndReportsTheSummaryOnlyAfterEveryStoreAck) {
  Make(3);
  Start(&observer_);
  EXPECT_EQ(observer_.accepted.batch_id(), "b-1");
  EXPECT_EQ(observer_.accepted.total(), 3u);

  clock_.Advance(absl::Milliseconds(5));
  Deliver(Ok(2));
  Deliver(Failed(0, TransferResult::kTimeout));
  FetchedResponse not_found = Ok(1);
  not_found.http_status = 404;
  Deliver(std::move(not_found));
  EXPECT_TRUE(observer_.results.empty()) << "streamed before it was stored";
  ASSERT_EQ(store_.appends.size(), 3u);
  EXPECT_EQ(store_.appends[0].batch_id, "b-1");
  EXPECT_EQ(store_.appends[0].fetched_at, clock_.WallNow());
  EXPECT_EQ(store_.appends[1].result->index(), 0u);

  BatchRun::Snapshot s = run_->snapshot();
  EXPECT_EQ(s.phase, BatchRun::Phase::kFetching);
  EXPECT_EQ(s.received, 3u);
  EXPECT_EQ(s.succeeded, 1u);
  EXPECT_EQ(s.store_acks, 0u);

  store_.Ack(0);
  store_.Ack(2);
  EXPECT_TRUE(store_.records.empty());
  EXPECT_EQ(run_->snapshot().stored, 2u);
  // Streamed in the order the store acknowledged them.
  ASSERT_EQ(observer_.results.size(), 2u);
  EXPECT_EQ(observer_.results[0].index(), 2u);
  EXPECT_EQ(observer_.results[0].outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(observer_.results[1].index(), 1u);
  EXPECT_EQ(observer_.results[1].outcome(), v1::OUTCOME_HTTP_ERROR);

  clock_.Advance(absl::Nanoseconds(1'000'700));  // finished_at keeps micros
  store_.Ack(1);
  ASSERT_EQ(observer_.results.size(), 3u);
  EXPECT_EQ(observer_.results[2].outcome(), v1::OUTCOME_TIMEOUT);
  ASSERT_EQ(store_.records.size(), 1u);
  const BatchRecord& record = store_.records[0];
  EXPECT_EQ(record.batch_id, "b-1");
  EXPECT_EQ(record.state, v1::BATCH_STATE_DONE);
  EXPECT_EQ(record.total, 3u);
  EXPECT_EQ(record.succeeded, 1u);
  EXPECT_EQ(record.failed, 2u);
  EXPECT_EQ(record.stored, 3u);
  EXPECT_EQ(record.created_at, created_at_);
  EXPECT_EQ(record.finished_at,
            created_at_ + absl::Milliseconds(5) + absl::Microseconds(1000));
  EXPECT_EQ(run_->snapshot().phase, BatchRun::Phase::kRecording);
  EXPECT_FALSE(observer_.finished) << "summary before the batch row is stored";

  store_.AckFinish();
  EXPECT_EQ(run_->snapshot().phase, BatchRun::Phase::kFinished);
  ASSERT_TRUE(observer_.finished);
  EXPECT_TRUE(observer_.status.ok()) << observer_.status;
  EXPECT_EQ(observer_.summary.batch_id(), "b-1");
  EXPECT_EQ(observer_.summary.state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(observer_.summary.total(), 3u);
  EXPECT_EQ(observer_.summary.succeeded(), 1u);
  EXPECT_EQ(observer_.summary.failed(), 2u);
  EXPECT_EQ(observer_.summary.stored(), 3u);
  EXPECT_EQ(observer_.summary.created_at().seconds(), 1'700'000'000);
  EXPECT_EQ(observer_.summary.finished_at().nanos(), 6'000'000);
  EXPECT_EQ(observer_.calls, 5);  // accepted, 3 results, finished
}

TEST_F(BatchRunTest, AcksBeforeTheLastResultAndInlineAcksWork) {
  store_.inline_acks = true;  // `done` runs inside the store call
  Make(2);
  Start(&observer_);
  Deliver(Ok(0));
  EXPECT_EQ(run_->snapshot().store_acks, 1u);
  EXPECT_FALSE(observer_.finished);
  Deliver(Ok(1));
  ASSERT_TRUE(observer_.finished);
  EXPECT_EQ(observer_.summary.state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(observer_.summary.stored(), 2u);
  EXPECT_TRUE(observer_.status.ok());
}

TEST_F(BatchRunTest, AFailedResultWriteMakesTheBatchFailed) {
  Make(3);
  Start(&observer_);
  for (uint32_t i = 0; i < 3; ++i) Deliver(Ok(i));
  store_.Ack(0);
  store_.Ack(1, absl::UnavailableError("disk full"));
  store_.Ack(2, absl::UnavailableError("second error"));
  ASSERT_EQ(store_.records.size(), 1u);
  EXPECT_EQ(store_.records[0].state, v1::BATCH_STATE_FAILED);
  EXPECT_EQ(store_.records[0].stored, 1u);
  store_.AckFinish();
  ASSERT_TRUE(observer_.finished);
  EXPECT_EQ(observer_.summary.state(), v1::BATCH_STATE_FAILED);
  EXPECT_EQ(observer_.summary.stored(), 1u);
  EXPECT_EQ(observer_.summary.succeeded(), 3u);
  EXPECT_EQ(observer_.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(observer_.status.message(),
            "2 of 3 results could not be stored: disk full");
}

TEST_F(BatchRunTest, AFailedBatchRowWriteGivesUnavailable) {
  Make(1);
  Start(&observer_);
  Deliver(Ok(0));
  store_.Ack(0);
  store_.AckFinish(absl::UnavailableError("gone"));
  ASSERT_TRUE(observer_.finished);
  EXPECT_EQ(observer_.summary.state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(observer_.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(observer_.status.message(),
            "0 of 1 results could not be stored: gone");
}

TEST_F(BatchRunTest, CancelReachesTheHandleOnceAndEndsCancelled) {
  Make(2);
  Start(&observer_);
  Deliver(Ok(0));
  run_->Cancel();
  run_->Cancel();
  run_->Cancel(BatchRun::CancelMode::kAtDeadline);  // the first one won
  EXPECT_EQ(handle_->cancels, 1);
  EXPECT_EQ(handle_->deadline_ends, 0);
  EXPECT_TRUE(run_->snapshot().cancelled);
  Deliver(Failed(1, TransferResult::kCancelled));  // what the engine does
  store_.Ack(0);
  store_.Ack(1);
  ASSERT_EQ(store_.records.size(), 1u);
  EXPECT_EQ(store_.records[0].state, v1::BATCH_STATE_CANCELLED);
  EXPECT_EQ(store_.records[0].stored, 2u);
  store_.AckFinish();
  ASSERT_TRUE(observer_.finished);
  EXPECT_EQ(observer_.summary.state(), v1::BATCH_STATE_CANCELLED);
  EXPECT_EQ(observer_.status.code(), absl::StatusCode::kCancelled);
}

TEST_F(BatchRunTest, CancelAtDeadlineEndsTheBatchAsTheDeadlineWould) {
  Make(1);
  Start(&observer_);
  run_->Cancel(BatchRun::CancelMode::kAtDeadline);
  EXPECT_EQ(handle_->deadline_ends, 1);
  EXPECT_EQ(handle_->cancels, 0);
  FetchedResponse cut = Failed(0, TransferResult::kTimeout);
  cut.end_reason = EndReason::kDeadlineCut;
  Deliver(std::move(cut));
  store_.Ack(0);
  store_.AckFinish();
  ASSERT_TRUE(observer_.finished);
  EXPECT_EQ(observer_.results[0].outcome(), v1::OUTCOME_TIMEOUT);
  EXPECT_EQ(observer_.summary.state(), v1::BATCH_STATE_CANCELLED);
  EXPECT_EQ(observer_.status.code(), absl::StatusCode::kCancelled);
}

TEST_F(BatchRunTest, CancelBeforeStartIsAppliedOnceSubmitted) {
  Make(1);
  run_->Cancel(BatchRun::CancelMode::kAtDeadline);
  EXPECT_EQ(handle_->deadline_ends, 0);  // nothing submitted yet
  Start(&observer_);
  EXPECT_EQ(handle_->deadline_ends, 1);
  EXPECT_EQ(handle_->cancels, 0);
  EXPECT_EQ(observer_.accepted.total(), 1u);
}

TEST_F(BatchRunTest, SpooledResultsCountAsKeptAndTheBatchIsDone) {
  Make(3);
  Start(&observer_);
  Deliver(Ok(0));
  Deliver(Ok(1));
  Deliver(Ok(2));
  store_.Ack(0);
  store_.Ack(1, ResultStore::Durability::kSpooled);
  store_.Ack(2, ResultStore::Durability::kSpooled);
  EXPECT_EQ(observer_.results.size(), 3u);
  ASSERT_EQ(store_.records.size(), 1u);
  EXPECT_EQ(store_.records[0].state, v1::BATCH_STATE_DONE);
  EXPECT_EQ(store_.records[0].stored, 1u);
  EXPECT_EQ(store_.records[0].spooled, 2u);
  store_.AckFinish(ResultStore::Durability::kSpooled);
  ASSERT_TRUE(observer_.finished);
  EXPECT_TRUE(observer_.status.ok()) << observer_.status;
  EXPECT_EQ(observer_.summary.state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(observer_.summary.stored(), 1u);
  EXPECT_EQ(observer_.summary.spooled(), 2u);
}

TEST_F(BatchRunTest, AResultTheStoreGaveUpOnIsStillStreamedAndTheBatchFails) {
  Make(2);
  Start(&observer_);
  Deliver(Ok(0));
  Deliver(Ok(1));
  store_.Ack(0, absl::UnavailableError("MySQL away and no spool"));
  store_.Ack(1);
  EXPECT_EQ(observer_.results.size(), 2u);
  ASSERT_EQ(store_.records.size(), 1u);
  EXPECT_EQ(store_.records[0].state, v1::BATCH_STATE_FAILED);
  store_.AckFinish();
  EXPECT_TRUE(absl::IsUnavailable(observer_.status)) << observer_.status;
}

TEST_F(BatchRunTest, CancelAfterEveryResultWasRecordedChangesNothing) {
  Make(1);
  Start(&observer_);
  Deliver(Ok(0));
  store_.Ack(0);  // the final row is queued: too late to cancel
  run_->Cancel();
  EXPECT_EQ(handle_->cancels, 0);
  store_.AckFinish();
  EXPECT_EQ(store_.records[0].state, v1::BATCH_STATE_DONE);
  EXPECT_TRUE(observer_.status.ok());
}

TEST_F(BatchRunTest, AnObserverMayCallBackIntoTheRun) {
  Make(2);
  observer_.cancel_on_result = run_.get();
  Start(&observer_);
  Deliver(Ok(0));
  store_.Ack(0);  // streamed now; the observer cancels from inside OnResult
  EXPECT_EQ(handle_->cancels, 1);
  observer_.cancel_on_result = nullptr;
}

TEST_F(BatchRunTest, AResultHoldsItsWindowSlotUntilStreamAndStoreDropIt) {
  Make(2);
  observer_.keep_events = true;  // a write in flight
  Start(&observer_);
  Deliver(Ok(0));
  Deliver(Ok(1));
  EXPECT_EQ(handle_->released, 0);
  EXPECT_TRUE(observer_.kept.empty());  // streamed only once stored
  store_.Ack(0);                        // store done, stream not yet
  EXPECT_EQ(handle_->released, 0);
  observer_.kept[0].reset();
  EXPECT_EQ(handle_->released, 1);
  store_.Ack(1);
  EXPECT_EQ(handle_->released, 1);
  observer_.kept[1].reset();
  EXPECT_EQ(handle_->released, 2);
}

TEST_F(BatchRunTest, WithoutAStoreTheEndFollowsTheLastResult) {
  Make(2, /*with_store=*/false);
  Start(&observer_);
  Deliver(Ok(0));
  EXPECT_EQ(handle_->released, 1);  // the observer did not keep it
  EXPECT_FALSE(observer_.finished);
  Deliver(Failed(1, TransferResult::kDnsError));
  ASSERT_TRUE(observer_.finished);
  EXPECT_EQ(run_->snapshot().phase, BatchRun::Phase::kFinished);
  EXPECT_EQ(observer_.summary.state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(observer_.summary.stored(), 0u);
  EXPECT_EQ(observer_.summary.failed(), 1u);
  EXPECT_TRUE(observer_.status.ok());
  EXPECT_TRUE(store_.appends.empty());
}

TEST_F(BatchRunTest, ABatchWithNoObserverIsStillRecorded) {
  Make(2);
  Start(nullptr);  // detached: nobody is told anything
  Deliver(Ok(0));
  Deliver(Ok(1));
  store_.Ack(0);
  store_.Ack(1);
  EXPECT_EQ(handle_->released, 2);  // only the store held them
  ASSERT_EQ(store_.records.size(), 1u);
  EXPECT_EQ(store_.records[0].state, v1::BATCH_STATE_DONE);
  store_.AckFinish();
  EXPECT_EQ(run_->snapshot().phase, BatchRun::Phase::kFinished);
}

TEST_F(BatchRunTest, LogsOneAcceptedAndOneFinishedLineAndNoneForResults) {
  std::vector<std::string> lines;
  SetLogSinkForTest([&](std::string_view line) { lines.emplace_back(line); });
  BatchRun::Params params;
  params.batch_id = "b-1";
  params.total = 3;
  params.created_at = created_at_;
  params.store = &store_;
  params.clock = &clock_;
  params.owner = "alice";
  params.concurrency = 8;
  run_ =
      std::make_shared<BatchRun>(std::move(params), *JsonCleaner::Create({}));
  Start(&observer_);
  ASSERT_EQ(lines.size(), 1u);
  for (const char* field :
       {R"("level":"info","event":"batch_accepted","batch_id":"b-1")",
        R"("owner":"alice","total":3,"concurrency":8,"resume":false)"}) {
    EXPECT_TRUE(absl::StrContains(lines[0], field)) << lines[0];
  }
  Deliver(Ok(0));
  Deliver(Ok(1));
  Deliver(Failed(2, TransferResult::kConnectError));
  clock_.Advance(absl::Milliseconds(1500));
  for (uint32_t i = 0; i < 3; ++i) store_.Ack(i);
  EXPECT_EQ(lines.size(), 1u) << "no line per result";
  store_.AckFinish();
  SetLogSinkForTest(nullptr);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_TRUE(absl::StrContains(
      lines[1],
      R"("level":"info","event":"batch_finished","batch_id":"b-1",)"
      R"("state":"done","total":3,"succeeded":2,"failed":1,"stored":3,)"
      R"("spooled":0,"duration_ms":1500})"))
      << lines[1];
}

TEST_F(BatchRunTest,
       ABlockedRequestWritesOneRequestBlockedLineWithoutItsSecret) {
  std::vector<std::string> lines;
  SetLogSinkForTest([&](std::string_view line) {
    if (line.find(R"("event":"request_blocked")") != line.npos) {
      lines.emplace_back(line);
    }
  });
  Make(3, /*with_store=*/false);
  Start(&observer_);
  FetchedResponse blocked = Failed(1, TransferResult::kBlocked);
  blocked.url = "http://user:pw@Internal.example:8080/admin?token=t0p";
  blocked.error =
      "egress denied: 10.0.0.5 is in 10.0.0.0/8 (built-in: private range)";
  Deliver(Ok(0));
  Deliver(std::move(blocked));
  Deliver(Failed(2, TransferResult::kConnectError));
  SetLogSinkForTest(nullptr);

  ASSERT_EQ(lines.size(), 1u) << "one line, for the blocked request only";
  const std::string& line = lines[0];
  EXPECT_TRUE(
      absl::StrContains(line, R"("level":"warning","event":"request_blocked")"))
      << line;
  EXPECT_TRUE(absl::StrContains(line, R"("batch_id":"b-1")")) << line;
  EXPECT_TRUE(absl::StrContains(line, R"("index":1)")) << line;
  EXPECT_TRUE(
      absl::StrContains(line, R"("host":"http://internal.example:8080")"))
      << line;
  EXPECT_TRUE(absl::StrContains(
      line,
      "\"error\":\"egress denied: 10.0.0.5 is in 10.0.0.0/8 (built-in: "
      "private range)\""))
      << line;
  EXPECT_FALSE(absl::StrContains(line, "pw")) << line;
  EXPECT_FALSE(absl::StrContains(line, "t0p"))
      << line;  // no path or query either
  ASSERT_EQ(observer_.results.size(), 3u);
  EXPECT_EQ(observer_.results[1].outcome(), v1::OUTCOME_BLOCKED);
}

TEST_F(BatchRunTest, ABlockedRedirectHopIsLoggedAsTheFinalHost) {
  std::vector<std::string> lines;
  SetLogSinkForTest([&](std::string_view line) {
    if (line.find(R"("event":"request_blocked")") != line.npos) {
      lines.emplace_back(line);
    }
  });
  Make(1, /*with_store=*/false);
  Start(&observer_);
  FetchedResponse blocked = Failed(0, TransferResult::kBlocked);
  blocked.url = "https://public.example/start";
  blocked.final_url = "http://u:p@169.254.169.254/latest/meta-data/";
  blocked.error = "egress to 169.254.169.254 denied by link-local";
  Deliver(std::move(blocked));
  SetLogSinkForTest(nullptr);

  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(absl::StrContains(
      lines[0], R"("host":"https://public.example:443",)"
                R"("final_host":"http://169.254.169.254:80","error":)"))
      << lines[0];
  EXPECT_FALSE(absl::StrContains(lines[0], "meta-data")) << lines[0];
}

TEST_F(BatchRunTest, CountsEachResultByOutcomeWithItsLastAttemptsTime) {
  Make(4, /*with_store=*/false);
  Start(&observer_);
  FetchedResponse ok = Ok(0);
  ok.timings.total = absl::Milliseconds(250);
  Deliver(std::move(ok));
  FetchedResponse server_error = Ok(1);
  server_error.http_status = 500;
  server_error.timings.total = absl::Milliseconds(3);
  Deliver(std::move(server_error));
  FetchedResponse timeout = Failed(2, TransferResult::kTimeout);
  timeout.timings.total = absl::Seconds(2);
  Deliver(std::move(timeout));
  // Never started: counted as a result, but it has no upstream time.
  FetchedResponse cancelled = Failed(3, TransferResult::kCancelled);
  cancelled.attempts = 0;
  Deliver(std::move(cancelled));

  EXPECT_EQ(stats_.results[v1::OUTCOME_OK].value(), 1u);
  EXPECT_EQ(stats_.results[v1::OUTCOME_HTTP_ERROR].value(), 1u);
  EXPECT_EQ(stats_.results[v1::OUTCOME_TIMEOUT].value(), 1u);
  EXPECT_EQ(stats_.results[v1::OUTCOME_CANCELLED].value(), 1u);
  EXPECT_EQ(stats_.results[v1::OUTCOME_INVALID_JSON].value(), 0u);
  const Histogram::Snapshot ok_time =
      stats_.upstream_seconds[v1::OUTCOME_OK]->snapshot();
  EXPECT_EQ(ok_time.count, 1u);
  EXPECT_DOUBLE_EQ(ok_time.sum, 0.25);
  EXPECT_EQ(stats_.upstream_seconds[v1::OUTCOME_HTTP_ERROR]->snapshot().count,
            1u);
  EXPECT_DOUBLE_EQ(stats_.upstream_seconds[v1::OUTCOME_TIMEOUT]->snapshot().sum,
                   2.0);
  EXPECT_EQ(stats_.upstream_seconds[v1::OUTCOME_CANCELLED]->snapshot().count,
            0u);
}

TEST_F(BatchRunTest, IsActiveFromStartUntilItsEndAndCountsItsFinalState) {
  Make(1);
  EXPECT_EQ(stats_.batches_active.value(), 0);
  Start(&observer_);
  EXPECT_EQ(stats_.batches_active.value(), 1);
  Deliver(Ok(0));
  store_.Ack(0);
  // Recording the final row: still active.
  EXPECT_EQ(stats_.batches_active.value(), 1);
  EXPECT_EQ(stats_.batches_finished[v1::BATCH_STATE_DONE].value(), 0u);
  store_.AckFinish();
  EXPECT_TRUE(observer_.finished);
  EXPECT_EQ(stats_.batches_active.value(), 0);
  EXPECT_EQ(stats_.batches_finished[v1::BATCH_STATE_DONE].value(), 1u);
  EXPECT_EQ(stats_.batches_finished[v1::BATCH_STATE_CANCELLED].value(), 0u);
}

TEST_F(BatchRunTest, ACancelledRunIsCountedCancelled) {
  Make(1, /*with_store=*/false);
  Start(&observer_);
  run_->Cancel();
  Deliver(Failed(0, TransferResult::kCancelled));
  EXPECT_EQ(stats_.batches_finished[v1::BATCH_STATE_CANCELLED].value(), 1u);
  EXPECT_EQ(stats_.batches_active.value(), 0);
}

TEST_F(BatchRunTest, ARunDestroyedUnfinishedIsNoLongerActive) {
  Make(2, /*with_store=*/false);
  Start(&observer_);
  Deliver(Ok(0));
  EXPECT_EQ(stats_.batches_active.value(), 1);
  probe_.Watch(nullptr);
  sink_.reset();
  run_.reset();
  EXPECT_EQ(stats_.batches_active.value(), 0);
  EXPECT_EQ(stats_.batches_finished[v1::BATCH_STATE_DONE].value(), 0u);
}

// A resumed batch: its stored OK results come right after `accepted`, count
// from the start, and the summary covers the whole batch.
std::vector<std::shared_ptr<const v1::FetchBatchEvent>> StoredOk(
    std::vector<uint32_t> indices) {
  std::vector<std::shared_ptr<const v1::FetchBatchEvent>> events;
  for (uint32_t index : indices) {
    auto event = std::make_shared<v1::FetchBatchEvent>();
    event->mutable_result()->set_index(index);
    event->mutable_result()->set_outcome(v1::OUTCOME_OK);
    events.push_back(std::move(event));
  }
  return events;
}

TEST_F(BatchRunTest, AResumedRunStreamsTheStoredResultsFirstAndCountsThem) {
  BatchRun::Params params;
  params.batch_id = "b-1";
  params.total = 4;
  params.created_at = created_at_;
  params.store = &store_;
  params.clock = &clock_;
  params.resumed_results = StoredOk({0, 2});
  run_ =
      std::make_shared<BatchRun>(std::move(params), *JsonCleaner::Create({}));
  probe_.Watch(run_.get());
  Start(&observer_);
  EXPECT_EQ(observer_.accepted.total(), 4u);
  ASSERT_EQ(observer_.results.size(), 2u);
  EXPECT_EQ(observer_.results[0].index(), 0u);
  EXPECT_EQ(observer_.results[1].index(), 2u);
  EXPECT_TRUE(store_.appends.empty()) << "a stored result was written again";
  BatchRun::Snapshot s = run_->snapshot();
  EXPECT_EQ(s.received, 2u);
  EXPECT_EQ(s.stored, 2u);

  Deliver(Ok(1));
  Deliver(Failed(3, TransferResult::kTimeout));
  store_.Ack(0);
  store_.Ack(1);
  ASSERT_EQ(store_.records.size(), 1u);
  EXPECT_EQ(store_.records[0].state, v1::BATCH_STATE_DONE);
  EXPECT_EQ(store_.records[0].total, 4u);
  EXPECT_EQ(store_.records[0].succeeded, 3u);
  EXPECT_EQ(store_.records[0].failed, 1u);
  EXPECT_EQ(store_.records[0].stored, 4u);
  store_.AckFinish();
  ASSERT_TRUE(observer_.finished);
  EXPECT_EQ(observer_.summary.stored(), 4u);
  EXPECT_EQ(observer_.results.size(), 4u);
}

TEST_F(BatchRunTest, AResumedRunWithNothingLeftSubmitsNothingAndFinishes) {
  BatchRun::Params params;
  params.batch_id = "b-1";
  params.total = 2;
  params.created_at = created_at_;
  params.store = &store_;
  params.clock = &clock_;
  params.resumed_results = StoredOk({0, 1});
  run_ =
      std::make_shared<BatchRun>(std::move(params), *JsonCleaner::Create({}));
  probe_.Watch(run_.get());
  bool submitted = false;
  run_->Start(&observer_, [&](std::shared_ptr<FetchSink>) {
    submitted = true;
    return handle_;
  });
  EXPECT_FALSE(submitted);
  EXPECT_EQ(observer_.results.size(), 2u);
  ASSERT_EQ(store_.records.size(), 1u);
  EXPECT_EQ(store_.records[0].state, v1::BATCH_STATE_DONE);
  EXPECT_EQ(store_.records[0].succeeded, 2u);
  EXPECT_EQ(store_.records[0].stored, 2u);
  store_.AckFinish();
  ASSERT_TRUE(observer_.finished);
  EXPECT_TRUE(observer_.status.ok()) << observer_.status;
}

}  // namespace
}  // namespace batchfetch

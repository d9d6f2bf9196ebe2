// Takeover of a dead replica's detached batches (issue 11): the decision,
// the backlog's retry policy and the caller-less observer, without a
// server. The two-replica kill -9 test is takeover_e2e_test.cc.
#include "service/api/batch_takeover.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace batchfetch {
namespace {

v1::FetchBatchRequest Detached(bool detach) {
  v1::FetchBatchRequest request;
  request.add_requests()->set_url("http://127.0.0.1/a");
  request.set_detach(detach);
  return request;
}

TEST(DecideTakeoverTest, TakesOverAnInterruptedDetachedBatch) {
  EXPECT_EQ(
      DecideTakeover(false, v1::BATCH_STATE_INTERRUPTED, false, Detached(true)),
      TakeoverOutcome::kTakenOver);
}

TEST(DecideTakeoverTest, LeavesABatchThatWasNotDetachedInterrupted) {
  EXPECT_EQ(DecideTakeover(false, v1::BATCH_STATE_INTERRUPTED, false,
                           Detached(false)),
            TakeoverOutcome::kNotDetached);
}

TEST(DecideTakeoverTest, TakesNothingOverWhileDraining) {
  EXPECT_EQ(
      DecideTakeover(true, v1::BATCH_STATE_INTERRUPTED, false, Detached(true)),
      TakeoverOutcome::kDraining);
}

TEST(DecideTakeoverTest, LeavesABatchNoLongerInterruptedAlone) {
  for (v1::BatchState state :
       {v1::BATCH_STATE_RUNNING, v1::BATCH_STATE_DONE,
        v1::BATCH_STATE_CANCELLED, v1::BATCH_STATE_FAILED}) {
    EXPECT_EQ(DecideTakeover(false, state, false, Detached(true)),
              TakeoverOutcome::kNotInterrupted)
        << v1::BatchState_Name(state);
  }
}

TEST(DecideTakeoverTest, DoesNotFinishABatchWhoseCancelWasRequested) {
  EXPECT_EQ(
      DecideTakeover(false, v1::BATCH_STATE_INTERRUPTED, true, Detached(true)),
      TakeoverOutcome::kCancelRequested);
}

TEST(DecideTakeoverTest, LeavesABatchWhoseUrlCredentialsWereNotStored) {
  v1::FetchBatchRequest stored = Detached(true);
  stored.add_requests()->set_url("http://***@127.0.0.1/b");
  EXPECT_EQ(DecideTakeover(false, v1::BATCH_STATE_INTERRUPTED, false, stored),
            TakeoverOutcome::kCredentialsNotStored);
  EXPECT_STREQ(TakeoverOutcomeName(TakeoverOutcome::kCredentialsNotStored),
               "credentials_not_stored");
}

TEST(TakeoverBacklogTest, HandsOutEachAddedBatchOnceInOrder) {
  TakeoverBacklog backlog;
  EXPECT_EQ(backlog.Add({"a", "b", "a"}), 0u);
  EXPECT_EQ(backlog.Add({"b", "c"}), 0u);
  std::vector<TakeoverBacklog::Entry> due = backlog.TakeAll();
  ASSERT_EQ(due.size(), 3u);
  EXPECT_EQ(due[0].batch_id, "a");
  EXPECT_EQ(due[1].batch_id, "b");
  EXPECT_EQ(due[2].batch_id, "c");
  EXPECT_EQ(backlog.size(), 0u);
  EXPECT_TRUE(backlog.TakeAll().empty());
}

TEST(TakeoverBacklogTest, KeepsABatchThatFoundNoRoomForEveryLaterRound) {
  TakeoverBacklog backlog;
  backlog.Add({"a"});
  for (int round = 0; round < 10; ++round) {
    std::vector<TakeoverBacklog::Entry> due = backlog.TakeAll();
    ASSERT_EQ(due.size(), 1u) << round;
    EXPECT_EQ(due[0].deferred, round > 0);
    EXPECT_TRUE(backlog.Settle(due[0], TakeoverOutcome::kNoRoom));
  }
  std::vector<TakeoverBacklog::Entry> due = backlog.TakeAll();
  ASSERT_EQ(due.size(), 1u);
  EXPECT_FALSE(backlog.Settle(due[0], TakeoverOutcome::kTakenOver));
  EXPECT_EQ(backlog.size(), 0u);
}

TEST(TakeoverBacklogTest, GivesUpOnAnUnavailableDatabaseAfterAFewRounds) {
  TakeoverBacklog backlog;
  backlog.Add({"a"});
  int rounds = 0;
  while (true) {
    std::vector<TakeoverBacklog::Entry> due = backlog.TakeAll();
    if (due.empty()) break;
    ++rounds;
    backlog.Settle(due[0], TakeoverOutcome::kUnavailable);
  }
  EXPECT_EQ(rounds, TakeoverBacklog::kMaxUnavailableAttempts);
}

TEST(TakeoverBacklogTest, NeverRetriesAFailedOrDeclinedTakeover) {
  for (TakeoverOutcome outcome :
       {TakeoverOutcome::kTakenOver, TakeoverOutcome::kFailed,
        TakeoverOutcome::kNotDetached, TakeoverOutcome::kNotInterrupted,
        TakeoverOutcome::kCancelRequested, TakeoverOutcome::kDraining}) {
    TakeoverBacklog backlog;
    backlog.Add({"a"});
    std::vector<TakeoverBacklog::Entry> due = backlog.TakeAll();
    EXPECT_FALSE(backlog.Settle(due[0], outcome))
        << TakeoverOutcomeName(outcome);
    EXPECT_EQ(backlog.size(), 0u) << TakeoverOutcomeName(outcome);
  }
}

TEST(TakeoverBacklogTest, DoesNotHoldABatchTwiceWhenASweepReportsItMeanwhile) {
  TakeoverBacklog backlog;
  backlog.Add({"a"});
  std::vector<TakeoverBacklog::Entry> due = backlog.TakeAll();
  backlog.Add({"a"});  // reported again while its try ran
  EXPECT_FALSE(backlog.Settle(due[0], TakeoverOutcome::kNoRoom));
  EXPECT_EQ(backlog.size(), 1u);
}

TEST(TakeoverBacklogTest, DropsWhatComesBeyondItsBound) {
  TakeoverBacklog backlog;
  std::vector<std::string> ids;
  for (size_t i = 0; i < TakeoverBacklog::kMaxPending + 5; ++i) {
    ids.push_back("b" + std::to_string(i));
  }
  EXPECT_EQ(backlog.Add(ids), 5u);
  EXPECT_EQ(backlog.size(), TakeoverBacklog::kMaxPending);
}

TEST(DetachedRunObserverTest, ReleasesTheActiveBatchPlaceWhenTheRunFinishes) {
  ActiveBatchLimiter limiter(ActiveBatchLimiter::Limits{1, 0});
  absl::StatusOr<ActiveBatchLimiter::Lease> lease =
      limiter.TryAcquire("takeover");
  ASSERT_TRUE(lease.ok());
  auto* observer = new DetachedRunObserver(*std::move(lease));
  observer->OnAccepted(std::make_shared<v1::FetchBatchEvent>());
  observer->OnResult(std::make_shared<v1::FetchBatchEvent>());
  EXPECT_EQ(limiter.active(), 1);
  EXPECT_FALSE(limiter.TryAcquire("other").ok());
  observer->OnFinished(v1::BatchSummary(), absl::OkStatus());  // deletes it
  EXPECT_EQ(limiter.active(), 0);
  EXPECT_TRUE(limiter.TryAcquire("other").ok());
}

}  // namespace
}  // namespace batchfetch

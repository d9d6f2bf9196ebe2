// PeriodicWorker's thread: hooks, rounds until stopped, the wait for the
// first round. Rounds are made due at once (or far away), so nothing sleeps.
#include "service/server/periodic_worker.h"

#include <atomic>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tests/support/fake_clock.h"

namespace batchfetch {
namespace {

using testing::FakeClock;

constexpr absl::Duration kFarAway = absl::Hours(1);

TEST(PeriodicWorkerTest, RunsTheHooksAroundTheRoundsOnItsThread) {
  FakeClock clock;
  std::atomic<int> rounds{0};
  std::atomic<int> inits{0};
  std::atomic<int> ends{0};
  std::atomic<bool> init_before_round{false};
  PeriodicWorker worker(
      [&] {
        if (rounds.fetch_add(1) == 0) init_before_round = inits.load() == 1;
        return clock.MonoNow() + kFarAway;
      },
      &clock);
  PeriodicWorker::Hooks hooks;
  hooks.thread_init = [&] { inits.fetch_add(1); };
  hooks.thread_end = [&] { ends.fetch_add(1); };
  hooks.start_waits_for_first_round = true;
  worker.Start(hooks);
  EXPECT_EQ(rounds.load(), 1);  // Start() waited for it
  worker.Stop();
  EXPECT_TRUE(init_before_round.load());
  EXPECT_EQ(rounds.load(), 1);  // the next round was an hour away
  EXPECT_EQ(inits.load(), 1);
  EXPECT_EQ(ends.load(), 1);
}

TEST(PeriodicWorkerTest, ARoundDueAtOnceRunsWithoutWaiting) {
  FakeClock clock;
  std::atomic<int> rounds{0};
  absl::Notification three_rounds;
  PeriodicWorker worker(
      [&] {
        if (rounds.fetch_add(1) + 1 < 3) return clock.MonoNow();  // due now
        if (!three_rounds.HasBeenNotified()) three_rounds.Notify();
        return clock.MonoNow() + kFarAway;
      },
      &clock);
  worker.Start({});
  three_rounds.WaitForNotification();
  worker.Stop();
  EXPECT_EQ(rounds.load(), 3);
}

TEST(PeriodicWorkerTest, StopWakesAWaitingThreadAndTheDestructorStopsToo) {
  FakeClock clock;
  std::atomic<int> rounds{0};
  {
    PeriodicWorker worker(
        [&] {
          rounds.fetch_add(1);
          return clock.MonoNow() + absl::Hours(24 * 365);
        },
        &clock);
    PeriodicWorker::Hooks hooks;
    hooks.start_waits_for_first_round = true;
    worker.Start(hooks);
  }  // the destructor must not wait a year
  EXPECT_EQ(rounds.load(), 1);
}

TEST(PeriodicWorkerTest, StopWithoutStartIsHarmless) {
  FakeClock clock;
  PeriodicWorker worker([&] { return clock.MonoNow(); }, &clock);
  worker.Stop();
  SUCCEED();
}

}  // namespace
}  // namespace batchfetch

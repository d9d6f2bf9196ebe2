// LeaseKeeper's schedule, logging and counting, on a fake clock with a fake
// store (no database, no sleeps).
#include "service/server/lease_keeper.h"

#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "service/base/log.h"
#include "tests/support/fake_clock.h"

namespace batchfetch {
namespace {

using testing::FakeClock;

// Counts the lease calls and answers them from what the test set.
class FakeLeaseStore : public ResultStore {
 public:
  absl::Status RenewLeases() override {
    absl::MutexLock lock(&mu_);
    ++renewals;
    return renew_status;
  }
  absl::StatusOr<std::vector<std::string>> InterruptExpiredLeases() override {
    absl::MutexLock lock(&mu_);
    ++sweeps;
    if (!sweep_status.ok()) return sweep_status;
    std::vector<std::string> ids;
    if (!to_interrupt.empty()) {
      ids = to_interrupt.front();
      to_interrupt.pop_front();
    }
    return ids;
  }
  absl::StatusOr<v1::BatchSummary> GetBatch(const std::string& batch_id,
                                            const ReadScope&) override {
    v1::BatchSummary summary;
    summary.set_batch_id(batch_id);
    summary.set_state(v1::BATCH_STATE_INTERRUPTED);
    summary.set_state_reason("lease of replica r1 expired at T");
    return summary;
  }
  absl::Status CreateBatch(const BatchRecord&) override {
    return absl::OkStatus();
  }
  void AppendResult(const std::string&, std::shared_ptr<const v1::FetchResult>,
                    absl::Time, Done) override {}
  void FinishBatch(const BatchRecord&, Done) override {}
  absl::StatusOr<ResultPage> ListResults(const std::string&, const ReadScope&,
                                         uint32_t, uint32_t) override {
    return ResultPage();
  }

  absl::Mutex mu_;
  int renewals = 0;
  int sweeps = 0;
  absl::Status renew_status;
  absl::Status sweep_status;
  std::deque<std::vector<std::string>> to_interrupt;
};

class LeaseKeeperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetLogSinkForTest([this](std::string_view line) {
      absl::MutexLock lock(&log_mu_);
      log_.emplace_back(line);
    });
  }
  void TearDown() override { SetLogSinkForTest(nullptr); }

  LeaseKeeper::Options Lease(absl::Duration d) {
    LeaseKeeper::Options options;
    options.lease_duration = d;
    return options;
  }
  int LogCount(const std::string& event) {
    absl::MutexLock lock(&log_mu_);
    int n = 0;
    for (const std::string& line : log_) {
      if (line.find("\"event\":\"" + event + "\"") != std::string::npos) ++n;
    }
    return n;
  }
  std::vector<std::string> LogLines(const std::string& event) {
    absl::MutexLock lock(&log_mu_);
    std::vector<std::string> lines;
    for (const std::string& line : log_) {
      if (line.find("\"event\":\"" + event + "\"") != std::string::npos) {
        lines.push_back(line);
      }
    }
    return lines;
  }

  FakeClock clock_;
  FakeLeaseStore store_;
  StoreStats stats_;
  absl::Mutex log_mu_;
  std::vector<std::string> log_;
};

TEST_F(LeaseKeeperTest, FirstRoundSweepsAndRenewsAtOnce) {
  LeaseKeeper keeper(&store_, &stats_, Lease(absl::Seconds(8)), &clock_);
  const MonoTime next = keeper.RunDue();
  EXPECT_EQ(store_.sweeps, 1);
  EXPECT_EQ(store_.renewals, 1);
  EXPECT_EQ(next, clock_.MonoNow() + absl::Seconds(2));  // a quarter lease
}

TEST_F(LeaseKeeperTest, RenewsEveryQuarterAndSweepsEveryHalfLease) {
  LeaseKeeper keeper(&store_, &stats_, Lease(absl::Seconds(8)), &clock_);
  keeper.RunDue();  // t = 0: both
  clock_.Advance(absl::Seconds(1));
  keeper.RunDue();  // t = 1: nothing due yet
  EXPECT_EQ(store_.renewals, 1);
  EXPECT_EQ(store_.sweeps, 1);
  clock_.Advance(absl::Seconds(1));
  MonoTime next = keeper.RunDue();  // t = 2: renewal only
  EXPECT_EQ(store_.renewals, 2);
  EXPECT_EQ(store_.sweeps, 1);
  EXPECT_EQ(next, clock_.MonoNow() + absl::Seconds(2));
  clock_.Advance(absl::Seconds(2));
  keeper.RunDue();  // t = 4: both
  EXPECT_EQ(store_.renewals, 3);
  EXPECT_EQ(store_.sweeps, 2);
  for (int i = 0; i < 6; ++i) {  // t = 6 .. 16
    clock_.Advance(absl::Seconds(2));
    keeper.RunDue();
  }
  EXPECT_EQ(store_.renewals, 9);
  EXPECT_EQ(store_.sweeps, 5);  // t = 0, 4, 8, 12, 16
}

TEST_F(LeaseKeeperTest,
       EachInterruptedBatchIsLoggedOnceWithItsReasonAndCounted) {
  store_.to_interrupt.push_back({"batch-a", "batch-b"});
  LeaseKeeper keeper(&store_, &stats_, Lease(absl::Seconds(4)), &clock_);
  keeper.RunDue();
  clock_.Advance(absl::Seconds(2));
  keeper.RunDue();  // a second sweep finds nothing new
  std::vector<std::string> lines = LogLines("batch_interrupted");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find("\"batch_id\":\"batch-a\""), std::string::npos);
  EXPECT_NE(lines[1].find("\"batch_id\":\"batch-b\""), std::string::npos);
  EXPECT_NE(lines[0].find("\"reason\":\"lease of replica r1 expired at T\""),
            std::string::npos)
      << lines[0];
  EXPECT_NE(lines[0].find("\"level\":\"warning\""), std::string::npos);
  EXPECT_EQ(stats_.batches_interrupted.value(), 2u);
}

TEST_F(LeaseKeeperTest, AnOutageIsLoggedOnceWhenItStartsAndOnceWhenItEnds) {
  LeaseKeeper keeper(&store_, &stats_, Lease(absl::Seconds(4)), &clock_);
  store_.renew_status = absl::UnavailableError("database gone");
  store_.sweep_status = absl::UnavailableError("database gone");
  for (int i = 0; i < 10; ++i) {  // 10 s of outage: many ticks
    keeper.RunDue();
    clock_.Advance(absl::Seconds(1));
  }
  EXPECT_GE(store_.renewals, 9);  // it kept trying
  EXPECT_GE(store_.sweeps, 5);
  EXPECT_EQ(LogCount("lease_renewal_failed"), 1);
  EXPECT_EQ(LogCount("lease_sweep_failed"), 1);
  EXPECT_EQ(LogCount("lease_renewal_recovered"), 0);
  ASSERT_EQ(LogLines("lease_renewal_failed").size(), 1u);
  EXPECT_NE(LogLines("lease_renewal_failed")[0].find("database gone"),
            std::string::npos);

  store_.renew_status = absl::OkStatus();
  store_.sweep_status = absl::OkStatus();
  for (int i = 0; i < 4; ++i) {
    clock_.Advance(absl::Seconds(1));
    keeper.RunDue();
  }
  EXPECT_EQ(LogCount("lease_renewal_recovered"), 1);
  EXPECT_EQ(LogCount("lease_sweep_recovered"), 1);

  // A second outage is logged again.
  store_.renew_status = absl::UnavailableError("gone again");
  clock_.Advance(absl::Seconds(1));
  keeper.RunDue();
  EXPECT_EQ(LogCount("lease_renewal_failed"), 2);
}

TEST_F(LeaseKeeperTest, StartRunsTheFirstRoundBeforeReturningAndStopJoins) {
  bool thread_initialized = false;
  bool thread_ended = false;
  LeaseKeeper::Options options = Lease(absl::Seconds(30));
  options.thread_init = [&] { thread_initialized = true; };
  options.thread_end = [&] { thread_ended = true; };
  LeaseKeeper keeper(&store_, &stats_, options, &clock_);
  keeper.Start();
  EXPECT_TRUE(thread_initialized);
  {
    absl::MutexLock lock(&store_.mu_);
    EXPECT_EQ(store_.sweeps, 1);
    EXPECT_EQ(store_.renewals, 1);
  }
  // The thread now waits 7.5 s; Stop wakes it at once.
  keeper.Stop();
  EXPECT_TRUE(thread_ended);
  EXPECT_EQ(store_.sweeps, 1);
}

TEST_F(LeaseKeeperTest, TheDefaultStoreHasNothingToRenewOrSweep) {
  // A store without leases (the ResultStore defaults) is harmless to keep.
  class NoLeases : public FakeLeaseStore {
   public:
    absl::Status RenewLeases() override { return ResultStore::RenewLeases(); }
    absl::StatusOr<std::vector<std::string>> InterruptExpiredLeases() override {
      return ResultStore::InterruptExpiredLeases();
    }
  } store;
  LeaseKeeper keeper(&store, nullptr, Lease(absl::Seconds(4)), &clock_);
  keeper.RunDue();
  EXPECT_EQ(LogCount("lease_renewal_failed"), 0);
  EXPECT_EQ(LogCount("batch_interrupted"), 0);
}

TEST_F(LeaseKeeperTest, HandsEachSweepsInterruptedBatchesToTheListener) {
  store_.to_interrupt = {{"b1", "b2"}, {}, {"b3"}};
  std::vector<std::vector<std::string>> heard;
  LeaseKeeper keeper(&store_, &stats_, Lease(absl::Seconds(4)), &clock_);
  keeper.SetSweepListener(
      [&](std::vector<std::string> ids) { heard.push_back(std::move(ids)); });
  for (int i = 0; i < 3; ++i) {
    keeper.RunDue();
    clock_.Advance(absl::Seconds(2));  // half a lease: the next sweep
  }
  // Every sweep is a call, the empty one too (the listener's retry round).
  ASSERT_EQ(heard.size(), 3u);
  EXPECT_EQ(heard[0], (std::vector<std::string>{"b1", "b2"}));
  EXPECT_TRUE(heard[1].empty());
  EXPECT_EQ(heard[2], (std::vector<std::string>{"b3"}));
}

TEST_F(LeaseKeeperTest, KeepsWhatASweepInterruptedBeforeAListenerWasSet) {
  store_.to_interrupt = {{"b1"}, {"b2"}};
  std::vector<std::vector<std::string>> heard;
  LeaseKeeper keeper(&store_, &stats_, Lease(absl::Seconds(4)), &clock_);
  keeper.RunDue();  // the first sweep, before the service exists
  keeper.SetSweepListener(
      [&](std::vector<std::string> ids) { heard.push_back(std::move(ids)); });
  clock_.Advance(absl::Seconds(2));
  keeper.RunDue();
  ASSERT_EQ(heard.size(), 1u);
  EXPECT_EQ(heard[0], (std::vector<std::string>{"b1", "b2"}));
  // Unset: later sweeps call nobody.
  keeper.SetSweepListener(nullptr);
  clock_.Advance(absl::Seconds(2));
  keeper.RunDue();
  EXPECT_EQ(heard.size(), 1u);
}

TEST_F(LeaseKeeperTest, AFailedSweepCallsNoListener) {
  store_.sweep_status = absl::UnavailableError("database away");
  int calls = 0;
  LeaseKeeper keeper(&store_, &stats_, Lease(absl::Seconds(4)), &clock_);
  keeper.SetSweepListener([&](std::vector<std::string>) { ++calls; });
  keeper.RunDue();
  EXPECT_EQ(calls, 0);
}

}  // namespace
}  // namespace batchfetch

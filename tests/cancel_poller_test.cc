// CancelPoller's schedule, its calls and its log lines, on a fake clock with
// a fake store (no database, no sleeps).
#include "service/server/cancel_poller.h"

#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/captured_log.h"
#include "tests/support/fake_clock.h"
#include "tests/support/stub_result_store.h"

namespace batchfetch {
namespace {

using testing::FakeClock;

// Answers CancelRequestedBatches from a script; counts the calls.
class FakeCancelStore : public testing::StubResultStore {
 public:
  absl::StatusOr<std::vector<std::string>> CancelRequestedBatches() override {
    ++polls;
    if (!status.ok()) return status;
    return requested;
  }

  int polls = 0;
  absl::Status status;
  std::vector<std::string> requested;
};

class CancelPollerTest : public ::testing::Test {
 protected:
  CancelPoller MakePoller() {
    CancelPoller::Options options;
    options.interval = absl::Milliseconds(500);
    return CancelPoller(
        &store_,
        [this](const std::string& batch_id) { cancelled_.push_back(batch_id); },
        options, &clock_);
  }

  int LogCount(std::string_view event) { return log_.Count(event); }

  testing::CapturedLog log_;
  FakeClock clock_;
  FakeCancelStore store_;
  std::vector<std::string> cancelled_;
};

TEST_F(CancelPollerTest, FirstRoundCancelsEveryRequestedBatch) {
  store_.requested = {"a", "b"};
  CancelPoller poller = MakePoller();
  poller.RunDue();
  EXPECT_EQ(store_.polls, 1);
  EXPECT_EQ(cancelled_, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(LogCount("batch_cancelled_remotely"), 2);
}

TEST_F(CancelPollerTest, PollsOncePerIntervalAndNotBefore) {
  CancelPoller poller = MakePoller();
  const MonoTime start = clock_.MonoNow();
  EXPECT_EQ(poller.RunDue(), start + absl::Milliseconds(500));
  clock_.Advance(absl::Milliseconds(499));
  poller.RunDue();
  EXPECT_EQ(store_.polls, 1);
  clock_.Advance(absl::Milliseconds(1));
  store_.requested = {"late"};
  EXPECT_EQ(poller.RunDue(), start + absl::Milliseconds(1000));
  EXPECT_EQ(store_.polls, 2);
  EXPECT_EQ(cancelled_, (std::vector<std::string>{"late"}));
}

TEST_F(CancelPollerTest, BatchStillListedIsCancelledAgainButLoggedOnce) {
  store_.requested = {"a"};
  CancelPoller poller = MakePoller();
  poller.RunDue();
  clock_.Advance(absl::Milliseconds(500));
  poller.RunDue();
  EXPECT_EQ(cancelled_, (std::vector<std::string>{"a", "a"}));
  EXPECT_EQ(LogCount("batch_cancelled_remotely"), 1);
}

TEST_F(CancelPollerTest, OutageIsLoggedOnceAndRecoveryOnce) {
  store_.status = absl::UnavailableError("db away");
  CancelPoller poller = MakePoller();
  for (int i = 0; i < 3; ++i) {
    poller.RunDue();
    clock_.Advance(absl::Milliseconds(500));
  }
  EXPECT_EQ(store_.polls, 3);
  EXPECT_EQ(LogCount("cancel_poll_failed"), 1);
  EXPECT_EQ(LogCount("cancel_poll_recovered"), 0);
  store_.status = absl::OkStatus();
  store_.requested = {"x"};
  poller.RunDue();
  EXPECT_EQ(LogCount("cancel_poll_recovered"), 1);
  EXPECT_EQ(cancelled_, (std::vector<std::string>{"x"}));
}

TEST_F(CancelPollerTest, StartAndStopJoinTheThread) {
  store_.requested = {};
  CancelPoller poller = MakePoller();
  poller.Start();
  poller.Stop();
  SUCCEED();
}

}  // namespace
}  // namespace batchfetch

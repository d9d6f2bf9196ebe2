// RetentionKeeper's schedule, cutoff and log lines, on a fake clock with a
// fake store (no database, no sleeps). What the MySQL store deletes is
// tested against MariaDB in store_retention_test.cc.
#include "service/server/retention_keeper.h"

#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/support/captured_log.h"
#include "tests/support/fake_clock.h"
#include "tests/support/stub_result_store.h"

namespace batchfetch {
namespace {

using testing::FakeClock;

// Records each DeleteExpiredBatches call and answers from `answers` (then
// an empty pass).
class FakeRetentionStore : public testing::StubResultStore {
 public:
  struct Call {
    absl::Time ended_before;
    int max_batches;
  };

  absl::StatusOr<RetentionPass> DeleteExpiredBatches(absl::Time ended_before,
                                                     int max_batches) override {
    calls.push_back({ended_before, max_batches});
    if (answers.empty()) return RetentionPass{};
    absl::StatusOr<RetentionPass> answer = answers.front();
    answers.pop_front();
    return answer;
  }

  std::vector<Call> calls;
  std::deque<absl::StatusOr<RetentionPass>> answers;
};

RetentionPass Deleted(uint64_t batches, uint64_t rows, bool more = false) {
  RetentionPass pass;
  pass.batches = batches;
  pass.rows = rows;
  pass.more = more;
  return pass;
}

class RetentionKeeperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.retention = absl::Hours(24 * 30);
    options_.interval = absl::Minutes(5);
    options_.max_batches_per_pass = 50;
    options_.pause_between_passes = absl::Seconds(1);
  }
  int Logged(const std::string& event) const { return log_.Count(event); }
  std::vector<std::string> Lines() const { return log_.Lines(); }

  testing::CapturedLog log_;
  FakeClock clock_;
  FakeRetentionStore store_;
  RetentionKeeper::Options options_;
};

TEST_F(RetentionKeeperTest, TheFirstPassRunsAtOnceWithTheCutoffRetentionAgo) {
  RetentionKeeper keeper(&store_, options_, &clock_);
  keeper.RunDue();
  ASSERT_EQ(store_.calls.size(), 1u);
  EXPECT_EQ(store_.calls[0].ended_before,
            clock_.WallNow() - absl::Hours(24 * 30));
  EXPECT_EQ(store_.calls[0].max_batches, 50);
}

TEST_F(RetentionKeeperTest, PassesFollowEveryIntervalWithAMovingCutoff) {
  RetentionKeeper keeper(&store_, options_, &clock_);
  const MonoTime start = clock_.MonoNow();
  EXPECT_EQ(keeper.RunDue(), start + absl::Minutes(5));
  clock_.Advance(absl::Minutes(4));
  keeper.RunDue();
  EXPECT_EQ(store_.calls.size(), 1u);  // not due yet
  clock_.Advance(absl::Minutes(1));
  keeper.RunDue();
  ASSERT_EQ(store_.calls.size(), 2u);
  EXPECT_EQ(store_.calls[1].ended_before - store_.calls[0].ended_before,
            absl::Minutes(5));
}

TEST_F(RetentionKeeperTest, ABacklogIsWorkedOffAfterShortPauses) {
  store_.answers = {Deleted(50, 5000, /*more=*/true),
                    Deleted(50, 5000, /*more=*/true), Deleted(7, 70)};
  RetentionKeeper keeper(&store_, options_, &clock_);
  const MonoTime start = clock_.MonoNow();
  EXPECT_EQ(keeper.RunDue(), start + absl::Seconds(1));
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(keeper.RunDue(), start + absl::Seconds(2));
  clock_.Advance(absl::Seconds(1));
  // The backlog is gone: back to the interval.
  EXPECT_EQ(keeper.RunDue(), start + absl::Seconds(2) + absl::Minutes(5));
  EXPECT_EQ(store_.calls.size(), 3u);
}

TEST_F(RetentionKeeperTest, LogsWhatAPassDeletedAndNothingForAnEmptyPass) {
  store_.answers = {Deleted(2, 31), Deleted(0, 0)};
  RetentionKeeper keeper(&store_, options_, &clock_);
  keeper.RunDue();
  std::vector<std::string> lines = Lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(absl::StrContains(lines[0], "\"level\":\"info\"")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[0], "\"event\":\"retention_deleted\""));
  EXPECT_TRUE(absl::StrContains(lines[0], "\"batches\":2")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[0], "\"rows\":31")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[0], "\"ended_before\":\"2023-10-15T"))
      << lines[0];
  clock_.Advance(absl::Minutes(5));
  keeper.RunDue();
  EXPECT_EQ(Lines().size(), 1u);
}

TEST_F(RetentionKeeperTest, AnOutageIsLoggedOnceAndItsEndOnce) {
  store_.answers = {absl::UnavailableError("database away"),
                    absl::UnavailableError("database away"), Deleted(0, 0)};
  RetentionKeeper keeper(&store_, options_, &clock_);
  const MonoTime start = clock_.MonoNow();
  // A failed pass is retried at the interval, not hammered.
  EXPECT_EQ(keeper.RunDue(), start + absl::Minutes(5));
  clock_.Advance(absl::Minutes(5));
  keeper.RunDue();
  clock_.Advance(absl::Minutes(5));
  keeper.RunDue();
  EXPECT_EQ(store_.calls.size(), 3u);
  EXPECT_EQ(Logged("retention_failed"), 1);
  EXPECT_EQ(Logged("retention_recovered"), 1);
  const std::string first = Lines()[0];
  EXPECT_TRUE(absl::StrContains(first, "database away")) << first;
}

TEST_F(RetentionKeeperTest, TheThreadRunsTheFirstPassAndStops) {
  RetentionKeeper keeper(&store_, options_);
  keeper.Start();
  // Stop waits for the thread, which ran its first pass before waiting.
  keeper.Stop();
  EXPECT_EQ(store_.calls.size(), 1u);
}

}  // namespace
}  // namespace batchfetch

// The writer's give-up decision, driven by a fake clock (no sleeps, no
// database).
#include "gtest/gtest.h"
#include "service/store/mysql/write_retry_policy.h"
#include "tests/support/fake_clock.h"

namespace batchfetch {
namespace {

using Kind = MysqlErrorKind;
using testing::FakeClock;

WriteRetryPolicy::Options Budget(absl::Duration budget) {
  WriteRetryPolicy::Options options;
  options.budget = budget;
  options.initial_backoff = absl::Milliseconds(50);
  options.max_backoff = absl::Seconds(2);
  return options;
}

TEST(WriteRetryPolicyTest, PermanentErrorsAreNotRetried) {
  FakeClock clock;
  WriteRetryPolicy policy(Budget(absl::Seconds(30)), &clock);
  for (Kind kind : {Kind::kPermanent, Kind::kDuplicate, Kind::kNone}) {
    WriteRetryPolicy::Group group = policy.StartGroup();
    EXPECT_FALSE(group.NextDelay(kind).has_value());
  }
}

TEST(WriteRetryPolicyTest, BackoffDoublesUpToTheCap) {
  FakeClock clock;
  WriteRetryPolicy policy(Budget(absl::Seconds(30)), &clock);
  WriteRetryPolicy::Group group = policy.StartGroup();
  std::vector<absl::Duration> delays;
  for (int i = 0; i < 8; ++i) {
    auto d = group.NextDelay(i % 2 ? Kind::kRetryable : Kind::kConnectionLost);
    ASSERT_TRUE(d.has_value()) << i;
    delays.push_back(*d);
    clock.Advance(*d);
  }
  EXPECT_EQ(delays[0], absl::Milliseconds(50));
  EXPECT_EQ(delays[1], absl::Milliseconds(100));
  EXPECT_EQ(delays[2], absl::Milliseconds(200));
  EXPECT_EQ(delays[5], absl::Milliseconds(1600));
  EXPECT_EQ(delays[6], absl::Seconds(2));
  EXPECT_EQ(delays[7], absl::Seconds(2));
}

TEST(WriteRetryPolicyTest, GivesUpWhenTheNextTryWouldPassTheBudget) {
  FakeClock clock;
  WriteRetryPolicy policy(Budget(absl::Seconds(3)), &clock);
  WriteRetryPolicy::Group group = policy.StartGroup();
  // Each try itself hangs for a 1 s I/O timeout.
  absl::Duration elapsed;
  int tries = 0;
  while (true) {
    clock.Advance(absl::Seconds(1));
    elapsed += absl::Seconds(1);
    ++tries;
    auto d = group.NextDelay(Kind::kConnectionLost);
    if (!d.has_value()) break;
    clock.Advance(*d);
    elapsed += *d;
  }
  EXPECT_EQ(tries, 3);
  EXPECT_LE(elapsed, absl::Seconds(3) + absl::Seconds(1));
  // Once given up, it stays given up.
  EXPECT_FALSE(group.NextDelay(Kind::kConnectionLost).has_value());
}

TEST(WriteRetryPolicyTest, EachGroupHasItsOwnBudget) {
  FakeClock clock;
  WriteRetryPolicy policy(Budget(absl::Seconds(1)), &clock);
  WriteRetryPolicy::Group first = policy.StartGroup();
  clock.Advance(absl::Seconds(5));
  EXPECT_FALSE(first.NextDelay(Kind::kConnectionLost).has_value());
  WriteRetryPolicy::Group second = policy.StartGroup();
  EXPECT_EQ(second.NextDelay(Kind::kConnectionLost), absl::Milliseconds(50));
}

TEST(WriteRetryPolicyTest, DrainingSharesOneBudget) {
  FakeClock clock;
  WriteRetryPolicy policy(Budget(absl::Seconds(10)), &clock);
  EXPECT_FALSE(policy.draining());
  const MonoTime stop = clock.MonoNow();
  clock.Advance(absl::Seconds(1));  // the writer sees the stop a bit later
  policy.StartDraining(stop);
  EXPECT_TRUE(policy.draining());
  clock.Advance(absl::Seconds(7));
  policy.StartDraining(clock.MonoNow());  // the first call counts
  WriteRetryPolicy::Group late = policy.StartGroup();
  EXPECT_EQ(late.deadline(), stop + absl::Seconds(10));
  clock.Advance(absl::Milliseconds(1990));
  EXPECT_FALSE(late.NextDelay(Kind::kConnectionLost).has_value());
}

TEST(WriteRetryPolicyTest, AfterTheDrainBudgetAnUnreachableDatabaseIsNotTried) {
  FakeClock clock;
  WriteRetryPolicy policy(Budget(absl::Seconds(3)), &clock);
  WriteRetryPolicy::Group stuck = policy.StartGroup();
  policy.StartDraining(clock.MonoNow());
  EXPECT_FALSE(policy.GiveUpWithoutTrying());
  clock.Advance(absl::Seconds(4));
  // Past the drain deadline, but nothing was given up yet: still try.
  EXPECT_FALSE(policy.GiveUpWithoutTrying());
  EXPECT_FALSE(stuck.NextDelay(Kind::kConnectionLost).has_value());
  // Given up as unreachable: the rest of the queue is not tried.
  EXPECT_TRUE(policy.GiveUpWithoutTrying());
  EXPECT_TRUE(policy.GiveUpWithoutTrying());
}

TEST(WriteRetryPolicyTest, AShortDrainBudgetAlsoCutsTheGroupInProgress) {
  FakeClock clock;
  WriteRetryPolicy::Options options = Budget(absl::Seconds(30));
  options.drain_budget = absl::Seconds(2);  // what is given up is spooled
  WriteRetryPolicy policy(options, &clock);
  WriteRetryPolicy::Group in_progress = policy.StartGroup();
  EXPECT_EQ(in_progress.deadline(), clock.MonoNow() + absl::Seconds(30));
  clock.Advance(absl::Seconds(5));
  EXPECT_TRUE(in_progress.NextDelay(Kind::kConnectionLost).has_value());
  policy.StartDraining(clock.MonoNow());
  EXPECT_EQ(policy.StartGroup().deadline(), clock.MonoNow() + absl::Seconds(2));
  clock.Advance(absl::Milliseconds(1990));
  EXPECT_FALSE(in_progress.NextDelay(Kind::kConnectionLost).has_value())
      << "the group begun before the drain must not keep its 30 s";
}

TEST(WriteRetryPolicyTest, AHealthyDatabaseDrainsEverything) {
  FakeClock clock;
  WriteRetryPolicy policy(Budget(absl::Seconds(3)), &clock);
  policy.StartDraining(clock.MonoNow());
  for (int i = 0; i < 10; ++i) {
    EXPECT_FALSE(policy.GiveUpWithoutTrying()) << i;
    WriteRetryPolicy::Group group = policy.StartGroup();
    clock.Advance(absl::Seconds(1));  // slow, but it answers
    group.Succeeded();
  }
  // A permanent error also shows the database answers.
  WriteRetryPolicy::Group lost = policy.StartGroup();
  EXPECT_FALSE(lost.NextDelay(Kind::kConnectionLost).has_value());
  EXPECT_TRUE(policy.GiveUpWithoutTrying());
  WriteRetryPolicy::Group bad_row = policy.StartGroup();
  EXPECT_FALSE(bad_row.NextDelay(Kind::kPermanent).has_value());
  EXPECT_FALSE(policy.GiveUpWithoutTrying());
}

TEST(WriteRetryPolicyTest, NotDrainingAlwaysTries) {
  FakeClock clock;
  WriteRetryPolicy policy(Budget(absl::Seconds(1)), &clock);
  WriteRetryPolicy::Group group = policy.StartGroup();
  clock.Advance(absl::Seconds(2));
  EXPECT_FALSE(group.NextDelay(Kind::kConnectionLost).has_value());
  EXPECT_FALSE(policy.GiveUpWithoutTrying());
}

TEST(WriteRetryPolicyTest, ZeroBudgetNeverRetries) {
  FakeClock clock;
  WriteRetryPolicy policy(Budget(absl::ZeroDuration()), &clock);
  WriteRetryPolicy::Group group = policy.StartGroup();
  EXPECT_FALSE(group.NextDelay(Kind::kConnectionLost).has_value());
}

TEST(WriteRetryPolicyTest, InfiniteBudgetKeepsRetrying) {
  FakeClock clock;
  WriteRetryPolicy policy(Budget(absl::InfiniteDuration()), &clock);
  WriteRetryPolicy::Group group = policy.StartGroup();
  clock.Advance(absl::Hours(24 * 400));
  EXPECT_EQ(group.NextDelay(Kind::kRetryable), absl::Milliseconds(50));
}

}  // namespace
}  // namespace batchfetch

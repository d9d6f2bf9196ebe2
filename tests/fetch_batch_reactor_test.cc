#include "service/api/fetch_batch_reactor.h"

#include "gtest/gtest.h"

namespace batchfetch {
namespace {

const absl::Time kDeadline = absl::FromUnixSeconds(1'700'000'000);

// Which cancels end a batch as its deadline would (running transfers
// TIMEOUT) rather than as a cancel.
TEST(CancelledByDeadline, OnlyAtOrJustBeforeTheCallDeadline) {
  EXPECT_TRUE(CancelledByDeadline(kDeadline, kDeadline));
  EXPECT_TRUE(CancelledByDeadline(kDeadline, kDeadline + absl::Seconds(5)));
  // The client's RST can arrive a moment before our own timer fires.
  EXPECT_TRUE(CancelledByDeadline(kDeadline, kDeadline - kDeadlineSlack));
  EXPECT_FALSE(CancelledByDeadline(
      kDeadline, kDeadline - kDeadlineSlack - absl::Milliseconds(1)));
  EXPECT_FALSE(CancelledByDeadline(kDeadline, kDeadline - absl::Seconds(10)));
  EXPECT_FALSE(CancelledByDeadline(absl::InfiniteFuture(), kDeadline));
}

}  // namespace
}  // namespace batchfetch

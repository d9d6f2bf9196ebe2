// ActiveBatchLimiter: the server-wide and per-caller counts, refusals that
// name their flag, and leases that give the place back.
#include "service/api/active_batch_limiter.h"

#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace batchfetch {
namespace {

TEST(ActiveBatchLimiter, ServerWideLimitIsReachedThenOverThenReleased) {
  ActiveBatchLimiter limiter({/*max_active=*/2, /*max_per_caller=*/0});
  auto first = limiter.TryAcquire("a");
  auto second = limiter.TryAcquire("b");
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(limiter.active(), 2);  // reached

  auto over = limiter.TryAcquire("c");
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(
      absl::StrContains(over.status().message(), "--max_active_batches=2"))
      << over.status();
  EXPECT_EQ(limiter.active(), 2);  // a refusal takes no place

  first->Release();
  EXPECT_EQ(limiter.active(), 1);
  EXPECT_TRUE(limiter.TryAcquire("c").ok());
}

// The drain closes the limiter: a FetchBatch that passed the draining check
// just before cannot start a batch the drain did not count.
TEST(ActiveBatchLimiter,
     ClosedLimiterRefusesNewLeasesButKeepsCountingHeldOnes) {
  ActiveBatchLimiter limiter({/*max_active=*/0, /*max_per_caller=*/0});
  auto held = limiter.TryAcquire("a");
  ASSERT_TRUE(held.ok());
  limiter.Close();

  auto late = limiter.TryAcquire("b");
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(late.status().message(), "draining"))
      << late.status();
  EXPECT_EQ(limiter.active(), 1);  // the held lease still counts

  held->Release();
  EXPECT_EQ(limiter.active(), 0);
  limiter.Close();  // idempotent
  EXPECT_FALSE(limiter.TryAcquire("a").ok());
}

TEST(ActiveBatchLimiter, PerCallerLimitCountsEachCallerApart) {
  ActiveBatchLimiter limiter({/*max_active=*/0, /*max_per_caller=*/1});
  auto alice = limiter.TryAcquire("alice");
  ASSERT_TRUE(alice.ok());
  auto again = limiter.TryAcquire("alice");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(again.status().message(),
                                "--max_active_batches_per_caller=1"))
      << again.status();
  auto bob = limiter.TryAcquire("bob");
  EXPECT_TRUE(bob.ok());
  EXPECT_EQ(limiter.active_for("alice"), 1);
  EXPECT_EQ(limiter.active_for("bob"), 1);
  { ActiveBatchLimiter::Lease gone = *std::move(alice); }  // destroyed
  EXPECT_EQ(limiter.active_for("alice"), 0);
  EXPECT_TRUE(limiter.TryAcquire("alice").ok());
}

TEST(ActiveBatchLimiter, ZeroMeansNoLimit) {
  ActiveBatchLimiter limiter({0, 0});
  std::vector<ActiveBatchLimiter::Lease> leases;
  for (int i = 0; i < 1000; ++i) {
    auto lease = limiter.TryAcquire("one caller");
    ASSERT_TRUE(lease.ok());
    leases.push_back(*std::move(lease));
  }
  EXPECT_EQ(limiter.active(), 1000);
  leases.clear();
  EXPECT_EQ(limiter.active(), 0);
}

TEST(ActiveBatchLimiter, LeasesReleaseOnceWhateverIsMovedOrReleased) {
  ActiveBatchLimiter limiter({1, 1});
  auto lease = limiter.TryAcquire("a");
  ASSERT_TRUE(lease.ok());
  ActiveBatchLimiter::Lease moved = *std::move(lease);
  EXPECT_FALSE(lease->held());
  EXPECT_TRUE(moved.held());
  lease->Release();  // empty: nothing
  EXPECT_EQ(limiter.active(), 1);
  moved.Release();
  moved.Release();
  EXPECT_EQ(limiter.active(), 0);
  ActiveBatchLimiter::Lease assigned = *limiter.TryAcquire("a");
  assigned = ActiveBatchLimiter::Lease();  // releases what it held
  EXPECT_EQ(limiter.active(), 0);
}

TEST(PeerAddressKey, DropsThePortSoOneClientSharesOneCount) {
  EXPECT_EQ(PeerAddressKey("ipv4:127.0.0.1:5555"), "ipv4:127.0.0.1");
  EXPECT_EQ(PeerAddressKey("ipv6:[::1]:5555"), "ipv6:[::1]");
  EXPECT_EQ(PeerAddressKey("ipv6:[2001:db8::1]:443"), "ipv6:[2001:db8::1]");
  EXPECT_EQ(PeerAddressKey("ipv6:%5B::1%5D:5555"), "ipv6:%5B::1%5D");
  EXPECT_EQ(PeerAddressKey("ipv6:::1"), "ipv6:::1");  // no port: as it is
  EXPECT_EQ(PeerAddressKey("unix:/tmp/socket"), "unix:/tmp/socket");
  EXPECT_EQ(PeerAddressKey("ipv4:10.0.0.1"), "ipv4:10.0.0.1");
}

}  // namespace
}  // namespace batchfetch

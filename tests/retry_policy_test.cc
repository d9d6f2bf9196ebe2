// Retry decisions, backoff and Retry-After: pure, driven by a fixed
// monotonic time and a seeded bit generator.
#include "service/fetch/retry_policy.h"

#include <random>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace batchfetch {
namespace {

const MonoTime kNow = MonoTime() + absl::Hours(1);
const absl::Time kWallNow = absl::FromUnixSeconds(1'700'000'000);

FetchedResponse Response(int status) {
  FetchedResponse r;
  r.result = TransferResult::kResponse;
  r.http_status = status;
  return r;
}

FetchedResponse Failure(TransferResult result) {
  FetchedResponse r;
  r.result = result;
  r.error = "boom";
  return r;
}

TEST(RetryPolicy, DefaultsRetryConnectTimeout429AndGatewayErrors) {
  const RetryOptions retry = RetryOptions::Defaults(3);
  const HttpMethod get = HttpMethod::kGet;
  EXPECT_TRUE(IsRetryable(retry, get, Failure(TransferResult::kConnectError)));
  EXPECT_TRUE(IsRetryable(retry, get, Failure(TransferResult::kDnsError)));
  EXPECT_TRUE(IsRetryable(retry, get, Failure(TransferResult::kTimeout)));
  EXPECT_TRUE(IsRetryable(retry, get, Response(429)));
  EXPECT_TRUE(IsRetryable(retry, get, Response(502)));
  EXPECT_TRUE(IsRetryable(retry, get, Response(503)));
  EXPECT_TRUE(IsRetryable(retry, get, Response(504)));
  EXPECT_FALSE(IsRetryable(retry, get, Response(500)));
  EXPECT_FALSE(IsRetryable(retry, get, Response(404)));
  EXPECT_FALSE(IsRetryable(retry, get, Response(200)));
  EXPECT_FALSE(
      IsRetryable(retry, get, Failure(TransferResult::kTransportError)));
}

TEST(RetryPolicy, NeverRetriesOutcomesThatCannotImprove) {
  RetryOptions retry = RetryOptions::Defaults(5);
  retry.on_transport_error = true;
  retry.on_5xx = true;
  for (TransferResult result :
       {TransferResult::kTlsError, TransferResult::kTooLarge,
        TransferResult::kBlocked, TransferResult::kCancelled,
        TransferResult::kInvalidRequest}) {
    EXPECT_FALSE(IsRetryable(retry, HttpMethod::kGet, Failure(result)))
        << static_cast<int>(result);
  }
}

TEST(RetryPolicy, EachConditionSelectsOnlyItsOutcomes) {
  RetryOptions retry;
  retry.max_attempts = 3;
  const HttpMethod get = HttpMethod::kGet;
  EXPECT_FALSE(IsRetryable(retry, get, Failure(TransferResult::kTimeout)));
  retry.on_timeout = true;
  EXPECT_TRUE(IsRetryable(retry, get, Failure(TransferResult::kTimeout)));
  EXPECT_FALSE(IsRetryable(retry, get, Failure(TransferResult::kConnectError)));
  retry.on_connect_error = true;
  EXPECT_TRUE(IsRetryable(retry, get, Failure(TransferResult::kConnectError)));
  EXPECT_TRUE(IsRetryable(retry, get, Failure(TransferResult::kDnsError)));
  EXPECT_FALSE(
      IsRetryable(retry, get, Failure(TransferResult::kTransportError)));
  retry.on_transport_error = true;
  EXPECT_TRUE(
      IsRetryable(retry, get, Failure(TransferResult::kTransportError)));
  EXPECT_FALSE(IsRetryable(retry, get, Response(500)));
  retry.on_5xx = true;
  EXPECT_TRUE(IsRetryable(retry, get, Response(500)));
  EXPECT_TRUE(IsRetryable(retry, get, Response(599)));
  EXPECT_FALSE(IsRetryable(retry, get, Response(429)));
  retry.on_429 = true;
  EXPECT_TRUE(IsRetryable(retry, get, Response(429)));
  EXPECT_FALSE(IsRetryable(retry, get, Response(409)));
  retry.on_status = {409};
  EXPECT_TRUE(IsRetryable(retry, get, Response(409)));
}

TEST(RetryPolicy, RetriesPostAndPatchOnlyWhenAskedTo) {
  RetryOptions retry = RetryOptions::Defaults(3);
  for (HttpMethod m : {HttpMethod::kGet, HttpMethod::kHead, HttpMethod::kPut,
                       HttpMethod::kDelete, HttpMethod::kOptions}) {
    EXPECT_TRUE(IsRetryable(retry, m, Response(503))) << MethodName(m);
  }
  EXPECT_FALSE(IsRetryable(retry, HttpMethod::kPost, Response(503)));
  EXPECT_FALSE(IsRetryable(retry, HttpMethod::kPatch, Response(503)));
  retry.non_idempotent = true;
  EXPECT_TRUE(IsRetryable(retry, HttpMethod::kPost, Response(503)));
  EXPECT_TRUE(IsRetryable(retry, HttpMethod::kPatch, Response(503)));
}

TEST(RetryPolicy, TimeoutCutByTheDeadlineIsNotRetried) {
  FetchedResponse cut = Failure(TransferResult::kTimeout);
  cut.end_reason = EndReason::kDeadlineCut;
  // Whatever its error says: the decision reads the typed reason.
  cut.error = "anything";
  EXPECT_FALSE(IsRetryable(RetryOptions::Defaults(3), HttpMethod::kGet, cut));
}

TEST(RetryPolicy, BackoffStaysWithinTheDoublingCap) {
  RetryOptions retry;
  retry.initial_backoff = absl::Milliseconds(100);
  retry.max_backoff = absl::Milliseconds(700);
  std::mt19937_64 random(42);
  const absl::Duration caps[] = {
      absl::Milliseconds(100), absl::Milliseconds(200), absl::Milliseconds(400),
      absl::Milliseconds(700), absl::Milliseconds(700)};
  for (int attempts = 1; attempts <= 5; ++attempts) {
    absl::Duration most = absl::ZeroDuration();
    for (int i = 0; i < 2000; ++i) {
      const absl::Duration d = Backoff(retry, attempts, random);
      ASSERT_GE(d, absl::ZeroDuration());
      ASSERT_LT(d, caps[attempts - 1]);
      most = std::max(most, d);
    }
    // Full jitter uses the whole range.
    EXPECT_GT(most, caps[attempts - 1] * 0.9) << attempts;
  }
}

TEST(RetryPolicy, BackoffWithHugeAttemptCountDoesNotOverflow) {
  RetryOptions retry;
  retry.initial_backoff = absl::Hours(1);
  retry.max_backoff = absl::Hours(1);
  std::mt19937_64 random(1);
  EXPECT_LT(Backoff(retry, 1000, random), absl::Hours(1));
  retry.initial_backoff = absl::ZeroDuration();
  retry.max_backoff = absl::ZeroDuration();
  EXPECT_EQ(Backoff(retry, 3, random), absl::ZeroDuration());
}

TEST(RetryPolicy, ParsesRetryAfterSecondsAndHttpDates) {
  EXPECT_EQ(ParseRetryAfter("120", kWallNow), absl::Seconds(120));
  EXPECT_EQ(ParseRetryAfter(" 0 ", kWallNow), absl::ZeroDuration());
  const std::string date =
      absl::FormatTime("%a, %d %b %Y %H:%M:%S GMT",
                       kWallNow + absl::Seconds(90), absl::UTCTimeZone());
  EXPECT_EQ(ParseRetryAfter(date, kWallNow), absl::Seconds(90));
}

TEST(RetryPolicy, RetryAfterInThePastMeansNow) {
  const std::string past =
      absl::FormatTime("%a, %d %b %Y %H:%M:%S GMT", kWallNow - absl::Hours(2),
                       absl::UTCTimeZone());
  EXPECT_EQ(ParseRetryAfter(past, kWallNow), absl::ZeroDuration());
}

TEST(RetryPolicy, RejectsGarbageRetryAfter) {
  for (const char* bad : {"", "  ", "-5", "soon", "12abc", "1.5", "0x10"}) {
    EXPECT_FALSE(ParseRetryAfter(bad, kWallNow).has_value()) << bad;
  }
}

RetryInput Input(const RetryOptions& options, int attempts_made) {
  RetryInput input;
  input.options = &options;
  input.attempts_made = attempts_made;
  input.now = kNow;
  return input;
}

TEST(RetryPolicy, PlansARetryWithinTheBackoff) {
  RetryOptions retry = RetryOptions::Defaults(3);
  retry.max_backoff = absl::Seconds(1);
  std::mt19937_64 random(7);
  const RetryPlan plan = PlanRetry(Input(retry, 1), Response(503), random);
  ASSERT_EQ(plan.kind, RetryPlan::Kind::kRetry);
  EXPECT_GE(plan.at, kNow);
  EXPECT_LT(plan.at, kNow + retry.initial_backoff);
}

TEST(RetryPolicy, StopsAfterMaxAttemptsOrCancel) {
  const RetryOptions retry = RetryOptions::Defaults(3);
  std::mt19937_64 random(7);
  EXPECT_EQ(PlanRetry(Input(retry, 3), Response(503), random).kind,
            RetryPlan::Kind::kDeliver);
  RetryInput cancelled = Input(retry, 1);
  cancelled.cancelled = true;
  EXPECT_EQ(PlanRetry(cancelled, Response(503), random).kind,
            RetryPlan::Kind::kDeliver);
}

TEST(RetryPolicy, HonoursRetryAfterOverBackoff) {
  const RetryOptions retry = RetryOptions::Defaults(3);
  std::mt19937_64 random(7);
  RetryInput input = Input(retry, 1);
  input.retry_after = absl::Seconds(5);
  const RetryPlan plan = PlanRetry(input, Response(429), random);
  ASSERT_EQ(plan.kind, RetryPlan::Kind::kRetry);
  EXPECT_EQ(plan.at, kNow + absl::Seconds(5));
}

TEST(RetryPolicy, RetryAfterBeyondTheCapMeansNoRetry) {
  const RetryOptions retry = RetryOptions::Defaults(3);
  std::mt19937_64 random(7);
  RetryInput input = Input(retry, 1);
  input.retry_after = absl::Seconds(120);
  input.max_retry_after = absl::Seconds(60);
  const RetryPlan plan = PlanRetry(input, Response(503), random);
  EXPECT_EQ(plan.kind, RetryPlan::Kind::kRetryNotAllowedYet);
  FetchedResponse response = Response(503);
  ExplainNoRetry(plan, 1, kWallNow, response);
  EXPECT_EQ(response.end_reason, EndReason::kRetryNotAllowedYet);
  EXPECT_EQ(response.http_status, 503);
  // Says when the server allows the next try and why we did not wait.
  EXPECT_TRUE(absl::StrContains(response.error, "2023-11-14T22:15:20Z"))
      << response.error;
  EXPECT_TRUE(absl::StrContains(response.error, "--max_retry_after"))
      << response.error;
}

TEST(RetryPolicy, RetryAfterPastTheDeadlineMeansNoRetry) {
  const RetryOptions retry = RetryOptions::Defaults(3);
  std::mt19937_64 random(7);
  RetryInput input = Input(retry, 1);
  input.retry_after = absl::Seconds(10);
  input.deadline = kNow + absl::Seconds(5);
  const RetryPlan plan = PlanRetry(input, Response(429), random);
  EXPECT_EQ(plan.kind, RetryPlan::Kind::kRetryNotAllowedYet);
  FetchedResponse response = Response(429);
  ExplainNoRetry(plan, 1, kWallNow, response);
  EXPECT_TRUE(absl::StrContains(response.error, "after the batch deadline"))
      << response.error;
}

TEST(RetryPolicy, BackoffPastTheDeadlineMeansNoRetry) {
  RetryOptions retry = RetryOptions::Defaults(3);
  retry.initial_backoff = absl::Seconds(10);
  retry.max_backoff = absl::Seconds(10);
  // A generator whose draws land at the top of the range.
  struct High {
    using result_type = uint64_t;
    static constexpr uint64_t min() { return 0; }
    static constexpr uint64_t max() { return ~uint64_t{0}; }
    uint64_t operator()() { return max() - 1; }
  } random;
  RetryInput input = Input(retry, 1);
  input.deadline = kNow + absl::Seconds(1);
  const RetryPlan plan = PlanRetry(input, Response(503), random);
  EXPECT_EQ(plan.kind, RetryPlan::Kind::kNoTimeForRetry);
  FetchedResponse response = Response(503);
  ExplainNoRetry(plan, 1, kWallNow, response);
  EXPECT_EQ(response.end_reason, EndReason::kNoTimeForRetry);
  EXPECT_TRUE(absl::StrContains(response.error, "not retried"))
      << response.error;
  EXPECT_TRUE(absl::StrContains(response.error, "attempt 2")) << response.error;
}

}  // namespace
}  // namespace batchfetch

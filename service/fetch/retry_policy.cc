#include "service/fetch/retry_policy.h"

#include <curl/curl.h>

#include <algorithm>
#include <cstdint>

#include "absl/random/distributions.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace batchfetch {

RetryOptions RetryOptions::Defaults(int max_attempts) {
  RetryOptions retry;
  retry.max_attempts = max_attempts;
  retry.on_connect_error = true;
  retry.on_timeout = true;
  retry.on_429 = true;
  retry.on_status = {502, 503, 504};
  return retry;
}

bool IsRetryable(const RetryOptions& retry, HttpMethod method,
                 const FetchedResponse& attempt) {
  if (!retry.non_idempotent && !IsIdempotent(method)) return false;
  switch (attempt.result) {
    case TransferResult::kConnectError:
    case TransferResult::kDnsError:
      return retry.on_connect_error;
    case TransferResult::kTimeout:
      return retry.on_timeout && attempt.end_reason != EndReason::kDeadlineCut;
    case TransferResult::kTransportError:
      return retry.on_transport_error;
    case TransferResult::kResponse: {
      const int status = attempt.http_status;
      if (status == 429 && retry.on_429) return true;
      if (status >= 500 && status <= 599 && retry.on_5xx) return true;
      return std::find(retry.on_status.begin(), retry.on_status.end(),
                       status) != retry.on_status.end();
    }
    case TransferResult::kTlsError:
    case TransferResult::kTooLarge:
    case TransferResult::kBlocked:
    case TransferResult::kCancelled:
    case TransferResult::kInvalidRequest:
      return false;
  }
  return false;
}

absl::Duration Backoff(const RetryOptions& retry, int attempts_made,
                       absl::BitGenRef random) {
  absl::Duration cap = retry.initial_backoff;
  for (int i = 1; i < attempts_made && cap < retry.max_backoff; ++i) cap *= 2;
  cap = std::min(cap, retry.max_backoff);
  const int64_t cap_ns = absl::ToInt64Nanoseconds(cap);
  if (cap_ns <= 1) return absl::ZeroDuration();
  return absl::Nanoseconds(absl::Uniform<int64_t>(random, 0, cap_ns));
}

std::optional<absl::Duration> ParseRetryAfter(absl::string_view value,
                                              absl::Time now) {
  absl::string_view text = absl::StripAsciiWhitespace(value);
  if (text.empty()) return std::nullopt;
  int64_t seconds = 0;
  if (absl::SimpleAtoi(text, &seconds)) {
    if (seconds < 0) return std::nullopt;
    // Anything past a day is as good as "not soon": keep it finite.
    return absl::Seconds(std::min<int64_t>(seconds, 86400 * 365));
  }
  // Only an HTTP-date from here on: it starts with a letter (day name).
  if (!absl::ascii_isalpha(static_cast<unsigned char>(text.front()))) {
    return std::nullopt;
  }
  const time_t when = curl_getdate(std::string(text).c_str(), nullptr);
  if (when < 0) return std::nullopt;
  return std::max(absl::FromTimeT(when) - now, absl::ZeroDuration());
}

RetryPlan PlanRetry(const RetryInput& input, const FetchedResponse& attempt,
                    absl::BitGenRef random) {
  RetryPlan plan;
  const RetryOptions& retry = *input.options;
  if (input.cancelled || input.attempts_made >= retry.max_attempts ||
      !IsRetryable(retry, input.method, attempt)) {
    return plan;  // kDeliver
  }
  absl::Duration wait = Backoff(retry, input.attempts_made, random);
  if (input.retry_after.has_value()) {
    if (*input.retry_after > input.max_retry_after) {
      plan.kind = RetryPlan::Kind::kRetryNotAllowedYet;
      plan.wait = *input.retry_after;
      plan.past_cap = true;
      plan.cap = input.max_retry_after;
      return plan;
    }
    wait = std::max(wait, *input.retry_after);
  }
  plan.wait = wait;
  const MonoTime at = input.now + wait;
  const bool in_time =
      input.deadline == MonoTime::max() || at + kMinUsefulTime < input.deadline;
  if (!in_time) {
    plan.kind = input.retry_after.has_value() && *input.retry_after >= wait
                    ? RetryPlan::Kind::kRetryNotAllowedYet
                    : RetryPlan::Kind::kNoTimeForRetry;
    return plan;
  }
  plan.kind = RetryPlan::Kind::kRetry;
  plan.at = at;
  return plan;
}

void ExplainNoRetry(const RetryPlan& plan, int attempts_made,
                    absl::Time wall_now, FetchedResponse& attempt) {
  std::string why = DescribeFailure(attempt);
  switch (plan.kind) {
    case RetryPlan::Kind::kNoTimeForRetry:
      absl::StrAppend(&why,
                      "; not retried: the batch deadline leaves no time for "
                      "attempt ",
                      attempts_made + 1, " (due in ",
                      absl::FormatDuration(plan.wait), ")");
      attempt.end_reason = EndReason::kNoTimeForRetry;
      break;
    case RetryPlan::Kind::kRetryNotAllowedYet:
      absl::StrAppend(
          &why, "; not retried: the server allows the next try only after ",
          absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", wall_now + plan.wait,
                           absl::UTCTimeZone()),
          " (Retry-After ", absl::FormatDuration(plan.wait), "), ",
          plan.past_cap ? absl::StrCat("longer than --max_retry_after ",
                                       absl::FormatDuration(plan.cap))
                        : std::string("after the batch deadline"));
      attempt.end_reason = EndReason::kRetryNotAllowedYet;
      break;
    case RetryPlan::Kind::kDeliver:
    case RetryPlan::Kind::kRetry:
      return;
  }
  attempt.error = std::move(why);
}

void ExplainRetryOvertaken(int attempts_made, FetchedResponse& last) {
  last.error =
      absl::StrCat(DescribeFailure(last),
                   "; not retried: the batch deadline came before attempt ",
                   attempts_made + 1, " could start");
  last.end_reason = EndReason::kNoTimeForRetry;
}

}  // namespace batchfetch

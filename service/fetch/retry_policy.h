#ifndef BATCHFETCH_SERVICE_FETCH_RETRY_POLICY_H_
#define BATCHFETCH_SERVICE_FETCH_RETRY_POLICY_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/random/bit_gen_ref.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "service/base/clock.h"
#include "service/fetch/fetch_types.h"
#include "service/fetch/request_validation.h"

namespace batchfetch {

// When and how often a failed request is tried again.
struct RetryOptions {
  int max_attempts = 1;  // including the first; 1 = no retry
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(10);
  bool on_connect_error = false;  // also DNS failures
  bool on_timeout = false;
  bool on_transport_error = false;
  bool on_5xx = false;
  bool on_429 = false;
  std::vector<int> on_status;   // explicit status codes
  bool non_idempotent = false;  // also POST and PATCH

  // What a caller gets when it asks for retries but says not on what:
  // connect/DNS errors, timeouts, 429, 502, 503 and 504.
  static RetryOptions Defaults(int max_attempts);
};

// Does the policy select this outcome of an attempt for another try?
// Ignores attempts left and time; see PlanRetry. A timeout that the batch
// deadline cut short (EndReason::kDeadlineCut) is never selected.
bool IsRetryable(const RetryOptions& retry, HttpMethod method,
                 const FetchedResponse& attempt);

// Full-jitter exponential backoff before attempt `attempts_made + 1`:
// uniform in [0, min(max_backoff, initial_backoff * 2^(attempts_made-1))).
// REQUIRES: attempts_made >= 1.
absl::Duration Backoff(const RetryOptions& retry, int attempts_made,
                       absl::BitGenRef random);

// A Retry-After value, delta-seconds or an HTTP-date, as the wait it asks
// for counted from `now` (zero for a date in the past). nullopt for
// anything else (negative, garbage, empty).
std::optional<absl::Duration> ParseRetryAfter(absl::string_view value,
                                              absl::Time now);

// What to do after an attempt ended.
struct RetryPlan {
  enum class Kind {
    kDeliver,             // no retry: the policy does not select it
    kRetry,               // try again at `at`
    kNoTimeForRetry,      // selected, but the wait ends past the deadline
    kRetryNotAllowedYet,  // selected, but the server's Retry-After is past
                          // --max_retry_after or the batch deadline
  };
  Kind kind = Kind::kDeliver;
  MonoTime at;          // kRetry: when the next attempt may start
  absl::Duration wait;  // what the policy (or the server) asked to wait
  // kRetryNotAllowedYet: the server's wait exceeds --max_retry_after (else
  // it ends past the batch deadline).
  bool past_cap = false;
  absl::Duration cap;  // --max_retry_after, for the explanation
};

// Everything a retry decision depends on.
struct RetryInput {
  const RetryOptions* options = nullptr;
  HttpMethod method = HttpMethod::kGet;
  int attempts_made = 0;   // attempts of this request so far, >= 1
  bool cancelled = false;  // the batch was cancelled: never retry
  // The server's Retry-After, if the attempt was a 429/503 carrying one.
  std::optional<absl::Duration> retry_after;
  absl::Duration max_retry_after = absl::Seconds(60);
  MonoTime now;
  MonoTime deadline = MonoTime::max();  // the batch's
};

// A transfer is not started with less time than this before the deadline.
inline constexpr absl::Duration kMinUsefulTime = absl::Milliseconds(10);

// Decides whether `attempt` is tried again and when. A retry never starts
// before the time the server stated in Retry-After: when that time lies
// past `max_retry_after` or the deadline there is no retry at all. Pure.
RetryPlan PlanRetry(const RetryInput& input, const FetchedResponse& attempt,
                    absl::BitGenRef random);

// Appends to `attempt.error` why a selected retry did not happen (for
// kNoTimeForRetry and kRetryNotAllowedYet) and sets its end reason.
// `wall_now` dates the server's next allowed try for people.
void ExplainNoRetry(const RetryPlan& plan, int attempts_made,
                    absl::Time wall_now, FetchedResponse& attempt);

// The same for a retry that was scheduled but that the batch deadline
// overtook before it could start: `last` is the outcome kept while it
// waited.
void ExplainRetryOvertaken(int attempts_made, FetchedResponse& last);

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_FETCH_RETRY_POLICY_H_

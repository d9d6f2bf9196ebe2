#ifndef BATCHFETCH_SERVICE_BATCH_RESULT_CONVERSION_H_
#define BATCHFETCH_SERVICE_BATCH_RESULT_CONVERSION_H_

// The one place where engine results become API results and where absl time
// types become protobuf ones (and back). Everything here is a pure function:
// no I/O, no clock, thread-safe.

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "batchfetch/v1/batchfetch.pb.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "service/fetch/fetch_types.h"
#include "service/json/json_cleaner.h"

namespace batchfetch {

// The API outcome of a transfer that did not end in a response. kResponse
// maps to OUTCOME_OK here; FillResult refines it from status and body.
v1::Outcome OutcomeOf(TransferResult result);

// Builds the API result of one request from the engine's response, judging
// a completed transfer by status, then body:
//   * a transfer error: its OutcomeOf, with the engine's `error`;
//   * a status outside 200-299: HTTP_ERROR with the raw body; `error` is the
//     engine's text when it has one (e.g. why no retry), else
//     "upstream answered HTTP <status>";
//   * an empty body on 204/205 or when none was expected (HEAD): OK;
//   * otherwise JsonCleaner::Clean: OK with `json`, or INVALID_JSON with the
//     parser's message in `error` and the raw body (also when the cleaned
//     JSON is not valid UTF-8: the escape of an unpaired
//     UTF-16 surrogate such as U+DC00).
// Every string set is valid UTF-8, as proto3 and utf8mb4 columns require:
// bytes that are not are percent-encoded in `final_url` and replaced by
// U+FFFD in `error`.
// `url` and `final_url` have their userinfo redacted ("http://***@h/"), and
// so has any URL in `error` (RedactUserinfo, RedactUserinfoInText): a
// caller's credentials are sent but never echoed or stored.
// Durations keep microsecond precision (what the store keeps, so streamed
// and stored results are byte-identical); `timings` is set only when an
// attempt was started. Moves the body and content type out of `response`.
void FillResult(FetchedResponse& response, const JsonCleaner& cleaner,
                v1::FetchResult* result);

// absl::Duration -> proto Duration, truncated toward zero to whole
// microseconds (the store's precision) and saturated to the proto range
// (+-315,576,000,000 s); infinite durations saturate too.
google::protobuf::Duration ToProtoDuration(absl::Duration d);

// proto Duration -> absl::Duration, exactly. INVALID_ARGUMENT when the value
// is not a valid Duration: seconds outside +-315,576,000,000, nanos outside
// +-999,999,999, or seconds and nanos of opposite signs. The message does
// not name a field; callers prefix it.
absl::StatusOr<absl::Duration> FromProtoDuration(
    const google::protobuf::Duration& d);

// absl::Time -> proto Timestamp, truncated toward the past to whole
// microseconds and saturated to 0001-01-01..9999-12-31 (InfinitePast and
// InfiniteFuture saturate too).
google::protobuf::Timestamp ToProtoTimestamp(absl::Time t);

// proto Timestamp -> absl::Time, exactly. INVALID_ARGUMENT when the value is
// not a valid Timestamp (seconds outside 0001-01-01..9999-12-31, nanos
// outside [0, 999,999,999]).
absl::StatusOr<absl::Time> FromProtoTimestamp(
    const google::protobuf::Timestamp& t);

// `t` truncated toward the past to whole microseconds: the precision a
// stored time keeps, so a streamed time and the one read back agree.
absl::Time TruncateToMicros(absl::Time t);

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_BATCH_RESULT_CONVERSION_H_

#ifndef BATCHFETCH_SERVICE_FETCH_FETCH_TYPES_H_
#define BATCHFETCH_SERVICE_FETCH_FETCH_TYPES_H_

// Value types shared by the fetch engine and its callers. No curl here.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace batchfetch {

// One HTTP request of a batch, as the caller sent it. The engine validates it
// before any I/O (ValidateRequest: URL syntax and no control characters,
// http/https only, known method, header syntax, no header the engine owns).
struct FetchSpec {
  // Position in the caller's batch. The engine reports it back unchanged, so
  // a caller may submit any subset of a batch (a resume) under the original
  // indices. Indices within one submission must be distinct.
  uint32_t index = 0;
  std::string url;
  std::string method;  // empty means GET
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

// How a transfer ended, before the response body is judged.
enum class TransferResult {
  kResponse,        // a complete HTTP response arrived (any status code)
  kTimeout,         // the per-request timeout expired
  kDnsError,        // the host name did not resolve
  kConnectError,    // no TCP connection could be made
  kTlsError,        // TLS handshake or certificate verification failed
  kTransportError,  // any other failure while talking to the upstream
  kTooLarge,        // the body exceeded the engine's max_body_bytes
  kBlocked,         // refused by egress rules (e.g. redirect to ftp://)
  kCancelled,       // the batch was cancelled before this request finished
  kInvalidRequest,  // the request failed validation; nothing was sent
};

// Phases of one attempt, each measured from that attempt's start.
struct TransferTimings {
  absl::Duration dns;
  absl::Duration connect;
  absl::Duration tls;
  absl::Duration first_byte;
  absl::Duration total;
};

// Why a request ended where it did, for decisions that must not depend on
// the wording of `error`.
enum class EndReason {
  kFinished,             // its last attempt ran to an end of its own
  kDeadlineCut,          // a running attempt was cut at the batch deadline
  kDeadlineBeforeStart,  // the batch deadline came before an attempt began
  kCancelled,            // the batch was cancelled (caller or shutdown)
  kBlockedByPolicy,      // egress rules refused it (e.g. redirect to ftp://)
  kRetryNotAllowedYet,   // retryable, but the server's Retry-After points
                         // past the cap or the batch deadline
  kNoTimeForRetry,       // retryable, but the backoff ends past the deadline
  kInvalidRequest,       // failed validation; nothing was sent
};

struct FetchedResponse {
  uint32_t index = 0;  // FetchSpec::index of the request
  std::string url;     // as requested
  TransferResult result = TransferResult::kTransportError;
  EndReason end_reason = EndReason::kFinished;
  int http_status = 0;  // 0 when no response arrived
  std::string error;    // why, for anything but kResponse
  std::string body;     // decoded body, at most max_body_bytes
  std::string content_type;
  std::string final_url;      // after redirects
  bool body_expected = true;  // false for HEAD: an empty body is complete
  uint32_t attempts = 0;      // transfers started for this request
  // From the start of the first attempt to the end of the last one,
  // including backoff waits.
  absl::Duration elapsed;
  TransferTimings timings;  // of the last attempt
};

// What went wrong with `response`, for people: its error, or for a response
// without one, "upstream answered HTTP <status>". The one wording every
// layer uses.
inline std::string DescribeFailure(const FetchedResponse& response) {
  return response.error.empty()
             ? absl::StrCat("upstream answered HTTP ", response.http_status)
             : response.error;
}

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_FETCH_FETCH_TYPES_H_

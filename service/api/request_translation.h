#ifndef BATCHFETCH_SERVICE_API_REQUEST_TRANSLATION_H_
#define BATCHFETCH_SERVICE_API_REQUEST_TRANSLATION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "batchfetch/v1/batchfetch.pb.h"
#include "service/api/service_options.h"
#include "service/fetch/fetch_engine.h"
#include "service/json/json_cleaner.h"

namespace batchfetch {

// Everything needed to run one FetchBatch call, checked and with the
// server's defaults and caps applied.
struct BatchPlan {
  std::string batch_id;  // the caller's (validated) or a new UUIDv7
  uint32_t total = 0;    // == specs.size()
  // One per request, specs[i].index == i (the position in `requests`).
  std::vector<FetchSpec> specs;
  // concurrency, window (2 x concurrency), per_host_concurrency, timeout,
  // retry and deadline (the smaller of now + request deadline and the gRPC
  // deadline; InfiniteFuture when neither is set).
  BatchOptions options;
  JsonCleaner::Extract extract;  // sorted by name (a stable projection)
  JsonCleaner cleaner;           // compiled from `extract`
  absl::Time created_at;         // `now` truncated to microseconds
  // FetchBatchRequest.resume: continue the stored batch `batch_id` (then
  // `created_at` is replaced by the stored one).
  bool resume = false;
};

// What the call brings besides its message.
struct CallInfo {
  absl::Time now;  // wall clock when the call is taken
  // The call's gRPC deadline; InfiniteFuture (or anything more than a year
  // after `now`, which is how gRPC reports "none") means none.
  absl::Time grpc_deadline = absl::InfiniteFuture();
};

// Checks `request` and turns it into a plan. Pure: no I/O and no clock (time
// comes from `call`); the only randomness is a new batch id when the request
// has none. INVALID_ARGUMENT naming the offending field:
//   requests       empty, or more than options.max_batch_size;
//   timeout        negative, malformed, or above options.max_timeout;
//   deadline       negative or malformed;
//   retry.*        see RetryFromRequest;
//   extract[...]   a bad name or JSON Pointer (JsonCleaner::Create);
//   batch_id       not 1-64 characters of [A-Za-z0-9._:-], or empty while
//                  `resume` is set.
// Clamps rather than refuses: concurrency to [1, max_concurrency],
// per_host_concurrency to max_concurrency (0 stays "no cap"),
// retry.max_attempts to [1, max_attempts].
absl::StatusOr<BatchPlan> TranslateRequest(const v1::FetchBatchRequest& request,
                                           const ServiceOptions& options,
                                           const CallInfo& call);

// The lower-case hex SHA-256 that identifies a batch's request list, stored
// with the batch and compared on resume. It covers `requests` only (URL,
// method, headers, body of each, in order), not the batch options, id or
// `resume`: it is the SHA-256 of the deterministic serialization (map
// entries sorted by key, so header order does not matter) of a
// FetchBatchRequest holding nothing but `request.requests`, each URL with
// its userinfo redacted (RedactUserinfo). So the stored hash reveals nothing
// about URL credentials, and a resume with rotated credentials matches.
std::string RequestsSha256(const v1::FetchBatchRequest& request);

// What the store keeps of a batch's request so that another replica can
// take it over when this one dies (BatchFetcherService::TryTakeOver): for a
// detached batch, the request under `batch_id` with every URL's userinfo
// redacted (issue 8: URL credentials are never stored; headers and bodies
// are, see docs/SECURITY.md); nullptr for a batch that is not detached,
// whose caller resumes it with its own copy and needs only the hash.
std::shared_ptr<const std::string> StoredRequestForTakeover(
    const v1::FetchBatchRequest& request, const std::string& batch_id);

// Whether a request read back from the store lost URL credentials to
// StoredRequestForTakeover: some URL's userinfo is the redaction mark, so
// fetching it again would send "***" instead of the caller's credentials.
bool HasStoredCredentialsRedacted(const v1::FetchBatchRequest& request);

// The engine's retry options for `policy`, with defaults and the server's
// attempts cap applied. INVALID_ARGUMENT naming the field for an unknown
// retry_on condition, a retry_on_status outside 100-599, or a backoff that
// is negative, malformed (nanos outside [0, 999999999]) or above exactly 1h.
absl::StatusOr<RetryOptions> RetryFromRequest(const v1::RetryPolicy& policy,
                                              uint32_t max_attempts_cap);

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_API_REQUEST_TRANSLATION_H_

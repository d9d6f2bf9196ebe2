#include "service/api/request_translation.h"

#include <openssl/evp.h>

#include <algorithm>
#include <climits>
#include <memory>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "service/batch/batch_id.h"
#include "service/batch/result_conversion.h"
#include "service/fetch/url_redaction.h"

namespace batchfetch {
namespace {

// Largest accepted retry backoff.
constexpr absl::Duration kMaxBackoff = absl::Hours(1);

// A gRPC deadline further away than this counts as none.
constexpr absl::Duration kNoGrpcDeadline = absl::Hours(24 * 365);

// A Duration field that must not be negative. INVALID_ARGUMENT naming
// `field` when it is negative or not a valid Duration.
absl::StatusOr<absl::Duration> NonNegativeDuration(
    const google::protobuf::Duration& d, absl::string_view field) {
  if (d.seconds() < 0 || d.nanos() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must not be negative"));
  }
  absl::StatusOr<absl::Duration> value = FromProtoDuration(d);
  if (!value.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", value.status().message()));
  }
  return value;
}

}  // namespace

absl::StatusOr<RetryOptions> RetryFromRequest(const v1::RetryPolicy& policy,
                                              uint32_t max_attempts_cap) {
  const int attempts = static_cast<int>(std::min<uint32_t>(
      std::min(std::max(policy.max_attempts(), 1u), max_attempts_cap),
      INT_MAX));
  RetryOptions retry;
  if (policy.retry_on().empty() && policy.retry_on_status().empty()) {
    retry = RetryOptions::Defaults(attempts);
  } else {
    retry.max_attempts = attempts;
    for (int i = 0; i < policy.retry_on_size(); ++i) {
      const int condition = policy.retry_on(i);
      switch (condition) {
        case v1::RETRY_ON_CONNECT_ERROR:
          retry.on_connect_error = true;
          break;
        case v1::RETRY_ON_TIMEOUT:
          retry.on_timeout = true;
          break;
        case v1::RETRY_ON_TRANSPORT_ERROR:
          retry.on_transport_error = true;
          break;
        case v1::RETRY_ON_5XX:
          retry.on_5xx = true;
          break;
        case v1::RETRY_ON_429:
          retry.on_429 = true;
          break;
        case v1::RETRY_CONDITION_UNSPECIFIED:
          return absl::InvalidArgumentError(
              absl::StrCat("retry.retry_on[", i,
                           "]: RETRY_CONDITION_UNSPECIFIED is not allowed"));
        default:
          return absl::InvalidArgumentError(absl::StrCat(
              "retry.retry_on[", i, "]: unknown condition ", condition));
      }
    }
    for (int i = 0; i < policy.retry_on_status_size(); ++i) {
      const int status = policy.retry_on_status(i);
      if (status < 100 || status > 599) {
        return absl::InvalidArgumentError(
            absl::StrCat("retry.retry_on_status[", i, "]: ", status,
                         " is not an HTTP status (100-599)"));
      }
      retry.on_status.push_back(status);
    }
  }
  retry.non_idempotent = policy.retry_non_idempotent();
  const std::pair<const google::protobuf::Duration*, absl::Duration*>
      backoffs[] = {{&policy.initial_backoff(), &retry.initial_backoff},
                    {&policy.max_backoff(), &retry.max_backoff}};
  const char* const names[] = {"retry.initial_backoff", "retry.max_backoff"};
  for (int i = 0; i < 2; ++i) {
    const google::protobuf::Duration& given = *backoffs[i].first;
    if (given.seconds() < 0 || given.nanos() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(names[i],
                       ": must be between 0 and 1h, got a negative "
                       "duration"));
    }
    absl::StatusOr<absl::Duration> backoff =
        NonNegativeDuration(given, names[i]);
    if (!backoff.ok()) return backoff.status();
    if (*backoff > kMaxBackoff) {
      return absl::InvalidArgumentError(
          absl::StrCat(names[i], ": must be between 0 and 1h, got ",
                       absl::FormatDuration(*backoff)));
    }
    if (*backoff > absl::ZeroDuration()) *backoffs[i].second = *backoff;
  }
  retry.max_backoff = std::max(retry.max_backoff, retry.initial_backoff);
  return retry;
}

absl::StatusOr<BatchPlan> TranslateRequest(const v1::FetchBatchRequest& request,
                                           const ServiceOptions& options,
                                           const CallInfo& call) {
  const int n = request.requests_size();
  if (n == 0) {
    return absl::InvalidArgumentError("requests: the batch has no requests");
  }
  if (static_cast<uint32_t>(n) > options.max_batch_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "requests: the batch has ", n, " requests; at most ",
        options.max_batch_size, " are allowed (--max_batch_size)"));
  }

  BatchOptions batch;
  uint32_t concurrency = request.concurrency() == 0
                             ? options.default_concurrency
                             : request.concurrency();
  concurrency = std::min(concurrency, options.max_concurrency);
  // At least 1; at most what keeps the window (2x) within an int.
  concurrency = std::clamp<uint32_t>(concurrency, 1u, INT_MAX / 2);
  batch.concurrency = static_cast<int>(concurrency);
  // Twice the concurrency: transfers keep going while the previous round
  // of results is still being written and stored.
  batch.window = 2 * batch.concurrency;

  batch.timeout = options.default_timeout;
  if (request.has_timeout()) {
    absl::StatusOr<absl::Duration> timeout =
        NonNegativeDuration(request.timeout(), "timeout");
    if (!timeout.ok()) return timeout.status();
    if (*timeout > options.max_timeout) {
      return absl::InvalidArgumentError(absl::StrCat(
          "timeout: ", absl::FormatDuration(*timeout), " exceeds the maximum ",
          absl::FormatDuration(options.max_timeout), " (--max_timeout)"));
    }
    if (*timeout > absl::ZeroDuration()) {
      batch.timeout = std::max(*timeout, absl::Milliseconds(1));
    }
  }

  // A cap above the batch's concurrency never binds; clamping keeps a huge
  // value from wrapping to a negative int ("no cap"). 0 stays "no cap".
  const uint32_t per_host = request.per_host_concurrency() == 0
                                ? options.default_per_host_concurrency
                                : request.per_host_concurrency();
  batch.per_host_concurrency = static_cast<int>(std::min<uint32_t>(
      {per_host, std::max(options.max_concurrency, 1u), INT_MAX}));

  absl::StatusOr<RetryOptions> retry =
      RetryFromRequest(request.retry(), options.max_attempts);
  if (!retry.ok()) return retry.status();
  batch.retry = *std::move(retry);

  if (request.max_body_bytes() >
      static_cast<uint64_t>(std::max<int64_t>(options.max_body_bytes, 1))) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_body_bytes: ", request.max_body_bytes(),
                     " is above the server's cap of ", options.max_body_bytes,
                     " bytes (--max_body_bytes)"));
  }
  batch.max_body_bytes =
      request.max_body_bytes() > 0
          ? static_cast<int64_t>(request.max_body_bytes())
          : std::min(options.default_max_body_bytes, options.max_body_bytes);

  if (request.has_deadline()) {
    absl::StatusOr<absl::Duration> deadline =
        NonNegativeDuration(request.deadline(), "deadline");
    if (!deadline.ok()) return deadline.status();
    if (*deadline > absl::ZeroDuration()) batch.deadline = call.now + *deadline;
  }
  // The caller's gRPC deadline bounds the batch too (the smaller wins); the
  // call itself is cancelled when it passes.
  if (call.grpc_deadline < call.now + kNoGrpcDeadline) {
    batch.deadline = std::min(batch.deadline, call.grpc_deadline);
  }

  JsonCleaner::Extract extract(request.extract().begin(),
                               request.extract().end());
  // Map order is unspecified; a sorted projection is stable across calls.
  std::sort(extract.begin(), extract.end());
  absl::StatusOr<JsonCleaner> cleaner = JsonCleaner::Create(extract);
  if (!cleaner.ok()) return cleaner.status();

  std::string batch_id = request.batch_id();
  if (request.resume() && batch_id.empty()) {
    return absl::InvalidArgumentError(
        "batch_id: required when resume is set (the id of the batch to "
        "resume)");
  }
  if (batch_id.empty()) {
    batch_id = NewBatchId(call.now);
  } else if (absl::Status valid = ValidateBatchId(batch_id); !valid.ok()) {
    return valid;
  }

  std::vector<FetchSpec> specs(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const v1::FetchRequest& in = request.requests(i);
    FetchSpec& spec = specs[static_cast<size_t>(i)];
    spec.index = static_cast<uint32_t>(i);
    spec.url = in.url();
    spec.method = in.method();
    if (!in.body().empty() && !in.body_text().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("requests[", i,
                       "].body_text: set either body or body_text, not both"));
    }
    spec.body = in.body_text().empty() ? in.body() : in.body_text();
    spec.headers.assign(in.headers().begin(), in.headers().end());
  }
  BatchPlan plan{std::move(batch_id),       static_cast<uint32_t>(n),
                 std::move(specs),          std::move(batch),
                 std::move(extract),        *std::move(cleaner),
                 TruncateToMicros(call.now)};
  plan.resume = request.resume();
  return plan;
}

std::shared_ptr<const std::string> StoredRequestForTakeover(
    const v1::FetchBatchRequest& request, const std::string& batch_id) {
  if (!request.detach()) return nullptr;
  v1::FetchBatchRequest stored = request;
  stored.set_batch_id(batch_id);
  for (v1::FetchRequest& entry : *stored.mutable_requests()) {
    if (!UserinfoOf(entry.url()).empty()) {
      entry.set_url(RedactUserinfo(entry.url()));
    }
  }
  auto bytes = std::make_shared<std::string>();
  stored.SerializeToString(bytes.get());
  return bytes;
}

bool HasStoredCredentialsRedacted(const v1::FetchBatchRequest& request) {
  for (const v1::FetchRequest& entry : request.requests()) {
    if (UserinfoOf(entry.url()) == kRedactedUserinfo) return true;
  }
  return false;
}

std::string RequestsSha256(const v1::FetchBatchRequest& request) {
  // Field 1 (`requests`), length-delimited: what a FetchBatchRequest holding
  // only these requests serializes to, one entry at a time (no copy of the
  // whole list).
  constexpr uint32_t kRequestsTag = (1 << 3) | 2;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> sha(EVP_MD_CTX_new(),
                                                              &EVP_MD_CTX_free);
  EVP_DigestInit_ex(sha.get(), EVP_sha256(), nullptr);
  std::string bytes;
  for (const v1::FetchRequest& entry : request.requests()) {
    // Without its URL credentials: the hash is stored, and a SHA-256 of a
    // one-URL batch would let anyone reading it guess a weak password.
    std::optional<v1::FetchRequest> redacted;
    if (!UserinfoOf(entry.url()).empty()) {
      redacted = entry;
      redacted->set_url(RedactUserinfo(entry.url()));
    }
    const v1::FetchRequest& r = redacted.has_value() ? *redacted : entry;
    bytes.clear();
    {
      google::protobuf::io::StringOutputStream raw(&bytes);
      google::protobuf::io::CodedOutputStream out(&raw);
      out.SetSerializationDeterministic(true);
      out.WriteTag(kRequestsTag);
      out.WriteVarint32(static_cast<uint32_t>(r.ByteSizeLong()));
      r.SerializeWithCachedSizes(&out);
    }
    EVP_DigestUpdate(sha.get(), bytes.data(), bytes.size());
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(sha.get(), digest, &length);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), length));
}

}  // namespace batchfetch

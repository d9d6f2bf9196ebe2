#ifndef BATCHFETCH_SERVICE_FETCH_REQUEST_VALIDATION_H_
#define BATCHFETCH_SERVICE_FETCH_REQUEST_VALIDATION_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "service/fetch/fetch_types.h"

namespace batchfetch {

enum class HttpMethod { kGet, kHead, kPost, kPut, kPatch, kDelete, kOptions };

// "GET", "HEAD", ...
absl::string_view MethodName(HttpMethod method);

// Safe to repeat: GET, HEAD, PUT, DELETE and OPTIONS (RFC 9110 9.2.2).
bool IsIdempotent(HttpMethod method);

// What validation learns about a request that may be sent.
struct ValidatedRequest {
  HttpMethod method = HttpMethod::kGet;
  // "scheme://host:port", host lower-cased, default port filled in: the key
  // per-host caps and cooldowns are counted under.
  std::string host_key;
};

// Limits on what a caller may send.
inline constexpr size_t kMaxUrlLength = 8192;
inline constexpr size_t kMaxHeaders = 100;
inline constexpr size_t kMaxHeaderLength = 8192;

// Checks `spec` before any I/O: URL syntax (parsed by libcurl's own parser,
// so what is accepted is what curl sends), no control character (C0
// 0x00-0x1F, DEL 0x7F, or C1 U+0080-U+009F as UTF-8) anywhere in the URL,
// http/https only, a known method (case-insensitive; empty means GET), no
// body on HEAD, header count, size and syntax (token names; no control
// character but HTAB in values), and no header the service owns:
// Content-Length, Transfer-Encoding, Connection, Keep-Alive, Upgrade, TE,
// Trailer, Host, Expect, HTTP2-Settings or any Proxy-* (any case).
// INVALID_ARGUMENT with a message for people naming the URL byte or the
// header otherwise (the engine delivers it as kInvalidRequest).
//
// Every caller string that reaches libcurl as a C string passes here first
// (the URL; each header line, made of a token name and a checked value; the
// method is one of ours), so none can hold a NUL that would cut it short.
// The body is handed over with its length. Pure; thread-safe.
absl::StatusOr<ValidatedRequest> ValidateRequest(const FetchSpec& spec);

// The host key of an absolute http(s) URL, e.g. a redirect target's. Checks
// the URL's length, bytes and syntax as ValidateRequest does.
absl::StatusOr<std::string> HostKeyOf(absl::string_view url);

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_FETCH_REQUEST_VALIDATION_H_

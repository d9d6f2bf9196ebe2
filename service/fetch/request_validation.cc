#include "service/fetch/request_validation.h"

#include <curl/curl.h>

#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace batchfetch {
namespace {

bool IsTokenChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         (c != '\0' && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr);
}

struct CurlUrlDeleter {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};
struct CurlStringDeleter {
  void operator()(char* s) const { curl_free(s); }
};
using CurlString = std::unique_ptr<char, CurlStringDeleter>;

CurlString UrlPart(CURLU* url, CURLUPart part, unsigned flags) {
  char* value = nullptr;
  if (curl_url_get(url, part, &value, flags) != CURLUE_OK) {
    curl_free(value);
    return nullptr;
  }
  return CurlString(value);
}

absl::Status Invalid(absl::string_view why) {
  return absl::InvalidArgumentError(why);
}

// C0 controls and DEL.
bool IsControl(unsigned char c) { return c < 0x20 || c == 0x7f; }

// Header names the caller may not set, compared case-insensitively, and why.
//
// Framing and connection management belong to libcurl alone: a caller's
// Content-Length or Transfer-Encoding that disagrees with the body curl
// sends makes the upstream read the rest of the body as a second request on
// a pooled keep-alive connection, whose response another caller's request
// then receives (request smuggling / response mixing). Connection, Upgrade,
// TE, Trailer and Keep-Alive are hop-by-hop (RFC 9110 7.6.1) and change how
// the connection is used; Proxy-* are meant for a proxy we run, not for
// callers. HTTP2-Settings belongs to the h2c upgrade (RFC 7540 3.2.1) and
// is hop-by-hop like Upgrade: only libcurl may send it.
//
// Also refused, by decision:
//   * Host: the URL is the one statement of which host is fetched, and what
//     the result reports and stores. A different Host on a shared front end
//     (CDN, ingress, virtual hosts on one address) reaches a site the URL
//     never names: the egress policy checks the address only and cannot see
//     it. A caller who needs a name fetches by that name.
//   * Expect: "100-continue" and its variants are part of how curl sends a
//     body (it waits for the interim response); curl owns it and turns it
//     off ("Expect:"). A caller's value would change that exchange, and an
//     unknown expectation only gets 417.
struct RefusedHeader {
  absl::string_view name;
  absl::string_view why;
};
constexpr RefusedHeader kRefusedHeaders[] = {
    {"Content-Length", "the body's framing is set by the service"},
    {"Transfer-Encoding", "the body's framing is set by the service"},
    {"Connection", "connection management is the service's"},
    {"Keep-Alive", "connection management is the service's"},
    {"Upgrade", "connection management is the service's"},
    {"TE", "connection management is the service's"},
    {"Trailer", "the body's framing is set by the service"},
    {"Host", "the host is the url's; put it in the url"},
    {"Expect", "the service decides how a body is sent"},
    {"HTTP2-Settings", "connection management is the service's"},
};
constexpr absl::string_view kProxyPrefix = "Proxy-";

// INVALID_ARGUMENT when a caller may not send a header called `name`.
absl::Status CheckHeaderNameAllowed(absl::string_view name) {
  for (const RefusedHeader& refused : kRefusedHeaders) {
    if (absl::EqualsIgnoreCase(name, refused.name)) {
      return Invalid(absl::StrCat("header '", name, "' may not be set (",
                                  refused.why, ")"));
    }
  }
  if (absl::StartsWithIgnoreCase(name, kProxyPrefix)) {
    return Invalid(absl::StrCat("header '", name,
                                "' may not be set (Proxy-* headers are for a "
                                "proxy the service is configured with)"));
  }
  return absl::OkStatus();
}

// Every byte of `value` may appear in a field value: no control character
// but HTAB (RFC 9110 5.5). CR and LF would end the header line and start
// another (header injection); NUL would end the C string libcurl copies.
absl::Status CheckHeaderValue(absl::string_view name, absl::string_view value) {
  for (size_t i = 0; i < value.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(value[i]);
    if (IsControl(c) && c != '\t') {
      return Invalid(absl::StrFormat(
          "header '%s' value contains %s (0x%02X) at byte %d; CR, LF, NUL "
          "and other control characters are not allowed",
          name,
          c == '\r'   ? "CR"
          : c == '\n' ? "LF"
          : c == '\0' ? "NUL"
                      : "a control character",
          c, i));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view MethodName(HttpMethod method) {
  switch (method) {
    case HttpMethod::kGet:
      return "GET";
    case HttpMethod::kHead:
      return "HEAD";
    case HttpMethod::kPost:
      return "POST";
    case HttpMethod::kPut:
      return "PUT";
    case HttpMethod::kPatch:
      return "PATCH";
    case HttpMethod::kDelete:
      return "DELETE";
    case HttpMethod::kOptions:
      return "OPTIONS";
  }
  return "GET";
}

bool IsIdempotent(HttpMethod method) {
  return method != HttpMethod::kPost && method != HttpMethod::kPatch;
}

absl::StatusOr<std::string> HostKeyOf(absl::string_view url) {
  if (url.empty()) return Invalid("url is empty");
  if (url.size() > kMaxUrlLength) {
    return Invalid(absl::StrCat("url is ", url.size(),
                                " bytes, longer than the limit of ",
                                kMaxUrlLength, " bytes"));
  }
  // Before the C string goes to libcurl: a NUL would end it early, so curl
  // would fetch a shorter URL than the one reported (`/a\0/../x` fetched
  // `/a`). Other control characters have no place in a URL either: neither
  // C0 and DEL nor the C1 controls U+0080..U+009F (UTF-8 C2 80..C2 9F, e.g.
  // NEL U+0085, which some parsers and logs take for a line break).
  for (size_t i = 0; i < url.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(url[i]);
    if (IsControl(c)) {
      return Invalid(absl::StrFormat(
          "url contains a control character (0x%02X) at byte %d", c, i));
    }
    if (c == 0xc2 && i + 1 < url.size()) {
      const unsigned char next = static_cast<unsigned char>(url[i + 1]);
      if (next >= 0x80 && next <= 0x9f) {
        return Invalid(absl::StrFormat(
            "url contains a C1 control character (U+%04X, UTF-8 C2 %02X) at "
            "byte %d",
            next, next, i));
      }
    }
  }
  std::unique_ptr<CURLU, CurlUrlDeleter> parsed(curl_url());
  if (parsed == nullptr) return absl::ResourceExhaustedError("out of memory");
  const std::string text(url);
  const CURLUcode rc = curl_url_set(parsed.get(), CURLUPART_URL, text.c_str(),
                                    CURLU_NON_SUPPORT_SCHEME);
  if (rc != CURLUE_OK) {
    return Invalid(absl::StrCat("malformed url: ", curl_url_strerror(rc)));
  }
  CurlString scheme = UrlPart(parsed.get(), CURLUPART_SCHEME, 0);
  if (scheme == nullptr) return Invalid("url has no scheme");
  if (std::strcmp(scheme.get(), "http") != 0 &&
      std::strcmp(scheme.get(), "https") != 0) {
    return Invalid(absl::StrCat("scheme '", scheme.get(),
                                "' is not allowed; only http and https are"));
  }
  CurlString host = UrlPart(parsed.get(), CURLUPART_HOST, 0);
  if (host == nullptr || host.get()[0] == '\0') {
    return Invalid("url has no host");
  }
  CurlString port = UrlPart(parsed.get(), CURLUPART_PORT, CURLU_DEFAULT_PORT);
  if (port == nullptr) return Invalid("url has no usable port");
  return absl::StrCat(scheme.get(), "://", absl::AsciiStrToLower(host.get()),
                      ":", port.get());
}

absl::StatusOr<ValidatedRequest> ValidateRequest(const FetchSpec& spec) {
  ValidatedRequest out;
  absl::StatusOr<std::string> host_key = HostKeyOf(spec.url);
  if (!host_key.ok()) return host_key.status();
  out.host_key = *std::move(host_key);

  static constexpr struct {
    const char* name;
    HttpMethod method;
  } kMethods[] = {
      {"GET", HttpMethod::kGet},        {"HEAD", HttpMethod::kHead},
      {"POST", HttpMethod::kPost},      {"PUT", HttpMethod::kPut},
      {"PATCH", HttpMethod::kPatch},    {"DELETE", HttpMethod::kDelete},
      {"OPTIONS", HttpMethod::kOptions}};
  if (!spec.method.empty()) {
    bool known = false;
    for (const auto& m : kMethods) {
      if (absl::EqualsIgnoreCase(spec.method, m.name)) {
        out.method = m.method;
        known = true;
        break;
      }
    }
    if (!known) {
      return Invalid(absl::StrCat("method '", spec.method,
                                  "' is not one of GET HEAD POST PUT PATCH "
                                  "DELETE OPTIONS"));
    }
  }
  if (out.method == HttpMethod::kHead && !spec.body.empty()) {
    return Invalid("HEAD cannot have a body");
  }
  if (spec.headers.size() > kMaxHeaders) {
    return Invalid(absl::StrCat("headers: ", spec.headers.size(),
                                " headers, more than the limit of ",
                                kMaxHeaders));
  }
  for (const auto& [name, value] : spec.headers) {
    if (name.empty()) return Invalid("header name is empty");
    // Escaped: a name that fails the token check may hold CR, LF or NUL.
    const std::string shown = absl::CHexEscape(name);
    if (name.size() + value.size() > kMaxHeaderLength) {
      return Invalid(absl::StrCat("header '", shown, "' is ",
                                  name.size() + value.size(),
                                  " bytes (name and value), longer than the "
                                  "limit of ",
                                  kMaxHeaderLength));
    }
    for (size_t i = 0; i < name.size(); ++i) {
      if (!IsTokenChar(name[i])) {
        return Invalid(absl::StrFormat(
            "header name '%s' has a character (0x%02X) not allowed in a "
            "token",
            shown, static_cast<unsigned char>(name[i])));
      }
    }
    if (absl::Status allowed = CheckHeaderNameAllowed(name); !allowed.ok()) {
      return allowed;
    }
    if (absl::Status valid = CheckHeaderValue(name, value); !valid.ok()) {
      return valid;
    }
  }
  return out;
}

}  // namespace batchfetch

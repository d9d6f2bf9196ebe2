#include "service/fetch/request_validation.h"

#include <curl/curl.h>

#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

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
    return Invalid(
        absl::StrCat("url is longer than ", kMaxUrlLength, " bytes"));
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
    return Invalid(absl::StrCat("more than ", kMaxHeaders, " headers"));
  }
  for (const auto& [name, value] : spec.headers) {
    if (name.empty() || name.size() + value.size() > kMaxHeaderLength) {
      return Invalid(absl::StrCat("header '", name, "' is empty or too long"));
    }
    for (char c : name) {
      if (!IsTokenChar(c)) {
        return Invalid(absl::StrCat(
            "header name '", name, "' has a character not allowed in a token"));
      }
    }
    for (char c : value) {
      if (c == '\r' || c == '\n' || c == '\0') {
        return Invalid(
            absl::StrCat("header '", name, "' value contains CR, LF or NUL"));
      }
    }
  }
  return out;
}

}  // namespace batchfetch

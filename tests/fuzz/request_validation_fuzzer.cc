// Fuzzes request validation (ValidateRequest, HostKeyOf) and URL redaction
// (RedactUserinfo, UserinfoOf, RedactUserinfoInText). Input: the URL line,
// the method line, a count (0-4) and that many header name and value lines,
// then the body (tests/fuzz/fuzz_input.h).
//
// Invariants: no crash, leak or UB; an accepted request has a URL within
// kMaxUrlLength without control bytes, headers without CR, LF or NUL, and a
// host key HostKeyOf agrees with; when libcurl finds a user or password in
// a URL, UserinfoOf finds userinfo too, and the redacted URL carries no
// password and no user but "***" as libcurl reads it; redaction is
// idempotent.

#include <curl/curl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "service/fetch/fetch_types.h"
#include "service/fetch/request_validation.h"
#include "service/fetch/url_redaction.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using batchfetch::FetchSpec;
using batchfetch::kRedactedUserinfo;
using batchfetch::RedactUserinfo;
using batchfetch::RedactUserinfoInText;
using batchfetch::UserinfoOf;

struct CurlUrlDeleter {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};

// A URL as libcurl reads it (the parser the engine sends with), or nullopt
// when libcurl refuses it. Only the parts checked here.
struct CurlView {
  std::optional<std::string> user;
  std::optional<std::string> password;
};

std::optional<std::string> Part(CURLU* url, CURLUPart part) {
  char* value = nullptr;
  if (curl_url_get(url, part, &value, 0) != CURLUE_OK) return std::nullopt;
  std::string text(value);
  curl_free(value);
  return text;
}

std::optional<CurlView> ParseWithCurl(const std::string& url) {
  // Same flags as request_validation.cc, so "what is accepted is what curl
  // sends" holds here too.
  std::unique_ptr<CURLU, CurlUrlDeleter> parsed(curl_url());
  if (curl_url_set(parsed.get(), CURLUPART_URL, url.c_str(),
                   CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
    return std::nullopt;
  }
  return CurlView{Part(parsed.get(), CURLUPART_USER),
                  Part(parsed.get(), CURLUPART_PASSWORD)};
}

bool HasControlByte(absl::string_view text) {
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

void CheckRedaction(const std::string& url) {
  const std::string redacted = RedactUserinfo(url);
  const absl::string_view userinfo = UserinfoOf(url);
  FUZZ_CHECK(RedactUserinfo(redacted) == redacted,
             "RedactUserinfo is not idempotent");
  if (redacted != url) {
    // Only the userinfo changes, possibly an empty one ("http://@h/").
    FUZZ_CHECK(UserinfoOf(redacted) == kRedactedUserinfo,
               "the redacted URL's userinfo is not the marker");
    FUZZ_CHECK(redacted.size() ==
                   url.size() - userinfo.size() + kRedactedUserinfo.size(),
               "redaction changed more than the userinfo");
  } else {
    FUZZ_CHECK(userinfo.empty() || userinfo == kRedactedUserinfo,
               "a URL with userinfo came back unchanged");
  }
  const std::string in_text = RedactUserinfoInText(url);
  FUZZ_CHECK(RedactUserinfoInText(in_text) == in_text,
             "RedactUserinfoInText is not idempotent");
  if (url.find('\0') != std::string::npos) return;  // no C string for curl
  const std::optional<CurlView> original = ParseWithCurl(url);
  // An empty user ("http://@h/") is nothing to hide.
  if (original.has_value() && (!original->user.value_or("").empty() ||
                               !original->password.value_or("").empty())) {
    FUZZ_CHECK(!userinfo.empty(),
               "libcurl finds credentials UserinfoOf does not see");
  }
  const std::optional<CurlView> after = ParseWithCurl(redacted);
  if (after.has_value()) {
    FUZZ_CHECK(!after->password.has_value(),
               "libcurl reads a password in the redacted URL");
    FUZZ_CHECK(!after->user.has_value() || *after->user == kRedactedUserinfo,
               "libcurl reads a user other than the marker");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  batchfetch::fuzz::Input input(data, size);
  FetchSpec spec;
  spec.url = input.TakeString(batchfetch::kMaxUrlLength + 16);
  spec.method = input.TakeString(16);
  const int headers = input.TakeCount(4);
  for (int i = 0; i < headers; ++i) {
    std::string name = input.TakeString(64);
    std::string value = input.TakeString(256);
    spec.headers.emplace_back(std::move(name), std::move(value));
  }
  spec.body = input.TakeRest();

  CheckRedaction(spec.url);

  const absl::StatusOr<batchfetch::ValidatedRequest> validated =
      batchfetch::ValidateRequest(spec);
  if (!validated.ok()) return 0;
  FUZZ_CHECK(spec.url.size() <= batchfetch::kMaxUrlLength,
             "an overlong URL was accepted");
  FUZZ_CHECK(!HasControlByte(spec.url), "a control byte in an accepted URL");
  FUZZ_CHECK(spec.headers.size() <= batchfetch::kMaxHeaders,
             "too many headers accepted");
  for (const auto& [name, value] : spec.headers) {
    FUZZ_CHECK(
        name.find_first_of(std::string("\r\n\0", 3)) == std::string::npos &&
            value.find_first_of(std::string("\r\n\0", 3)) == std::string::npos,
        "an accepted header could split the request");
    FUZZ_CHECK(!name.empty(), "an empty header name was accepted");
  }
  FUZZ_CHECK(absl::StartsWith(validated->host_key, "http://") ||
                 absl::StartsWith(validated->host_key, "https://"),
             "the host key is not http(s)");
  const absl::StatusOr<std::string> host_key = batchfetch::HostKeyOf(spec.url);
  FUZZ_CHECK(host_key.ok() && *host_key == validated->host_key,
             "HostKeyOf disagrees with ValidateRequest");
  return 0;
}

#include "service/fetch/request_validation.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace batchfetch {
namespace {

FetchSpec Spec(std::string url, std::string method = "") {
  FetchSpec spec;
  spec.url = std::move(url);
  spec.method = std::move(method);
  return spec;
}

void ExpectInvalid(const FetchSpec& spec, absl::string_view says) {
  absl::StatusOr<ValidatedRequest> v = ValidateRequest(spec);
  ASSERT_FALSE(v.ok()) << spec.url;
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(v.status().message(), says))
      << v.status().message();
}

TEST(RequestValidation, AcceptsHttpAndHttpsWithCanonicalHostKey) {
  auto v = ValidateRequest(Spec("http://Example.COM/a?b=1"));
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->host_key, "http://example.com:80");
  EXPECT_EQ(v->method, HttpMethod::kGet);
  v = ValidateRequest(Spec("https://api.example.com:8443/x"));
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->host_key, "https://api.example.com:8443");
}

TEST(RequestValidation, MethodIsCaseInsensitiveAndDefaultsToGet) {
  EXPECT_EQ(ValidateRequest(Spec("http://h/", "post"))->method,
            HttpMethod::kPost);
  EXPECT_EQ(ValidateRequest(Spec("http://h/", "Delete"))->method,
            HttpMethod::kDelete);
  EXPECT_EQ(ValidateRequest(Spec("http://h/", ""))->method, HttpMethod::kGet);
  EXPECT_EQ(MethodName(HttpMethod::kOptions), "OPTIONS");
}

TEST(RequestValidation, RejectsEachBadRequestWithItsReason) {
  ExpectInvalid(Spec(""), "url is empty");
  ExpectInvalid(Spec("ftp://127.0.0.1/file"), "scheme 'ftp' is not allowed");
  ExpectInvalid(Spec("http://exa mple.com/"), "malformed url");
  ExpectInvalid(Spec("not a url"), "malformed url");
  ExpectInvalid(Spec("http://h/" + std::string(kMaxUrlLength, 'a')),
                "longer than the limit of 8192 bytes");
  ExpectInvalid(Spec("http://h/", "BREW"), "method 'BREW'");
  FetchSpec head = Spec("http://h/", "HEAD");
  head.body = "x";
  ExpectInvalid(head, "HEAD cannot have a body");
}

TEST(RequestValidation, RejectsBadHeaders) {
  FetchSpec spec = Spec("http://h/");
  spec.headers = {{"X-Bad", "a\r\nInjected: 1"}};
  ExpectInvalid(spec, "header 'X-Bad' value contains CR (0x0D) at byte 1");
  spec.headers = {{"Bad Name", "v"}};
  ExpectInvalid(spec, "header name 'Bad Name' has a character (0x20)");
  spec.headers = {{"", "v"}};
  ExpectInvalid(spec, "header name is empty");
}

TEST(RequestValidation, RejectsCrLfNulOrAnyControlCharacterInAHeaderName) {
  for (const std::string& name :
       {std::string("A\0B", 3), std::string("A\rB"), std::string("A\nB"),
        std::string("X-A\r\nX-B"), std::string("A\x01"),
        std::string("A\x7f")}) {
    FetchSpec spec = Spec("http://h/");
    spec.headers = {{name, "v"}};
    // Shown escaped, so the message itself holds no control character.
    ExpectInvalid(spec, "not allowed in a token");
    absl::StatusOr<ValidatedRequest> v = ValidateRequest(spec);
    for (char c : v.status().message()) {
      EXPECT_GE(static_cast<unsigned char>(c), 0x20) << v.status().message();
    }
  }
}

TEST(RequestValidation, RejectsCrLfNulOrAnyControlCharacterInAHeaderValue) {
  const struct {
    std::string value;
    const char* says;
  } cases[] = {
      {"a\rb", "value contains CR (0x0D) at byte 1"},
      {"a\nb", "value contains LF (0x0A) at byte 1"},
      {std::string("ab\0c", 4), "value contains NUL (0x00) at byte 2"},
      {"\x01", "value contains a control character (0x01) at byte 0"},
      {"x\x1f", "value contains a control character (0x1F) at byte 1"},
      {"x\x7f", "value contains a control character (0x7F) at byte 1"},
  };
  for (const auto& c : cases) {
    FetchSpec spec = Spec("http://h/");
    spec.headers = {{"X-Token", c.value}};
    ExpectInvalid(spec, absl::StrCat("header 'X-Token' ", c.says));
  }
  // HTAB and bytes above 0x7F (obs-text) are allowed in a value.
  FetchSpec spec = Spec("http://h/");
  spec.headers = {{"X-Token", "a\tb \xc3\xa9"}};
  EXPECT_TRUE(ValidateRequest(spec).ok());
}

TEST(RequestValidation, RejectsHeadersTheServiceOwnsInAnyCase) {
  for (const char* name : {"Content-Length",
                           "content-length",
                           "CONTENT-LENGTH",
                           "Transfer-Encoding",
                           "transfer-encoding",
                           "Connection",
                           "connection",
                           "Keep-Alive",
                           "Upgrade",
                           "upgrade",
                           "TE",
                           "te",
                           "Trailer",
                           "trailer",
                           "Proxy-Authorization",
                           "proxy-authorization",
                           "Proxy-Connection",
                           "PROXY-anything",
                           "Host",
                           "host",
                           "Expect",
                           "expect",
                           "HTTP2-Settings",
                           "http2-settings",
                           "Http2-Settings"}) {
    FetchSpec spec = Spec("http://h/", "POST");
    spec.body = "{}";
    spec.headers = {{"X-Ok", "1"}, {name, "0"}};
    ExpectInvalid(spec, absl::StrCat("header '", name, "' may not be set"));
  }
}

TEST(RequestValidation, AcceptsOrdinaryHeadersCloseToTheOwnedOnes) {
  FetchSpec spec = Spec("http://h/", "POST");
  spec.body = "{}";
  spec.headers = {{"Content-Type", "application/json"},
                  {"Authorization", "Bearer x"},
                  {"Accept", "application/json"},
                  {"X-Content-Length", "3"},
                  {"Proxy", "not a Proxy-* header"},
                  {"Hostname", "h"},
                  {"Tea", "earl grey"},
                  {"Expected", "x"},
                  {"HTTP2-Settings-Extra", "x"},
                  {"Cookie", "a=b"}};
  absl::StatusOr<ValidatedRequest> v = ValidateRequest(spec);
  EXPECT_TRUE(v.ok()) << v.status();
}

TEST(RequestValidation, RejectsANulOrAnyControlCharacterInTheUrl) {
  // What curl would otherwise have fetched as "http://h/nulpath".
  ExpectInvalid(Spec(std::string("http://h/nulpath\0/../../etc/passwd", 34)),
                "url contains a control character (0x00) at byte 16");
  ExpectInvalid(Spec("http://h/a\rb"),
                "url contains a control character (0x0D) at byte 10");
  ExpectInvalid(Spec("http://h/a\nGET / HTTP/1.1"),
                "url contains a control character (0x0A) at byte 10");
  ExpectInvalid(Spec("http://h/\ta"),
                "url contains a control character (0x09) at byte 9");
  ExpectInvalid(Spec("http://h/a\x1f"),
                "url contains a control character (0x1F) at byte 10");
  ExpectInvalid(Spec("http://h/a\x7f"),
                "url contains a control character (0x7F) at byte 10");
  ExpectInvalid(Spec(std::string("\0http://h/", 10)),
                "url contains a control character (0x00) at byte 0");
  ExpectInvalid(Spec(std::string("http://h\0.evil/", 15)),
                "url contains a control character (0x00) at byte 8");
  // A redirect target is checked the same way.
  EXPECT_FALSE(HostKeyOf(std::string("http://h/\0", 10)).ok());
}

TEST(RequestValidation, RejectsAC1ControlCharacterInTheUrlLikeC0) {
  // U+0085 (NEL) in UTF-8, which some parsers and logs take for a newline.
  ExpectInvalid(Spec("http://h/a\xc2\x85GET / HTTP/1.1"),
                "url contains a C1 control character (U+0085, UTF-8 C2 85) at "
                "byte 10");
  ExpectInvalid(Spec("http://h/\xc2\x80"),
                "url contains a C1 control character (U+0080, UTF-8 C2 80) at "
                "byte 9");
  ExpectInvalid(Spec("http://h/x?q=\xc2\x9f"),
                "url contains a C1 control character (U+009F, UTF-8 C2 9F) at "
                "byte 13");
  ExpectInvalid(Spec("http://h\xc2\x8a.evil/"),
                "url contains a C1 control character (U+008A, UTF-8 C2 8A) at "
                "byte 8");
  // A redirect target is checked the same way.
  absl::StatusOr<std::string> redirect = HostKeyOf("http://h/\xc2\x85");
  EXPECT_EQ(redirect.status().code(), absl::StatusCode::kInvalidArgument);
  // The characters next to them are not controls: U+00A0 (C2 A0), U+00E9
  // (C3 A9), U+0145 (C5 85), and a lone C2 at the end.
  for (const char* url : {"http://h/\xc2\xa0", "http://h/\xc3\xa9",
                          "http://h/\xc5\x85", "http://h/\xc2"}) {
    absl::StatusOr<ValidatedRequest> v = ValidateRequest(Spec(url));
    EXPECT_TRUE(v.ok()) << url << ": " << v.status();
  }
}

TEST(RequestValidation, UrlLengthIsAcceptedAtTheLimitAndRejectedJustOver) {
  const std::string prefix = "http://h/";
  const std::string at_limit =
      prefix + std::string(kMaxUrlLength - prefix.size(), 'a');
  ASSERT_EQ(at_limit.size(), kMaxUrlLength);
  absl::StatusOr<ValidatedRequest> v = ValidateRequest(Spec(at_limit));
  EXPECT_TRUE(v.ok()) << v.status();
  ExpectInvalid(Spec(at_limit + "a"),
                "url is 8193 bytes, longer than the limit of 8192 bytes");
}

TEST(RequestValidation, HeaderCountIsAcceptedAtTheLimitAndRejectedJustOver) {
  FetchSpec spec = Spec("http://h/");
  for (size_t i = 0; i < kMaxHeaders; ++i) {
    spec.headers.emplace_back(absl::StrCat("X-H", i), "1");
  }
  absl::StatusOr<ValidatedRequest> v = ValidateRequest(spec);
  EXPECT_TRUE(v.ok()) << v.status();
  spec.headers.emplace_back("X-One-More", "1");
  ExpectInvalid(spec, "headers: 101 headers, more than the limit of 100");
}

TEST(RequestValidation, HeaderLengthIsAcceptedAtTheLimitAndRejectedJustOver) {
  // The limit counts name and value together.
  const std::string name = "X-Big";
  FetchSpec spec = Spec("http://h/");
  spec.headers = {{name, std::string(kMaxHeaderLength - name.size(), 'v')}};
  absl::StatusOr<ValidatedRequest> v = ValidateRequest(spec);
  EXPECT_TRUE(v.ok()) << v.status();
  spec.headers[0].second.push_back('v');
  ExpectInvalid(spec,
                "header 'X-Big' is 8193 bytes (name and value), longer than "
                "the limit of 8192");
}

TEST(RequestValidation, HostKeyOfARedirectTarget) {
  EXPECT_EQ(*HostKeyOf("https://B.example/x"), "https://b.example:443");
  EXPECT_FALSE(HostKeyOf("gopher://x/").ok());
}

TEST(RequestValidation, IdempotentMethods) {
  EXPECT_TRUE(IsIdempotent(HttpMethod::kGet));
  EXPECT_TRUE(IsIdempotent(HttpMethod::kPut));
  EXPECT_FALSE(IsIdempotent(HttpMethod::kPost));
  EXPECT_FALSE(IsIdempotent(HttpMethod::kPatch));
}

}  // namespace
}  // namespace batchfetch

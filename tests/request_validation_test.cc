#include "service/fetch/request_validation.h"

#include "absl/strings/match.h"
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
                "longer than");
  ExpectInvalid(Spec("http://h/", "BREW"), "method 'BREW'");
  FetchSpec head = Spec("http://h/", "HEAD");
  head.body = "x";
  ExpectInvalid(head, "HEAD cannot have a body");
}

TEST(RequestValidation, RejectsBadHeaders) {
  FetchSpec spec = Spec("http://h/");
  spec.headers = {{"X-Bad", "a\r\nInjected: 1"}};
  ExpectInvalid(spec, "contains CR, LF or NUL");
  spec.headers = {{"Bad Name", "v"}};
  ExpectInvalid(spec, "not allowed in a token");
  spec.headers = {{std::string("A\0B", 3), "v"}};
  ExpectInvalid(spec, "not allowed in a token");
  spec.headers = {{"", "v"}};
  ExpectInvalid(spec, "empty or too long");
  spec.headers.assign(kMaxHeaders + 1, {"X-A", "1"});
  ExpectInvalid(spec, "more than 100 headers");
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

#include "service/batch/result_conversion.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace batchfetch {
namespace {

JsonCleaner Plain() { return *JsonCleaner::Create({}); }

FetchedResponse Response(int status, std::string body) {
  FetchedResponse r;
  r.index = 7;
  r.url = "http://example.test/x";
  r.result = TransferResult::kResponse;
  r.http_status = status;
  r.body = std::move(body);
  r.content_type = "application/json";
  r.final_url = "http://example.test/y";
  r.attempts = 1;
  r.elapsed = absl::Microseconds(1500) + absl::Nanoseconds(999);
  r.timings.dns = absl::Microseconds(1);
  r.timings.connect = absl::Microseconds(2);
  r.timings.tls = absl::Microseconds(3);
  r.timings.first_byte = absl::Microseconds(4);
  r.timings.total = absl::Microseconds(5);
  return r;
}

v1::FetchResult Fill(FetchedResponse response,
                     const JsonCleaner& cleaner = Plain()) {
  v1::FetchResult result;
  FillResult(response, cleaner, &result);
  return result;
}

TEST(OutcomeOf, MapsEveryTransferResult) {
  const std::pair<TransferResult, v1::Outcome> cases[] = {
      {TransferResult::kResponse, v1::OUTCOME_OK},
      {TransferResult::kTimeout, v1::OUTCOME_TIMEOUT},
      {TransferResult::kDnsError, v1::OUTCOME_DNS_ERROR},
      {TransferResult::kConnectError, v1::OUTCOME_CONNECT_ERROR},
      {TransferResult::kTlsError, v1::OUTCOME_TLS_ERROR},
      {TransferResult::kTransportError, v1::OUTCOME_TRANSPORT_ERROR},
      {TransferResult::kTooLarge, v1::OUTCOME_TOO_LARGE},
      {TransferResult::kBlocked, v1::OUTCOME_BLOCKED},
      {TransferResult::kCancelled, v1::OUTCOME_CANCELLED},
      {TransferResult::kInvalidRequest, v1::OUTCOME_INVALID_REQUEST},
  };
  for (const auto& [result, outcome] : cases) {
    EXPECT_EQ(OutcomeOf(result), outcome) << static_cast<int>(result);
  }
}

TEST(FillResult, TransferErrorsKeepTheEngineErrorAndNoBody) {
  for (TransferResult result :
       {TransferResult::kTimeout, TransferResult::kDnsError,
        TransferResult::kConnectError, TransferResult::kTlsError,
        TransferResult::kTransportError, TransferResult::kTooLarge,
        TransferResult::kBlocked, TransferResult::kCancelled,
        TransferResult::kInvalidRequest}) {
    FetchedResponse r = Response(0, "partial");
    r.result = result;
    r.error = "why it failed";
    v1::FetchResult out = Fill(std::move(r));
    EXPECT_EQ(out.outcome(), OutcomeOf(result));
    EXPECT_EQ(out.error(), "why it failed");
    EXPECT_EQ(out.body(), "");
    EXPECT_EQ(out.json(), "");
    EXPECT_EQ(out.index(), 7u);
    EXPECT_EQ(out.url(), "http://example.test/x");
  }
}

TEST(FillResult, CopiesMetadataAtMicrosecondPrecision) {
  v1::FetchResult out = Fill(Response(200, R"({"a": 1})"));
  EXPECT_EQ(out.http_status(), 200);
  EXPECT_EQ(out.content_type(), "application/json");
  EXPECT_EQ(out.final_url(), "http://example.test/y");
  EXPECT_EQ(out.attempts(), 1u);
  EXPECT_EQ(out.elapsed().seconds(), 0);
  EXPECT_EQ(out.elapsed().nanos(), 1'500'000);  // 999 ns truncated
  ASSERT_TRUE(out.has_timings());
  EXPECT_EQ(out.timings().dns().nanos(), 1000);
  EXPECT_EQ(out.timings().connect().nanos(), 2000);
  EXPECT_EQ(out.timings().tls().nanos(), 3000);
  EXPECT_EQ(out.timings().first_byte().nanos(), 4000);
  EXPECT_EQ(out.timings().total().nanos(), 5000);
}

TEST(FillResult, NoTimingsWhenNothingWasSent) {
  FetchedResponse r = Response(0, "");
  r.result = TransferResult::kCancelled;
  r.attempts = 0;
  EXPECT_FALSE(Fill(std::move(r)).has_timings());
}

TEST(FillResult, ValidJsonIsCleanedIntoJson) {
  v1::FetchResult out = Fill(Response(200, "{ \"a\" : [1, 2.50] }"));
  EXPECT_EQ(out.outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(out.json(), R"({"a":[1,2.50]})");
  EXPECT_EQ(out.body(), "");
  EXPECT_EQ(out.error(), "");
}

TEST(FillResult, ExtractProjects) {
  JsonCleaner cleaner = *JsonCleaner::Create({{"b", "/x/y"}, {"m", "/no"}});
  v1::FetchResult out = Fill(Response(201, R"({"x":{"y":3}})"), cleaner);
  EXPECT_EQ(out.outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(out.json(), R"({"b":3,"m":null})");
}

TEST(FillResult, AProjectionLargerThanItsBudgetIsTooLargeAndKeepsNothing) {
  JsonCleaner::Extract whole;
  for (int i = 0; i < 64; ++i) whole.emplace_back(absl::StrCat("f", i), "");
  JsonCleaner cleaner = *JsonCleaner::Create(whole);
  v1::FetchResult out = Fill(
      Response(200, absl::StrCat("[\"", std::string(100 * 1024, 'x'), "\"]")),
      cleaner);
  EXPECT_EQ(out.outcome(), v1::OUTCOME_TOO_LARGE);
  EXPECT_EQ(out.json(), "");
  EXPECT_EQ(out.body(), "");
  EXPECT_NE(out.error().find("extract output exceeds"), std::string::npos)
      << out.error();
}

TEST(FillResult, InvalidJsonKeepsTheRawBody) {
  v1::FetchResult out = Fill(Response(200, "hello"));
  EXPECT_EQ(out.outcome(), v1::OUTCOME_INVALID_JSON);
  EXPECT_EQ(out.body(), "hello");
  EXPECT_EQ(out.json(), "");
  EXPECT_NE(out.error().find("not valid JSON"), std::string::npos)
      << out.error();
}

TEST(FillResult, EmptyBodyIsOkOnlyWhenNoneIsExpected) {
  EXPECT_EQ(Fill(Response(204, "")).outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(Fill(Response(205, "")).outcome(), v1::OUTCOME_OK);
  FetchedResponse head = Response(200, "");
  head.body_expected = false;  // HEAD
  v1::FetchResult out = Fill(std::move(head));
  EXPECT_EQ(out.outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(out.json(), "");
  EXPECT_EQ(Fill(Response(200, "")).outcome(), v1::OUTCOME_INVALID_JSON);
  // A body on a 204 is still judged.
  EXPECT_EQ(Fill(Response(204, "x")).outcome(), v1::OUTCOME_INVALID_JSON);
  EXPECT_EQ(Fill(Response(204, "{}")).outcome(), v1::OUTCOME_OK);
}

TEST(FillResult, StatusOutside2xxIsHttpErrorWithRawBody) {
  for (int status : {100, 199, 300, 304, 404, 429, 500, 503, 599}) {
    v1::FetchResult out = Fill(Response(status, R"({"valid":"json"})"));
    EXPECT_EQ(out.outcome(), v1::OUTCOME_HTTP_ERROR) << status;
    EXPECT_EQ(out.body(), R"({"valid":"json"})");
    EXPECT_EQ(out.json(), "");
    EXPECT_EQ(out.error(), absl::StrCat("upstream answered HTTP ", status));
  }
  for (int status : {200, 299}) {
    EXPECT_EQ(Fill(Response(status, "{}")).outcome(), v1::OUTCOME_OK);
  }
}

TEST(FillResult, HttpErrorKeepsTheEngineText) {
  FetchedResponse r = Response(503, "down");
  r.error = "upstream answered HTTP 503; not retried: no time left";
  v1::FetchResult out = Fill(std::move(r));
  EXPECT_EQ(out.outcome(), v1::OUTCOME_HTTP_ERROR);
  EXPECT_EQ(out.error(),
            "upstream answered HTTP 503; not retried: no time left");
}

TEST(FillResult, NeverEchoesUserinfoInUrlOrFinalUrl) {
  FetchedResponse r = Response(200, "{}");
  r.url = "http://user:pw@example.test/x?q=a@b";
  r.final_url = "https://other:secret@example.test:8443/y";
  v1::FetchResult out = Fill(std::move(r));
  EXPECT_EQ(out.url(), "http://***@example.test/x?q=a@b");
  EXPECT_EQ(out.final_url(), "https://***@example.test:8443/y");
  EXPECT_EQ(out.outcome(), v1::OUTCOME_OK);
}

TEST(FillResult, NeverEchoesUserinfoInAnError) {
  // A transfer error quoting URLs (e.g. a refused redirect).
  FetchedResponse r = Response(0, "");
  r.result = TransferResult::kBlocked;
  r.url = "http://user:pw@a.test/";
  r.final_url = "http://user:pw@a.test/";
  r.error =
      "redirect from http://user:pw@a.test/ to ftp://u2:p2@b.test/ refused";
  v1::FetchResult out = Fill(std::move(r));
  EXPECT_EQ(out.url(), "http://***@a.test/");
  EXPECT_EQ(out.error(),
            "redirect from http://***@a.test/ to ftp://***@b.test/ refused");

  // The request's own user:password, even quoted without a scheme.
  r = Response(0, "");
  r.result = TransferResult::kConnectError;
  r.url = "http://alice:s3cret@a.test/";
  r.error = "login alice:s3cret@a.test failed";
  EXPECT_EQ(Fill(std::move(r)).error(), "login ***@a.test failed");

  // An HTTP error's engine text too.
  r = Response(503, "busy");
  r.url = "http://user:pw@a.test/";
  r.error = "not retried: http://user:pw@a.test/ said Retry-After 9999";
  out = Fill(std::move(r));
  EXPECT_EQ(out.outcome(), v1::OUTCOME_HTTP_ERROR);
  EXPECT_EQ(out.error(),
            "not retried: http://***@a.test/ said Retry-After 9999");
}

// Upstream bytes that are not UTF-8 never reach a proto3 string (the caller
// could not parse the stream) or a utf8mb4 column (strict mode refuses it).
TEST(FillResult, UnpairedSurrogateEscapeIsInvalidJson) {
  for (const char* body :
       {R"({"s":"\udc00"})", R"(["x\uDFFFy"])", R"({"\udc01":1})"}) {
    v1::FetchResult out = Fill(Response(200, body));
    EXPECT_EQ(out.outcome(), v1::OUTCOME_INVALID_JSON) << body;
    EXPECT_NE(out.error().find("unpaired UTF-16 surrogate"), std::string::npos)
        << out.error();
    EXPECT_EQ(out.json(), "");
    EXPECT_EQ(out.body(), body);
  }
  // A proper pair is one character and stays OK.
  v1::FetchResult paired = Fill(Response(200, R"(["\ud83d\ude00"])"));
  EXPECT_EQ(paired.outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(paired.json(), "[\"\xF0\x9F\x98\x80\"]");
}

TEST(FillResult, FinalUrlBytesThatAreNotUtf8ArePercentEncoded) {
  FetchedResponse r = Response(200, "{}");
  r.final_url = "http://example.test/a-\xFF\xFE-\xC3\xA9-%2f-\xED\xA0\x80";
  v1::FetchResult out = Fill(std::move(r));
  EXPECT_EQ(out.final_url(),
            "http://example.test/a-%FF%FE-\xC3\xA9-%2f-%ED%A0%80");
}

TEST(FillResult, ErrorBytesThatAreNotUtf8AreReplaced) {
  FetchedResponse r = Response(0, "");
  r.result = TransferResult::kTransportError;
  r.error = "bad \xFF\xC0\x80 end \xF0\x9F\x98\x80";
  v1::FetchResult out = Fill(std::move(r));
  EXPECT_EQ(out.error(),
            "bad \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD end \xF0\x9F\x98\x80");
}

TEST(DurationConversion, ToProtoTruncatesToMicros) {
  google::protobuf::Duration d =
      ToProtoDuration(absl::Seconds(3) + absl::Nanoseconds(1'234'567));
  EXPECT_EQ(d.seconds(), 3);
  EXPECT_EQ(d.nanos(), 1'234'000);
  d = ToProtoDuration(-(absl::Seconds(1) + absl::Nanoseconds(1'500)));
  EXPECT_EQ(d.seconds(), -1);
  EXPECT_EQ(d.nanos(), -1000);  // same sign as seconds
  d = ToProtoDuration(absl::ZeroDuration());
  EXPECT_EQ(d.seconds(), 0);
  EXPECT_EQ(d.nanos(), 0);
}

TEST(DurationConversion, ToProtoSaturatesToTheProtoRange) {
  google::protobuf::Duration d = ToProtoDuration(absl::InfiniteDuration());
  EXPECT_EQ(d.seconds(), 315'576'000'000);
  EXPECT_EQ(d.nanos(), 999'999'000);
  d = ToProtoDuration(-absl::InfiniteDuration());
  EXPECT_EQ(d.seconds(), -315'576'000'000);
  EXPECT_EQ(d.nanos(), -999'999'000);
}

TEST(DurationConversion, FromProtoIsExactAndChecked) {
  google::protobuf::Duration d;
  d.set_seconds(3600);
  d.set_nanos(999'999'999);
  EXPECT_EQ(*FromProtoDuration(d),
            absl::Hours(1) + absl::Nanoseconds(999'999'999));
  d.set_seconds(-2);
  d.set_nanos(-5);
  EXPECT_EQ(*FromProtoDuration(d), -absl::Seconds(2) - absl::Nanoseconds(5));

  d.set_seconds(0);
  d.set_nanos(1'000'000'000);
  EXPECT_EQ(FromProtoDuration(d).status().code(),
            absl::StatusCode::kInvalidArgument);
  d.set_nanos(-1'000'000'000);
  EXPECT_FALSE(FromProtoDuration(d).ok());
  d.set_seconds(1);
  d.set_nanos(-1);
  EXPECT_FALSE(FromProtoDuration(d).ok());
  d.set_seconds(-1);
  d.set_nanos(1);
  EXPECT_FALSE(FromProtoDuration(d).ok());
  d.set_seconds(315'576'000'001);
  d.set_nanos(0);
  EXPECT_FALSE(FromProtoDuration(d).ok());
}

TEST(DurationConversion, RoundTripsWholeMicros) {
  for (absl::Duration d : {absl::Microseconds(1), absl::Milliseconds(1500),
                           absl::Hours(49), -absl::Microseconds(7)}) {
    EXPECT_EQ(*FromProtoDuration(ToProtoDuration(d)), d);
  }
}

TEST(TimestampConversion, ToProtoTruncatesTowardThePast) {
  const absl::Time t =
      absl::FromUnixSeconds(1'700'000'000) + absl::Nanoseconds(123'456'789);
  google::protobuf::Timestamp ts = ToProtoTimestamp(t);
  EXPECT_EQ(ts.seconds(), 1'700'000'000);
  EXPECT_EQ(ts.nanos(), 123'456'000);
  // Before 1970 nanos stay non-negative.
  ts = ToProtoTimestamp(absl::FromUnixMicros(-1));
  EXPECT_EQ(ts.seconds(), -1);
  EXPECT_EQ(ts.nanos(), 999'999'000);
  ts = ToProtoTimestamp(absl::FromUnixNanos(-1));  // floor: -1 us
  EXPECT_EQ(ts.seconds(), -1);
  EXPECT_EQ(ts.nanos(), 999'999'000);
}

TEST(TimestampConversion, ToProtoSaturates) {
  google::protobuf::Timestamp ts = ToProtoTimestamp(absl::InfinitePast());
  EXPECT_EQ(ts.seconds(), -62'135'596'800);
  EXPECT_EQ(ts.nanos(), 0);
  ts = ToProtoTimestamp(absl::InfiniteFuture());
  EXPECT_EQ(ts.seconds(), 253'402'300'799);
  EXPECT_EQ(ts.nanos(), 999'999'000);
}

TEST(TimestampConversion, FromProtoIsExactAndChecked) {
  google::protobuf::Timestamp ts;
  ts.set_seconds(1'700'000'000);
  ts.set_nanos(5);
  EXPECT_EQ(*FromProtoTimestamp(ts),
            absl::FromUnixSeconds(1'700'000'000) + absl::Nanoseconds(5));
  ts.set_nanos(-1);
  EXPECT_EQ(FromProtoTimestamp(ts).status().code(),
            absl::StatusCode::kInvalidArgument);
  ts.set_nanos(1'000'000'000);
  EXPECT_FALSE(FromProtoTimestamp(ts).ok());
  ts.set_nanos(0);
  ts.set_seconds(253'402'300'800);  // 10000-01-01
  EXPECT_FALSE(FromProtoTimestamp(ts).ok());
  ts.set_seconds(-62'135'596'801);
  EXPECT_FALSE(FromProtoTimestamp(ts).ok());
}

TEST(TimestampConversion, RoundTripsAtMicrosecondPrecision) {
  const absl::Time t = absl::FromUnixMicros(1'700'000'000'123'456);
  EXPECT_EQ(*FromProtoTimestamp(ToProtoTimestamp(t)), t);
  EXPECT_EQ(TruncateToMicros(t + absl::Nanoseconds(999)), t);
  EXPECT_EQ(TruncateToMicros(absl::FromUnixNanos(-1)),
            absl::FromUnixMicros(-1));
}

}  // namespace
}  // namespace batchfetch

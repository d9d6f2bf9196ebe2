#include "service/api/request_translation.h"

#include <climits>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "service/batch/batch_id.h"

namespace batchfetch {
namespace {

const absl::Time kNow =
    absl::FromUnixSeconds(1'700'000'000) + absl::Nanoseconds(123'456'789);

v1::FetchBatchRequest Request(int n = 1) {
  v1::FetchBatchRequest request;
  for (int i = 0; i < n; ++i) {
    request.add_requests()->set_url(absl::StrCat("http://h/", i));
  }
  return request;
}

absl::StatusOr<BatchPlan> Translate(
    const v1::FetchBatchRequest& request, const ServiceOptions& options = {},
    absl::Time grpc_deadline = absl::InfiniteFuture()) {
  CallInfo call;
  call.now = kNow;
  call.grpc_deadline = grpc_deadline;
  return TranslateRequest(request, options, call);
}

// The call is refused with INVALID_ARGUMENT and the message starts with the
// path of the offending field (`field`, e.g. "retry.retry_on[0]").
void ExpectRejected(const v1::FetchBatchRequest& request,
                    absl::string_view field,
                    const ServiceOptions& options = {}) {
  absl::StatusOr<BatchPlan> plan = Translate(request, options);
  ASSERT_FALSE(plan.ok()) << "accepted; expected an error naming " << field;
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(plan.status().message(), field))
      << plan.status().message() << " does not start with " << field;
}

// The exact INVALID_ARGUMENT message `request` gets.
std::string RejectionOf(const v1::FetchBatchRequest& request,
                        const ServiceOptions& options = {}) {
  absl::StatusOr<BatchPlan> plan = Translate(request, options);
  if (plan.ok()) return "accepted";
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(plan.status().message());
}

google::protobuf::Duration Proto(int64_t seconds, int32_t nanos) {
  google::protobuf::Duration d;
  d.set_seconds(seconds);
  d.set_nanos(nanos);
  return d;
}

TEST(TranslateRequest, AppliesDefaults) {
  v1::FetchBatchRequest request = Request(3);
  request.mutable_requests(1)->set_method("POST");
  request.mutable_requests(1)->set_body("{}");
  (*request.mutable_requests(1)->mutable_headers())["X-A"] = "1";
  ServiceOptions options;
  options.default_concurrency = 7;
  options.default_timeout = absl::Seconds(9);
  options.default_per_host_concurrency = 2;
  absl::StatusOr<BatchPlan> plan = Translate(request, options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->total, 3u);
  ASSERT_EQ(plan->specs.size(), 3u);
  for (uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ(plan->specs[i].index, i);
    EXPECT_EQ(plan->specs[i].url, absl::StrCat("http://h/", i));
  }
  EXPECT_EQ(plan->specs[1].method, "POST");
  EXPECT_EQ(plan->specs[1].body, "{}");
  ASSERT_EQ(plan->specs[1].headers.size(), 1u);
  EXPECT_EQ(plan->specs[1].headers[0].first, "X-A");
  EXPECT_EQ(plan->options.concurrency, 7);
  EXPECT_EQ(plan->options.window, 14);
  EXPECT_EQ(plan->options.timeout, absl::Seconds(9));
  EXPECT_EQ(plan->options.per_host_concurrency, 2);
  EXPECT_EQ(plan->options.deadline, absl::InfiniteFuture());
  EXPECT_EQ(plan->options.retry.max_attempts, 1);
  EXPECT_TRUE(plan->extract.empty());
  EXPECT_EQ(plan->batch_id.size(), 36u);  // a new UUIDv7
  EXPECT_TRUE(ValidateBatchId(plan->batch_id).ok());
  EXPECT_EQ(plan->created_at,
            absl::FromUnixSeconds(1'700'000'000) + absl::Microseconds(123'456));
}

TEST(TranslateRequest, RequestsMustBeThereAndNotTooMany) {
  ExpectRejected(Request(0), "requests");
  ServiceOptions options;
  options.max_batch_size = 2;
  ExpectRejected(Request(3), "requests", options);
  EXPECT_TRUE(Translate(Request(2), options).ok());
}

TEST(TranslateRequest, BatchSizeIsAcceptedAtTheLimitAndRejectedJustOver) {
  ServiceOptions options;
  options.max_batch_size = 5;
  absl::StatusOr<BatchPlan> plan = Translate(Request(5), options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->total, 5u);
  absl::StatusOr<BatchPlan> over = Translate(Request(6), options);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(over.status().message(),
            "requests: the batch has 6 requests; at most 5 are allowed "
            "(--max_batch_size)");
}

TEST(TranslateRequest, DefaultBatchSizeLimitIsAHundredThousand) {
  const ServiceOptions defaults;
  EXPECT_EQ(defaults.max_batch_size, 100000u);
  EXPECT_TRUE(Translate(Request(100000)).ok());
  ExpectRejected(Request(100001),
                 "requests: the batch has 100001 requests; at most 100000");
}

TEST(TranslateRequest, ClampsConcurrency) {
  ServiceOptions options;
  options.max_concurrency = 50;
  v1::FetchBatchRequest request = Request();
  request.set_concurrency(100000);
  EXPECT_EQ(Translate(request, options)->options.concurrency, 50);
  EXPECT_EQ(Translate(request, options)->options.window, 100);
  options.max_concurrency = UINT32_MAX;  // the window still fits an int
  request.set_concurrency(UINT32_MAX);
  absl::StatusOr<BatchPlan> plan = Translate(request, options);
  EXPECT_EQ(plan->options.concurrency, INT_MAX / 2);
  EXPECT_GT(plan->options.window, 0);
}

// Fix: a per_host_concurrency above INT_MAX used to wrap to a negative int,
// which the engine reads as "no cap".
TEST(TranslateRequest, ClampsPerHostConcurrency) {
  ServiceOptions options;
  options.max_concurrency = 64;
  v1::FetchBatchRequest request = Request();
  for (uint32_t huge : {UINT32_MAX, uint32_t{INT_MAX} + 1, 1000u}) {
    request.set_per_host_concurrency(huge);
    absl::StatusOr<BatchPlan> plan = Translate(request, options);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->options.per_host_concurrency, 64) << huge;
  }
  request.set_per_host_concurrency(3);
  EXPECT_EQ(Translate(request, options)->options.per_host_concurrency, 3);
  request.set_per_host_concurrency(0);  // server default: no cap
  EXPECT_EQ(Translate(request, options)->options.per_host_concurrency, 0);
}

TEST(TranslateRequest, Timeout) {
  ServiceOptions options;
  options.max_timeout = absl::Minutes(1);
  v1::FetchBatchRequest request = Request();
  *request.mutable_timeout() = Proto(-1, 0);
  ExpectRejected(request, "timeout", options);
  *request.mutable_timeout() = Proto(0, -1);
  ExpectRejected(request, "timeout", options);
  *request.mutable_timeout() = Proto(0, 1'000'000'000);
  ExpectRejected(request, "timeout", options);
  *request.mutable_timeout() = Proto(61, 0);
  ExpectRejected(request, "timeout", options);
  *request.mutable_timeout() = Proto(60, 0);
  EXPECT_EQ(Translate(request, options)->options.timeout, absl::Minutes(1));
  *request.mutable_timeout() = Proto(0, 1);  // at least 1 ms
  EXPECT_EQ(Translate(request, options)->options.timeout,
            absl::Milliseconds(1));
  *request.mutable_timeout() = Proto(0, 0);  // 0: the default
  EXPECT_EQ(Translate(request, options)->options.timeout,
            options.default_timeout);
}

TEST(TranslateRequest, DeadlineIsTheSmallerOfRequestAndGrpc) {
  v1::FetchBatchRequest request = Request();
  *request.mutable_deadline() = Proto(-1, 0);
  ExpectRejected(request, "deadline");
  *request.mutable_deadline() = Proto(1, 1'000'000'000);
  ExpectRejected(request, "deadline");

  *request.mutable_deadline() = Proto(2, 0);
  EXPECT_EQ(Translate(request)->options.deadline, kNow + absl::Seconds(2));
  EXPECT_EQ(Translate(request, {}, kNow + absl::Seconds(1))->options.deadline,
            kNow + absl::Seconds(1));
  EXPECT_EQ(Translate(request, {}, kNow + absl::Seconds(3))->options.deadline,
            kNow + absl::Seconds(2));
  // gRPC reports "no deadline" as a time far away.
  EXPECT_EQ(
      Translate(request, {}, kNow + absl::Hours(24 * 800))->options.deadline,
      kNow + absl::Seconds(2));

  *request.mutable_deadline() = Proto(0, 0);  // 0: none
  EXPECT_EQ(Translate(request)->options.deadline, absl::InfiniteFuture());
  EXPECT_EQ(Translate(request, {}, kNow + absl::Seconds(1))->options.deadline,
            kNow + absl::Seconds(1));
}

TEST(TranslateRequest, ExtractIsCompiledAndSorted) {
  v1::FetchBatchRequest request = Request();
  (*request.mutable_extract())["z"] = "/a";
  (*request.mutable_extract())["b"] = "/c/0";
  absl::StatusOr<BatchPlan> plan = Translate(request);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->extract.size(), 2u);
  EXPECT_EQ(plan->extract[0].first, "b");
  EXPECT_EQ(plan->extract[1].first, "z");
  std::string json;
  ASSERT_TRUE(plan->cleaner.Clean(R"({"a":1,"c":[2]})", &json).ok());
  EXPECT_EQ(json, R"({"b":2,"z":1})");

  (*request.mutable_extract())["bad"] = "no-slash";
  ExpectRejected(request, "extract[\"bad\"]");
}

TEST(TranslateRequest, BatchIdIsKeptOrRejected) {
  v1::FetchBatchRequest request = Request();
  request.set_batch_id("mine-1");
  EXPECT_EQ(Translate(request)->batch_id, "mine-1");
  request.set_batch_id("has space");
  ExpectRejected(request, "batch_id");
  request.set_batch_id(std::string(65, 'a'));
  ExpectRejected(request, "batch_id");
}

TEST(RetryFromRequest, DefaultsAndCaps) {
  v1::RetryPolicy policy;
  absl::StatusOr<RetryOptions> retry = RetryFromRequest(policy, 10);
  ASSERT_TRUE(retry.ok());
  EXPECT_EQ(retry->max_attempts, 1);
  policy.set_max_attempts(50);
  retry = RetryFromRequest(policy, 10);
  EXPECT_EQ(retry->max_attempts, 10);
  // Empty lists: the defaults.
  EXPECT_TRUE(retry->on_connect_error);
  EXPECT_TRUE(retry->on_timeout);
  EXPECT_TRUE(retry->on_429);
  EXPECT_FALSE(retry->on_5xx);
  EXPECT_EQ(retry->on_status, (std::vector<int>{502, 503, 504}));
  EXPECT_EQ(retry->initial_backoff, absl::Milliseconds(100));
  EXPECT_EQ(retry->max_backoff, absl::Seconds(10));
}

TEST(RetryFromRequest, ExplicitConditionsReplaceTheDefaults) {
  v1::RetryPolicy policy;
  policy.set_max_attempts(3);
  policy.add_retry_on(v1::RETRY_ON_5XX);
  policy.add_retry_on(v1::RETRY_ON_TRANSPORT_ERROR);
  policy.add_retry_on_status(408);
  policy.set_retry_non_idempotent(true);
  absl::StatusOr<RetryOptions> retry = RetryFromRequest(policy, 10);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->max_attempts, 3);
  EXPECT_TRUE(retry->on_5xx);
  EXPECT_TRUE(retry->on_transport_error);
  EXPECT_FALSE(retry->on_connect_error);
  EXPECT_FALSE(retry->on_timeout);
  EXPECT_FALSE(retry->on_429);
  EXPECT_EQ(retry->on_status, (std::vector<int>{408}));
  EXPECT_TRUE(retry->non_idempotent);
}

TEST(RetryFromRequest, RejectsUnknownConditionsAndStatuses) {
  v1::FetchBatchRequest request = Request();
  request.mutable_retry()->add_retry_on(v1::RETRY_CONDITION_UNSPECIFIED);
  ExpectRejected(request, "retry.retry_on");
  request.mutable_retry()->clear_retry_on();
  request.mutable_retry()->add_retry_on(static_cast<v1::RetryCondition>(77));
  ExpectRejected(request, "retry.retry_on");
  request.mutable_retry()->clear_retry_on();
  for (int status : {99, 600, 700, -1}) {
    request.mutable_retry()->clear_retry_on_status();
    request.mutable_retry()->add_retry_on_status(status);
    ExpectRejected(request, "retry.retry_on_status");
  }
}

// Fix: the bound used to accept 1h plus up to 999,999,999 ns.
TEST(RetryFromRequest, BackoffsAreAtMostExactlyOneHour) {
  v1::RetryPolicy policy;
  *policy.mutable_initial_backoff() = Proto(3600, 0);
  *policy.mutable_max_backoff() = Proto(3600, 0);
  absl::StatusOr<RetryOptions> retry = RetryFromRequest(policy, 10);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->initial_backoff, absl::Hours(1));

  v1::FetchBatchRequest request = Request();
  for (const char* field : {"retry.initial_backoff", "retry.max_backoff"}) {
    const bool initial = absl::StrContains(field, "initial");
    auto set = [&](int64_t seconds, int32_t nanos) {
      request.clear_retry();
      *(initial ? request.mutable_retry()->mutable_initial_backoff()
                : request.mutable_retry()->mutable_max_backoff()) =
          Proto(seconds, nanos);
    };
    set(3600, 1);
    ExpectRejected(request, field);
    set(3600, 999'999'999);
    ExpectRejected(request, field);
    set(3601, 0);
    ExpectRejected(request, field);
    set(0, 1'000'000'000);  // nanos out of range
    ExpectRejected(request, field);
    set(-1, 0);
    ExpectRejected(request, field);
    set(0, -1);
    ExpectRejected(request, field);
    set(3599, 999'999'999);
    EXPECT_TRUE(Translate(request).ok()) << field;
  }
}

TEST(RetryFromRequest, MaxBackoffIsRaisedToInitial) {
  v1::RetryPolicy policy;
  *policy.mutable_initial_backoff() = Proto(20, 0);
  *policy.mutable_max_backoff() = Proto(5, 0);
  absl::StatusOr<RetryOptions> retry = RetryFromRequest(policy, 10);
  ASSERT_TRUE(retry.ok());
  EXPECT_EQ(retry->initial_backoff, absl::Seconds(20));
  EXPECT_EQ(retry->max_backoff, absl::Seconds(20));
  *policy.mutable_initial_backoff() = Proto(0, 0);  // 0: the default
  retry = RetryFromRequest(policy, 10);
  EXPECT_EQ(retry->initial_backoff, absl::Milliseconds(100));
  EXPECT_EQ(retry->max_backoff, absl::Seconds(5));
}

TEST(TranslateRequest, ResumeNeedsABatchId) {
  v1::FetchBatchRequest request = Request(2);
  request.set_resume(true);
  ExpectRejected(request, "batch_id");
  request.set_batch_id("earlier");
  absl::StatusOr<BatchPlan> plan = Translate(request);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->resume);
  EXPECT_EQ(plan->batch_id, "earlier");
  EXPECT_FALSE(Translate(Request(2))->resume);
}

TEST(RequestsSha256, IsTheHexSha256OfTheRequestListAlone) {
  v1::FetchBatchRequest request = Request(2);
  const std::string sha = RequestsSha256(request);
  EXPECT_EQ(sha.size(), 64u);
  EXPECT_EQ(sha.find_first_not_of("0123456789abcdef"), std::string::npos);
  // The batch's options, id and resume flag are not part of it.
  v1::FetchBatchRequest with_options = request;
  with_options.set_concurrency(9);
  with_options.set_batch_id("x");
  with_options.set_resume(true);
  (*with_options.mutable_extract())["a"] = "/a";
  EXPECT_EQ(RequestsSha256(with_options), sha);
  // Every part of every request is.
  v1::FetchBatchRequest other = request;
  other.mutable_requests(1)->set_method("POST");
  EXPECT_NE(RequestsSha256(other), sha);
  other = request;
  other.mutable_requests(0)->set_body("b");
  EXPECT_NE(RequestsSha256(other), sha);
  other = request;
  (*other.mutable_requests(0)->mutable_headers())["X-A"] = "1";
  EXPECT_NE(RequestsSha256(other), sha);
  // Order matters; a prefix is not the list.
  other = Request(0);
  *other.add_requests() = request.requests(1);
  *other.add_requests() = request.requests(0);
  EXPECT_NE(RequestsSha256(other), sha);
  EXPECT_NE(RequestsSha256(Request(1)), sha);
}

TEST(RequestsSha256, LeavesUrlCredentialsOut) {
  v1::FetchBatchRequest with_password = Request(1);
  with_password.mutable_requests(0)->set_url("http://alice:weak@h.test/a");
  v1::FetchBatchRequest rotated = with_password;
  rotated.mutable_requests(0)->set_url("http://alice:n3w-Secret@h.test/a");
  v1::FetchBatchRequest redacted = with_password;
  redacted.mutable_requests(0)->set_url("http://***@h.test/a");
  // The stored hash cannot be used to guess the password, and a resume
  // with rotated credentials still matches.
  EXPECT_EQ(RequestsSha256(with_password), RequestsSha256(rotated));
  EXPECT_EQ(RequestsSha256(with_password), RequestsSha256(redacted));
  v1::FetchBatchRequest other_host = with_password;
  other_host.mutable_requests(0)->set_url("http://alice:weak@i.test/a");
  EXPECT_NE(RequestsSha256(other_host), RequestsSha256(with_password));
}

TEST(StoredRequestForTakeover, KeepsADetachedRequestWithoutUrlCredentials) {
  v1::FetchBatchRequest request = Request(2);
  request.set_detach(true);
  request.mutable_requests(0)->set_url("http://alice:S3CRET@h.test/a");
  (*request.mutable_requests(1)->mutable_headers())["X-Key"] = "k";
  std::shared_ptr<const std::string> bytes =
      StoredRequestForTakeover(request, "the-id");
  ASSERT_NE(bytes, nullptr);
  EXPECT_EQ(bytes->find("S3CRET"), std::string::npos);
  EXPECT_EQ(bytes->find("alice"), std::string::npos);
  v1::FetchBatchRequest stored;
  ASSERT_TRUE(stored.ParseFromString(*bytes));
  EXPECT_EQ(stored.batch_id(), "the-id");
  EXPECT_TRUE(stored.detach());
  EXPECT_EQ(stored.requests(0).url(), "http://***@h.test/a");
  EXPECT_EQ(stored.requests(1).url(), request.requests(1).url());
  EXPECT_EQ(stored.requests(1).headers().at("X-Key"), "k");
  EXPECT_TRUE(HasStoredCredentialsRedacted(stored));
  EXPECT_FALSE(HasStoredCredentialsRedacted(request));
  EXPECT_EQ(RequestsSha256(stored), RequestsSha256(request));
}

TEST(StoredRequestForTakeover, StoresNothingForABatchThatIsNotDetached) {
  EXPECT_EQ(StoredRequestForTakeover(Request(2), "the-id"), nullptr);
}

TEST(RequestsSha256, IsTheSha256OfADeterministicSerialization) {
  // SHA-256 of the empty string: a batch without requests.
  EXPECT_EQ(RequestsSha256(Request(0)),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  // Header maps hash the same whatever order they were filled in.
  v1::FetchBatchRequest a = Request(1);
  v1::FetchBatchRequest b = Request(1);
  for (int i = 0; i < 20; ++i) {
    (*a.mutable_requests(0)->mutable_headers())[absl::StrCat("H", i)] = "v";
    (*b.mutable_requests(0)->mutable_headers())[absl::StrCat("H", 19 - i)] =
        "v";
  }
  EXPECT_EQ(RequestsSha256(a), RequestsSha256(b));
}

}  // namespace
}  // namespace batchfetch

namespace batchfetch {
namespace {

TEST(ValidationMessages, StartWithTheFieldPath) {
  ServiceOptions options;
  options.max_timeout = absl::Minutes(1);
  v1::FetchBatchRequest request = Request();
  *request.mutable_timeout() = Proto(-1, 0);
  EXPECT_EQ(RejectionOf(request), "timeout: must not be negative");
  *request.mutable_timeout() = Proto(90, 0);
  EXPECT_EQ(RejectionOf(request, options),
            "timeout: 1m30s exceeds the maximum 1m (--max_timeout)");

  request = Request();
  *request.mutable_retry()->mutable_initial_backoff() = Proto(7200, 0);
  EXPECT_EQ(RejectionOf(request),
            "retry.initial_backoff: must be between 0 and 1h, got 2h");
  request = Request();
  *request.mutable_retry()->mutable_max_backoff() = Proto(-5, 0);
  EXPECT_EQ(RejectionOf(request),
            "retry.max_backoff: must be between 0 and 1h, got a negative "
            "duration");

  request = Request();
  request.mutable_retry()->add_retry_on(v1::RETRY_ON_5XX);
  request.mutable_retry()->add_retry_on(v1::RETRY_CONDITION_UNSPECIFIED);
  EXPECT_EQ(RejectionOf(request),
            "retry.retry_on[1]: RETRY_CONDITION_UNSPECIFIED is not allowed");
  request.mutable_retry()->set_retry_on(1, static_cast<v1::RetryCondition>(77));
  EXPECT_EQ(RejectionOf(request), "retry.retry_on[1]: unknown condition 77");

  request = Request();
  request.mutable_retry()->add_retry_on_status(503);
  request.mutable_retry()->add_retry_on_status(700);
  EXPECT_EQ(RejectionOf(request),
            "retry.retry_on_status[1]: 700 is not an HTTP status (100-599)");

  request = Request();
  request.set_batch_id("has space");
  EXPECT_EQ(RejectionOf(request),
            "batch_id: may only contain letters, digits and . _ - :");
  request.set_batch_id(std::string(65, 'a'));
  EXPECT_EQ(RejectionOf(request),
            "batch_id: must be 1 to 64 characters long, got 65");

  request = Request();
  for (int i = 0; i < 65; ++i) {
    (*request.mutable_extract())[absl::StrCat("f", i)] = "/a";
  }
  EXPECT_EQ(RejectionOf(request), "extract: 65 fields; at most 64 are allowed");
  request = Request();
  (*request.mutable_extract())[""] = "/a";
  EXPECT_EQ(RejectionOf(request),
            "extract: names must be 1 to 256 characters long");
}

TEST(TranslateRequest, BodyTextIsSentAsTheBody) {
  v1::FetchBatchRequest request = Request(2);
  request.mutable_requests(1)->set_method("POST");
  request.mutable_requests(1)->set_body_text(R"({"name":"é"})");
  absl::StatusOr<BatchPlan> plan = Translate(request);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->specs[1].body, R"({"name":"é"})");
  EXPECT_EQ(plan->specs[0].body, "");
}

TEST(TranslateRequest, BodyAndBodyTextTogetherAreRejectedNamingTheEntry) {
  v1::FetchBatchRequest request = Request(4);
  request.mutable_requests(3)->set_body("x");
  request.mutable_requests(3)->set_body_text("y");
  EXPECT_EQ(RejectionOf(request),
            "requests[3].body_text: set either body or body_text, not both");
}

TEST(TranslateRequest, MaxBodyBytesDefaultsToTheStreamSafeCap) {
  ServiceOptions options;
  options.max_body_bytes = 8 << 20;
  absl::StatusOr<BatchPlan> plan = Translate(Request(), options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->options.max_body_bytes, kStreamSafeMaxBodyBytes);
  EXPECT_LT(kStreamSafeMaxBodyBytes, 4 << 20);
  // A server cap below the default wins.
  options.max_body_bytes = 1000;
  EXPECT_EQ(Translate(Request(), options)->options.max_body_bytes, 1000);
}

TEST(TranslateRequest, MaxBodyBytesUpToTheServerCapIsKept) {
  ServiceOptions options;
  options.max_body_bytes = 8 << 20;
  v1::FetchBatchRequest request = Request();
  request.set_max_body_bytes(8 << 20);
  EXPECT_EQ(Translate(request, options)->options.max_body_bytes, 8 << 20);
  request.set_max_body_bytes(10);
  EXPECT_EQ(Translate(request, options)->options.max_body_bytes, 10);
}

TEST(TranslateRequest, MaxBodyBytesAboveTheServerCapIsRejected) {
  ServiceOptions options;
  options.max_body_bytes = 8 << 20;
  v1::FetchBatchRequest request = Request();
  request.set_max_body_bytes((8 << 20) + 1);
  EXPECT_EQ(RejectionOf(request, options),
            "max_body_bytes: 8388609 is above the server's cap of 8388608 "
            "bytes (--max_body_bytes)");
}

}  // namespace
}  // namespace batchfetch

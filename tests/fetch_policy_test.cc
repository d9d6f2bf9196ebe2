// The engine's fetch policies against a loopback upstream that fails,
// stalls, drips and rate-limits on request.
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "service/fetch/fetch_engine.h"
#include "tests/support/collecting_sink.h"
#include "tests/support/proc_status.h"
#include "tests/support/test_upstream.h"

namespace batchfetch {
namespace {

using testing::CollectingSink;
using testing::TestUpstream;

class FetchPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto upstream = TestUpstream::Start();
    ASSERT_TRUE(upstream.ok()) << upstream.status();
    upstream_ = *std::move(upstream);
  }

  std::map<uint32_t, FetchedResponse> Run(
      std::vector<FetchSpec> specs, BatchOptions options,
      FetchEngine::Options engine_options = {}) {
    auto engine = FetchEngine::Create(engine_options);
    EXPECT_TRUE(engine.ok());
    auto sink = std::make_shared<CollectingSink>();
    const size_t n = specs.size();
    (*engine)->Submit(std::move(specs), options, sink);
    return sink->Await(n);
  }

  std::vector<FetchSpec> Specs(const std::vector<std::string>& urls) {
    std::vector<FetchSpec> specs(urls.size());
    for (size_t i = 0; i < urls.size(); ++i) {
      specs[i].index = static_cast<uint32_t>(i);
      specs[i].url = urls[i];
    }
    return specs;
  }

  BatchOptions WithRetries(int attempts) {
    BatchOptions options;
    options.retry = RetryOptions::Defaults(attempts);
    options.retry.initial_backoff = absl::Milliseconds(10);
    return options;
  }

  std::unique_ptr<TestUpstream> upstream_;
};

TEST_F(FetchPolicyTest, RetriesUntilSuccessAndCountsAttempts) {
  auto r = Run(Specs({upstream_->Url("/flaky?fail_first=2&fail_status=503")}),
               WithRetries(3));
  EXPECT_EQ(r[0].result, TransferResult::kResponse);
  EXPECT_EQ(r[0].http_status, 200);
  EXPECT_EQ(r[0].attempts, 3u);
  EXPECT_EQ(upstream_->total_requests(), 3);
}

TEST_F(FetchPolicyTest, GivesUpAfterMaxAttemptsWithLastOutcome) {
  auto r = Run(Specs({upstream_->Url("/down?fail_first=9&fail_status=502")}),
               WithRetries(3));
  EXPECT_EQ(r[0].http_status, 502);
  EXPECT_EQ(r[0].attempts, 3u);
}

TEST_F(FetchPolicyTest, DoesNotRetryClientErrorsOrPostByDefault) {
  std::vector<FetchSpec> specs =
      Specs({upstream_->Url("/nf?status=404"),
             upstream_->Url("/post?fail_first=2&fail_status=503")});
  specs[1].method = "POST";
  specs[1].body = "{}";
  auto r = Run(specs, WithRetries(3));
  EXPECT_EQ(r[0].http_status, 404);
  EXPECT_EQ(r[0].attempts, 1u);
  EXPECT_EQ(r[1].http_status, 503);
  EXPECT_EQ(r[1].attempts, 1u);

  // Opting in retries POST too.
  upstream_->ResetStats();
  BatchOptions options = WithRetries(3);
  options.retry.non_idempotent = true;
  specs = Specs({upstream_->Url("/post?fail_first=2&fail_status=503")});
  specs[0].method = "POST";
  r = Run(specs, options);
  EXPECT_EQ(r[0].http_status, 200);
  EXPECT_EQ(r[0].attempts, 3u);
}

TEST_F(FetchPolicyTest, RetriesConnectErrorsAndTimeouts) {
  BatchOptions options = WithRetries(2);
  options.timeout = absl::Milliseconds(200);
  auto r = Run(Specs({"http://127.0.0.1:1/refused",
                      upstream_->Url("/slow?delay_ms=2000")}),
               options);
  EXPECT_EQ(r[0].result, TransferResult::kConnectError);
  EXPECT_EQ(r[0].attempts, 2u);
  EXPECT_EQ(r[1].result, TransferResult::kTimeout);
  EXPECT_EQ(r[1].attempts, 2u);
}

TEST_F(FetchPolicyTest, RetryAfterCoolsDownTheWholeHost) {
  BatchOptions options = WithRetries(2);
  options.concurrency = 1;
  auto r = Run(
      Specs({upstream_->Url("/a?fail_first=1&fail_status=429&retry_after=1"),
             upstream_->Url("/b")}),
      options);
  EXPECT_EQ(r[0].http_status, 200);
  EXPECT_EQ(r[0].attempts, 2u);
  EXPECT_EQ(r[1].http_status, 200);
  auto arrivals = upstream_->arrivals();
  ASSERT_EQ(arrivals.size(), 3u);
  const absl::Time first = arrivals[0].at;
  // Both the retry and the other queued request waited out Retry-After.
  for (size_t i = 1; i < arrivals.size(); ++i) {
    EXPECT_GE(arrivals[i].at - first, absl::Milliseconds(990))
        << arrivals[i].path_and_query;
  }
}

TEST_F(FetchPolicyTest, RetryAfterFromARedirectTargetCoolsThatHost) {
  auto target = TestUpstream::Start();
  ASSERT_TRUE(target.ok());
  // Request 0 is redirected to `target`, which answers 429 Retry-After: 1;
  // request 1 goes to `target` directly and must wait out the cooldown.
  const std::string limited = (*target)->Url("/api?status=429&retry_after=1");
  std::string encoded;
  for (char c : limited) {
    if (c == ':' || c == '/' || c == '?' || c == '&' || c == '=') {
      encoded += absl::StrCat(
          "%", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
    } else {
      encoded += c;
    }
  }
  BatchOptions options;
  options.concurrency = 1;
  auto r = Run(Specs({upstream_->Url("/redirect?to=" + encoded),
                      (*target)->Url("/other")}),
               options);
  EXPECT_EQ(r[0].http_status, 429);
  EXPECT_EQ(r[1].http_status, 200);
  auto arrivals = (*target)->arrivals();
  ASSERT_EQ(arrivals.size(), 2u);
  EXPECT_GE(arrivals[1].at - arrivals[0].at, absl::Milliseconds(950));
}

TEST_F(FetchPolicyTest, HttpDateRetryAfterIsHonoured) {
  const std::string date =
      absl::FormatTime("%a, %d %b %Y %H:%M:%S GMT",
                       absl::Now() + absl::Seconds(2), absl::UTCTimeZone());
  std::string encoded;
  for (char c : date) {
    if (c == ' ') {
      encoded += "%20";
    } else if (c == ',') {
      encoded += "%2C";
    } else {
      encoded += c;
    }
  }
  auto r = Run(Specs({upstream_->Url(absl::StrCat(
                   "/d?fail_first=1&fail_status=503&retry_after=", encoded))}),
               WithRetries(2));
  EXPECT_EQ(r[0].http_status, 200);
  auto arrivals = upstream_->arrivals();
  ASSERT_EQ(arrivals.size(), 2u);
  EXPECT_GE(arrivals[1].at - arrivals[0].at, absl::Milliseconds(900));
}

TEST_F(FetchPolicyTest, NoRetryThatCannotFinishBeforeTheDeadline) {
  BatchOptions options = WithRetries(3);
  options.deadline = absl::Now() + absl::Seconds(1);
  const absl::Time start = absl::Now();
  auto r = Run(
      Specs({upstream_->Url("/x?fail_first=1&fail_status=503&retry_after=2")}),
      options);
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(900));
  EXPECT_EQ(r[0].result, TransferResult::kResponse);
  EXPECT_EQ(r[0].http_status, 503);
  EXPECT_EQ(r[0].attempts, 1u);
  EXPECT_TRUE(absl::StrContains(r[0].error, "deadline")) << r[0].error;
  EXPECT_EQ(upstream_->total_requests(), 1);
}

TEST_F(FetchPolicyTest, RetryStuckBehindTheDeadlineKeepsItsLastOutcome) {
  // The retry is due before the deadline, but the only slot is taken by a
  // slow request until after it: the result is the real 503, not CANCELLED.
  // It comes without the failed attempt's 100 KB body, which a waiting
  // retry does not keep (memory grows with the window, not with retries).
  BatchOptions options = WithRetries(3);
  options.concurrency = 1;
  options.retry.max_backoff = absl::Milliseconds(10);
  options.deadline = absl::Now() + absl::Milliseconds(600);
  auto r = Run(Specs({upstream_->Url("/flaky?status=503&bytes=100000"),
                      upstream_->Url("/slow?delay_ms=3000")}),
               options);
  EXPECT_EQ(r[0].result, TransferResult::kResponse);
  EXPECT_EQ(r[0].http_status, 503);
  EXPECT_EQ(r[0].attempts, 1u);
  EXPECT_EQ(r[0].end_reason, EndReason::kNoTimeForRetry);
  EXPECT_TRUE(r[0].body.empty()) << r[0].body.size();
  EXPECT_TRUE(absl::StrContains(r[0].error, "not retried")) << r[0].error;
  EXPECT_EQ(r[1].result, TransferResult::kTimeout);
  EXPECT_EQ(r[1].end_reason, EndReason::kDeadlineCut);
}

TEST_F(FetchPolicyTest, DeadlineEndsQueuedAndRunningRequests) {
  BatchOptions options;
  options.concurrency = 1;
  options.deadline = absl::Now() + absl::Milliseconds(500);
  auto r =
      Run(Specs({upstream_->Url("/s?delay_ms=5000"), upstream_->Url("/t")}),
          options);
  EXPECT_EQ(r[0].result, TransferResult::kTimeout);
  EXPECT_TRUE(absl::StrContains(r[0].error, "deadline")) << r[0].error;
  EXPECT_EQ(r[1].result, TransferResult::kCancelled);
  EXPECT_TRUE(absl::StrContains(r[1].error, "deadline")) << r[1].error;
}

TEST_F(FetchPolicyTest, PerHostConcurrencyCapsEachHost) {
  auto other = TestUpstream::Start();
  ASSERT_TRUE(other.ok());
  std::vector<std::string> urls;
  for (int i = 0; i < 12; ++i) {
    urls.push_back(upstream_->Url(absl::StrCat("/h1?n=", i, "&delay_ms=50")));
    urls.push_back((*other)->Url(absl::StrCat("/h2?n=", i, "&delay_ms=50")));
  }
  BatchOptions options;
  options.concurrency = 10;
  options.per_host_concurrency = 2;
  auto r = Run(Specs(urls), options);
  EXPECT_EQ(r.size(), 24u);
  EXPECT_EQ(upstream_->peak_in_flight(), 2);
  EXPECT_EQ((*other)->peak_in_flight(), 2);
}

TEST_F(FetchPolicyTest, FollowsRedirectsWithinLimitAndReportsFinalUrl) {
  const std::string final_url = upstream_->Url("/final");
  const std::string hop2 = upstream_->Url("/redirect?to=%2Ffinal");
  auto r =
      Run(Specs({upstream_->Url("/redirect?to=%2Fredirect%3Fto%3D%252Ffinal"),
                 upstream_->Url("/redirect?to=%2Fredirect%3Fto%3D%252Fredirect%"
                                "253Fto%253D%25252Fredirect"),
                 upstream_->Url("/redirect?to=ftp%3A%2F%2F127.0.0.1%2Ffile")}),
          BatchOptions());
  EXPECT_EQ(r[0].result, TransferResult::kResponse) << r[0].error;
  EXPECT_EQ(r[0].http_status, 200);
  EXPECT_EQ(r[0].final_url, final_url);
  (void)hop2;
  EXPECT_EQ(r[2].result, TransferResult::kBlocked) << r[2].error;

  // A loop ends after the limit.
  FetchEngine::Options engine_options;
  engine_options.max_redirects = 3;
  upstream_->ResetStats();
  auto loop = Run(Specs({upstream_->Url(
                      "/redirect?to=%2Fredirect%3Fto%3D%252Fredirect%253Fto%"
                      "253D%25252Fredirect%25253Fto%25253D%2525252Fredirect")}),
                  BatchOptions(), engine_options);
  EXPECT_EQ(loop[0].result, TransferResult::kTransportError);
  EXPECT_TRUE(absl::StrContains(loop[0].error, "redirect")) << loop[0].error;
}

int64_t PeakRssKb() { return testing::ProcStatusKb(0, "VmHWM:"); }

TEST_F(FetchPolicyTest, CompressedBodiesAreDecodedAndBombsCapped) {
  FetchEngine::Options engine_options;
  engine_options.max_body_bytes = 1 << 20;
  [[maybe_unused]] const int64_t before_kb = PeakRssKb();
  auto r = Run(Specs({upstream_->Url("/small?gzip_zeros=5000"),
                      upstream_->Url("/bomb?gzip_zeros=200000000")}),
               BatchOptions(), engine_options);
  EXPECT_EQ(r[0].result, TransferResult::kResponse);
  EXPECT_EQ(r[0].body.size(), 5000u);
  EXPECT_EQ(r[1].result, TransferResult::kTooLarge) << r[1].error;
#ifndef __SANITIZE_ADDRESS__
  // 200 MB decoded would show here; the cap stops at 1 MiB.
  EXPECT_LT(PeakRssKb() - before_kb, 64 * 1024);
#endif
}

TEST_F(FetchPolicyTest, SlowDripEndsAsTimeout) {
  FetchEngine::Options engine_options;
  engine_options.low_speed_bytes = 10;
  engine_options.low_speed_time = absl::Seconds(1);
  const absl::Time start = absl::Now();
  auto r = Run(Specs({upstream_->Url("/drip?bytes=100&drip_ms=1000")}),
               BatchOptions(), engine_options);
  EXPECT_EQ(r[0].result, TransferResult::kTimeout) << r[0].error;
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST_F(FetchPolicyTest, ReusesConnectionsAcrossBatchesAndReportsTimings) {
  auto engine = FetchEngine::Create(FetchEngine::Options());
  ASSERT_TRUE(engine.ok());
  BatchOptions options;
  options.concurrency = 4;
  std::vector<std::string> urls(8, upstream_->Url("/k?delay_ms=20"));
  for (int round = 0; round < 2; ++round) {
    auto sink = std::make_shared<CollectingSink>();
    (*engine)->Submit(Specs(urls), options, sink);
    for (const auto& [index, response] : sink->Await(8)) {
      EXPECT_EQ(response.result, TransferResult::kResponse);
      EXPECT_GT(response.timings.total, absl::ZeroDuration());
      EXPECT_LE(response.timings.first_byte, response.timings.total);
      EXPECT_GE(response.timings.first_byte, absl::Milliseconds(15));
    }
  }
  EXPECT_EQ(upstream_->total_requests(), 16);
  EXPECT_LE(upstream_->connections_accepted(), 4);
}

TEST_F(FetchPolicyTest, RetryAfterBeyondTheCapIsNotRetriedEarly) {
  // The server asks for 5 s; we allow at most 1 s. Retrying after 1 s would
  // only fail again: the request is not retried at all and says why.
  FetchEngine::Options engine_options;
  engine_options.max_retry_after = absl::Seconds(1);
  const absl::Time start = absl::Now();
  auto r = Run(
      Specs({upstream_->Url("/x?fail_first=1&fail_status=503&retry_after=5")}),
      WithRetries(3), engine_options);
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(900));
  EXPECT_EQ(r[0].result, TransferResult::kResponse);
  EXPECT_EQ(r[0].http_status, 503);
  EXPECT_EQ(r[0].attempts, 1u);
  EXPECT_EQ(r[0].end_reason, EndReason::kRetryNotAllowedYet);
  EXPECT_TRUE(absl::StrContains(r[0].error, "allows the next try only after"))
      << r[0].error;
  EXPECT_EQ(upstream_->total_requests(), 1);
}

// Sets or clears environment variables for one scope, then puts back what
// was there. Not thread-safe (setenv): use before the engine under test
// exists or while it is idle.
class ScopedEnvironment {
 public:
  ScopedEnvironment() = default;
  ScopedEnvironment(const ScopedEnvironment&) = delete;
  ScopedEnvironment& operator=(const ScopedEnvironment&) = delete;
  ~ScopedEnvironment() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second.has_value()) {
        setenv(it->first.c_str(), it->second->c_str(), 1);
      } else {
        unsetenv(it->first.c_str());
      }
    }
  }
  void Set(const std::string& name, const std::string& value) {
    Save(name);
    setenv(name.c_str(), value.c_str(), 1);
  }
  void Unset(const std::string& name) {
    Save(name);
    unsetenv(name.c_str());
  }

 private:
  void Save(const std::string& name) {
    const char* value = std::getenv(name.c_str());
    saved_.emplace_back(name, value == nullptr
                                  ? std::nullopt
                                  : std::optional<std::string>(value));
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

TEST_F(FetchPolicyTest, ServerEnvironmentProxyIsIgnored) {
  // A proxy in the server's environment must not capture egress: without
  // --proxy, transfers go directly to the host asked for. The "proxy" is a
  // loopback server that counts the connections it accepts.
  auto proxy = TestUpstream::Start();
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  {
    ScopedEnvironment environment;
    for (const char* name : {"http_proxy", "HTTP_PROXY", "https_proxy",
                             "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
      environment.Set(name, (*proxy)->Url(""));
    }
    environment.Unset("no_proxy");
    environment.Unset("NO_PROXY");
    // The https URL would go through the proxy's CONNECT had https_proxy
    // been read; directly, it meets a server that does not speak TLS.
    auto r = Run(Specs({upstream_->Url("/direct"),
                        absl::StrCat("https://127.0.0.1:", upstream_->port(),
                                     "/direct-tls")}),
                 BatchOptions());
    EXPECT_EQ(r[0].result, TransferResult::kResponse) << r[0].error;
    EXPECT_EQ(r[0].http_status, 200);
    EXPECT_NE(r[1].result, TransferResult::kResponse);
  }
  EXPECT_EQ((*proxy)->connections_accepted(), 0);
  EXPECT_EQ(upstream_->connections_accepted(), 2);
}

TEST_F(FetchPolicyTest,
       AConfiguredProxyCarriesEveryRequestWhateverNoProxySays) {
  // With a proxy configured (--proxy), no_proxy / NO_PROXY in the server's
  // environment must not send any host around it, directly.
  auto proxy = TestUpstream::Start();
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  FetchEngine::Options engine_options;
  engine_options.proxy = (*proxy)->Url("");
  const std::string target = upstream_->Url("/via-proxy");
  {
    ScopedEnvironment environment;
    environment.Set("no_proxy", "*");
    environment.Set("NO_PROXY", "*");
    Run(Specs({target}), BatchOptions(), engine_options);
  }
  EXPECT_EQ(upstream_->connections_accepted(), 0);
  EXPECT_EQ((*proxy)->connections_accepted(), 1);
  ASSERT_EQ((*proxy)->arrivals().size(), 1u);
  // A forward proxy gets the absolute URL as the request target.
  EXPECT_EQ((*proxy)->arrivals()[0].path_and_query, target);
}

TEST_F(FetchPolicyTest, EndAtDeadlineCutsRunningTransfersAsTimeout) {
  auto engine = FetchEngine::Create({});
  ASSERT_TRUE(engine.ok());
  auto sink = std::make_shared<CollectingSink>();
  BatchOptions options;
  options.concurrency = 2;
  auto handle = (*engine)->Submit(
      Specs({upstream_->Url("/s1?delay_ms=5000"),
             upstream_->Url("/s2?delay_ms=5000"), upstream_->Url("/never")}),
      options, sink);
  ASSERT_TRUE(upstream_->AwaitInFlightAtLeast(2, absl::Seconds(5)));
  handle->EndAtDeadline();
  auto r = sink->Await(3);
  for (uint32_t i : {0u, 1u}) {
    EXPECT_EQ(r[i].result, TransferResult::kTimeout) << i;
    EXPECT_EQ(r[i].end_reason, EndReason::kDeadlineCut) << i;
  }
  EXPECT_EQ(r[2].result, TransferResult::kCancelled);
  EXPECT_EQ(r[2].end_reason, EndReason::kDeadlineBeforeStart);
}

}  // namespace
}  // namespace batchfetch

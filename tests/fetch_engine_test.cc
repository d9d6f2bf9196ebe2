#include "service/fetch/fetch_engine.h"

#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/collecting_sink.h"
#include "tests/support/loopback_listener.h"
#include "tests/support/test_upstream.h"

namespace batchfetch {
namespace {

using testing::CollectingSink;
using testing::LoopbackListener;
using testing::TestUpstream;

// Gives each spec its position as its index.
std::vector<FetchSpec> Numbered(std::vector<FetchSpec> specs) {
  for (size_t i = 0; i < specs.size(); ++i) {
    specs[i].index = static_cast<uint32_t>(i);
  }
  return specs;
}

std::vector<FetchSpec> Urls(const TestUpstream& upstream, int n,
                            absl::string_view query) {
  std::vector<FetchSpec> specs(n);
  for (int i = 0; i < n; ++i) {
    specs[i].index = static_cast<uint32_t>(i);
    specs[i].url = upstream.Url(absl::StrCat("/item/", i, "?", query));
  }
  return specs;
}

class FetchEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto upstream = TestUpstream::Start();
    ASSERT_TRUE(upstream.ok()) << upstream.status();
    upstream_ = *std::move(upstream);
  }

  std::unique_ptr<FetchEngine> MakeEngine(FetchEngine::Options options = {}) {
    auto engine = FetchEngine::Create(options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return *std::move(engine);
  }

  // `url` fetched alone through a fresh engine with default options (a
  // default FetchedResponse, reported, if nothing arrives within 10 s).
  FetchedResponse FetchOne(const std::string& url) {
    auto engine = MakeEngine();
    auto sink = std::make_shared<CollectingSink>();
    std::vector<FetchSpec> specs(1);
    specs[0].url = url;
    engine->Submit(specs, BatchOptions(), sink);
    EXPECT_TRUE(sink->AwaitCount(1, absl::Seconds(10)));
    auto responses = sink->responses();
    return responses.empty() ? FetchedResponse() : responses.begin()->second;
  }

  std::unique_ptr<TestUpstream> upstream_;
};

TEST_F(FetchEngineTest, RespectsConcurrencyCap) {
  auto engine = MakeEngine();
  auto sink = std::make_shared<CollectingSink>();
  BatchOptions options;
  options.concurrency = 5;
  options.window = 10;
  engine->Submit(Urls(*upstream_, 40, "delay_ms=50"), options, sink);
  ASSERT_TRUE(sink->AwaitCount(40, absl::Seconds(30)));
  EXPECT_EQ(upstream_->peak_in_flight(), 5);
  for (const auto& [index, response] : sink->responses()) {
    EXPECT_EQ(response.result, TransferResult::kResponse) << index;
    EXPECT_EQ(response.http_status, 200);
    EXPECT_EQ(response.attempts, 1u);
  }
}

TEST_F(FetchEngineTest, ServerWideCapHoldsAcrossBatches) {
  FetchEngine::Options engine_options;
  engine_options.max_in_flight = 6;
  auto engine = MakeEngine(engine_options);
  auto a = std::make_shared<CollectingSink>();
  auto b = std::make_shared<CollectingSink>();
  BatchOptions options;
  options.concurrency = 5;
  options.window = 10;
  engine->Submit(Urls(*upstream_, 20, "delay_ms=50"), options, a);
  engine->Submit(Urls(*upstream_, 20, "delay_ms=50"), options, b);
  ASSERT_TRUE(a->AwaitCount(20, absl::Seconds(30)));
  ASSERT_TRUE(b->AwaitCount(20, absl::Seconds(30)));
  EXPECT_EQ(upstream_->peak_in_flight(), 6);
}

TEST_F(FetchEngineTest, UnreleasedResponsesStopNewTransfers) {
  auto engine = MakeEngine();
  auto sink = std::make_shared<CollectingSink>(/*hold=*/true);
  BatchOptions options;
  options.concurrency = 2;
  options.window = 4;
  engine->Submit(Urls(*upstream_, 20, ""), options, sink);
  ASSERT_TRUE(sink->AwaitCount(4, absl::Seconds(10)));
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(sink->responses().size(), 4u);
  EXPECT_EQ(upstream_->total_requests(), 4);
  sink->ReleaseHeld();
  EXPECT_TRUE(sink->AwaitCount(20, absl::Seconds(10)));
}

TEST_F(FetchEngineTest, ValidatesRequestsWithoutNetworkIo) {
  auto engine = MakeEngine();
  auto sink = std::make_shared<CollectingSink>();
  std::vector<FetchSpec> specs(6);
  specs[0].url = "ftp://127.0.0.1/file";
  specs[1].url = "http://exa mple.com/";
  specs[2].url = "not a url";
  specs[3].url = upstream_->Url("/x");
  specs[3].method = "BREW";
  specs[4].url = upstream_->Url("/x");
  specs[4].headers = {{"X-Bad", "a\r\nInjected: 1"}};
  specs[5].url = "";
  engine->Submit(Numbered(specs), BatchOptions(), sink);
  ASSERT_TRUE(sink->AwaitCount(6, absl::Seconds(10)));
  for (const auto& [index, response] : sink->responses()) {
    EXPECT_EQ(response.result, TransferResult::kInvalidRequest) << index;
    EXPECT_FALSE(response.error.empty());
  }
  EXPECT_NE(sink->responses()[0].error.find("ftp"), std::string::npos);
  EXPECT_EQ(upstream_->total_requests(), 0);
}

TEST_F(FetchEngineTest, MapsTransportFailures) {
  FetchEngine::Options engine_options;
  engine_options.max_body_bytes = 1000;
  auto engine = MakeEngine(engine_options);
  auto sink = std::make_shared<CollectingSink>();
  std::vector<FetchSpec> specs(4);
  specs[0].url = "http://127.0.0.1:1/refused";
  specs[1].url = upstream_->Url("/slow?delay_ms=3000");
  specs[2].url = upstream_->Url("/big?bytes=5000");
  specs[3].url = upstream_->Url("/big-unknown-length?bytes=5000&no_length=1");
  BatchOptions options;
  options.timeout = absl::Milliseconds(300);
  engine->Submit(Numbered(specs), options, sink);
  ASSERT_TRUE(sink->AwaitCount(4, absl::Seconds(10)));
  auto r = sink->responses();
  EXPECT_EQ(r[0].result, TransferResult::kConnectError) << r[0].error;
  EXPECT_EQ(r[1].result, TransferResult::kTimeout) << r[1].error;
  EXPECT_EQ(r[2].result, TransferResult::kTooLarge) << r[2].error;
  EXPECT_EQ(r[3].result, TransferResult::kTooLarge) << r[3].error;
  EXPECT_TRUE(r[3].body.empty());
}

TEST_F(FetchEngineTest, SendsMethodHeadersAndBody) {
  auto engine = MakeEngine();
  auto sink = std::make_shared<CollectingSink>();
  std::vector<FetchSpec> specs(1);
  specs[0].url = upstream_->Url("/echo");
  specs[0].method = "post";
  specs[0].body = R"({"q":1})";
  specs[0].headers = {{"X-Api-Key", "secret"}};
  engine->Submit(Numbered(specs), BatchOptions(), sink);
  ASSERT_TRUE(sink->AwaitCount(1, absl::Seconds(10)));
  EXPECT_EQ(sink->responses()[0].result, TransferResult::kResponse);
  auto arrivals = upstream_->arrivals();
  ASSERT_EQ(arrivals.size(), 1u);
  EXPECT_EQ(arrivals[0].method, "POST");
}

TEST_F(FetchEngineTest, ReusedHandlesSendEachRequestsOwnMethod) {
  auto engine = MakeEngine();
  auto sink = std::make_shared<CollectingSink>();
  std::vector<FetchSpec> specs(5);
  const char* methods[] = {"POST", "", "HEAD", "PUT", "GET"};
  for (int i = 0; i < 5; ++i) {
    specs[i].url = upstream_->Url(absl::StrCat("/m", i));
    specs[i].method = methods[i];
    if (specs[i].method == "POST" || specs[i].method == "PUT") {
      specs[i].body = "{}";
    }
  }
  BatchOptions options;
  options.concurrency = 1;  // one handle, reused for every request
  engine->Submit(Numbered(specs), options, sink);
  ASSERT_TRUE(sink->AwaitCount(5, absl::Seconds(10)));
  auto arrivals = upstream_->arrivals();
  ASSERT_EQ(arrivals.size(), 5u);
  EXPECT_EQ(arrivals[0].method, "POST");
  EXPECT_EQ(arrivals[1].method, "GET");
  EXPECT_EQ(arrivals[2].method, "HEAD");
  EXPECT_EQ(arrivals[3].method, "PUT");
  EXPECT_EQ(arrivals[4].method, "GET");
}

TEST_F(FetchEngineTest, HandlesOutliveTheEngineSafely) {
  // Results can still be held (e.g. queued for the database) when the engine
  // is destroyed; releasing or cancelling through their handle is a no-op.
  std::shared_ptr<FetchBatchHandle> handle;
  auto sink = std::make_shared<CollectingSink>(/*hold=*/true);
  {
    auto engine = MakeEngine();
    BatchOptions options;
    options.concurrency = 1;
    options.window = 1;  // stalls after the first response
    handle = engine->Submit(Urls(*upstream_, 5, ""), options, sink);
    ASSERT_TRUE(sink->AwaitCount(1, absl::Seconds(10)));
    absl::SleepFor(absl::Milliseconds(50));
  }  // engine gone: the rest were delivered as cancelled
  EXPECT_EQ(sink->responses().size(), 5u);
  sink->ReleaseHeld();  // would wake a destroyed engine
  handle->Cancel();
}

TEST_F(FetchEngineTest, RedirectedPutKeepsItsMethodAndBody) {
  auto engine = MakeEngine();
  auto sink = std::make_shared<CollectingSink>();
  std::vector<FetchSpec> specs(1);
  specs[0].url = upstream_->Url("/redirect?to=%2Fecho%3Fecho%3D1&status=302");
  specs[0].method = "PUT";
  specs[0].body = R"({"v":1})";
  engine->Submit(Numbered(specs), BatchOptions(), sink);
  ASSERT_TRUE(sink->AwaitCount(1, absl::Seconds(10)));
  auto r = sink->responses();
  EXPECT_EQ(r[0].http_status, 200);
  EXPECT_EQ(r[0].body, R"({"v":1})");
  auto arrivals = upstream_->arrivals();
  ASSERT_EQ(arrivals.size(), 2u);
  EXPECT_EQ(arrivals[1].method, "PUT");
}

TEST_F(FetchEngineTest, CancelStopsTransfersPromptly) {
  auto engine = MakeEngine();
  auto sink = std::make_shared<CollectingSink>();
  BatchOptions options;
  options.concurrency = 4;
  auto handle =
      engine->Submit(Urls(*upstream_, 30, "delay_ms=10000"), options, sink);
  ASSERT_TRUE(upstream_->AwaitInFlightAtLeast(4, absl::Seconds(10)));
  const absl::Time start = absl::Now();
  handle->Cancel();
  ASSERT_TRUE(sink->AwaitCount(30, absl::Seconds(5)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_TRUE(upstream_->AwaitAbortedAtLeast(4, absl::Seconds(5)));
  EXPECT_EQ(upstream_->total_requests(), 4);
  EXPECT_EQ(engine->in_flight(), 0);
  for (const auto& [index, response] : sink->responses()) {
    EXPECT_EQ(response.result, TransferResult::kCancelled) << index;
  }
}

TEST_F(FetchEngineTest, SmallBatchIsNotStarvedByLargeOne) {
  FetchEngine::Options engine_options;
  engine_options.max_in_flight = 4;
  auto engine = MakeEngine(engine_options);
  auto large = std::make_shared<CollectingSink>();
  auto small = std::make_shared<CollectingSink>();
  BatchOptions options;
  options.concurrency = 4;
  options.window = 8;
  engine->Submit(Urls(*upstream_, 200, "delay_ms=100"), options, large);
  ASSERT_TRUE(upstream_->AwaitInFlightAtLeast(4, absl::Seconds(10)));
  const absl::Time start = absl::Now();
  engine->Submit(Urls(*upstream_, 4, "delay_ms=100"), options, small);
  ASSERT_TRUE(small->AwaitCount(4, absl::Seconds(20)));
  // Round-robin: the small batch gets every other free slot, so it is done
  // long before the large batch's remaining ~5 s of work.
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_LT(large->responses().size(), 150u);
}

// Denies one port, so a test can tell refused connections apart.
class DenyPortEgress : public EgressPolicy {
 public:
  explicit DenyPortEgress(int port) : port_(port) {}
  absl::Status Check(const IpAddress&, int port) const override {
    if (port == port_) {
      return absl::PermissionDeniedError(
          absl::StrCat("port ", port_, " is denied by the test policy"));
    }
    return absl::OkStatus();
  }

 private:
  const int port_;
};

TEST_F(FetchEngineTest, EgressPolicyRefusesBeforeAnyConnection) {
  FetchEngine::Options options;
  options.egress = std::make_shared<DenyPortEgress>(upstream_->port());
  auto engine = MakeEngine(options);
  auto sink = std::make_shared<CollectingSink>();
  engine->Submit(Urls(*upstream_, 2, ""), BatchOptions(), sink);
  ASSERT_TRUE(sink->AwaitCount(2, absl::Seconds(10)));
  for (auto& [index, r] : sink->responses()) {
    EXPECT_EQ(r.result, TransferResult::kBlocked) << index;
    EXPECT_EQ(r.end_reason, EndReason::kBlockedByPolicy);
    EXPECT_TRUE(absl::StrContains(r.error, "denied by the test policy"))
        << r.error;
  }
  EXPECT_EQ(upstream_->connections_accepted(), 0);
}

TEST_F(FetchEngineTest, AcceptsASubsetOfABatchUnderItsOriginalIndices) {
  auto engine = MakeEngine();
  auto sink = std::make_shared<CollectingSink>();
  std::vector<FetchSpec> specs = Urls(*upstream_, 3, "");
  specs[0].index = 1000;
  specs[1].index = 7;
  specs[2].index = 42;
  specs[2].url = "ftp://nope/";  // answered without I/O, same index rule
  engine->Submit(specs, BatchOptions(), sink);
  ASSERT_TRUE(sink->AwaitCount(3, absl::Seconds(10)));
  auto r = sink->responses();
  ASSERT_EQ(r.count(1000), 1u);
  ASSERT_EQ(r.count(7), 1u);
  ASSERT_EQ(r.count(42), 1u);
  EXPECT_EQ(r[1000].url, upstream_->Url("/item/0?"));
  EXPECT_EQ(r[42].result, TransferResult::kInvalidRequest);
}

TEST_F(FetchEngineTest, StatsCountTransfersAndResults) {
  auto engine = MakeEngine();
  auto sink = std::make_shared<CollectingSink>();
  std::vector<FetchSpec> specs = Urls(*upstream_, 3, "bytes=100");
  specs[2].url = "ftp://nope/";
  engine->Submit(specs, BatchOptions(), sink);
  ASSERT_TRUE(sink->AwaitCount(3, absl::Seconds(10)));
  const FetchStatsSnapshot stats = engine->stats();
  EXPECT_EQ(stats.transfers_started, 2);
  EXPECT_EQ(stats.response_bytes, 200);
  EXPECT_EQ(stats.delivered[static_cast<int>(TransferResult::kResponse)], 2);
  EXPECT_EQ(stats.delivered[static_cast<int>(TransferResult::kInvalidRequest)],
            1);
  EXPECT_EQ(stats.transfers_in_flight, 0);
}

// CPU time this process has used so far.
absl::Duration ProcessCpu() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return absl::DurationFromTimeval(usage.ru_utime) +
         absl::DurationFromTimeval(usage.ru_stime);
}

TEST_F(FetchEngineTest, IdleConnectionClosedByTheServerCostsNoBusyLoop) {
  // Idle keep-alive sockets stay in the epoll set (lazy epoll). When the
  // server closes them, the engine must drop them, not spin on them.
  auto engine = MakeEngine();
  auto sink = std::make_shared<CollectingSink>();
  BatchOptions options;
  options.concurrency = 8;
  engine->Submit(Urls(*upstream_, 16, ""), options, sink);
  ASSERT_TRUE(sink->AwaitCount(16, absl::Seconds(10)));
  upstream_.reset();  // closes every (idle) connection
  absl::SleepFor(absl::Milliseconds(100));
  const absl::Duration before = ProcessCpu();
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_LT(ProcessCpu() - before, absl::Milliseconds(150));
  // And the engine still works.
  auto other = TestUpstream::Start();
  ASSERT_TRUE(other.ok());
  auto second = std::make_shared<CollectingSink>();
  engine->Submit(Urls(**other, 16, ""), options, second);
  ASSERT_TRUE(second->AwaitCount(16, absl::Seconds(10)));
  for (auto& [index, r] : second->responses()) {
    EXPECT_EQ(r.http_status, 200) << index << " " << r.error;
  }
}

TEST_F(FetchEngineTest, ReusesConnectionsAcrossManyBatchesWithOneMultiHandle) {
  // The same engine logic with a single multi handle (the sharding is an
  // optimization, not a behaviour).
  FetchEngine::Options engine_options;
  engine_options.curl_multi_handles = 1;
  auto engine = MakeEngine(engine_options);
  for (int round = 0; round < 3; ++round) {
    auto sink = std::make_shared<CollectingSink>();
    BatchOptions options;
    options.concurrency = 4;
    engine->Submit(Urls(*upstream_, 8, ""), options, sink);
    ASSERT_TRUE(sink->AwaitCount(8, absl::Seconds(10)));
  }
  EXPECT_LE(upstream_->connections_accepted(), 4);
}

// A peer on 127.0.0.1 that speaks another protocol: every connection gets
// an SSH-like banner, then (once the client has gone) is closed, as a
// database or SSH port would look to curl. It reads what the client sends,
// so its close never resets the connection before the banner is read.
//
// Threading: one thread serves the connections one at a time; the
// destructor wakes and joins it. connections() may be called from any
// thread.
class BannerPeer {
 public:
  static std::unique_ptr<BannerPeer> Start() {
    absl::StatusOr<LoopbackListener> listener = LoopbackListener::Open();
    EXPECT_TRUE(listener.ok()) << listener.status();
    if (!listener.ok()) return nullptr;
    return std::unique_ptr<BannerPeer>(new BannerPeer(*std::move(listener)));
  }
  ~BannerPeer() {
    stopping_ = true;
    listener_.Wake();
    thread_.join();
  }

  int port() const { return listener_.port(); }
  std::string Url(absl::string_view path) const {
    return absl::StrCat("http://127.0.0.1:", port(), path);
  }
  int connections() const { return connections_.load(); }

 private:
  explicit BannerPeer(LoopbackListener listener)
      : listener_(std::move(listener)), thread_([this] { Serve(); }) {}

  void Serve() {
    while (!stopping_) {
      pollfd fds[2] = {{listener_.listen_fd(), POLLIN, 0},
                       {listener_.wake_fd(), POLLIN, 0}};
      if (poll(fds, 2, -1) <= 0 || (fds[1].revents & POLLIN) != 0) continue;
      int connection = listener_.Accept();
      if (connection < 0) continue;
      connections_.fetch_add(1);
      constexpr absl::string_view kBanner = "SSH-2.0-OpenSSH_9.2\r\n";
      testing::SendAll(connection, kBanner.data(), kBanner.size());
      // Until the client closes (or 2 s pass): drain what it sent.
      pollfd in = {connection, POLLIN, 0};
      char buffer[4096];
      while (poll(&in, 1, 2000) > 0 &&
             read(connection, buffer, sizeof(buffer)) > 0) {
      }
      testing::CloseFd(connection);
    }
  }

  LoopbackListener listener_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connections_{0};
  std::thread thread_;  // last: starts once the members above exist
};

// `url` as the value of a query parameter.
std::string QueryEncoded(absl::string_view url) {
  std::string out;
  for (char c : url) {
    if (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
        c == '-' || c == '_') {
      out.push_back(c);
    } else {
      absl::StrAppend(
          &out, "%", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
    }
  }
  return out;
}

TEST_F(FetchEngineTest, NonHttpReplyIsATransportErrorNotBlocked) {
  // A peer that speaks another protocol. BLOCKED is kept for the egress
  // policy and refused schemes.
  std::unique_ptr<BannerPeer> peer = BannerPeer::Start();
  ASSERT_NE(peer, nullptr);
  const FetchedResponse r = FetchOne(peer->Url("/"));
  EXPECT_EQ(r.result, TransferResult::kTransportError) << r.error;
  EXPECT_EQ(r.end_reason, EndReason::kFinished);
  EXPECT_TRUE(absl::StrContains(r.error, "not HTTP")) << r.error;
  EXPECT_EQ(peer->connections(), 1);
}

TEST_F(FetchEngineTest, ARedirectToANonHttpPortIsATransportErrorNotBlocked) {
  // libcurl still reports the first hop's 302 as the response code when the
  // second hop's peer answers with something that is not HTTP: the scheme
  // of the hop, not that status, says it was no refused redirect.
  std::unique_ptr<BannerPeer> peer = BannerPeer::Start();
  ASSERT_NE(peer, nullptr);
  const FetchedResponse r = FetchOne(upstream_->Url(
      absl::StrCat("/redirect?to=", QueryEncoded(peer->Url("/banner")))));
  EXPECT_EQ(r.result, TransferResult::kTransportError) << r.error;
  EXPECT_EQ(r.end_reason, EndReason::kFinished);
  EXPECT_TRUE(absl::StrContains(r.error, "the upstream's reply is not HTTP"))
      << r.error;
  EXPECT_EQ(r.final_url, peer->Url("/banner"));
  EXPECT_EQ(upstream_->total_requests(), 1);
  EXPECT_EQ(peer->connections(), 1);
}

TEST_F(FetchEngineTest, ARedirectToAFileUrlIsBlockedNamingTheScheme) {
  auto engine = MakeEngine();
  auto sink = std::make_shared<CollectingSink>();
  std::vector<FetchSpec> specs(2);
  specs[0].url = upstream_->Url("/redirect?to=file%3A%2F%2F%2Fetc%2Fpasswd");
  specs[1].url =
      upstream_->Url("/redirect?to=FILE%3A%2F%2F%2Fetc%2Fpasswd&status=301");
  engine->Submit(Numbered(specs), BatchOptions(), sink);
  ASSERT_TRUE(sink->AwaitCount(2, absl::Seconds(10)));
  for (auto& [index, r] : sink->responses()) {
    EXPECT_EQ(r.result, TransferResult::kBlocked) << index << ": " << r.error;
    EXPECT_EQ(r.end_reason, EndReason::kBlockedByPolicy) << index;
    EXPECT_EQ(r.error,
              "redirect to scheme \"file\" refused: only http and https are "
              "allowed")
        << index;
  }
  EXPECT_EQ(upstream_->total_requests(), 2);
}

}  // namespace
}  // namespace batchfetch

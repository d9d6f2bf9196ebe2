// MetricsHttpServer on a loopback port: what it serves (/metrics and the
// /readyz and /livez probes), what it refuses, and how --metrics_listen
// values are read.
#include "service/metrics/metrics_http_server.h"

#include <atomic>
#include <string>

#include "gtest/gtest.h"
#include "tests/support/plain_http_client.h"

namespace batchfetch {
namespace {

using testing::PlainHttpGet;
using testing::PlainHttpRequest;

std::unique_ptr<MetricsHttpServer> StartOnAnyPort(
    MetricsHttpServer::Render render,
    MetricsHttpServer::Ready ready = [] { return true; }) {
  MetricsHttpServer::Options options;
  options.listen = "127.0.0.1:0";
  auto server =
      MetricsHttpServer::Start(options, std::move(render), std::move(ready));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

TEST(MetricsHttpServerTest, ServesTheRenderedTextOnGetMetrics) {
  std::atomic<int> renders{0};
  auto server = StartOnAnyPort([&] {
    ++renders;
    return std::string("demo 1\n");
  });
  ASSERT_NE(server, nullptr);
  ASSERT_GT(server->port(), 0);
  auto response = PlainHttpGet(server->port(), "/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(response->body, "demo 1\n");
  EXPECT_EQ(response->headers["cache-control"], "no-store");
  EXPECT_EQ(renders.load(), 1);
}

TEST(MetricsHttpServerTest, RendersAgainOnEveryScrape) {
  std::atomic<int> renders{0};
  auto server =
      StartOnAnyPort([&] { return absl::StrCat("scrapes ", ++renders, "\n"); });
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(PlainHttpGet(server->port(), "/metrics")->body, "scrapes 1\n");
  EXPECT_EQ(PlainHttpGet(server->port(), "/metrics")->body, "scrapes 2\n");
}

TEST(MetricsHttpServerTest, AnyOtherPathIsNotFoundAndRendersNothing) {
  std::atomic<int> renders{0};
  auto server = StartOnAnyPort([&] {
    ++renders;
    return std::string("demo 1\n");
  });
  ASSERT_NE(server, nullptr);
  for (const char* path : {"/", "/metric", "/metrics/x", "/index.html",
                           "/readyz/x", "/livez/", "/healthz"}) {
    auto response = PlainHttpGet(server->port(), path);
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->status, 404) << path;
  }
  EXPECT_EQ(renders.load(), 0);
}

TEST(MetricsHttpServerTest, OtherMethodsThanGetAndHeadAreNotAllowed) {
  std::atomic<int> renders{0};
  std::atomic<int> readiness_checks{0};
  auto server = StartOnAnyPort(
      [&] {
        ++renders;
        return std::string("demo 1\n");
      },
      [&] {
        ++readiness_checks;
        return true;
      });
  ASSERT_NE(server, nullptr);
  for (const char* path : {"/metrics", "/readyz", "/livez"}) {
    for (const char* method : {"POST", "PUT", "DELETE"}) {
      auto response = PlainHttpRequest(server->port(), method, path);
      ASSERT_TRUE(response.ok())
          << method << " " << path << ": " << response.status();
      EXPECT_EQ(response->status, 405) << method << " " << path;
    }
  }
  EXPECT_EQ(renders.load(), 0);
  EXPECT_EQ(readiness_checks.load(), 0);
  auto head = PlainHttpRequest(server->port(), "HEAD", "/metrics");
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->body, "");
}

TEST(MetricsHttpServerTest, ReadyzAnswersWhatTheReadyCallbackSaysNow) {
  std::atomic<bool> ready{true};
  std::atomic<int> renders{0};
  auto server = StartOnAnyPort(
      [&] {
        ++renders;
        return std::string("demo 1\n");
      },
      [&] { return ready.load(); });
  ASSERT_NE(server, nullptr);
  auto serving = PlainHttpGet(server->port(), "/readyz");
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_EQ(serving->status, 200);
  EXPECT_EQ(serving->content_type, "text/plain; charset=utf-8");
  EXPECT_EQ(serving->body, "SERVING\n");

  ready = false;
  auto not_serving = PlainHttpGet(server->port(), "/readyz");
  ASSERT_TRUE(not_serving.ok()) << not_serving.status();
  EXPECT_EQ(not_serving->status, 503);
  EXPECT_EQ(not_serving->content_type, "text/plain; charset=utf-8");
  EXPECT_EQ(not_serving->body, "NOT_SERVING\n");
  EXPECT_EQ(not_serving->headers["cache-control"], "no-store");

  ready = true;
  EXPECT_EQ(PlainHttpGet(server->port(), "/readyz")->status, 200);
  EXPECT_EQ(renders.load(), 0);  // a probe does not render the metrics
}

TEST(MetricsHttpServerTest,
     LivezAnswersOkWithoutAskingWhetherTheServerIsReady) {
  std::atomic<int> readiness_checks{0};
  auto server = StartOnAnyPort([] { return std::string("demo 1\n"); },
                               [&] {
                                 ++readiness_checks;
                                 return false;
                               });
  ASSERT_NE(server, nullptr);
  auto response = PlainHttpGet(server->port(), "/livez");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->content_type, "text/plain; charset=utf-8");
  EXPECT_EQ(response->body, "ok\n");
  EXPECT_EQ(readiness_checks.load(), 0);
}

TEST(MetricsHttpServerTest, HeadOnTheProbesAnswersTheStatusWithoutABody) {
  std::atomic<bool> ready{false};
  auto server = StartOnAnyPort([] { return std::string("demo 1\n"); },
                               [&] { return ready.load(); });
  ASSERT_NE(server, nullptr);
  auto not_ready = PlainHttpRequest(server->port(), "HEAD", "/readyz");
  ASSERT_TRUE(not_ready.ok()) << not_ready.status();
  EXPECT_EQ(not_ready->status, 503);
  EXPECT_EQ(not_ready->body, "");
  EXPECT_EQ(not_ready->headers["content-length"], "12");  // NOT_SERVING\n
  ready = true;
  auto is_ready = PlainHttpRequest(server->port(), "HEAD", "/readyz");
  ASSERT_TRUE(is_ready.ok()) << is_ready.status();
  EXPECT_EQ(is_ready->status, 200);
  EXPECT_EQ(is_ready->body, "");
  auto live = PlainHttpRequest(server->port(), "HEAD", "/livez");
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_EQ(live->status, 200);
  EXPECT_EQ(live->body, "");
  EXPECT_EQ(live->headers["content-length"], "3");  // ok\n
}

TEST(MetricsHttpServerTest, StartRefusesAMissingCallback) {
  MetricsHttpServer::Options options;
  options.listen = "127.0.0.1:0";
  auto no_ready = MetricsHttpServer::Start(
      options, [] { return std::string(); }, nullptr);
  EXPECT_TRUE(absl::IsInvalidArgument(no_ready.status())) << no_ready.status();
  auto no_render =
      MetricsHttpServer::Start(options, nullptr, [] { return true; });
  EXPECT_TRUE(absl::IsInvalidArgument(no_render.status()))
      << no_render.status();
}

TEST(MetricsHttpServerTest, ATakenPortFailsStartNamingTheFlagAndTheCause) {
  auto first = StartOnAnyPort([] { return std::string(); });
  ASSERT_NE(first, nullptr);
  MetricsHttpServer::Options options;
  options.listen = absl::StrCat("127.0.0.1:", first->port());
  auto second = MetricsHttpServer::Start(
      options, [] { return std::string(); }, [] { return true; });
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(absl::IsUnavailable(second.status())) << second.status();
  EXPECT_NE(second.status().message().find("--metrics_listen"),
            std::string::npos)
      << second.status();
  EXPECT_NE(second.status().message().find("in use"), std::string::npos)
      << second.status();
}

TEST(MetricsHttpServerTest, StopsListeningWhenDestroyed) {
  auto server = StartOnAnyPort([] { return std::string("demo 1\n"); });
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  server.reset();
  EXPECT_FALSE(PlainHttpGet(port, "/metrics").ok());
}

TEST(CivetwebListeningPortTest, KeepsAnIpv4AddressAndPort) {
  EXPECT_EQ(*CivetwebListeningPort("127.0.0.1:9090"), "127.0.0.1:9090");
  EXPECT_EQ(*CivetwebListeningPort("0.0.0.0:0"), "0.0.0.0:0");
}

TEST(CivetwebListeningPortTest, ABarePortOrColonPortMeansEveryInterface) {
  EXPECT_EQ(*CivetwebListeningPort(":9090"), "9090");
  EXPECT_EQ(*CivetwebListeningPort("9090"), "9090");
}

TEST(CivetwebListeningPortTest, RefusesWhatCivetwebCannotBindNamingTheFlag) {
  for (const char* bad :
       {"", ":", "localhost:9090", "[::1]:9090", "::1:9090", "127.0.0.1",
        "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:90s", "1.2.3:80"}) {
    absl::StatusOr<std::string> ports = CivetwebListeningPort(bad);
    ASSERT_FALSE(ports.ok()) << bad << " -> " << *ports;
    EXPECT_TRUE(absl::IsInvalidArgument(ports.status()));
    EXPECT_NE(ports.status().message().find("--metrics_listen"),
              std::string::npos)
        << ports.status();
  }
}

}  // namespace
}  // namespace batchfetch

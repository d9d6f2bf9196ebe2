// MetricsHttpServer on a loopback port: what it serves, what it refuses,
// and how --metrics_listen values are read.
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
    MetricsHttpServer::Render render) {
  MetricsHttpServer::Options options;
  options.listen = "127.0.0.1:0";
  auto server = MetricsHttpServer::Start(options, std::move(render));
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
  for (const char* path : {"/", "/metric", "/metrics/x", "/index.html"}) {
    auto response = PlainHttpGet(server->port(), path);
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->status, 404) << path;
  }
  EXPECT_EQ(renders.load(), 0);
}

TEST(MetricsHttpServerTest, OtherMethodsThanGetAndHeadAreNotAllowed) {
  auto server = StartOnAnyPort([] { return std::string("demo 1\n"); });
  ASSERT_NE(server, nullptr);
  auto post = PlainHttpRequest(server->port(), "POST", "/metrics");
  ASSERT_TRUE(post.ok()) << post.status();
  EXPECT_EQ(post->status, 405);
  auto head = PlainHttpRequest(server->port(), "HEAD", "/metrics");
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->body, "");
}

TEST(MetricsHttpServerTest, ATakenPortFailsStartNamingTheFlagAndTheCause) {
  auto first = StartOnAnyPort([] { return std::string(); });
  ASSERT_NE(first, nullptr);
  MetricsHttpServer::Options options;
  options.listen = absl::StrCat("127.0.0.1:", first->port());
  auto second = MetricsHttpServer::Start(options, [] { return std::string(); });
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

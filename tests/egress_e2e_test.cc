// The egress policy against real loopback servers: a reused keep-alive
// connection and every redirect hop are judged again before the request is
// sent (CURLOPT_PREREQFUNCTION), names pinned to internal addresses are
// denied, and upstream TLS is verified (against --ca_bundle when given).
//
// The engine-level tests (EgressEngine) need no database; the BinaryTest
// ones run the real server binary.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "service/fetch/egress_rules.h"
#include "service/fetch/fetch_engine.h"
#include "tests/support/collecting_sink.h"
#include "tests/support/loopback_listener.h"
#include "tests/support/service_fixture.h"
#include "tests/support/test_certificates.h"

namespace batchfetch {
namespace {

using e2e::Batch;
using e2e::BinaryTest;
using e2e::Child;
using e2e::Streamed;
using testing::CollectingSink;
using testing::TestCertificates;
using testing::TestUpstream;

// --- in process: the engine -----------------------------------------------

// Runs `urls` as one batch (no retries) and returns the responses by index.
std::map<uint32_t, FetchedResponse> RunBatch(
    FetchEngine& engine, const std::vector<std::string>& urls) {
  std::vector<FetchSpec> specs(urls.size());
  for (size_t i = 0; i < urls.size(); ++i) {
    specs[i].index = static_cast<uint32_t>(i);
    specs[i].url = urls[i];
  }
  auto sink = std::make_shared<CollectingSink>();
  engine.Submit(std::move(specs), BatchOptions(), sink);
  return sink->Await(urls.size());
}

// Allows everything until refuse() is called; counts the checks it answers.
class SwitchableEgress : public EgressPolicy {
 public:
  absl::Status Check(const IpAddress& address, int port) const override {
    checks_.fetch_add(1);
    if (!refusing_.load()) return absl::OkStatus();
    return absl::PermissionDeniedError(
        absl::StrCat("egress to ", address.ToString(), " port ", port,
                     " denied by the test switch"));
  }
  void refuse() { refusing_.store(true); }
  int checks() const { return checks_.load(); }

 private:
  std::atomic<bool> refusing_{false};
  mutable std::atomic<int> checks_{0};
};

TEST(EgressEngine, AReusedConnectionIsJudgedAgainBeforeItsNextRequest) {
  // The socket check alone never sees a reused keep-alive connection: only
  // the check before each request can stop the second request here.
  auto upstream = TestUpstream::Start();
  ASSERT_TRUE(upstream.ok()) << upstream.status();
  auto policy = std::make_shared<SwitchableEgress>();
  FetchEngine::Options options;
  options.egress = policy;
  options.curl_multi_handles = 1;  // one connection cache: the reuse is sure
  auto engine = FetchEngine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();

  auto first = RunBatch(**engine, {(*upstream)->Url("/first")});
  ASSERT_EQ(first[0].result, TransferResult::kResponse) << first[0].error;
  ASSERT_EQ((*upstream)->connections_accepted(), 1);
  const int checks_before = policy->checks();
  EXPECT_GE(checks_before, 2);  // the socket, then the request

  policy->refuse();
  auto second = RunBatch(**engine, {(*upstream)->Url("/second")});
  EXPECT_EQ(second[0].result, TransferResult::kBlocked) << second[0].error;
  EXPECT_EQ(second[0].end_reason, EndReason::kBlockedByPolicy);
  EXPECT_EQ(second[0].error,
            absl::StrCat("egress to 127.0.0.1 port ", (*upstream)->port(),
                         " denied by the test switch"));
  EXPECT_GT(policy->checks(), checks_before);
  // The connection was reused (no new socket), and the request never left.
  EXPECT_EQ((*upstream)->connections_accepted(), 1);
  EXPECT_EQ((*upstream)->total_requests(), 1);
}

std::shared_ptr<EgressRules> Rules(std::vector<std::string> allow = {}) {
  EgressRules::Options options;
  options.allow_cidrs = std::move(allow);
  return *EgressRules::Create(options);
}

TEST(EgressEngine, ANamePinnedToLoopbackIsDeniedByTheDefaultPolicy) {
  auto upstream = TestUpstream::Start();
  ASSERT_TRUE(upstream.ok()) << upstream.status();
  const int port = (*upstream)->port();
  FetchEngine::Options options;
  options.egress = Rules();
  options.resolve = {absl::StrCat("internal.example:", port, ":127.0.0.1")};
  auto engine = FetchEngine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto r = RunBatch(**engine,
                    {absl::StrCat("http://internal.example:", port, "/secret"),
                     absl::StrCat("http://localhost:", port, "/secret")});
  for (const auto& [index, response] : r) {
    EXPECT_EQ(response.result, TransferResult::kBlocked)
        << index << ": " << response.error;
    EXPECT_EQ(response.end_reason, EndReason::kBlockedByPolicy) << index;
    EXPECT_TRUE(absl::StrContains(response.error, "(loopback)"))
        << response.error;
  }
  EXPECT_TRUE(absl::StrContains(r[0].error, "egress to 127.0.0.1 denied"))
      << r[0].error;
  EXPECT_EQ((*upstream)->connections_accepted(), 0);
}

TEST(EgressEngine, APinnedNameReachesItsAddressWhenThePolicyOpensIt) {
  // The control for the test above: the pin itself works, so what denied
  // the name there was the policy, not a failed lookup.
  auto upstream = TestUpstream::Start();
  ASSERT_TRUE(upstream.ok()) << upstream.status();
  const int port = (*upstream)->port();
  FetchEngine::Options options;
  options.egress = Rules({"127.0.0.1/32"});
  options.resolve = {absl::StrCat("internal.example:", port, ":127.0.0.1")};
  auto engine = FetchEngine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto r = RunBatch(
      **engine, {absl::StrCat("http://internal.example:", port, "/pinned")});
  EXPECT_EQ(r[0].result, TransferResult::kResponse) << r[0].error;
  EXPECT_EQ(r[0].http_status, 200);
  EXPECT_EQ((*upstream)->total_requests(), 1);
}

// A listening socket on `address`:`port` that is never accepted from: the
// kernel still completes every handshake into its backlog, so Drain()
// counts each connection made to it, without a thread.
class BacklogCounter {
 public:
  // `address`: IPv4 ("127.0.0.2") or IPv6 ("::1").
  BacklogCounter(const std::string& address, int port) {
    sockaddr_storage storage{};
    socklen_t length = 0;
    const uint16_t port_bytes = htons(static_cast<uint16_t>(port));
    if (address.find(':') == std::string::npos) {
      auto* addr = reinterpret_cast<sockaddr_in*>(&storage);
      addr->sin_family = AF_INET;
      addr->sin_port = port_bytes;
      EXPECT_EQ(inet_pton(AF_INET, address.c_str(), &addr->sin_addr), 1);
      length = sizeof(*addr);
    } else {
      auto* addr = reinterpret_cast<sockaddr_in6*>(&storage);
      addr->sin6_family = AF_INET6;
      addr->sin6_port = port_bytes;
      EXPECT_EQ(inet_pton(AF_INET6, address.c_str(), &addr->sin6_addr), 1);
      length = sizeof(*addr);
    }
    fd_ = socket(storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                 0);
    listening_ =
        fd_ >= 0 &&
        bind(fd_, reinterpret_cast<sockaddr*>(&storage), length) == 0 &&
        listen(fd_, 16) == 0;
  }
  ~BacklogCounter() { testing::CloseFd(fd_); }

  bool listening() const { return listening_; }
  // Connections made since the last call.
  int Drain() {
    int n = 0;
    for (int c; (c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC)) >= 0;) {
      close(c);
      ++n;
    }
    return n;
  }

 private:
  int fd_ = -1;
  bool listening_ = false;
};

// Fetches `path` from "dual.test:`port`", pinned to `denied` (tried first)
// and 127.0.0.1 (the only address allowed); empty on set-up failure
// (reported).
std::map<uint32_t, FetchedResponse> FetchThroughDualName(
    int port, const std::string& path,
    const std::string& denied = "127.0.0.2") {
  FetchEngine::Options options;
  options.egress = Rules({"127.0.0.1/32"});
  options.resolve = {
      absl::StrCat("dual.test:", port, ":", denied, ",127.0.0.1")};
  auto engine = FetchEngine::Create(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (!engine.ok()) return {};
  return RunBatch(**engine, {absl::StrCat("http://dual.test:", port, path)});
}

TEST(EgressEngine,
     ADeniedAddressTriedFirstDoesNotBlockAnAllowedOneThatAnswers) {
  // curl tries a name's addresses in order (IPv4 ones in the order given):
  // the first, 127.0.0.2, is denied before any SYN, the second answers. The
  // request was sent and answered, so it is OK, not BLOCKED.
  auto upstream = TestUpstream::Start();
  ASSERT_TRUE(upstream.ok()) << upstream.status();
  const int port = (*upstream)->port();
  BacklogCounter denied_side("127.0.0.2", port);
  ASSERT_TRUE(denied_side.listening()) << "127.0.0.2:" << port;
  auto r = FetchThroughDualName(port, "/both");
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].result, TransferResult::kResponse) << r[0].error;
  EXPECT_EQ(r[0].end_reason, EndReason::kFinished);
  EXPECT_EQ(r[0].http_status, 200);
  EXPECT_EQ(r[0].body, R"({"ok":true,"path":"/both","n":0})");
  EXPECT_EQ((*upstream)->total_requests(), 1);
  EXPECT_EQ(denied_side.Drain(), 0);
}

TEST(EgressEngine, ADeniedIpv6AddressDoesNotBlockAnAllowedIpv4OneThatAnswers) {
  // Across address families: curl starts with the IPv6 address (happy
  // eyeballs), which is denied before any SYN, and falls over to IPv4.
  auto upstream = TestUpstream::Start();
  ASSERT_TRUE(upstream.ok()) << upstream.status();
  const int port = (*upstream)->port();
  BacklogCounter denied_side("::1", port);
  if (!denied_side.listening()) GTEST_SKIP() << "no IPv6 loopback here";
  auto r = FetchThroughDualName(port, "/v6-first", "[::1]");
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].result, TransferResult::kResponse) << r[0].error;
  EXPECT_EQ(r[0].http_status, 200);
  EXPECT_EQ((*upstream)->total_requests(), 1);
  EXPECT_EQ(denied_side.Drain(), 0);
}

TEST(EgressEngine,
     ADeniedAddressAndARefusedOneEndAsAConnectErrorNamingTheDenial) {
  // Not blocked: an allowed address was tried, and refused. The error still
  // says that the other address was denied.
  // A port with nothing listening on 127.0.0.1: bound, never listened on.
  const int closed = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(addr);
  ASSERT_EQ(bind(closed, reinterpret_cast<sockaddr*>(&addr), length), 0);
  ASSERT_EQ(getsockname(closed, reinterpret_cast<sockaddr*>(&addr), &length),
            0);
  const int port = ntohs(addr.sin_port);
  BacklogCounter denied_on_port("127.0.0.2", port);
  ASSERT_TRUE(denied_on_port.listening());
  auto r = FetchThroughDualName(port, "/none");
  ASSERT_EQ(r.size(), 1u);
  close(closed);
  EXPECT_EQ(r[0].result, TransferResult::kConnectError) << r[0].error;
  EXPECT_EQ(r[0].end_reason, EndReason::kFinished);
  EXPECT_TRUE(absl::StrContains(
      r[0].error, "egress to 127.0.0.2 denied by 127.0.0.0/8 (loopback)"))
      << r[0].error;
  EXPECT_EQ(denied_on_port.Drain(), 0);
}

TEST(EgressEngine, AMalformedResolveEntryIsRejectedNamingIt) {
  FetchEngine::Options options;
  options.resolve = {"internal.example:80"};
  auto engine = FetchEngine::Create(options);
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(
      absl::StrContains(engine.status().message(), "'internal.example:80'"))
      << engine.status();
}

// --- the server binary ------------------------------------------------------

std::string UrlEncode(absl::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, "%", absl::Hex(c, absl::kZeroPad2));
    }
  }
  return out;
}

TEST_F(BinaryTest, ARedirectToAnAddressNotOpenedIsCutAtTheSecondHop) {
  // Only 127.0.0.1 is opened; the redirect target listens on 127.0.0.2.
  auto inside = TestUpstream::Start("127.0.0.2");
  ASSERT_TRUE(inside.ok()) << inside.status();
  StartServerBinary({"--egress_allow_cidr=127.0.0.1/32"},
                    /*open_loopback=*/false);
  const std::string target = (*inside)->Url("/secret");
  v1::FetchBatchRequest request =
      Batch({upstream_->Url(absl::StrCat("/redirect?to=", UrlEncode(target)))});
  request.mutable_retry()->set_max_attempts(3);  // must not be used
  Streamed s = Fetch(request);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  auto results = s.results();
  ASSERT_EQ(results.size(), 1u);
  const v1::FetchResult& r = results[0];
  EXPECT_EQ(r.outcome(), v1::OUTCOME_BLOCKED) << r.error();
  EXPECT_TRUE(absl::StrContains(
      r.error(), "egress to 127.0.0.2 denied by 127.0.0.0/8 (loopback)"))
      << r.error();
  EXPECT_EQ(r.attempts(), 1u);
  EXPECT_EQ(upstream_->total_requests(), 1);  // the first hop, once
  EXPECT_EQ((*inside)->connections_accepted(), 0);
}

// The full path of python3, or "" when there is none.
std::string Python3() {
  FILE* pipe =
      popen("python3 -c 'import sys; print(sys.executable)' 2>/dev/null", "r");
  if (pipe == nullptr) return "";
  char buffer[4096] = {0};
  std::string path;
  if (fgets(buffer, sizeof(buffer), pipe) != nullptr) path = buffer;
  pclose(pipe);
  return std::string(absl::StripAsciiWhitespace(path));
}

// An HTTPS upstream on 127.0.0.1 whose certificate (subjectAltName
// IP:127.0.0.1) is signed by a private CA made for this test with the
// openssl CLI (tests/support/test_certificates.h); it answers every GET with
// {"tls":true}.
class HttpsUpstreamTest : public BinaryTest {
 protected:
  void SetUp() override {
    BinaryTest::SetUp();
    if (HasFatalFailure()) return;
    const std::string python = Python3();
    if (!TestCertificates::OpensslAvailable() || python.empty()) {
      GTEST_SKIP() << "needs the openssl CLI and python3 to make certificates "
                      "and serve HTTPS";
    }
    absl::StatusOr<std::unique_ptr<TestCertificates>> certs =
        TestCertificates::Make();
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *std::move(certs);
    const std::string server_script = certs_->Path("serve.py");
    std::ofstream(server_script) << R"(import http.server, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"tls":true}'
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
)";
    https_ = std::make_unique<Child>(std::vector<std::string>{
        python, server_script, certs_->server_cert(), certs_->server_key()});
    std::string port;
    ASSERT_TRUE(https_->ReadLine(&port)) << "the HTTPS upstream did not start";
    https_url_ = absl::StrCat("https://127.0.0.1:", port, "/tls");
  }

  void TearDown() override {
    https_.reset();
    certs_.reset();
    BinaryTest::TearDown();
  }

  v1::FetchResult FetchHttps() {
    Streamed s = Fetch(Batch({https_url_}));
    EXPECT_TRUE(s.status.ok()) << s.status.error_message();
    auto results = s.results();
    return results.count(0) ? results[0] : v1::FetchResult();
  }

  std::unique_ptr<TestCertificates> certs_;
  std::unique_ptr<Child> https_;
  std::string https_url_;
};

TEST_F(HttpsUpstreamTest, APrivateCaIsNotTrustedWithoutCaBundle) {
  StartServerBinary();
  v1::FetchResult r = FetchHttps();
  EXPECT_EQ(r.outcome(), v1::OUTCOME_TLS_ERROR) << r.error();
  EXPECT_TRUE(absl::StrContains(r.error(), "certificate")) << r.error();
}

TEST_F(HttpsUpstreamTest, CaBundleMakesThePrivateCaTrusted) {
  StartServerBinary({"--ca_bundle=" + certs_->ca()});
  v1::FetchResult r = FetchHttps();
  EXPECT_EQ(r.outcome(), v1::OUTCOME_OK) << r.error();
  EXPECT_EQ(r.http_status(), 200);
}

TEST_F(BinaryTest, AnUnreadableCaBundleStopsTheServer) {
  EXPECT_NE(RunServerThatMustNotStart({"--ca_bundle=/nonexistent/ca.pem"}), 0);
}

}  // namespace
}  // namespace batchfetch

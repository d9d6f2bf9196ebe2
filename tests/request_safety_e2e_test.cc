// End-to-end request safety (issue 8): what a caller puts in a request can
// neither desync a pooled upstream connection for another caller, nor cut a
// URL short with a NUL, nor get its URL credentials echoed or stored, and
// the gRPC message size limit holds at its edge. In-process server (with
// the real MariaDB where stored rows matter), real keep-alive loopback
// upstreams.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <iterator>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "batchfetch/v1/batchfetch.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/loopback_listener.h"
#include "tests/support/service_fixture.h"

namespace batchfetch {
namespace {

using e2e::Batch;
using e2e::ServiceTest;
using e2e::Streamed;

// A minimal HTTP/1.1 server on 127.0.0.1 that records the head (request
// line and headers) of every request and answers each with 200 "{}", or a
// request for "/hop" with a 302 to set_hop_location(), always with
// "Connection: close". TestUpstream does not keep request headers (and
// takes a redirect's Location from the query, where it would show in the
// request URL); this one shows what actually went over the wire.
class HeadRecorder {
 public:
  HeadRecorder() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), len), 0);
    EXPECT_EQ(listen(fd_, 16), 0);
    EXPECT_EQ(getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~HeadRecorder() {
    stopping_ = true;
    shutdown(fd_, SHUT_RDWR);  // wakes accept()
    thread_.join();
    close(fd_);
  }

  int port() const { return port_; }
  void set_hop_location(std::string location) {
    absl::MutexLock lock(&mu_);
    hop_location_ = std::move(location);
  }
  std::vector<std::string> heads() const {
    absl::MutexLock lock(&mu_);
    return heads_;
  }

 private:
  void Serve() {
    while (!stopping_) {
      const int conn = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) continue;
      std::string head;
      char buf[4096];
      while (!absl::StrContains(head, "\r\n\r\n")) {
        const ssize_t n = read(conn, buf, sizeof(buf));
        if (n <= 0) break;
        head.append(buf, static_cast<size_t>(n));
      }
      std::string response =
          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
          "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
      {
        absl::MutexLock lock(&mu_);
        heads_.push_back(head);
        if (absl::StartsWith(head, "GET /hop ")) {
          response =
              absl::StrCat("HTTP/1.1 302 Found\r\nLocation: ", hop_location_,
                           "\r\nContent-Length: 0\r\n"
                           "Connection: close\r\n\r\n");
        }
      }
      EXPECT_EQ(write(conn, response.data(), response.size()),
                static_cast<ssize_t>(response.size()));
      close(conn);
    }
  }

  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  mutable absl::Mutex mu_;
  std::vector<std::string> heads_ ABSL_GUARDED_BY(mu_);
  std::string hop_location_ ABSL_GUARDED_BY(mu_);
};

// An HTTP/1.1 upstream on 127.0.0.1 that ignores request bodies, as many
// real ones do for routes that take none: it reads a request's head, never
// its Content-Length bytes, answers at once and keeps the connection alive,
// then parses whatever bytes come next as the next request. Each answer is
// 200 {"path":"<request target>"}. A request for "/smuggled..." is
// answered only once more bytes arrive on its connection (or it closes, or
// 2 s pass), so a smuggled answer is still pending when the client's next
// request goes out: the race of issue 8, made certain.
//
// Threading: one thread accepts, each connection has its own; the
// destructor shuts every connection down and joins them all. targets() may
// be called from any thread.
class BodyIgnoringUpstream {
 public:
  static std::unique_ptr<BodyIgnoringUpstream> Start() {
    absl::StatusOr<testing::LoopbackListener> listener =
        testing::LoopbackListener::Open();
    EXPECT_TRUE(listener.ok()) << listener.status();
    if (!listener.ok()) return nullptr;
    return std::unique_ptr<BodyIgnoringUpstream>(
        new BodyIgnoringUpstream(*std::move(listener)));
  }
  ~BodyIgnoringUpstream() {
    stopping_ = true;
    listener_.Wake();
    accept_thread_.join();
    std::vector<std::thread> threads;
    {
      absl::MutexLock lock(&mu_);
      for (int fd : open_fds_) shutdown(fd, SHUT_RDWR);
      threads.swap(threads_);
    }
    for (std::thread& thread : threads) thread.join();
  }

  std::string Url(absl::string_view path_and_query) const {
    return absl::StrCat("http://127.0.0.1:", listener_.port(), path_and_query);
  }
  // Every request target served, in arrival order.
  std::vector<std::string> targets() const {
    absl::MutexLock lock(&mu_);
    return targets_;
  }

 private:
  explicit BodyIgnoringUpstream(testing::LoopbackListener listener)
      : listener_(std::move(listener)),
        accept_thread_([this] { AcceptLoop(); }) {}

  void AcceptLoop() {
    while (!stopping_) {
      pollfd fds[2] = {{listener_.listen_fd(), POLLIN, 0},
                       {listener_.wake_fd(), POLLIN, 0}};
      if (poll(fds, 2, -1) <= 0 || (fds[1].revents & POLLIN) != 0) continue;
      const int fd = listener_.Accept();
      if (fd < 0) continue;
      absl::MutexLock lock(&mu_);
      open_fds_.push_back(fd);
      threads_.emplace_back([this, fd] { Serve(fd); });
    }
  }

  void Serve(int fd) {
    std::string buffer;
    char chunk[4096];
    while (true) {
      size_t end;
      while ((end = buffer.find("\r\n\r\n")) == std::string::npos) {
        const ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n <= 0) return Forget(fd);
        buffer.append(chunk, static_cast<size_t>(n));
      }
      // The head only: a body stays in `buffer`, to be read as a request.
      const std::string head = buffer.substr(0, end);
      buffer.erase(0, end + 4);
      const std::vector<std::string> line = absl::StrSplit(
          head.substr(0, head.find("\r\n")), absl::MaxSplits(' ', 2));
      const std::string target = line.size() > 1 ? line[1] : "";
      {
        absl::MutexLock lock(&mu_);
        targets_.push_back(target);
      }
      if (absl::StartsWith(target, "/smuggled")) {
        pollfd next = {fd, POLLIN, 0};
        poll(&next, 1, 2000);
      }
      const std::string body = absl::StrCat(R"({"path":")", target, R"("})");
      const std::string response = absl::StrCat(
          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
          "Content-Length: ",
          body.size(), "\r\n\r\n", body);
      if (!testing::SendAll(fd, response.data(), response.size())) {
        return Forget(fd);
      }
    }
  }

  // Closes a connection whose client has gone.
  void Forget(int fd) {
    absl::MutexLock lock(&mu_);
    open_fds_.erase(std::find(open_fds_.begin(), open_fds_.end(), fd));
    close(fd);
  }

  testing::LoopbackListener listener_;
  std::atomic<bool> stopping_{false};
  mutable absl::Mutex mu_;
  std::vector<int> open_fds_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> targets_ ABSL_GUARDED_BY(mu_);
  std::thread accept_thread_;  // last: starts once the members above exist
};

class RequestSafetyTest : public ServiceTest {
 protected:
  // For tests about what is sent: the stored row is the very result that is
  // streamed (one FetchResult, two owners), so they skip the database.
  ServerConfig ConfigWithoutStore() {
    ServerConfig config = Config();
    config.store_enabled = false;
    return config;
  }

  // Another caller: its own channel (and so its own connection) to the
  // same server.
  std::unique_ptr<v1::BatchFetcher::Stub> OtherCaller() {
    auto channel = grpc::CreateCustomChannel(
        absl::StrCat("127.0.0.1:", server_->port()),
        grpc::InsecureChannelCredentials(), UniqueChannelArgs());
    return v1::BatchFetcher::NewStub(channel);
  }

  static Streamed FetchWith(v1::BatchFetcher::Stub& stub,
                            const v1::FetchBatchRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    Streamed out;
    auto reader = stub.FetchBatch(&context, request);
    v1::FetchBatchEvent event;
    while (reader->Read(&event)) out.events.push_back(event);
    out.status = reader->Finish();
    return out;
  }

 private:
  // Distinct args keep gRPC from sharing one subchannel between callers.
  static grpc::ChannelArguments UniqueChannelArgs() {
    static std::atomic<int> n{0};
    grpc::ChannelArguments args;
    args.SetInt("batchfetch.test.caller", n++);
    return args;
  }
};

// The desync of issue 8: caller A sets its own Content-Length: 0 (or
// Transfer-Encoding: chunked) and hides a second request in the body. Had
// it been sent, the upstream would answer twice on one keep-alive
// connection; the smuggled 418 would wait in the pooled connection and be
// read as the answer to caller B's next request to the same host. With a
// single curl multi every transfer shares one connection pool, so without
// the header check the mix-up is not a matter of luck: with the check
// disabled, caller B got a wrong response (the 418) in 20 of 20 rounds.
TEST_F(RequestSafetyTest,
       SmugglingBatchesAreRefusedAndAnotherCallerAlwaysGetsItsOwnResponses) {
  ServerConfig config = ConfigWithoutStore();
  config.engine.curl_multi_handles = 1;
  StartServer(config);
  std::unique_ptr<v1::BatchFetcher::Stub> caller_a = OtherCaller();
  std::unique_ptr<v1::BatchFetcher::Stub> caller_b = OtherCaller();
  // The smuggled request is answered late: had it been sent, its 418 would
  // arrive after the pooled connection was handed to the next request (an
  // early one would make the idle connection readable, and curl or the
  // driver would drop it), exactly the race the issue saw.
  const std::string smuggled =
      "GET /?status=418&delay_ms=300 HTTP/1.1\r\nHost: x\r\n\r\n";
  const struct {
    const char* header;
    const char* value;
    std::string body;
  } variants[] = {
      {"Transfer-Encoding", "chunked", "0\r\n\r\n" + smuggled},
      {"TRANSFER-ENCODING", "chunked", "0\r\n\r\n" + smuggled},
      {"Connection", "keep-alive", smuggled},
      {"TE", "trailers", smuggled},
      // Last, and the only one that would leave an answer pending: the
      // smuggled 418 would then still be on its way when caller B's batch
      // takes the connection. (Two in a row would only mix A's own.) The
      // spelling alternates by round.
      {"Content-Length", "0", smuggled},
  };
  // Odd rounds spell the names in lower case.
  const auto spelled = [](absl::string_view name, int round) {
    return round % 2 == 1 ? absl::AsciiStrToLower(name) : std::string(name);
  };
  constexpr int kRounds = 20;
  constexpr int kPerRound = 5;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    v1::FetchBatchRequest smuggling;
    smuggling.set_concurrency(1);
    for (const auto& v : variants) {
      v1::FetchRequest* r = smuggling.add_requests();
      r->set_url(upstream_->Url(absl::StrCat("/a?n=", round)));
      r->set_method("POST");
      r->set_body(v.body);
      (*r->mutable_headers())[spelled(v.header, round)] = v.value;
    }
    Streamed a = FetchWith(*caller_a, smuggling);
    ASSERT_TRUE(a.status.ok()) << a.status.error_message();
    ASSERT_EQ(a.results().size(), std::size(variants));
    for (const auto& [index, r] : a.results()) {
      EXPECT_EQ(r.outcome(), v1::OUTCOME_INVALID_REQUEST) << r.error();
      EXPECT_TRUE(absl::StrContains(
          r.error(),
          absl::StrCat("header '", spelled(variants[index].header, round),
                       "' may not be set")))
          << r.error();
      EXPECT_EQ(r.attempts(), 0u);
    }

    std::vector<std::string> urls;
    for (int k = 0; k < kPerRound; ++k) {
      urls.push_back(upstream_->Url(absl::StrCat("/b?n=", round * 100 + k)));
    }
    Streamed b = FetchWith(*caller_b, Batch(urls, 2));
    ASSERT_TRUE(b.status.ok()) << b.status.error_message();
    ASSERT_EQ(b.results().size(), static_cast<size_t>(kPerRound));
    for (const auto& [index, r] : b.results()) {
      EXPECT_EQ(r.outcome(), v1::OUTCOME_OK) << r.error();
      EXPECT_EQ(r.http_status(), 200);
      EXPECT_EQ(r.json(), absl::StrCat(R"({"ok":true,"path":"/b","n":)",
                                       round * 100 + index, "}"));
    }
  }
  // Nothing of A's reached the upstream: no smuggled request, no POST.
  for (const auto& arrival : upstream_->arrivals()) {
    EXPECT_EQ(arrival.method, "GET") << arrival.path_and_query;
    EXPECT_FALSE(absl::StrContains(arrival.path_and_query, "status=418"));
  }
  EXPECT_EQ(upstream_->total_requests(), kRounds * kPerRound);
}

// The same desync without any forbidden header: caller A's POST carries a
// second request in an ordinary body, to an upstream that answers without
// reading bodies. The body's bytes stay on the connection and are parsed as
// a request; had that connection gone back to the pool, caller B's next
// request on it would get the smuggled request's answer (it did, in every
// round, before a request with a body stopped leaving its connection for
// reuse).
TEST_F(RequestSafetyTest,
       ABodyTheUpstreamIgnoresCannotAnswerAnotherCallersRequest) {
  std::unique_ptr<BodyIgnoringUpstream> upstream =
      BodyIgnoringUpstream::Start();
  ASSERT_NE(upstream, nullptr);
  ServerConfig config = ConfigWithoutStore();
  config.engine.curl_multi_handles = 1;  // one connection pool for both
  StartServer(config);
  std::unique_ptr<v1::BatchFetcher::Stub> caller_a = OtherCaller();
  std::unique_ptr<v1::BatchFetcher::Stub> caller_b = OtherCaller();
  constexpr int kRounds = 20;
  constexpr int kPerRound = 3;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    const std::string a_target = absl::StrCat("/a?n=", round);
    v1::FetchBatchRequest smuggling;
    v1::FetchRequest* post = smuggling.add_requests();
    post->set_url(upstream->Url(a_target));
    post->set_method("POST");
    post->set_body(absl::StrCat("GET /smuggled?n=", round,
                                " HTTP/1.1\r\nHost: x\r\n\r\n"));
    Streamed a = FetchWith(*caller_a, smuggling);
    ASSERT_TRUE(a.status.ok()) << a.status.error_message();
    ASSERT_EQ(a.results().size(), 1u);
    EXPECT_EQ(a.results().at(0).outcome(), v1::OUTCOME_OK)
        << a.results().at(0).error();
    EXPECT_EQ(a.results().at(0).json(),
              absl::StrCat(R"({"path":")", a_target, R"("})"));

    std::vector<std::string> targets;
    std::vector<std::string> urls;
    for (int k = 0; k < kPerRound; ++k) {
      targets.push_back(absl::StrCat("/b?n=", round * 100 + k));
      urls.push_back(upstream->Url(targets.back()));
    }
    Streamed b = FetchWith(*caller_b, Batch(urls, 1));
    ASSERT_TRUE(b.status.ok()) << b.status.error_message();
    ASSERT_EQ(b.results().size(), static_cast<size_t>(kPerRound));
    for (const auto& [index, r] : b.results()) {
      EXPECT_EQ(r.outcome(), v1::OUTCOME_OK) << r.error();
      EXPECT_EQ(r.json(),
                absl::StrCat(R"({"path":")", targets[index], R"("})"));
    }
  }
}

// "/nulpath\0/../../etc/passwd" used to fetch "/nulpath" while the whole
// string was reported and stored.
TEST_F(RequestSafetyTest,
       ANulOrControlCharacterInAUrlIsRefusedAndNothingIsSent) {
  StartServer(ConfigWithoutStore());
  const std::string base = upstream_->Url("/nulpath");
  const std::string nul = base + std::string("\0/../../etc/passwd", 18);
  const std::string cr = upstream_->Url("/a\rb");
  const std::string del = upstream_->Url("/a\x7f");
  Streamed s = Fetch(Batch({nul, cr, del, upstream_->Url("/fine?n=3")}));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  std::map<uint32_t, v1::FetchResult> results = s.results();
  ASSERT_EQ(results.size(), 4u);
  EXPECT_EQ(results[0].outcome(), v1::OUTCOME_INVALID_REQUEST);
  EXPECT_EQ(results[0].error(),
            absl::StrCat("url contains a control character (0x00) at byte ",
                         base.size()));
  EXPECT_EQ(results[1].outcome(), v1::OUTCOME_INVALID_REQUEST);
  EXPECT_TRUE(absl::StrContains(results[1].error(), "(0x0D)"))
      << results[1].error();
  EXPECT_EQ(results[2].outcome(), v1::OUTCOME_INVALID_REQUEST);
  EXPECT_TRUE(absl::StrContains(results[2].error(), "(0x7F)"))
      << results[2].error();
  EXPECT_EQ(results[3].outcome(), v1::OUTCOME_OK) << results[3].error();
  ASSERT_EQ(upstream_->arrivals().size(), 1u);
  EXPECT_EQ(upstream_->arrivals()[0].path_and_query, "/fine?n=3");
}

TEST_F(RequestSafetyTest, HeaderInjectionIsRefusedPerEntryNamingTheHeader) {
  StartServer(ConfigWithoutStore());
  v1::FetchBatchRequest request;
  const std::pair<std::string, std::string> headers[] = {
      {"X-Inject", "a\r\nX-Evil: 1"},
      {"Host", "internal.example"},
      {"Proxy-Authorization", "Basic eDp5"},
      {"X-Fine", "ok"},
  };
  for (const auto& [name, value] : headers) {
    v1::FetchRequest* r = request.add_requests();
    r->set_url(upstream_->Url("/h?n=1"));
    (*r->mutable_headers())[name] = value;
  }
  Streamed s = Fetch(request);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  std::map<uint32_t, v1::FetchResult> results = s.results();
  ASSERT_EQ(results.size(), 4u);
  for (uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ(results[i].outcome(), v1::OUTCOME_INVALID_REQUEST);
    EXPECT_TRUE(absl::StrContains(results[i].error(),
                                  absl::StrCat("header '", headers[i].first)))
        << results[i].error();
  }
  EXPECT_EQ(results[3].outcome(), v1::OUTCOME_OK) << results[3].error();
  EXPECT_EQ(upstream_->total_requests(), 1);
}

// Credentials in a URL are sent (curl turns them into Authorization:
// Basic), but no streamed result, stored row or error shows them.
TEST_F(RequestSafetyTest, UrlCredentialsAreSentButNeverEchoedOrStored) {
  StartServer(Config());
  HeadRecorder recorder;
  const std::string origin = absl::StrCat("127.0.0.1:", recorder.port());
  const std::string direct =
      absl::StrCat("http://alice:s3cr3tPW@", origin, "/first?q=1");
  // A redirect whose Location carries other credentials: final_url.
  recorder.set_hop_location(
      absl::StrCat("http://bob:0th3rPW@", origin, "/second"));
  const std::string redirect = absl::StrCat("http://", origin, "/hop");
  // Refused before anything is sent; its URL is echoed, redacted.
  const std::string refused = "ftp://alice:s3cr3tPW@127.0.0.1/file";
  v1::FetchBatchRequest request = Batch({direct, redirect, refused});
  request.set_batch_id("creds-1");
  Streamed s = Fetch(request);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  std::map<uint32_t, v1::FetchResult> results = s.results();
  ASSERT_EQ(results.size(), 3u);

  EXPECT_EQ(results[0].outcome(), v1::OUTCOME_OK) << results[0].error();
  EXPECT_EQ(results[0].url(),
            absl::StrCat("http://***@", origin, "/first?q=1"));
  EXPECT_EQ(results[0].final_url(),
            absl::StrCat("http://***@", origin, "/first?q=1"));
  EXPECT_EQ(results[1].outcome(), v1::OUTCOME_OK) << results[1].error();
  EXPECT_EQ(results[1].final_url(),
            absl::StrCat("http://***@", origin, "/second"));
  EXPECT_EQ(results[2].outcome(), v1::OUTCOME_INVALID_REQUEST);
  EXPECT_EQ(results[2].url(), "ftp://***@127.0.0.1/file");

  // The caller's credentials did go out, as Basic authorization. (libcurl
  // does not send credentials that arrive in a redirect's Location, so the
  // hop's show only in its effective URL.)
  const std::vector<std::string> heads = recorder.heads();
  ASSERT_EQ(heads.size(), 3u);
  EXPECT_TRUE(absl::StartsWith(heads[0], "GET /first?q=1 ")) << heads[0];
  EXPECT_TRUE(absl::StrContains(
      heads[0], absl::StrCat("\r\nAuthorization: Basic ",
                             absl::Base64Escape("alice:s3cr3tPW"), "\r\n")))
      << heads[0];

  const auto expect_no_secret = [](const std::string& text,
                                   absl::string_view where) {
    for (absl::string_view secret : {"s3cr3t", "0th3r", "alice", "bob"}) {
      EXPECT_FALSE(absl::StrContains(text, secret))
          << where << " shows '" << secret << "': " << text;
    }
  };
  for (const auto& event : s.events) {
    expect_no_secret(event.DebugString(), "the stream");
  }
  absl::StatusOr<v1::BatchSummary> summary = GetBatch("creds-1");
  ASSERT_TRUE(summary.ok()) << summary.status();
  expect_no_secret(summary->DebugString(), "GetBatch");
  int pages = 0;
  std::vector<v1::FetchResult> stored = ListAll("creds-1", 10, &pages);
  ASSERT_EQ(stored.size(), 3u);
  for (const auto& r : stored) expect_no_secret(r.DebugString(), "ListResults");
  EXPECT_EQ(stored[0].url(), results[0].url());
  EXPECT_EQ(stored[1].final_url(), results[1].final_url());
}

// The gRPC receive limit (ServerConfig::max_request_bytes,
// --max_request_bytes): a request of exactly that many bytes is served,
// one byte more is refused before any handler runs.
TEST_F(RequestSafetyTest, RequestSizeIsAcceptedAtTheLimitAndRejectedJustOver) {
  constexpr int kLimit = 64 * 1024;
  ServerConfig config = ConfigWithoutStore();
  config.max_request_bytes = kLimit;
  StartServer(config);
  // A POST whose body pads the serialized request to `size` bytes.
  const auto request_of_size = [&](size_t size) {
    v1::FetchBatchRequest request;
    v1::FetchRequest* r = request.add_requests();
    r->set_url(upstream_->Url("/big?n=7"));
    r->set_method("POST");
    // Grow or shrink by the difference until it fits exactly (length
    // prefixes are varints, so one pass may be a byte or two off).
    size_t body_size = 0;
    for (int i = 0; i < 8 && request.ByteSizeLong() != size; ++i) {
      body_size = body_size + size - request.ByteSizeLong();
      r->set_body(std::string(body_size, 'x'));
    }
    return request;
  };
  v1::FetchBatchRequest at_limit = request_of_size(kLimit);
  ASSERT_EQ(at_limit.ByteSizeLong(), static_cast<size_t>(kLimit));
  Streamed ok = Fetch(at_limit);
  ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
  ASSERT_EQ(ok.results().size(), 1u);
  EXPECT_EQ(ok.results().at(0).outcome(), v1::OUTCOME_OK)
      << ok.results().at(0).error();

  v1::FetchBatchRequest over = request_of_size(kLimit + 1);
  ASSERT_EQ(over.ByteSizeLong(), static_cast<size_t>(kLimit) + 1);
  Streamed refused = Fetch(over);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // gRPC's own wording names both sizes: "... larger than max (65537 vs.
  // 65536)".
  EXPECT_TRUE(absl::StrContains(refused.status.error_message(),
                                absl::StrCat(kLimit + 1, " vs. ", kLimit)))
      << refused.status.error_message();
  EXPECT_TRUE(refused.events.empty());
  EXPECT_EQ(upstream_->total_requests(), 1);
}

}  // namespace
}  // namespace batchfetch

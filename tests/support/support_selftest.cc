// Self-tests for the integration-test support code (TestUpstream and
// LocalMariaDb). Uses raw sockets and the curl command line tool as clients.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/support/local_mariadb.h"
#include "tests/support/loopback_listener.h"
#include "tests/support/mysql_commit_cutter.h"
#include "tests/support/test_upstream.h"

namespace batchfetch::testing {
namespace {

// Runs `command` through the shell and returns its stdout.
std::string RunShell(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  pclose(pipe);
  return out;
}

// Returns a socket connected to 127.0.0.1:port, or -1.
int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Reads until EOF.
std::string ReadAll(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, n);
  return out;
}

class TestUpstreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<TestUpstream>> upstream =
        TestUpstream::Start();
    ASSERT_TRUE(upstream.ok()) << upstream.status();
    upstream_ = std::move(*upstream);
  }
  std::string Curl(const std::string& args) {
    return RunShell(absl::StrCat("curl -s ", args));
  }

  std::unique_ptr<TestUpstream> upstream_;
};

TEST_F(TestUpstreamTest, DefaultBodyStatusAndContentType) {
  EXPECT_EQ(Curl(absl::StrCat("'", upstream_->Url("/x?n=123"), "'")),
            R"({"ok":true,"path":"/x","n":123})");
  EXPECT_EQ(
      Curl(absl::StrCat("-o /dev/null -w '%{http_code} %{content_type}' '",
                        upstream_->Url("/y?status=503&ctype=text/plain"), "'")),
      "503 text/plain");
  EXPECT_EQ(upstream_->total_requests(), 2);
  std::vector<TestUpstream::Arrival> arrivals = upstream_->arrivals();
  ASSERT_EQ(arrivals.size(), 2u);
  EXPECT_EQ(arrivals[0].path_and_query, "/x?n=123");
  EXPECT_EQ(arrivals[0].method, "GET");
  EXPECT_LE(arrivals[0].at, arrivals[1].at);
}

TEST_F(TestUpstreamTest, BodyVariants) {
  EXPECT_EQ(
      Curl(absl::StrCat("'", upstream_->Url("/a?body=hello%20w%26rld"), "'")),
      "hello w&rld");
  std::string padded =
      Curl(absl::StrCat("'", upstream_->Url("/a?bytes=100"), "'"));
  EXPECT_EQ(padded.size(), 100u);
  EXPECT_TRUE(absl::StartsWith(padded, R"({"pad":"xx)")) << padded;
  EXPECT_EQ(Curl(absl::StrCat("-d 'posted body' '",
                              upstream_->Url("/echo?echo=1"), "'")),
            "posted body");
  // Large POST (curl sends Expect: 100-continue).
  absl::Time start = absl::Now();
  std::string big = RunShell(
      absl::StrCat("head -c 200000 /dev/zero | curl -s --data-binary @- '",
                   upstream_->Url("/big?bytes=20"), "'"));
  EXPECT_EQ(big, R"({"pad":"xxxxxxxxxx"})");
  // No 1 s wait for "100 Continue".
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(900));
  EXPECT_EQ(
      Curl(absl::StrCat("'", upstream_->Url("/n?no_length=1&body=abc"), "'")),
      "abc");
  EXPECT_EQ(
      Curl(absl::StrCat("-o /dev/null -w '%{http_code} %{redirect_url}' '",
                        upstream_->Url("/redirect?to=http%3A%2F%2Fexample."
                                       "com%2Fz%3Fa%3D1"),
                        "'")),
      "302 http://example.com/z?a=1");
  EXPECT_EQ(Curl(absl::StrCat(
                "-L '",
                upstream_->Url(absl::StrCat(
                    "/redirect?status=307&to=", "http%3A%2F%2F127.0.0.1%3A",
                    upstream_->port(), "%2Fafter%3Fbody%3Ddone")),
                "'")),
            "done");
}

TEST_F(TestUpstreamTest, KeepAliveReusesOneConnection) {
  std::string out = Curl(absl::StrCat("'", upstream_->Url("/1?n=1"), "' '",
                                      upstream_->Url("/2?n=2"), "' '",
                                      upstream_->Url("/3?n=3&drip_ms=1"), "'"));
  EXPECT_EQ(out, R"({"ok":true,"path":"/1","n":1})"
                 R"({"ok":true,"path":"/2","n":2})"
                 R"({"ok":true,"path":"/3","n":3})");
  EXPECT_EQ(upstream_->connections_accepted(), 1);
  EXPECT_EQ(upstream_->total_requests(), 3);
}

TEST_F(TestUpstreamTest, PipelinedRequestsOnRawSocket) {
  int fd = Connect(upstream_->port());
  ASSERT_GE(fd, 0);
  std::string requests =
      "GET /p?body=one&delay_ms=50 HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /p?body=two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  ASSERT_EQ(write(fd, requests.data(), requests.size()),
            static_cast<ssize_t>(requests.size()));
  std::string response = ReadAll(fd);
  close(fd);
  EXPECT_TRUE(absl::StrContains(response, "Content-Length: 3\r\n"));
  EXPECT_TRUE(absl::StrContains(response, "\r\n\r\none")) << response;
  EXPECT_TRUE(absl::EndsWith(response, "\r\n\r\ntwo")) << response;
  EXPECT_EQ(upstream_->aborted(), 0);
}

TEST_F(TestUpstreamTest, PeakInFlightWithParallelRequests) {
  constexpr int kParallel = 200;
  // One curl process running all transfers concurrently, each on its own
  // connection; the delay keeps them all in flight at once.
  std::string args =
      "--no-progress-meter -Z --parallel-immediate --parallel-max 300";
  for (int i = 0; i < kParallel; ++i) {
    absl::StrAppend(&args, " '",
                    upstream_->Url(absl::StrCat("/par?delay_ms=2000&n=", i)),
                    "'");
  }
  std::string output;
  std::thread client([&] { output = Curl(args); });
  EXPECT_TRUE(upstream_->AwaitInFlightAtLeast(kParallel, absl::Seconds(20)))
      << upstream_->in_flight();
  client.join();
  for (int i = 0; i < kParallel; ++i) {
    EXPECT_TRUE(absl::StrContains(
        output, absl::StrCat(R"({"ok":true,"path":"/par","n":)", i, "}")))
        << i;
  }
  EXPECT_EQ(upstream_->connections_accepted(), kParallel);
  EXPECT_EQ(upstream_->peak_in_flight(), kParallel);
  EXPECT_EQ(upstream_->in_flight(), 0);
  EXPECT_EQ(upstream_->total_requests(), kParallel);
  EXPECT_EQ(upstream_->aborted(), 0);
  upstream_->ResetStats();
  EXPECT_EQ(upstream_->peak_in_flight(), 0);
  EXPECT_EQ(upstream_->total_requests(), 0);
  EXPECT_TRUE(upstream_->arrivals().empty());
}

TEST_F(TestUpstreamTest, ClientDisconnectDuringDelayIsAborted) {
  absl::Time start = absl::Now();
  // curl gives up after 300 ms; the server must notice well before 10 s.
  Curl(absl::StrCat("-m 0.3 '", upstream_->Url("/slow?delay_ms=10000"), "'"));
  EXPECT_TRUE(upstream_->AwaitAbortedAtLeast(1, absl::Seconds(2)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_EQ(upstream_->in_flight(), 0);
}

TEST_F(TestUpstreamTest, ClientDisconnectDuringDripIsAborted) {
  Curl(absl::StrCat("-m 0.3 '", upstream_->Url("/drip?bytes=1000&drip_ms=20"),
                    "'"));
  EXPECT_TRUE(upstream_->AwaitAbortedAtLeast(1, absl::Seconds(2)));
  EXPECT_EQ(upstream_->in_flight(), 0);
}

TEST_F(TestUpstreamTest, DropClosesWithoutResponse) {
  EXPECT_EQ(Curl(absl::StrCat("-o /dev/null -w '%{http_code}' '",
                              upstream_->Url("/d?drop=1"), "'")),
            "000");
  EXPECT_EQ(upstream_->in_flight(), 0);
}

TEST_F(TestUpstreamTest, DestructorInterruptsPendingRequests) {
  std::vector<int> fds;
  for (int i = 0; i < 20; ++i) {
    int fd = Connect(upstream_->port());
    ASSERT_GE(fd, 0);
    std::string request =
        "GET /hang?delay_ms=60000 HTTP/1.1\r\nHost: x\r\n\r\n";
    ASSERT_EQ(write(fd, request.data(), request.size()),
              static_cast<ssize_t>(request.size()));
    fds.push_back(fd);
  }
  // An idle keep-alive connection too.
  int idle = Connect(upstream_->port());
  ASSERT_GE(idle, 0);
  ASSERT_TRUE(upstream_->AwaitInFlightAtLeast(20, absl::Seconds(5)));
  absl::Time start = absl::Now();
  upstream_.reset();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  for (int fd : fds) close(fd);
  close(idle);
}

TEST_F(TestUpstreamTest, FailFirstIsPerTargetWithRetryAfter) {
  const std::string format = "-D - -o /dev/null -w 'code=%{http_code}' '";
  const std::string url = upstream_->Url("/ff?fail_first=1&retry_after=2");
  std::string first = Curl(absl::StrCat(format, url, "'"));
  EXPECT_TRUE(absl::StrContains(first, "\r\nRetry-After: 2\r\n")) << first;
  EXPECT_TRUE(absl::EndsWith(first, "code=503")) << first;
  // Another target has its own counter.
  EXPECT_EQ(Curl(absl::StrCat(
                "-o /dev/null -w '%{http_code}' '",
                upstream_->Url("/ff?fail_first=1&retry_after=2&n=1"), "'")),
            "503");
  std::string second = Curl(absl::StrCat(format, url, "'"));
  EXPECT_TRUE(absl::EndsWith(second, "code=200")) << second;
  // The header is sent whether or not the request fails; an HTTP-date works.
  EXPECT_TRUE(absl::StrContains(second, "\r\nRetry-After: 2\r\n")) << second;
  const std::string dated = upstream_->Url(
      "/ff?fail_first=2&fail_status=429&status=201&"
      "retry_after=Wed,%2021%20Oct%202015%2007:28:00%20GMT");
  const std::string dated_format =
      "-o /dev/null -w '%{http_code} %header{retry-after}' '";
  EXPECT_EQ(Curl(absl::StrCat(dated_format, dated, "'")),
            "429 Wed, 21 Oct 2015 07:28:00 GMT");
  EXPECT_EQ(Curl(absl::StrCat(dated_format, dated, "'")),
            "429 Wed, 21 Oct 2015 07:28:00 GMT");
  EXPECT_EQ(Curl(absl::StrCat(dated_format, dated, "'")),
            "201 Wed, 21 Oct 2015 07:28:00 GMT");
  // ResetStats() restarts the counters.
  upstream_->ResetStats();
  EXPECT_EQ(Curl(absl::StrCat("-o /dev/null -w '%{http_code}' '", url, "'")),
            "503");
}

TEST_F(TestUpstreamTest, GzipZerosDecodesToExactLength) {
  for (int n : {0, 1, 2, 3, 4, 1000, 1001, 5000000}) {
    const std::string url = upstream_->Url(absl::StrCat("/gz?gzip_zeros=", n));
    EXPECT_EQ(
        RunShell(absl::StrCat("curl -s --compressed '", url, "' | wc -c")),
        absl::StrCat(n, "\n"))
        << n;
  }
  EXPECT_EQ(Curl(absl::StrCat("--compressed '",
                              upstream_->Url("/gz?gzip_zeros=9"), "'")),
            "[0,0,0,0]");
  EXPECT_EQ(Curl(absl::StrCat("--compressed '",
                              upstream_->Url("/gz?gzip_zeros=10"), "'")),
            "[ 0,0,0,0]");
  // Sent compressed: Content-Length is the (small) compressed size.
  std::string headers =
      Curl(absl::StrCat("-D - -o /dev/null -w 'size=%{size_download}' '",
                        upstream_->Url("/gz?gzip_zeros=200000000"), "'"));
  EXPECT_TRUE(absl::StrContains(headers, "\r\nContent-Encoding: gzip\r\n"))
      << headers;
  size_t pos = headers.find("size=");
  ASSERT_NE(pos, std::string::npos) << headers;
  int64_t size = 0;
  ASSERT_TRUE(absl::SimpleAtoi(headers.substr(pos + 5), &size)) << headers;
  EXPECT_GT(size, 0);
  EXPECT_LT(size, 1000000);
  EXPECT_TRUE(absl::StrContains(
      headers, absl::StrCat("\r\nContent-Length: ", size, "\r\n")))
      << headers;
}

TEST(LocalMariaDbTest, StartExecuteStop) {
  absl::StatusOr<std::unique_ptr<LocalMariaDb>> db =
      LocalMariaDb::Start(BATCHFETCH_SOURCE_DIR);
  ASSERT_TRUE(db.ok()) << db.status();
  std::string dir = (*db)->dir();
  EXPECT_GT((*db)->port(), 0);
  absl::StatusOr<std::string> one = (*db)->Execute("SELECT 1");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(*one, "1\n");
  absl::StatusOr<std::string> created = (*db)->Execute(
      "CREATE DATABASE batchfetch_test_x; "
      "CREATE TABLE t (a INT, b TEXT); INSERT INTO t VALUES (1, 'x\ty');"
      "SELECT * FROM t; DROP DATABASE batchfetch_test_x;",
      "batchfetch");
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(*created, "1\tx\\ty\n");
  EXPECT_FALSE(
      (*db)->Execute("SELECT * FROM no_such_table", "batchfetch").ok());
  db->reset();
  EXPECT_NE(access(dir.c_str(), F_OK), 0) << dir << " was not removed";
}

TEST(LocalMariaDbTest, SharedInstance) {
  LocalMariaDb* db = SharedMariaDb();
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(db, SharedMariaDb());
  absl::StatusOr<std::string> user = db->Execute("SELECT CURRENT_USER()");
  ASSERT_TRUE(user.ok()) << user.status();
  EXPECT_EQ(*user, "batchfetch@127.0.0.1\n");
}

// A MySQL packet: 3-byte little-endian length, sequence id, payload.
std::string MysqlPacket(uint8_t sequence_id, const std::string& payload) {
  const size_t n = payload.size();
  std::string out = {
      static_cast<char>(n & 0xFF), static_cast<char>((n >> 8) & 0xFF),
      static_cast<char>((n >> 16) & 0xFF), static_cast<char>(sequence_id)};
  return out + payload;
}

MysqlPacketFramer::Packet Query(const std::string& sql, uint8_t seq = 0) {
  MysqlPacketFramer framer;
  auto packets = framer.Feed(MysqlPacket(seq, "\x03" + sql));
  EXPECT_EQ(packets.size(), 1u);
  return packets.empty() ? MysqlPacketFramer::Packet() : packets[0];
}

TEST(LoopbackListenerTest, AcceptsAClientOnItsPortAndWakesItsPoller) {
  absl::StatusOr<LoopbackListener> opened = LoopbackListener::Open();
  ASSERT_TRUE(opened.ok()) << opened.status();
  // Moving leaves the descriptors with the new owner only.
  const LoopbackListener listener = *std::move(opened);
  ASSERT_GT(listener.port(), 0);
  int client = ConnectTo("127.0.0.1", listener.port());
  ASSERT_GE(client, 0);
  int server = listener.Accept();
  ASSERT_GE(server, 0);
  ASSERT_TRUE(SendAll(client, "ping", 4));
  char got[4];
  ASSERT_EQ(read(server, got, sizeof(got)), 4);
  EXPECT_EQ(std::string_view(got, 4), "ping");
  pollfd wake = {listener.wake_fd(), POLLIN, 0};
  EXPECT_EQ(poll(&wake, 1, 0), 0);  // not woken yet
  listener.Wake();
  EXPECT_EQ(poll(&wake, 1, 0), 1);
  CloseFd(client);
  EXPECT_EQ(client, -1);
  CloseFd(server);
}

TEST(MysqlPacketFramerTest, PacketsSplitAtEveryByteAreFramedWhole) {
  const std::string big(300, 'x');  // longer than kHeadBytes
  const std::string stream = MysqlPacket(0,
                                         "\x03"
                                         "COMMIT") +
                             MysqlPacket(0, "") + MysqlPacket(7, big);
  // Every way of cutting the stream in two, and one byte at a time.
  for (size_t split = 0; split <= stream.size(); ++split) {
    MysqlPacketFramer framer;
    auto packets = framer.Feed(std::string_view(stream).substr(0, split));
    auto rest = framer.Feed(std::string_view(stream).substr(split));
    packets.insert(packets.end(), rest.begin(), rest.end());
    ASSERT_EQ(packets.size(), 3u) << "split at " << split;
    EXPECT_EQ(packets[0].head,
              "\x03"
              "COMMIT");
    EXPECT_TRUE(IsCommitQuery(packets[0]));
    EXPECT_EQ(packets[1].payload_length, 0u);
    EXPECT_EQ(packets[2].sequence_id, 7);
    EXPECT_EQ(packets[2].payload_length, 300u);
    EXPECT_EQ(packets[2].head, big.substr(0, MysqlPacketFramer::kHeadBytes));
  }
  MysqlPacketFramer framer;
  std::vector<MysqlPacketFramer::Packet> packets;
  for (char byte : stream) {
    for (auto& p : framer.Feed(std::string_view(&byte, 1))) {
      EXPECT_EQ(p.end, 1u);  // completed by this one byte
      packets.push_back(p);
    }
  }
  EXPECT_EQ(packets.size(), 3u);
}

TEST(MysqlPacketFramerTest, EndOffsetsPointPastEachPacketInTheChunk) {
  const std::string first = MysqlPacket(0,
                                        "\x03"
                                        "SELECT 1");
  const std::string second = MysqlPacket(0,
                                         "\x03"
                                         "COMMIT");
  MysqlPacketFramer framer;
  auto packets = framer.Feed(first + second + "\x05\x00");  // + half a header
  ASSERT_EQ(packets.size(), 2u);
  EXPECT_EQ(packets[0].end, first.size());
  EXPECT_EQ(packets[1].end, first.size() + second.size());
  EXPECT_FALSE(IsCommitQuery(packets[0]));
  EXPECT_TRUE(IsCommitQuery(packets[1]));
}

TEST(MysqlPacketFramerTest, APacketAfterAMaximumLengthOneIsAContinuation) {
  std::string max_payload(0xFFFFFF, 'a');
  MysqlPacketFramer framer;
  auto packets =
      framer.Feed(MysqlPacket(0, max_payload) + MysqlPacket(1,
                                                            "\x03"
                                                            "COMMIT"));
  ASSERT_EQ(packets.size(), 2u);
  EXPECT_FALSE(packets[0].continuation);
  EXPECT_TRUE(packets[1].continuation);
  EXPECT_FALSE(IsCommitQuery(packets[1]));
}

TEST(MysqlPacketFramerTest, OnlyTheWholeTextQueryCommitIsACommit) {
  EXPECT_TRUE(IsCommitQuery(Query("COMMIT")));
  EXPECT_TRUE(IsCommitQuery(Query("commit")));
  EXPECT_TRUE(IsCommitQuery(Query(" Commit ; ")));
  EXPECT_FALSE(IsCommitQuery(Query("COMMITTED")));
  EXPECT_FALSE(IsCommitQuery(Query("SELECT 'COMMIT'")));
  EXPECT_FALSE(IsCommitQuery(Query("COMMIT", /*seq=*/1)));  // not a command
  MysqlPacketFramer framer;
  auto prepare = framer.Feed(MysqlPacket(0,
                                         "\x16"
                                         "COMMIT"));  // STMT_PREPARE
  ASSERT_EQ(prepare.size(), 1u);
  EXPECT_FALSE(IsCommitQuery(prepare[0]));
}

// Through the cutter with the mariadb client: the armed COMMIT is carried
// out by the server, its answer is lost (the client fails), and later
// COMMITs go through.
TEST(MysqlCommitCutterTest, CutsTheArmedCommitAfterTheServerCommittedIt) {
  LocalMariaDb* db = SharedMariaDb();
  ASSERT_TRUE(db->Execute("CREATE DATABASE IF NOT EXISTS cutter_selftest; "
                          "DROP TABLE IF EXISTS cutter_selftest.t; "
                          "CREATE TABLE cutter_selftest.t (i INT PRIMARY KEY) "
                          "ENGINE=InnoDB")
                  .ok());
  auto cutter = MysqlCommitCutter::Start(db->port());
  ASSERT_TRUE(cutter.ok()) << cutter.status();
  std::unique_ptr<LocalMariaDb> through =
      LocalMariaDb::Attach((*cutter)->port());
  // Only on connections that sent "INSERT INTO cutter_selftest" (the mariadb
  // client strips comments, hence INSERT without INTO as the unmarked
  // statement): the first transaction's COMMIT is not cut.
  (*cutter)->CutNextCommits(1, "INSERT INTO cutter_selftest");
  ASSERT_TRUE(through
                  ->Execute("START TRANSACTION; "
                            "INSERT cutter_selftest.t VALUES (1); COMMIT")
                  .ok());
  EXPECT_EQ((*cutter)->cuts(), 0);
  absl::StatusOr<std::string> lost = through->Execute(
      "START TRANSACTION; INSERT INTO cutter_selftest.t VALUES (2); "
      "COMMIT; INSERT INTO cutter_selftest.t VALUES (3)");
  ASSERT_FALSE(lost.ok());
  EXPECT_TRUE(absl::StrContains(lost.status().message(), "2013"))
      << lost.status();
  EXPECT_EQ((*cutter)->cuts(), 1);
  EXPECT_EQ((*cutter)->cut_commits_answered_ok(), 1);
  EXPECT_EQ((*cutter)->tls_connections(), 0);
  // Disarmed after one cut.
  ASSERT_TRUE(through
                  ->Execute("START TRANSACTION; INSERT INTO cutter_selftest.t "
                            "VALUES (4); COMMIT")
                  .ok());
  EXPECT_EQ((*cutter)->commits_seen(), 3);
  EXPECT_EQ((*cutter)->cuts(), 1);
  absl::StatusOr<std::string> rows = db->Execute(
      "SELECT GROUP_CONCAT(i ORDER BY i) FROM cutter_selftest.t; "
      "DROP DATABASE cutter_selftest");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(*rows, "1,2,4\n");  // 2 committed although its answer was lost
}

}  // namespace
}  // namespace batchfetch::testing

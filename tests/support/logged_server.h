#ifndef BATCHFETCH_TESTS_SUPPORT_LOGGED_SERVER_H_
#define BATCHFETCH_TESTS_SUPPORT_LOGGED_SERVER_H_

// End-to-end helpers around the real server binary (for the lifecycle,
// outage and crash tests): health polling, shell commands, a fixture that
// runs the binary with its JSON log in a file, and a FetchBatch call on a
// thread of its own.

#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/support/service_fixture.h"

namespace batchfetch {
namespace e2e {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// grpc.health.v1.Health/Check for `service` on a fresh channel to `port`:
// the status, or the call's error (e.g. UNAVAILABLE once the port closed).
inline absl::StatusOr<HealthCheckResponse::ServingStatus> CheckHealth(
    int port, const std::string& service = "") {
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                     grpc::InsecureChannelCredentials());
  auto stub = Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(3)));
  HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }
  return response.status();
}

// Polls Check until it answers `want`; how long that took, or nullopt if
// not within `within`.
inline std::optional<absl::Duration> TimeUntilHealth(
    int port, HealthCheckResponse::ServingStatus want, absl::Duration within) {
  const absl::Time start = absl::Now();
  while (absl::Now() - start < within) {
    absl::StatusOr<HealthCheckResponse::ServingStatus> got = CheckHealth(port);
    if (got.ok() && *got == want) return absl::Now() - start;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return std::nullopt;
}

// A port nothing listens on (bound, then closed).
inline int ClosedPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Runs a shell command; its exit code, its stdout+stderr in `*output`.
inline int RunCommand(const std::string& command, std::string* output) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) {
    output->append(buffer, n);
  }
  int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The real server binary with its stderr (the JSON log) in a file, against
// `db` (the shared MariaDB unless a test starts its own).
class LoggedServerTest : public BinaryTest {
 protected:
  void TearDown() override {
    BinaryTest::TearDown();
    if (!log_path_.empty()) unlink(log_path_.c_str());
  }

  void StartLoggedServer(std::vector<std::string> extra,
                         const LocalMariaDb* db = nullptr) {
    if (db == nullptr) db = db_;
    if (log_path_.empty()) {  // a restart appends to the same log
      char path[] = "/tmp/batchfetch_server_log_XXXXXX";
      int fd = mkstemp(path);
      ASSERT_GE(fd, 0);
      close(fd);
      log_path_ = path;
    }
    // `exec` keeps the pid: signals go to the server itself.
    std::vector<std::string> args = {
        "/bin/sh",
        "-c",
        absl::StrCat("exec \"$0\" \"$@\" 2>>", log_path_),
        BATCHFETCH_SERVER_BINARY,
        "--listen=127.0.0.1:0",
        absl::StrCat("--mysql_port=", db->port()),
        absl::StrCat("--mysql_database=", database_),
        "--egress_allow_cidr=127.0.0.0/8"};
    args.insert(args.end(), extra.begin(), extra.end());
    server_process_ = std::make_unique<Child>(
        args, std::vector<std::string>{"BATCHFETCH_MYSQL_PASSWORD=" +
                                       db->password()});
    std::string line;
    ASSERT_TRUE(server_process_->ReadLine(&line)) << ReadFile(log_path_);
    absl::string_view rest = line;
    ASSERT_TRUE(
        absl::ConsumePrefix(&rest, "batchfetch_server listening on port "))
        << line;
    port_ = std::atoi(std::string(rest).c_str());
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::BatchFetcher::NewStub(channel_);
  }

  std::string Log() const { return ReadFile(log_path_); }
  bool Logged(const std::string& event) const {
    return absl::StrContains(Log(), absl::StrCat("\"event\":\"", event, "\""));
  }

  // Runs the binary, stdout and stderr together, until it exits; its exit
  // code, and its lines in `*lines`.
  static int RunUntilExit(const std::vector<std::string>& flags,
                          std::vector<std::string>* lines) {
    std::vector<std::string> args = {"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1",
                                     BATCHFETCH_SERVER_BINARY,
                                     "--listen=127.0.0.1:0"};
    args.insert(args.end(), flags.begin(), flags.end());
    Child server(args, {"BATCHFETCH_MYSQL_PASSWORD=batchfetch"});
    std::string line;
    while (server.ReadLine(&line)) lines->push_back(line);
    return server.Wait();
  }

  // `SELECT COUNT(*), COUNT(DISTINCT idx)` of a batch's result rows in `db`
  // (the fixture's database), read directly; {-1, -1} when the query fails.
  std::pair<int, int> StoredRows(const LocalMariaDb& db,
                                 const std::string& batch_id) const {
    absl::StatusOr<std::string> out = db.Execute(
        absl::StrCat("SELECT COUNT(*), COUNT(DISTINCT idx) FROM fetch_results "
                     "WHERE batch_id = '",
                     batch_id, "'"),
        database_);
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return {-1, -1};
    std::vector<std::string> cells =
        absl::StrSplit(absl::StripAsciiWhitespace(*out), '\t');
    int rows = -1, distinct = -1;
    if (cells.size() != 2 || !absl::SimpleAtoi(cells[0], &rows) ||
        !absl::SimpleAtoi(cells[1], &distinct)) {
      return {-1, -1};
    }
    return {rows, distinct};
  }

  std::string log_path_;
};

// FetchBatch on its own thread; `accepted` and `results_seen` let the test
// act mid-batch.
class BackgroundFetch {
 public:
  BackgroundFetch(v1::BatchFetcher::Stub* stub, v1::FetchBatchRequest request,
                  int notify_after_results = 0)
      : thread_([this, stub, request, notify_after_results] {
          grpc::ClientContext context;
          context.set_deadline(
              absl::ToChronoTime(absl::Now() + absl::Seconds(90)));
          auto reader = stub->FetchBatch(&context, request);
          v1::FetchBatchEvent event;
          int results = 0;
          while (reader->Read(&event)) {
            out_.events.push_back(event);
            if (event.has_accepted() && notify_after_results == 0) {
              ready_.Notify();
            }
            if (event.has_result() && ++results == notify_after_results) {
              ready_.Notify();
            }
          }
          out_.status = reader->Finish();
          if (!ready_.HasBeenNotified()) ready_.Notify();
        }) {}
  ~BackgroundFetch() {
    if (thread_.joinable()) thread_.join();
  }
  // Accepted (or the given number of results arrived).
  bool WaitReady() {
    return ready_.WaitForNotificationWithTimeout(absl::Seconds(30));
  }
  const Streamed& Join() {
    thread_.join();
    return out_;
  }

 private:
  absl::Notification ready_;
  Streamed out_;
  std::thread thread_;
};

}  // namespace e2e
}  // namespace batchfetch

#endif  // BATCHFETCH_TESTS_SUPPORT_LOGGED_SERVER_H_

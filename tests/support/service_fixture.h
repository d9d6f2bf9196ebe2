// The end-to-end fixtures: a real BatchFetchServer in process
// (ServiceTest) or the real binary (BinaryTest), a real MariaDB and a real
// HTTP upstream, all on loopback. Each e2e test file includes this and is
// registered with batchfetch_e2e_test() (tests/CMakeLists.txt), which
// defines BATCHFETCH_SERVER_BINARY and BATCHFETCH_CLI_BINARY.
#ifndef BATCHFETCH_TESTS_SUPPORT_SERVICE_FIXTURE_H_
#define BATCHFETCH_TESTS_SUPPORT_SERVICE_FIXTURE_H_

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "batchfetch/v1/batchfetch.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "service/server/batchfetch_server.h"
#include "tests/support/local_mariadb.h"
#include "tests/support/proc_status.h"
#include "tests/support/test_upstream.h"

extern char** environ;

namespace batchfetch {
namespace e2e {

using testing::LocalMariaDb;
using testing::SharedMariaDb;
using testing::TestUpstream;

// What one FetchBatch call returned.
struct Streamed {
  std::vector<v1::FetchBatchEvent> events;
  grpc::Status status;

  std::map<uint32_t, v1::FetchResult> results() const {
    std::map<uint32_t, v1::FetchResult> by_index;
    for (const auto& e : events) {
      if (e.has_result()) by_index[e.result().index()] = e.result();
    }
    return by_index;
  }
  const v1::BatchSummary& summary() const { return events.back().summary(); }
  std::string batch_id() const {
    return events.empty() ? "" : events.front().accepted().batch_id();
  }
};

inline v1::FetchBatchRequest Batch(const std::vector<std::string>& urls,
                                   uint32_t concurrency = 0) {
  v1::FetchBatchRequest request;
  for (const auto& url : urls) request.add_requests()->set_url(url);
  request.set_concurrency(concurrency);
  return request;
}

inline std::string UniqueDatabase() {
  static std::atomic<int> counter{0};
  return absl::StrCat("batchfetch_test_", getpid(), "_", counter++);
}

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto upstream = TestUpstream::Start();
    ASSERT_TRUE(upstream.ok()) << upstream.status();
    upstream_ = *std::move(upstream);
    db_ = SharedMariaDb();
    database_ = UniqueDatabase();
  }

  ServerConfig Config(const LocalMariaDb* db = nullptr) {
    if (db == nullptr) db = db_;
    ServerConfig config;
    config.listen = "127.0.0.1:0";
    config.mysql.host = db->host();
    config.mysql.port = db->port();
    config.mysql.user = db->user();
    config.mysql.password = db->password();
    config.mysql.database = database_;
    config.mysql.startup_wait = absl::Seconds(10);
    config.mysql.retry_budget = absl::Seconds(5);
    return config;
  }

  void StartServer(const ServerConfig& config,
                   std::unique_ptr<ResultStore> store = nullptr) {
    auto server = BatchFetchServer::Start(config, std::move(store));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::BatchFetcher::NewStub(channel_);
  }

  // Runs FetchBatch to the end. `cancel_after` > 0 cancels the call once
  // that many results have arrived.
  Streamed Fetch(const v1::FetchBatchRequest& request,
                 absl::Duration deadline = absl::Seconds(60),
                 int cancel_after = 0) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
    Streamed out;
    auto reader = stub_->FetchBatch(&context, request);
    v1::FetchBatchEvent event;
    int results = 0;
    while (reader->Read(&event)) {
      out.events.push_back(event);
      if (event.has_result() && ++results == cancel_after) context.TryCancel();
    }
    out.status = reader->Finish();
    return out;
  }

  absl::StatusOr<v1::BatchSummary> GetBatch(const std::string& id) {
    grpc::ClientContext context;
    v1::GetBatchRequest request;
    request.set_batch_id(id);
    v1::BatchSummary summary;
    grpc::Status status = stub_->GetBatch(&context, request, &summary);
    if (!status.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          status.error_message());
    }
    return summary;
  }

  // Every stored result, paging with `page_size`.
  std::vector<v1::FetchResult> ListAll(const std::string& id,
                                       uint32_t page_size, int* pages) {
    std::vector<v1::FetchResult> all;
    std::string token;
    *pages = 0;
    do {
      grpc::ClientContext context;
      v1::ListResultsRequest request;
      request.set_batch_id(id);
      request.set_page_size(page_size);
      request.set_page_token(token);
      v1::ListResultsResponse response;
      grpc::Status status = stub_->ListResults(&context, request, &response);
      EXPECT_TRUE(status.ok()) << status.error_message();
      if (!status.ok()) break;
      ++*pages;
      for (const auto& r : response.results()) all.push_back(r);
      token = response.next_page_token();
    } while (!token.empty());
    return all;
  }

  std::unique_ptr<TestUpstream> upstream_;
  LocalMariaDb* db_ = nullptr;
  std::string database_;
  std::unique_ptr<BatchFetchServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::BatchFetcher::Stub> stub_;
};

inline void ExpectWellFormedStream(const Streamed& s, int total) {
  ASSERT_GE(s.events.size(), 2u);
  EXPECT_TRUE(s.events.front().has_accepted());
  EXPECT_EQ(s.events.front().accepted().total(), static_cast<uint32_t>(total));
  EXPECT_TRUE(s.events.back().has_summary());
  EXPECT_EQ(s.events.size(), static_cast<size_t>(total) + 2);
  EXPECT_EQ(s.results().size(), static_cast<size_t>(total));
}

// A child process with its stdout on a pipe.
class Child {
 public:
  Child(const std::vector<std::string>& args,
        const std::vector<std::string>& extra_env = {}) {
    int fds[2];
    EXPECT_EQ(pipe2(fds, O_CLOEXEC), 0);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::vector<std::string> env_strings(extra_env);
    for (char** e = environ; *e != nullptr; ++e) env_strings.push_back(*e);
    std::vector<char*> envp;
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      // Dies with the test process, so a failed test never leaves a server
      // holding CTest's output pipe open.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      dup2(fds[1], 1);
      execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    EXPECT_GT(pid_, 0);
    close(fds[1]);
    out_ = fdopen(fds[0], "r");
  }
  ~Child() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      Wait();
    }
    if (out_ != nullptr) fclose(out_);
  }
  // Next stdout line without the newline; false at EOF.
  bool ReadLine(std::string* line) {
    char* buf = nullptr;
    size_t cap = 0;
    ssize_t n = getline(&buf, &cap, out_);
    if (n >= 0) line->assign(buf, static_cast<size_t>(n));
    free(buf);
    if (n < 0) return false;
    if (!line->empty() && line->back() == '\n') line->pop_back();
    return true;
  }
  int Wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  FILE* out_ = nullptr;
};

class BinaryTest : public ServiceTest {
 protected:
  // The client's connection closes before the server is stopped: with one
  // open, the server's drain waits out gRPC's 5 s shutdown deadline, and
  // every test would pay for it.
  void TearDown() override {
    stub_.reset();
    channel_.reset();
    server_process_.reset();
    ServiceTest::TearDown();
  }

  // The binary denies internal destinations by default; the loopback
  // upstream is opened explicitly unless `open_loopback` is false.
  void StartServerBinary(std::vector<std::string> extra = {},
                         bool open_loopback = true) {
    std::vector<std::string> args = {
        BATCHFETCH_SERVER_BINARY, "--listen=127.0.0.1:0",
        absl::StrCat("--mysql_port=", db_->port()),
        absl::StrCat("--mysql_database=", database_)};
    if (open_loopback) args.push_back("--egress_allow_cidr=127.0.0.0/8");
    args.insert(args.end(), extra.begin(), extra.end());
    server_process_ = std::make_unique<Child>(
        args, std::vector<std::string>{"BATCHFETCH_MYSQL_PASSWORD=" +
                                       db_->password()});
    std::string& text = startup_line_;
    ASSERT_TRUE(server_process_->ReadLine(&text));
    absl::string_view line = text;
    ASSERT_TRUE(
        absl::ConsumePrefix(&line, "batchfetch_server listening on port "))
        << text;
    port_ = std::atoi(std::string(line).c_str());
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::BatchFetcher::NewStub(channel_);
  }

  // Runs the server binary (no store, any port) with `flags` when it must
  // stop before it listens: expects no start-up line and returns its exit
  // code.
  static int RunServerThatMustNotStart(const std::vector<std::string>& flags) {
    std::vector<std::string> args = {BATCHFETCH_SERVER_BINARY,
                                     "--listen=127.0.0.1:0", "--store=none"};
    args.insert(args.end(), flags.begin(), flags.end());
    Child server(args);
    std::string line;
    EXPECT_FALSE(server.ReadLine(&line)) << line;
    return server.Wait();
  }

  int64_t ServerRssKb() {
    return testing::ProcStatusKb(server_process_->pid(), "VmRSS:");
  }

  // Runs the CLI with `args` and, added to its environment, `env`
  // ("NAME=value"); returns its exit code and appends its stdout lines to
  // `*lines`.
  int RunCli(const std::vector<std::string>& args,
             std::vector<std::string>* lines,
             const std::vector<std::string>& env = {}) {
    std::vector<std::string> argv = {BATCHFETCH_CLI_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    Child cli(argv, env);
    std::string line;
    while (cli.ReadLine(&line)) lines->push_back(line);
    return cli.Wait();
  }

  std::unique_ptr<Child> server_process_;
  // The server's first stdout line ("batchfetch_server listening on port
  // N (store: ..., tls: ...)").
  std::string startup_line_;
  int port_ = 0;
};

}  // namespace e2e
}  // namespace batchfetch

#endif  // BATCHFETCH_TESTS_SUPPORT_SERVICE_FIXTURE_H_

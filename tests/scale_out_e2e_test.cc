// Scale-out, as on Kubernetes behind a headless Service, here on loopback:
// three real server processes share one MariaDB, and one gRPC channel with
// round_robin over their three addresses spreads batches across them. Each
// instance's /metrics shows that batches landed on every one; batch ids
// never collide; every instance serves GetBatch and ListResults for every
// batch, whichever ran it; the CLI reaches them through an ipv4: list. The
// instances' JSON logs carry one batch_accepted and one batch_finished
// line per batch (on the instance that ran it) and a server_started line
// without the database password. Also --retention on a running server.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/support/logged_server.h"
#include "tests/support/plain_http_client.h"
#include "tests/support/service_fixture.h"

namespace batchfetch::e2e {
namespace {

using testing::PlainHttpGet;

constexpr int kInstances = 3;
constexpr int kBatches = 12;

// One server process with its JSON log (stderr) in a file of its own.
struct Instance {
  std::unique_ptr<Child> process;
  std::string log_path;
  int port = 0;
  int metrics_port = 0;
  std::unique_ptr<v1::BatchFetcher::Stub> stub;  // to this instance only
};

class ScaleOutTest : public BinaryTest {
 protected:
  void TearDown() override {
    // All three drain at once; then each is waited for.
    for (Instance& instance : instances_) {
      instance.stub.reset();
      kill(instance.process->pid(), SIGTERM);
    }
    for (Instance& instance : instances_) {
      instance.process->Wait();
      instance.process.reset();
      unlink(instance.log_path.c_str());
    }
  }

  void StartInstance() {
    Instance instance;
    char path[] = "/tmp/batchfetch_scale_out_log_XXXXXX";
    const int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    close(fd);
    instance.log_path = path;
    // `exec` keeps the pid, so the destructor's SIGTERM reaches the server.
    instance.process = std::make_unique<Child>(
        std::vector<std::string>{
            "/bin/sh", "-c",
            absl::StrCat("exec \"$0\" \"$@\" 2>>", instance.log_path),
            BATCHFETCH_SERVER_BINARY, "--listen=127.0.0.1:0",
            "--metrics_listen=127.0.0.1:0",
            absl::StrCat("--mysql_port=", db_->port()),
            absl::StrCat("--mysql_database=", database_),
            "--egress_allow_cidr=127.0.0.0/8"},
        std::vector<std::string>{"BATCHFETCH_MYSQL_PASSWORD=" +
                                 db_->password()});
    // "batchfetch_server listening on port N (..., metrics port M)"
    std::string line;
    ASSERT_TRUE(instance.process->ReadLine(&line))
        << ReadFile(instance.log_path);
    absl::string_view rest = line;
    ASSERT_TRUE(
        absl::ConsumePrefix(&rest, "batchfetch_server listening on port "))
        << line;
    instance.port = std::atoi(std::string(rest).c_str());
    const size_t at = line.find("metrics port ");
    ASSERT_NE(at, std::string::npos) << line;
    instance.metrics_port =
        std::atoi(line.substr(at + strlen("metrics port ")).c_str());
    ASSERT_GT(instance.port, 0) << line;
    ASSERT_GT(instance.metrics_port, 0) << line;
    instance.stub = v1::BatchFetcher::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", instance.port),
                            grpc::InsecureChannelCredentials()));
    instances_.push_back(std::move(instance));
  }

  // "ipv4:127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"
  std::string AddressList() const {
    std::vector<std::string> addresses;
    for (const Instance& instance : instances_) {
      addresses.push_back(absl::StrCat("127.0.0.1:", instance.port));
    }
    return absl::StrCat("ipv4:", absl::StrJoin(addresses, ","));
  }

  // The sum of batchfetch_batches_total over its states on one instance.
  double BatchesCounted(const Instance& instance) {
    auto response = PlainHttpGet(instance.metrics_port, "/metrics");
    EXPECT_TRUE(response.ok()) << response.status();
    if (!response.ok()) return -1;
    double sum = 0;
    for (absl::string_view line : absl::StrSplit(response->body, '\n')) {
      if (!absl::ConsumePrefix(&line, "batchfetch_batches_total{")) continue;
      double value = 0;
      const size_t space = line.rfind(' ');
      EXPECT_TRUE(absl::SimpleAtod(line.substr(space + 1), &value)) << line;
      sum += value;
    }
    return sum;
  }

  // The log lines of `instance` that are event `event` and mention `text`.
  static std::vector<std::string> LogLines(const Instance& instance,
                                           const std::string& event,
                                           const std::string& text = "") {
    std::vector<std::string> found;
    for (absl::string_view line :
         absl::StrSplit(ReadFile(instance.log_path), '\n')) {
      if (absl::StrContains(line, absl::StrCat("\"event\":\"", event, "\"")) &&
          absl::StrContains(line, text)) {
        found.emplace_back(line);
      }
    }
    return found;
  }

  std::vector<Instance> instances_;
};

TEST_F(ScaleOutTest, RoundRobinSpreadsBatchesOverThreeInstancesSharingOneDb) {
  for (int i = 0; i < kInstances; ++i) {
    StartInstance();
    if (HasFatalFailure()) return;
  }

  // One channel over the three addresses, as the CLI makes it.
  grpc::ChannelArguments args;
  args.SetLoadBalancingPolicyName("round_robin");
  auto channel = grpc::CreateCustomChannel(
      AddressList(), grpc::InsecureChannelCredentials(), args);
  ASSERT_TRUE(channel->WaitForConnected(
      absl::ToChronoTime(absl::Now() + absl::Seconds(10))));
  auto stub = v1::BatchFetcher::NewStub(channel);

  std::set<std::string> ids;
  for (int i = 0; i < kBatches; ++i) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    auto reader = stub->FetchBatch(
        &context,
        Batch({upstream_->Url(absl::StrCat("/a?batch=", i, "&n=0")),
               upstream_->Url(absl::StrCat("/a?batch=", i, "&n=1"))}));
    Streamed out;
    v1::FetchBatchEvent event;
    while (reader->Read(&event)) out.events.push_back(event);
    out.status = reader->Finish();
    ASSERT_TRUE(out.status.ok()) << out.status.error_message();
    ExpectWellFormedStream(out, 2);
    EXPECT_EQ(out.summary().state(), v1::BATCH_STATE_DONE);
    EXPECT_TRUE(ids.insert(out.batch_id()).second)
        << "batch id " << out.batch_id() << " issued twice";
  }
  EXPECT_EQ(ids.size(), static_cast<size_t>(kBatches));

  // Every instance ran some; together exactly the batches sent.
  double total = 0;
  for (const Instance& instance : instances_) {
    const double counted = BatchesCounted(instance);
    EXPECT_GE(counted, 1) << "no batch on the instance at port "
                          << instance.port;
    total += counted;
  }
  EXPECT_EQ(total, kBatches);

  // Any instance answers for any batch, from the shared database.
  for (const std::string& id : ids) {
    for (const Instance& instance : instances_) {
      grpc::ClientContext get_context;
      v1::GetBatchRequest get;
      get.set_batch_id(id);
      v1::BatchSummary summary;
      grpc::Status status =
          instance.stub->GetBatch(&get_context, get, &summary);
      ASSERT_TRUE(status.ok()) << status.error_message();
      EXPECT_EQ(summary.state(), v1::BATCH_STATE_DONE);
      EXPECT_EQ(summary.stored(), 2u);
      grpc::ClientContext list_context;
      v1::ListResultsRequest list;
      list.set_batch_id(id);
      v1::ListResultsResponse page;
      status = instance.stub->ListResults(&list_context, list, &page);
      ASSERT_TRUE(status.ok()) << status.error_message();
      EXPECT_EQ(page.results_size(), 2);
    }
  }

  // Logs: each batch accepted and finished once, on the instance that ran
  // it, with its fields; no line per result at info level.
  for (const std::string& id : ids) {
    int accepted = 0;
    int finished = 0;
    for (const Instance& instance : instances_) {
      const auto accepted_lines = LogLines(instance, "batch_accepted", id);
      const auto finished_lines = LogLines(instance, "batch_finished", id);
      EXPECT_EQ(accepted_lines.size(), finished_lines.size()) << id;
      for (const std::string& line : accepted_lines) {
        ++accepted;
        for (const char* field :
             {"\"level\":\"info\"", "\"total\":2",
              "\"concurrency\":", "\"resume\":false", "\"owner\":\"\""}) {
          EXPECT_TRUE(absl::StrContains(line, field)) << field << ": " << line;
        }
      }
      for (const std::string& line : finished_lines) {
        ++finished;
        for (const char* field :
             {"\"level\":\"info\"", "\"state\":\"done\"", "\"total\":2",
              "\"succeeded\":2", "\"failed\":0", "\"stored\":2",
              "\"spooled\":0", "\"duration_ms\":"}) {
          EXPECT_TRUE(absl::StrContains(line, field)) << field << ": " << line;
        }
      }
    }
    EXPECT_EQ(accepted, 1) << id;
    EXPECT_EQ(finished, 1) << id;
  }
  for (const Instance& instance : instances_) {
    const std::string log = ReadFile(instance.log_path);
    EXPECT_FALSE(absl::StrContains(log, "/a?batch=")) << log;
    const auto started = LogLines(instance, "server_started");
    ASSERT_EQ(started.size(), 1u) << log;
    EXPECT_TRUE(absl::StrContains(
        started[0], absl::StrCat("\"port\":", instance.port, ",")))
        << started[0];
    EXPECT_TRUE(absl::StrContains(started[0], "\"mysql_password_set\":true"))
        << started[0];
    // The only password field says whether one is set (the test
    // database's password is also its user's name, so look at keys).
    const std::vector<absl::string_view> around_password =
        absl::StrSplit(log, "password");
    EXPECT_EQ(around_password.size(), 2u) << log;
  }

  // The CLI, given the same list, reaches them too.
  std::vector<std::string> lines;
  EXPECT_EQ(RunCli({"fetch", "--quiet", "--summary-json",
                    "--server=" + AddressList(), upstream_->Url("/a?cli=1")},
                   &lines),
            0);
  ASSERT_EQ(lines.size(), 2u) << absl::StrJoin(lines, "\n");
  EXPECT_TRUE(absl::StrContains(lines[0], "\"outcome\":\"ok\"")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[1], "\"state\":\"done\"")) << lines[1];
  // The twelve batches and the CLI's, each stored once.
  absl::StatusOr<std::string> stored =
      db_->Execute("SELECT COUNT(*) FROM batches", database_);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(absl::StripAsciiWhitespace(*stored), "13");
}

// --retention wired into the server: a replica started with it deletes, in
// its first pass at start, a batch that finished long ago, and keeps a
// recent one.
class RetentionE2eTest : public ServiceTest {};

TEST_F(RetentionE2eTest, AReplicaWithRetentionDeletesOldBatchesAtStart) {
  StartServer(Config());
  const Streamed old_batch = Fetch(Batch({upstream_->Url("/a?n=1")}));
  const Streamed recent = Fetch(Batch({upstream_->Url("/a?n=2")}));
  ASSERT_TRUE(old_batch.status.ok()) << old_batch.status.error_message();
  ASSERT_TRUE(recent.status.ok()) << recent.status.error_message();
  server_.reset();
  ASSERT_TRUE(db_->Execute(absl::StrCat("UPDATE batches SET finished_at = "
                                        "NOW(6) - INTERVAL 40 DAY WHERE "
                                        "batch_id = '",
                                        old_batch.batch_id(), "'"),
                           database_)
                  .ok());

  ServerConfig config = Config();
  config.retention = absl::Hours(24 * 30);
  StartServer(config);
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (GetBatch(old_batch.batch_id()).ok() && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(absl::IsNotFound(GetBatch(old_batch.batch_id()).status()));
  int pages = 0;
  EXPECT_EQ(ListAll(recent.batch_id(), 10, &pages).size(), 1u);
  absl::StatusOr<std::string> rows = db_->Execute(
      absl::StrCat("SELECT COUNT(*) FROM fetch_results WHERE batch_id = '",
                   old_batch.batch_id(), "'"),
      database_);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(absl::StripAsciiWhitespace(*rows), "0");
}

}  // namespace
}  // namespace batchfetch::e2e

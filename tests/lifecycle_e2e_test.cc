// The server's lifecycle, end to end: health from our own grpc.health.v1
// (also through the real grpcurl, reflection only), health through a MariaDB
// outage (a private instance stopped and started), the drain on SIGTERM
// (NOT_SERVING with the port open, UNAVAILABLE "draining" for new batches,
// running batches finishing within --shutdown_grace or ending CANCELLED with
// every result stored) and fail-fast start-up.
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/support/grpcurl.h"
#include "tests/support/logged_server.h"
#include "tests/support/service_fixture.h"

namespace batchfetch {
namespace e2e {
namespace {

using LifecycleTest = LoggedServerTest;

// --- Health, served from our own generated grpc.health.v1 ---------------

TEST_F(ServiceTest, HealthAnswersServingForTheServerAndTheBatchFetcher) {
  StartServer(Config());
  for (const std::string service : {"", "batchfetch.v1.BatchFetcher"}) {
    absl::StatusOr<HealthCheckResponse::ServingStatus> status =
        CheckHealth(server_->port(), service);
    ASSERT_TRUE(status.ok()) << service << ": " << status.status();
    EXPECT_EQ(*status, HealthCheckResponse::SERVING) << service;
  }
  absl::StatusOr<HealthCheckResponse::ServingStatus> unknown =
      CheckHealth(server_->port(), "no.such.Service");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ServiceTest, HealthWatchSendsServingThenNotServingWhenTheDrainStarts) {
  StartServer(Config());
  auto stub = Health::NewStub(channel_);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  HealthCheckRequest request;
  request.set_service("batchfetch.v1.BatchFetcher");
  auto reader = stub->Watch(&context, request);
  HealthCheckResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
  std::thread drain([this] { server_->Shutdown(absl::ZeroDuration()); });
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_FALSE(reader->Read(&response));
  grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << status.error_message();
  drain.join();
}

TEST_F(ServiceTest, HealthWatchOfAnUnknownServiceSaysServiceUnknown) {
  StartServer(Config());
  auto stub = Health::NewStub(channel_);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  HealthCheckRequest request;
  request.set_service("no.such.Service");
  auto reader = stub->Watch(&context, request);
  HealthCheckResponse response;
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVICE_UNKNOWN);
  context.TryCancel();
  while (reader->Read(&response)) {
  }
  reader->Finish();
}

// --- grpcurl, reflection only (issue 11) ---------------------------------

class GrpcurlTest : public ServiceTest {
 protected:
  void SetUp() override {
    grpcurl_ = FindGrpcurl();
    if (grpcurl_.empty()) {
      GTEST_SKIP() << kNoGrpcurl;
    }
    ServiceTest::SetUp();
    StartServer(Config());
  }
  // grpcurl -plaintext `args` against the server; exit code, output.
  int Grpcurl(const std::string& args, std::string* output) {
    return RunCommand(absl::StrCat(grpcurl_, " -plaintext -max-time 10 ", args,
                                   " 127.0.0.1:", server_->port(), " ", rest_),
                      output);
  }
  int Grpcurl(const std::string& args, const std::string& rest,
              std::string* output) {
    rest_ = rest;
    int code = Grpcurl(args, output);
    rest_.clear();
    return code;
  }

  std::string grpcurl_;
  std::string rest_;
};

TEST_F(GrpcurlTest, ListShowsTheHealthAndBatchFetcherServices) {
  std::string output;
  ASSERT_EQ(Grpcurl("", "list", &output), 0) << output;
  EXPECT_TRUE(absl::StrContains(output, "grpc.health.v1.Health")) << output;
  EXPECT_TRUE(absl::StrContains(output, "batchfetch.v1.BatchFetcher"))
      << output;
}

TEST_F(GrpcurlTest, ABareDescribeSucceeds) {
  std::string output;
  EXPECT_EQ(Grpcurl("", "describe", &output), 0) << output;
  EXPECT_TRUE(absl::StrContains(output, "rpc Check")) << output;
}

TEST_F(GrpcurlTest, DescribesTheHealthService) {
  std::string output;
  ASSERT_EQ(Grpcurl("", "describe grpc.health.v1.Health", &output), 0)
      << output;
  EXPECT_TRUE(absl::StrContains(output, "rpc Watch")) << output;
}

TEST_F(GrpcurlTest, CallsHealthCheckByName) {
  std::string output;
  ASSERT_EQ(Grpcurl("", "grpc.health.v1.Health/Check", &output), 0) << output;
  EXPECT_TRUE(absl::StrContains(output, "\"SERVING\"")) << output;
  output.clear();
  ASSERT_EQ(Grpcurl("-d '{\"service\":\"batchfetch.v1.BatchFetcher\"}'",
                    "grpc.health.v1.Health/Check", &output),
            0)
      << output;
  EXPECT_TRUE(absl::StrContains(output, "\"SERVING\"")) << output;
}

// --- The drain on SIGTERM ------------------------------------------------

TEST_F(LifecycleTest, SigtermLetsARunningBatchFinishWithinTheGrace) {
  StartLoggedServer({"--shutdown_grace=30s"});
  std::vector<std::string> urls;
  for (int i = 0; i < 3; ++i) {
    urls.push_back(upstream_->Url(absl::StrCat("/slow?delay_ms=3000&n=", i)));
  }
  BackgroundFetch running(stub_.get(), Batch(urls, 3));
  ASSERT_TRUE(running.WaitReady());
  ASSERT_EQ(kill(server_process_->pid(), SIGTERM), 0);

  // NOT_SERVING at once, answered on the port that stays open.
  std::optional<absl::Duration> not_serving = TimeUntilHealth(
      port_, HealthCheckResponse::NOT_SERVING, absl::Seconds(2));
  ASSERT_TRUE(not_serving.has_value()) << "still SERVING after SIGTERM";

  // A new batch is refused, saying why.
  auto other = v1::BatchFetcher::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  auto reader = other->FetchBatch(&context, Batch({upstream_->Url("/")}));
  v1::FetchBatchEvent event;
  EXPECT_FALSE(reader->Read(&event));
  grpc::Status refused = reader->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(absl::StrContains(refused.error_message(), "draining"))
      << refused.error_message();

  // The running batch finishes normally.
  const Streamed& done = running.Join();
  EXPECT_TRUE(done.status.ok()) << done.status.error_message();
  ExpectWellFormedStream(done, 3);
  for (const auto& [index, result] : done.results()) {
    EXPECT_EQ(result.outcome(), v1::OUTCOME_OK) << index;
  }
  EXPECT_EQ(done.summary().state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(server_process_->Wait(), 0);
  EXPECT_TRUE(Logged("drain_started")) << Log();
  EXPECT_TRUE(Logged("drain_finished")) << Log();
}

TEST_F(LifecycleTest, AfterTheGraceRunningBatchesEndCancelledAndAllIsStored) {
  StartLoggedServer({"--shutdown_grace=1s"});
  std::vector<std::string> urls;
  for (int i = 0; i < 2; ++i) urls.push_back(upstream_->Url("/fast?n=1"));
  for (int i = 0; i < 3; ++i) {
    urls.push_back(upstream_->Url(absl::StrCat("/slow?delay_ms=60000&n=", i)));
  }
  v1::FetchBatchRequest request = Batch(urls, 5);
  request.mutable_timeout()->set_seconds(120);
  BackgroundFetch running(stub_.get(), request, /*notify_after_results=*/2);
  ASSERT_TRUE(running.WaitReady());
  const absl::Time signalled = absl::Now();
  ASSERT_EQ(kill(server_process_->pid(), SIGTERM), 0);

  const Streamed& done = running.Join();
  EXPECT_LT(absl::Now() - signalled, absl::Seconds(20));
  // CANCELLED, as the README promises, with every result and the summary
  // (not gRPC's "Cancelling all calls").
  EXPECT_EQ(done.status.error_code(), grpc::StatusCode::CANCELLED)
      << done.status.error_message();
  ExpectWellFormedStream(done, 5);
  std::map<uint32_t, v1::FetchResult> results = done.results();
  for (uint32_t i = 0; i < 5; ++i) {
    ASSERT_EQ(results.count(i), 1u) << i;
    EXPECT_EQ(results[i].outcome(),
              i < 2 ? v1::OUTCOME_OK : v1::OUTCOME_CANCELLED)
        << i;
  }
  EXPECT_EQ(done.summary().state(), v1::BATCH_STATE_CANCELLED);
  EXPECT_EQ(server_process_->Wait(), 0);

  // Nothing streamed is missing from the database.
  const std::string id = done.batch_id();
  absl::StatusOr<std::string> rows = db_->Execute(
      absl::StrCat("SELECT COUNT(*) FROM fetch_results WHERE batch_id = '", id,
                   "'"),
      database_);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(*rows, "5\n");
  absl::StatusOr<std::string> state = db_->Execute(
      absl::StrCat("SELECT state FROM batches WHERE batch_id = '", id, "'"),
      database_);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(*state, absl::StrCat(v1::BATCH_STATE_CANCELLED, "\n"));
  EXPECT_TRUE(Logged("drain_finished")) << Log();
}

TEST_F(LifecycleTest, LogLevelErrorDropsTheInfoLinesOfTheDrain) {
  StartLoggedServer({"--log_level=error"});
  ASSERT_EQ(kill(server_process_->pid(), SIGTERM), 0);
  EXPECT_EQ(server_process_->Wait(), 0);
  EXPECT_FALSE(Logged("drain_started")) << Log();
  EXPECT_FALSE(Logged("drain_finished")) << Log();
}

TEST_F(LifecycleTest, LogLevelInfoKeepsThem) {
  StartLoggedServer({"--log_level=info"});
  ASSERT_EQ(kill(server_process_->pid(), SIGTERM), 0);
  EXPECT_EQ(server_process_->Wait(), 0);
  EXPECT_TRUE(Logged("drain_started")) << Log();
}

// --- Health through a database outage ------------------------------------

TEST_F(LifecycleTest, HealthFollowsThePrivateDatabaseGoingAwayAndComingBack) {
  auto db = LocalMariaDb::Start(BATCHFETCH_SOURCE_DIR);
  ASSERT_TRUE(db.ok()) << db.status();
  StartLoggedServer({"--mysql_io_timeout=3s"}, db->get());
  ASSERT_TRUE(
      TimeUntilHealth(port_, HealthCheckResponse::SERVING, absl::Seconds(5))
          .has_value());
  const std::string script =
      absl::StrCat(BATCHFETCH_SOURCE_DIR, "/scripts/mariadb-local.sh");
  std::string output;
  ASSERT_EQ(RunCommand(absl::StrCat("bash ", script, " stop ", (*db)->dir()),
                       &output),
            0)
      << output;
  std::optional<absl::Duration> down = TimeUntilHealth(
      port_, HealthCheckResponse::NOT_SERVING, absl::Seconds(5));
  ASSERT_TRUE(down.has_value()) << "still SERVING 5 s after MySQL stopped";
  std::printf("NOT_SERVING %.1f s after MySQL stopped\n",
              absl::ToDoubleSeconds(*down));
  EXPECT_TRUE(Logged("database_unreachable")) << Log();

  output.clear();
  ASSERT_EQ(RunCommand(absl::StrCat("BATCHFETCH_MARIADB_OWNER_PID=", getpid(),
                                    " bash ", script, " start ", (*db)->dir(),
                                    " ", (*db)->port()),
                       &output),
            0)
      << output;
  std::optional<absl::Duration> up =
      TimeUntilHealth(port_, HealthCheckResponse::SERVING, absl::Seconds(5));
  ASSERT_TRUE(up.has_value()) << "not SERVING 5 s after MySQL came back";
  std::printf("SERVING %.1f s after MySQL came back\n",
              absl::ToDoubleSeconds(*up));
  EXPECT_TRUE(Logged("database_reachable")) << Log();
  // And batches work again.
  Streamed after = Fetch(Batch({upstream_->Url("/?n=1")}));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
}

// --- Fail-fast start-up --------------------------------------------------

// `docker run IMAGE batchfetch fetch URL` must not silently start a server.
TEST_F(LifecycleTest, AStrayPositionalArgumentStopsStartUpAsAUsageError) {
  EXPECT_EQ(RunServerThatMustNotStart({"fetch", "https://example.com/"}), 2);
}

TEST_F(LifecycleTest, StartUpFailsFastWhenTheDatabaseIsUnreachable) {
  std::vector<std::string> lines;
  const absl::Time start = absl::Now();
  int code = RunUntilExit(
      {absl::StrCat("--mysql_port=", ClosedPort()), "--mysql_startup_wait=1s"},
      &lines);
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));
  EXPECT_EQ(code, 1);
  const std::string all = absl::StrJoin(lines, "\n");
  EXPECT_TRUE(
      absl::StrContains(all, "is unreachable after --mysql_startup_wait=1s"))
      << all;
  EXPECT_FALSE(absl::StrContains(all, "listening on port")) << all;
}

TEST_F(LifecycleTest, StartUpFailsWhenTheSchemaIsNewerThanTheBinary) {
  const int future = MysqlResultStore::LatestSchemaVersion() + 1;
  absl::StatusOr<std::string> made = db_->Execute(absl::StrCat(
      "CREATE DATABASE `", database_, "`; USE `", database_,
      "`; CREATE TABLE schema_migrations (version INT NOT NULL PRIMARY KEY, "
      "description VARCHAR(255) NOT NULL, applied_at DATETIME(6) NOT NULL); "
      "INSERT INTO schema_migrations VALUES (",
      future, ", 'from a newer build', NOW(6))"));
  ASSERT_TRUE(made.ok()) << made.status();
  std::vector<std::string> lines;
  int code = RunUntilExit({absl::StrCat("--mysql_port=", db_->port()),
                           absl::StrCat("--mysql_database=", database_)},
                          &lines);
  EXPECT_EQ(code, 1);
  const std::string all = absl::StrJoin(lines, "\n");
  EXPECT_TRUE(absl::StrContains(all, "newer than this build")) << all;
  EXPECT_FALSE(absl::StrContains(all, "listening on port")) << all;
}

}  // namespace
}  // namespace e2e
}  // namespace batchfetch

// Nothing lost while MySQL is away (issue 9), end to end: the real server
// binary with --spool_dir against a private MariaDB that is killed (SIGKILL)
// mid-batch and started again, a drain on SIGTERM while it is down, and a
// spool too small for the outage.

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "tests/support/logged_server.h"
#include "tests/support/service_fixture.h"

namespace batchfetch {
namespace e2e {
namespace {

class OutageTest : public LoggedServerTest {
 protected:
  void SetUp() override {
    LoggedServerTest::SetUp();
    auto db = LocalMariaDb::Start(BATCHFETCH_SOURCE_DIR);
    ASSERT_TRUE(db.ok()) << db.status();
    private_db_ = *std::move(db);
    char dir[] = "/tmp/batchfetch_spool_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    spool_dir_ = dir;
  }
  void TearDown() override {
    LoggedServerTest::TearDown();
    private_db_.reset();
    std::filesystem::remove_all(spool_dir_);
  }

  void StartSpoolingServer(std::vector<std::string> extra = {}) {
    extra.push_back("--spool_dir=" + spool_dir_);
    extra.push_back("--store_retry_budget=3s");
    extra.push_back("--mysql_io_timeout=3s");
    StartLoggedServer(extra, private_db_.get());
  }

  // SIGKILL: no clean shutdown, connections die with it.
  void KillDatabase() {
    std::ifstream pidfile(private_db_->dir() + "/mysqld.pid");
    int pid = 0;
    ASSERT_TRUE(pidfile >> pid) << "no mysqld.pid";
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    for (int i = 0; i < 100 && kill(pid, 0) == 0; ++i) {
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
  void StartDatabaseAgain() {
    std::string output;
    ASSERT_EQ(
        RunCommand(absl::StrCat("BATCHFETCH_MARIADB_OWNER_PID=", getpid(),
                                " bash ", BATCHFETCH_SOURCE_DIR,
                                "/scripts/mariadb-local.sh start ",
                                private_db_->dir(), " ", private_db_->port()),
                   &output),
        0)
        << output;
  }

  // Polls GetBatch until `done` accepts the summary; the last one seen.
  v1::BatchSummary WaitForBatch(
      const std::string& batch_id,
      const std::function<bool(const v1::BatchSummary&)>& done,
      absl::Duration within) {
    v1::BatchSummary summary;
    const absl::Time until = absl::Now() + within;
    while (absl::Now() < until) {
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
      v1::GetBatchRequest request;
      request.set_batch_id(batch_id);
      if (stub_->GetBatch(&context, request, &summary).ok() && done(summary)) {
        break;
      }
      absl::SleepFor(absl::Milliseconds(200));
    }
    return summary;
  }

  static v1::FetchBatchRequest SlowBatch(const TestUpstream& upstream, int n,
                                         int delay_ms, int bytes = 0) {
    std::vector<std::string> urls;
    for (int i = 0; i < n; ++i) {
      urls.push_back(upstream.Url(absl::StrCat(
          "/r", i, "?delay_ms=", delay_ms,
          bytes > 0 ? absl::StrCat("&bytes=", bytes) : std::string())));
    }
    v1::FetchBatchRequest request = Batch(urls);
    request.set_concurrency(32);
    return request;
  }

  std::unique_ptr<LocalMariaDb> private_db_;
  std::string spool_dir_;
};

// The "short outage": 2,000 URLs, MariaDB killed mid-batch for 8 s
// with a 3 s retry budget. The call ends OK, every index is stored exactly
// once, and the batch ends DONE with stored == total.
TEST_F(OutageTest, AnOutageLongerThanTheRetryBudgetLosesNothing) {
  StartSpoolingServer();
  const int kUrls = 2000;
  BackgroundFetch fetch(stub_.get(), SlowBatch(*upstream_, kUrls, 60),
                        /*notify_after_results=*/300);
  ASSERT_TRUE(fetch.WaitReady());
  KillDatabase();
  absl::SleepFor(absl::Seconds(6));
  // The spool has room: still ready (new batches can start).
  absl::StatusOr<HealthCheckResponse::ServingStatus> health =
      CheckHealth(port_);
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, HealthCheckResponse::SERVING);
  EXPECT_TRUE(Logged("database_unreachable")) << Log();
  absl::SleepFor(absl::Seconds(2));
  StartDatabaseAgain();
  const Streamed& streamed = fetch.Join();
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  EXPECT_EQ(streamed.results().size(), static_cast<size_t>(kUrls));
  const v1::BatchSummary& summary = streamed.summary();
  EXPECT_EQ(summary.state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(summary.stored() + summary.spooled(), static_cast<uint32_t>(kUrls));
  EXPECT_GT(summary.spooled(), 0u) << "the outage was not long enough";
  std::printf("stored %u, spooled %u at the end of the call\n",
              summary.stored(), summary.spooled());
  EXPECT_TRUE(Logged("store_spooling")) << Log();

  const v1::BatchSummary replayed = WaitForBatch(
      streamed.batch_id(),
      [&](const v1::BatchSummary& s) {
        return s.state() == v1::BATCH_STATE_DONE &&
               s.stored() == static_cast<uint32_t>(kUrls);
      },
      absl::Seconds(30));
  EXPECT_EQ(replayed.state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(replayed.stored(), static_cast<uint32_t>(kUrls));
  EXPECT_EQ(replayed.spooled(), 0u);
  EXPECT_EQ(StoredRows(*private_db_, streamed.batch_id()),
            std::make_pair(kUrls, kUrls));
  EXPECT_TRUE(Logged("spool_replayed")) << Log();
}

// A batch can start while MySQL is away: its row is spooled too, and replay
// creates it before its results.
TEST_F(OutageTest, ABatchStartedWhileTheDatabaseIsDownIsStoredWhenItReturns) {
  StartSpoolingServer();
  KillDatabase();
  Streamed streamed = Fetch(SlowBatch(*upstream_, 20, 0));
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  EXPECT_EQ(streamed.summary().state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(streamed.summary().spooled(), 20u);
  EXPECT_TRUE(Logged("batch_created_in_spool")) << Log();
  // Reads come from MySQL only.
  grpc::ClientContext context;
  v1::GetBatchRequest get;
  get.set_batch_id(streamed.batch_id());
  v1::BatchSummary ignored;
  EXPECT_EQ(stub_->GetBatch(&context, get, &ignored).error_code(),
            grpc::StatusCode::UNAVAILABLE);

  StartDatabaseAgain();
  const v1::BatchSummary replayed = WaitForBatch(
      streamed.batch_id(),
      [](const v1::BatchSummary& s) { return s.stored() == 20; },
      absl::Seconds(30));
  EXPECT_EQ(replayed.state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(replayed.stored(), 20u);
  EXPECT_EQ(StoredRows(*private_db_, streamed.batch_id()),
            std::make_pair(20, 20));
}

// SIGTERM while MySQL is away: the drain spools instead of retrying, the
// process exits 0 within the grace plus a few seconds, and the next start
// replays everything that was streamed.
TEST_F(OutageTest, ADrainWithTheDatabaseDownSpoolsAndTheNextStartReplays) {
  StartSpoolingServer({"--shutdown_grace=2s"});
  BackgroundFetch fetch(stub_.get(), SlowBatch(*upstream_, 400, 100),
                        /*notify_after_results=*/50);
  ASSERT_TRUE(fetch.WaitReady());
  KillDatabase();
  absl::SleepFor(absl::Seconds(1));
  const absl::Time term = absl::Now();
  ASSERT_EQ(kill(server_process_->pid(), SIGTERM), 0);
  EXPECT_EQ(server_process_->Wait(), 0);
  const absl::Duration took = absl::Now() - term;
  std::printf("exited %.1f s after SIGTERM\n", absl::ToDoubleSeconds(took));
  EXPECT_LT(took, absl::Seconds(2 + 8)) << "grace 2 s";
  const Streamed& streamed = fetch.Join();
  const std::string batch_id = streamed.batch_id();
  ASSERT_FALSE(batch_id.empty());
  std::set<uint32_t> seen;
  for (const auto& [index, result] : streamed.results()) seen.insert(index);
  ASSERT_FALSE(seen.empty());
  std::printf("%zu results streamed before the exit\n", seen.size());

  StartDatabaseAgain();
  server_process_.reset();
  StartSpoolingServer();  // replays the spool before serving
  EXPECT_TRUE(Logged("spool_replayed")) << Log();
  const std::pair<int, int> rows = StoredRows(*private_db_, batch_id);
  EXPECT_EQ(rows.first, rows.second) << "a duplicate row";
  absl::StatusOr<std::string> indices = private_db_->Execute(
      absl::StrCat("SELECT idx FROM fetch_results WHERE batch_id = '", batch_id,
                   "'"),
      database_);
  ASSERT_TRUE(indices.ok()) << indices.status();
  std::set<uint32_t> stored;
  for (absl::string_view line : absl::StrSplit(*indices, '\n')) {
    uint32_t idx = 0;
    if (absl::SimpleAtoi(line, &idx)) stored.insert(idx);
  }
  for (uint32_t idx : seen) {
    EXPECT_EQ(stored.count(idx), 1u)
        << "streamed result " << idx << " is not in the database";
  }
  const v1::BatchSummary summary = WaitForBatch(
      batch_id, [](const v1::BatchSummary&) { return true; }, absl::Seconds(5));
  EXPECT_NE(summary.state(), v1::BATCH_STATE_RUNNING);
}

// A spool too small for the outage: the running batch stops taking new
// transfers instead of dropping anything, new batches get UNAVAILABLE and
// health says NOT_SERVING; once MySQL is back everything is stored.
TEST_F(OutageTest, AFullSpoolRefusesNewBatchesAndLosesNothing) {
  StartSpoolingServer({"--spool_max_bytes=1048576"});
  const int kUrls = 300;
  // 300 bodies of 8 KiB: about 2.4 MB for a 1 MiB spool.
  BackgroundFetch fetch(stub_.get(), SlowBatch(*upstream_, kUrls, 20, 8192),
                        /*notify_after_results=*/10);
  ASSERT_TRUE(fetch.WaitReady());
  KillDatabase();
  const absl::Time until = absl::Now() + absl::Seconds(40);
  while (!Logged("spool_full") && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_TRUE(Logged("spool_full")) << Log();
  std::optional<absl::Duration> not_serving = TimeUntilHealth(
      port_, HealthCheckResponse::NOT_SERVING, absl::Seconds(5));
  EXPECT_TRUE(not_serving.has_value()) << "a full spool must make it unready";
  Streamed refused = Fetch(SlowBatch(*upstream_, 1, 0));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << refused.status.error_message();

  StartDatabaseAgain();
  const Streamed& streamed = fetch.Join();
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  EXPECT_EQ(streamed.summary().state(), v1::BATCH_STATE_DONE);
  const v1::BatchSummary replayed = WaitForBatch(
      streamed.batch_id(),
      [&](const v1::BatchSummary& s) {
        return s.stored() == static_cast<uint32_t>(kUrls);
      },
      absl::Seconds(30));
  EXPECT_EQ(replayed.stored(), static_cast<uint32_t>(kUrls));
  EXPECT_EQ(StoredRows(*private_db_, streamed.batch_id()),
            std::make_pair(kUrls, kUrls));
  EXPECT_TRUE(
      TimeUntilHealth(port_, HealthCheckResponse::SERVING, absl::Seconds(15))
          .has_value());
}

}  // namespace
}  // namespace e2e
}  // namespace batchfetch

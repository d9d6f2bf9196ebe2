// A COMMIT whose answer is lost (issue 9, "Lost COMMIT"), end to end: the
// real server binary talks to MariaDB only through a loopback proxy
// (MysqlCommitCutter) that forwards a COMMIT, lets MariaDB carry it out,
// drops its answer and closes the connection, so the server sees "connection
// lost" (error 2013) for a transaction that did commit. The writer must
// reconnect and replay the group, and the replay (INSERT ... ON DUPLICATE
// KEY UPDATE on (batch_id, idx)) must neither duplicate nor lose a row: the
// call ends OK, the batch is DONE, and stored == total == rows in MySQL.

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/support/logged_server.h"
#include "tests/support/mysql_commit_cutter.h"
#include "tests/support/service_fixture.h"

namespace batchfetch {
namespace e2e {
namespace {

using testing::MysqlCommitCutter;

// The store's writer prepares this on every new connection before its
// first COMMIT; no other connection sends it.
constexpr char kWriterInsert[] = "INSERT INTO fetch_results";

class LostCommitTest : public LoggedServerTest {
 protected:
  void SetUp() override {
    LoggedServerTest::SetUp();
    auto cutter = MysqlCommitCutter::Start(db_->port());
    ASSERT_TRUE(cutter.ok()) << cutter.status();
    cutter_ = *std::move(cutter);
    // The shared MariaDB's user and password, at the cutter's port.
    through_cutter_ = LocalMariaDb::Attach(cutter_->port());
  }
  void TearDown() override {
    LoggedServerTest::TearDown();
    cutter_.reset();
    if (!spool_dir_.empty()) std::filesystem::remove_all(spool_dir_);
  }

  void StartServerThroughCutter(bool with_spool) {
    std::vector<std::string> flags;
    if (with_spool) {
      char dir[] = "/tmp/batchfetch_spool_XXXXXX";
      ASSERT_NE(mkdtemp(dir), nullptr);
      spool_dir_ = dir;
      flags.push_back("--spool_dir=" + spool_dir_);
    }
    StartLoggedServer(flags, through_cutter_.get());
  }

  // 300 URLs, 16 at a time, 10 ms each: results arrive over about 200 ms,
  // so the writer commits them in several groups.
  v1::FetchBatchRequest ThreeHundredUrls() {
    std::vector<std::string> urls;
    for (int i = 0; i < kUrls; ++i) {
      urls.push_back(upstream_->Url(absl::StrCat("/r", i, "?delay_ms=10")));
    }
    return Batch(urls, 16);
  }

  // The call, its summary, the rows in MySQL and GetBatch all say that
  // every result is stored exactly once.
  void ExpectEveryResultStoredOnce(const Streamed& streamed) {
    ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
    ExpectWellFormedStream(streamed, kUrls);
    const v1::BatchSummary& summary = streamed.summary();
    EXPECT_EQ(summary.state(), v1::BATCH_STATE_DONE)
        << summary.ShortDebugString();
    EXPECT_EQ(summary.stored(), static_cast<uint32_t>(kUrls))
        << summary.ShortDebugString();
    EXPECT_EQ(summary.spooled(), 0u);
    EXPECT_EQ(StoredRows(*db_, streamed.batch_id()),
              std::make_pair(kUrls, kUrls));
    absl::StatusOr<v1::BatchSummary> stored = GetBatch(streamed.batch_id());
    ASSERT_TRUE(stored.ok()) << stored.status();
    EXPECT_EQ(stored->state(), v1::BATCH_STATE_DONE);
    EXPECT_EQ(stored->total(), static_cast<uint32_t>(kUrls));
    EXPECT_EQ(stored->stored(), static_cast<uint32_t>(kUrls));
    EXPECT_EQ(stored->succeeded(), static_cast<uint32_t>(kUrls));
  }

  static constexpr int kUrls = 300;
  std::unique_ptr<MysqlCommitCutter> cutter_;
  std::unique_ptr<LocalMariaDb> through_cutter_;
  std::string spool_dir_;
};

// Three of the writer's COMMITs lose their answer, each followed by one that
// goes through (the writer's replay), so three different groups are cut.
void ArmWriterCuts(MysqlCommitCutter& cutter) {
  cutter.CutNextCommits(3, kWriterInsert, /*then_let_through=*/1);
}

TEST_F(LostCommitTest, CommitsWhoseAnswerIsLostAreReplayedWithoutDuplicates) {
  StartServerThroughCutter(/*with_spool=*/false);
  // Armed after start-up: the migrations' COMMITs are not cut.
  ArmWriterCuts(*cutter_);
  Streamed streamed = Fetch(ThreeHundredUrls());
  EXPECT_EQ(cutter_->cuts(), 3) << "commits seen: " << cutter_->commits_seen();
  // MariaDB did commit each of them: the replays met their own rows.
  EXPECT_EQ(cutter_->cut_commits_answered_ok(), cutter_->cuts());
  EXPECT_EQ(cutter_->tls_connections(), 0);
  ExpectEveryResultStoredOnce(streamed);
}

TEST_F(LostCommitTest, WithASpoolTheLostCommitsAreReplayedWithoutDuplicates) {
  StartServerThroughCutter(/*with_spool=*/true);
  ArmWriterCuts(*cutter_);
  Streamed streamed = Fetch(ThreeHundredUrls());
  EXPECT_EQ(cutter_->cuts(), 3) << "commits seen: " << cutter_->commits_seen();
  EXPECT_EQ(cutter_->cut_commits_answered_ok(), cutter_->cuts());
  ExpectEveryResultStoredOnce(streamed);
}

// Any COMMIT after start-up, whoever sends it: the batch row's (CreateBatch
// on a reader connection) and the writer's groups alike.
TEST_F(LostCommitTest, TheFirstCommitsOfEveryKindLoseTheirAnswerSafely) {
  StartServerThroughCutter(/*with_spool=*/false);
  cutter_->CutNextCommits(3, "", /*then_let_through=*/1);
  Streamed streamed = Fetch(ThreeHundredUrls());
  EXPECT_EQ(cutter_->cuts(), 3) << "commits seen: " << cutter_->commits_seen();
  EXPECT_EQ(cutter_->cut_commits_answered_ok(), cutter_->cuts());
  ExpectEveryResultStoredOnce(streamed);
}

}  // namespace
}  // namespace e2e
}  // namespace batchfetch

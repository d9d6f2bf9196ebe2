// FetchBatchRequest.resume end to end: the real service in process, real
// MariaDB, the loopback upstream counting what it is asked for.
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/support/service_fixture.h"

namespace batchfetch {
namespace e2e {
namespace {

constexpr int kTotal = 40;

class ResumeTest : public ServiceTest {
 protected:
  void SetUp() override {
    ServiceTest::SetUp();
    if (HasFatalFailure()) return;
    StartServer(Config());
  }

  // Waits until the batch is no longer RUNNING (a cancelled call's run
  // finishes, and records the batch, after the client has gone).
  v1::BatchSummary AwaitFinished(const std::string& id) {
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    absl::StatusOr<v1::BatchSummary> summary;
    do {
      summary = GetBatch(id);
      if (summary.ok() && summary->state() != v1::BATCH_STATE_RUNNING) break;
      absl::SleepFor(absl::Milliseconds(20));
    } while (absl::Now() < give_up);
    EXPECT_TRUE(summary.ok()) << summary.status();
    return summary.ok() ? *summary : v1::BatchSummary();
  }

  // Upstream requests after the first `since` (arrival order), by path and
  // query. (ResetStats would also reset the fail_first counters.)
  std::map<std::string, int> Hits(size_t since = 0) const {
    std::map<std::string, int> hits;
    const auto arrivals = upstream_->arrivals();
    for (size_t i = since; i < arrivals.size(); ++i) {
      ++hits[arrivals[i].path_and_query];
    }
    return hits;
  }

  std::string PathOf(const std::string& url) const {
    return url.substr(upstream_->Url("").size());
  }
};

// Every fifth request fails (500) the first time it is asked for, and
// succeeds after that.
v1::FetchBatchRequest FlakyBatch(const TestUpstream& upstream,
                                 const std::string& id) {
  std::vector<std::string> urls;
  for (int i = 0; i < kTotal; ++i) {
    urls.push_back(upstream.Url(
        i % 5 == 0 ? absl::StrCat("/flaky/", i, "?fail_first=1&fail_status=500")
                   : absl::StrCat("/item/", i, "?n=", i)));
  }
  v1::FetchBatchRequest request = Batch(urls, 8);
  request.set_batch_id(id);
  return request;
}

TEST_F(ResumeTest, ResumeRefetchesOnlyTheFailedRequestsAndEndsDone) {
  v1::FetchBatchRequest request = FlakyBatch(*upstream_, "flaky-batch");
  Streamed first = Fetch(request);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  ASSERT_EQ(first.summary().state(), v1::BATCH_STATE_DONE);
  ASSERT_EQ(first.summary().succeeded(), 32u);
  ASSERT_EQ(first.summary().failed(), 8u);

  const size_t before = upstream_->arrivals().size();
  request.set_resume(true);
  Streamed resumed = Fetch(request);
  ASSERT_TRUE(resumed.status.ok()) << resumed.status.error_message();
  ExpectWellFormedStream(resumed, kTotal);
  EXPECT_EQ(resumed.batch_id(), "flaky-batch");
  // The 32 stored results first, then the 8 fetched again.
  for (int i = 1; i <= 32; ++i) {
    ASSERT_TRUE(resumed.events[i].has_result());
    EXPECT_NE(resumed.events[i].result().index() % 5, 0u);
    EXPECT_EQ(resumed.events[i].result().outcome(), v1::OUTCOME_OK);
  }
  for (int i = 33; i <= 40; ++i) {
    EXPECT_EQ(resumed.events[i].result().index() % 5, 0u);
    EXPECT_EQ(resumed.events[i].result().outcome(), v1::OUTCOME_OK);
  }
  // Only the failed ones reached the upstream, once each.
  std::map<std::string, int> hits = Hits(before);
  EXPECT_EQ(hits.size(), 8u);
  for (const auto& [path, n] : hits) {
    EXPECT_EQ(path.rfind("/flaky/", 0), 0u) << path << " fetched again";
    EXPECT_EQ(n, 1) << path;
  }
  const v1::BatchSummary& s = resumed.summary();
  EXPECT_EQ(s.state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(s.total(), 40u);
  EXPECT_EQ(s.succeeded(), 40u);
  EXPECT_EQ(s.failed(), 0u);
  EXPECT_EQ(s.stored(), 40u);
  EXPECT_EQ(s.created_at().seconds(), first.summary().created_at().seconds());
  EXPECT_EQ(s.created_at().nanos(), first.summary().created_at().nanos());

  absl::StatusOr<v1::BatchSummary> stored = GetBatch("flaky-batch");
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(stored->succeeded(), 40u);
  EXPECT_EQ(stored->stored(), 40u);
  int pages = 0;
  std::vector<v1::FetchResult> rows = ListAll("flaky-batch", 100, &pages);
  ASSERT_EQ(rows.size(), 40u);
  for (const auto& r : rows) EXPECT_EQ(r.outcome(), v1::OUTCOME_OK);

  // A DONE batch whose results are all OK: resuming it fetches nothing.
  const size_t before_again = upstream_->arrivals().size();
  Streamed again = Fetch(request);
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  ExpectWellFormedStream(again, kTotal);
  EXPECT_EQ(again.summary().state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(again.summary().stored(), 40u);
  EXPECT_EQ(upstream_->arrivals().size(), before_again);
}

TEST_F(ResumeTest, ACancelledBatchResumesWithOnlyWhatIsMissing) {
  std::vector<std::string> urls;
  for (int i = 0; i < kTotal; ++i) {
    urls.push_back(upstream_->Url(absl::StrCat("/slow/", i, "?delay_ms=50")));
  }
  v1::FetchBatchRequest request = Batch(urls, 2);
  request.set_batch_id("cancelled-batch");
  Streamed first = Fetch(request, absl::Seconds(60), /*cancel_after=*/6);
  EXPECT_EQ(first.status.error_code(), grpc::StatusCode::CANCELLED);
  const v1::BatchSummary cancelled = AwaitFinished("cancelled-batch");
  ASSERT_EQ(cancelled.state(), v1::BATCH_STATE_CANCELLED);
  ASSERT_GE(cancelled.succeeded(), 6u);
  ASSERT_LT(cancelled.succeeded(), 40u);
  int pages = 0;
  std::set<std::string> ok_paths;
  for (const auto& r : ListAll("cancelled-batch", 1000, &pages)) {
    if (r.outcome() == v1::OUTCOME_OK) ok_paths.insert(PathOf(r.url()));
  }
  ASSERT_EQ(ok_paths.size(), cancelled.succeeded());

  upstream_->ResetStats();
  request.set_resume(true);
  Streamed resumed = Fetch(request);
  ASSERT_TRUE(resumed.status.ok()) << resumed.status.error_message();
  ExpectWellFormedStream(resumed, kTotal);
  std::map<std::string, int> hits = Hits();
  EXPECT_EQ(hits.size(), 40u - ok_paths.size());
  for (const auto& [path, n] : hits) {
    EXPECT_EQ(ok_paths.count(path), 0u) << path << " was OK, fetched again";
    EXPECT_EQ(n, 1) << path;
  }
  EXPECT_EQ(resumed.summary().state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(resumed.summary().total(), 40u);
  EXPECT_EQ(resumed.summary().succeeded(), 40u);
  EXPECT_EQ(resumed.summary().stored(), 40u);
  absl::StatusOr<v1::BatchSummary> stored = GetBatch("cancelled-batch");
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(stored->stored(), 40u);
}

// Issue 8, "Secrets in URLs": user:pw@ is sent upstream as asked, but no
// row holds it: not the results, not the hash, not the request a detached
// batch keeps for a takeover. A streamed batch keeps no request at all.
TEST_F(ResumeTest, UrlCredentialsAreNeverStoredAndRotatedOnesStillResume) {
  const std::string secret = "S3CRET-pw";
  const auto with_credentials = [&](const std::string& id, bool detach) {
    v1::FetchBatchRequest request =
        Batch({upstream_->Url("/item/1"), upstream_->Url("/item/2")}, 2);
    std::string url = upstream_->Url("/item/0");
    url.insert(url.find("://") + 3, absl::StrCat("alice:", secret, "@"));
    request.mutable_requests(0)->set_url(url);
    request.set_batch_id(id);
    request.set_detach(detach);
    return request;
  };
  const auto count = [&](const std::string& sql) {
    absl::StatusOr<std::string> out = db_->Execute(sql, database_);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? std::string(absl::StripAsciiWhitespace(*out))
                    : std::string("error");
  };
  for (bool detach : {true, false}) {
    const std::string id = detach ? "creds-detached" : "creds-streamed";
    Streamed done = Fetch(with_credentials(id, detach));
    ASSERT_TRUE(done.status.ok()) << done.status.error_message();
    ASSERT_EQ(done.summary().succeeded(), 2u);
    EXPECT_EQ(done.events[1].result().url().find(secret), std::string::npos);
    EXPECT_EQ(count(absl::StrCat("SELECT COUNT(*) FROM fetch_results WHERE "
                                 "batch_id = '",
                                 id, "' AND (INSTR(url, '", secret,
                                 "') > 0 OR INSTR(final_url, '", secret,
                                 "') > 0 OR INSTR(url, 'alice') > 0)")),
              "0");
    EXPECT_EQ(count(absl::StrCat("SELECT COUNT(*) FROM batch_requests WHERE "
                                 "batch_id = '",
                                 id, "' AND INSTR(bytes, '", secret, "') > 0")),
              "0");
    // Only a detached batch keeps its request (for a takeover).
    EXPECT_EQ(count(absl::StrCat(
                  "SELECT COUNT(*) > 0 FROM batch_requests WHERE batch_id = '",
                  id, "'")),
              detach ? "1" : "0");
  }
  // The stored hash leaves the credentials out, so a resume with rotated
  // ones is the same request list, not FAILED_PRECONDITION.
  v1::FetchBatchRequest rotated = with_credentials("creds-streamed", false);
  std::string url = rotated.requests(0).url();
  url.replace(url.find(secret), secret.size(), "rotated-pw");
  rotated.mutable_requests(0)->set_url(url);
  rotated.set_resume(true);
  Streamed resumed = Fetch(rotated);
  ASSERT_TRUE(resumed.status.ok()) << resumed.status.error_message();
  EXPECT_EQ(resumed.summary().state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(resumed.summary().succeeded(), 2u);
}

TEST_F(ResumeTest, ADifferentRequestListIsFailedPrecondition) {
  v1::FetchBatchRequest request = FlakyBatch(*upstream_, "mismatch");
  ASSERT_TRUE(Fetch(request).status.ok());
  upstream_->ResetStats();
  request.set_resume(true);
  request.mutable_requests(3)->set_url(upstream_->Url("/another"));
  Streamed resumed = Fetch(request);
  EXPECT_EQ(resumed.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(resumed.status.error_message().find("requests"), std::string::npos)
      << resumed.status.error_message();
  EXPECT_TRUE(resumed.events.empty());
  EXPECT_EQ(upstream_->total_requests(), 0);
  // Nothing was changed: the failed results are still there.
  absl::StatusOr<v1::BatchSummary> stored = GetBatch("mismatch");
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(stored->failed(), 8u);
}

TEST_F(ResumeTest, ResumingAnUnknownIdIsNotFound) {
  v1::FetchBatchRequest request = FlakyBatch(*upstream_, "never-created");
  request.set_resume(true);
  Streamed resumed = Fetch(request);
  EXPECT_EQ(resumed.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(upstream_->total_requests(), 0);
}

TEST_F(ResumeTest, ResumeWithoutABatchIdIsInvalidArgument) {
  v1::FetchBatchRequest request = FlakyBatch(*upstream_, "");
  request.set_resume(true);
  Streamed resumed = Fetch(request);
  EXPECT_EQ(resumed.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(resumed.status.error_message().find("batch_id"), std::string::npos);
}

TEST_F(ResumeTest, WithoutResumeAnExistingIdIsStillAlreadyExists) {
  v1::FetchBatchRequest request = FlakyBatch(*upstream_, "taken");
  ASSERT_TRUE(Fetch(request).status.ok());
  Streamed again = Fetch(request);
  EXPECT_EQ(again.status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
}

TEST_F(ResumeTest, ResumingABatchRunningOnALiveReplicaIsFailedPrecondition) {
  std::vector<std::string> urls;
  for (int i = 0; i < 4; ++i) {
    urls.push_back(upstream_->Url(absl::StrCat("/held/", i, "?delay_ms=2000")));
  }
  v1::FetchBatchRequest request = Batch(urls, 4);
  request.set_batch_id("running");
  Streamed first;
  std::thread running([&] { first = Fetch(request); });
  ASSERT_TRUE(upstream_->AwaitInFlightAtLeast(1, absl::Seconds(10)));
  v1::FetchBatchRequest resume = request;
  resume.set_resume(true);
  Streamed refused = Fetch(resume);
  running.join();
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << refused.status.error_message();
  EXPECT_NE(refused.status.error_message().find("RUNNING"), std::string::npos)
      << refused.status.error_message();
  // The running batch was not disturbed.
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  EXPECT_EQ(first.summary().succeeded(), 4u);
  EXPECT_EQ(upstream_->total_requests(), 4);
}

}  // namespace
}  // namespace e2e
}  // namespace batchfetch

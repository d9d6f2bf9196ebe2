// End-to-end tests: a real BatchFetchServer (in-process, or the binary),
// a real MariaDB and a real HTTP upstream, all on loopback.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "batchfetch/v1/batchfetch.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "service/server/batchfetch_server.h"
#include "tests/support/fault_injecting_result_store.h"
#include "tests/support/local_mariadb.h"
#include "tests/support/proc_status.h"
#include "tests/support/service_fixture.h"
#include "tests/support/standard_services.h"
#include "tests/support/test_upstream.h"

extern char** environ;

namespace batchfetch {
namespace {

using e2e::Batch;
using e2e::BinaryTest;
using e2e::Child;
using e2e::ExpectWellFormedStream;
using e2e::ServiceTest;
using e2e::Streamed;
using e2e::UniqueDatabase;
using testing::LocalMariaDb;
using testing::SharedMariaDb;
using testing::TestUpstream;

TEST_F(ServiceTest, SeedScenarioTwentySlowUrlsAllOkAndStored) {
  StartServer(Config());
  std::vector<std::string> urls;
  for (int i = 0; i < 20; ++i) {
    urls.push_back(
        upstream_->Url(absl::StrCat("/item?n=", i, "&delay_ms=200")));
  }
  Streamed s = Fetch(Batch(urls, 20));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  ExpectWellFormedStream(s, 20);
  for (const auto& [index, r] : s.results()) {
    EXPECT_EQ(r.outcome(), v1::OUTCOME_OK) << r.error();
    EXPECT_EQ(r.json(),
              absl::StrCat(R"({"ok":true,"path":"/item","n":)", index, "}"));
    EXPECT_EQ(r.url(), urls[index]);
  }
  EXPECT_EQ(s.summary().state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(s.summary().succeeded(), 20u);
  EXPECT_EQ(s.summary().stored(), 20u);
  EXPECT_EQ(upstream_->peak_in_flight(), 20);
  auto rows = db_->Execute(
      absl::StrCat("SELECT COUNT(*) FROM fetch_results WHERE batch_id='",
                   s.batch_id(), "' AND outcome=1"),
      database_);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(absl::StripAsciiWhitespace(*rows), "20");
}

TEST_F(ServiceTest, ConcurrencyBoundPerBatchAndServerWide) {
  ServerConfig config = Config();
  config.engine.max_in_flight = 8;
  StartServer(config);
  std::vector<std::string> urls;
  for (int i = 0; i < 60; ++i) {
    urls.push_back(upstream_->Url(absl::StrCat("/slow?n=", i, "&delay_ms=50")));
  }
  Streamed s = Fetch(Batch(urls, 5));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.summary().succeeded(), 60u);
  EXPECT_EQ(upstream_->peak_in_flight(), 5);

  // Two batches at once, each asking for 6: the server-wide cap of 8 holds.
  upstream_->ResetStats();
  Streamed a, b;
  std::thread other([&] { b = Fetch(Batch(urls, 6)); });
  a = Fetch(Batch(urls, 6));
  other.join();
  EXPECT_TRUE(a.status.ok() && b.status.ok());
  EXPECT_EQ(a.summary().succeeded() + b.summary().succeeded(), 120u);
  EXPECT_EQ(upstream_->peak_in_flight(), 8);

  // Asking for more than the cap is clamped, not refused.
  upstream_->ResetStats();
  Streamed c = Fetch(Batch(urls, 100000));
  EXPECT_TRUE(c.status.ok());
  EXPECT_EQ(upstream_->peak_in_flight(), 8);
}

TEST_F(ServiceTest, MixedBatchGivesEachUrlItsExactOutcome) {
  ServerConfig config = Config();
  config.engine.max_body_bytes = 64 * 1024;
  StartServer(config);
  v1::FetchBatchRequest request = Batch({
      upstream_->Url("/ok"),                                // 0
      upstream_->Url("/missing?status=404&body=nope"),      // 1
      upstream_->Url("/boom?status=500"),                   // 2
      upstream_->Url("/text?ctype=text/plain&body=hello"),  // 3
      "http://[::1",                                        // 4
      "ftp://127.0.0.1/file",                               // 5
      "http://127.0.0.1:1/refused",                         // 6
      upstream_->Url("/stall?delay_ms=5000"),               // 7
      upstream_->Url("/huge?bytes=200000"),                 // 8
      upstream_->Url("/ok?n=9"),                            // 9
      upstream_->Url("/head"),                              // 10
      upstream_->Url("/odd?ctype=text%2Fplain%3B%01x"),     // 11
  });
  request.mutable_requests(10)->set_method("HEAD");
  request.mutable_timeout()->set_nanos(500 * 1000 * 1000);
  Streamed s = Fetch(request);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  ExpectWellFormedStream(s, 12);
  auto r = s.results();
  EXPECT_EQ(r[0].outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(r[1].outcome(), v1::OUTCOME_HTTP_ERROR);
  EXPECT_EQ(r[1].http_status(), 404);
  EXPECT_EQ(r[1].body(), "nope");
  EXPECT_EQ(r[2].outcome(), v1::OUTCOME_HTTP_ERROR);
  EXPECT_EQ(r[2].http_status(), 500);
  EXPECT_EQ(r[3].outcome(), v1::OUTCOME_INVALID_JSON);
  EXPECT_EQ(r[3].body(), "hello");
  EXPECT_EQ(r[3].content_type(), "text/plain");
  EXPECT_NE(r[3].error().find("not valid JSON"), std::string::npos);
  EXPECT_EQ(r[4].outcome(), v1::OUTCOME_INVALID_REQUEST);
  EXPECT_EQ(r[5].outcome(), v1::OUTCOME_INVALID_REQUEST);
  EXPECT_NE(r[5].error().find("ftp"), std::string::npos);
  EXPECT_EQ(r[6].outcome(), v1::OUTCOME_CONNECT_ERROR);
  EXPECT_FALSE(r[6].error().empty());
  EXPECT_EQ(r[7].outcome(), v1::OUTCOME_TIMEOUT);
  EXPECT_EQ(r[8].outcome(), v1::OUTCOME_TOO_LARGE);
  EXPECT_EQ(r[9].outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(r[9].json(), R"({"ok":true,"path":"/ok","n":9})");
  EXPECT_EQ(r[10].outcome(), v1::OUTCOME_OK) << r[10].error();
  EXPECT_EQ(r[10].json(), "");
  // A control byte in an upstream header must not break the stream.
  EXPECT_EQ(r[11].outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(r[11].content_type(), "text/plain;?x");
  EXPECT_EQ(s.summary().succeeded(), 4u);
  EXPECT_EQ(s.summary().failed(), 8u);
  EXPECT_EQ(s.summary().stored(), 12u);
  EXPECT_EQ(s.summary().state(), v1::BATCH_STATE_DONE);
}

TEST_F(ServiceTest, ExtractsJsonPointers) {
  StartServer(Config());
  v1::FetchBatchRequest request = Batch({upstream_->Url(
      "/doc?body=" +
      std::string("%7B%22user%22%3A%7B%22name%22%3A%22ann%22%7D%2C"
                  "%22items%22%3A%5B10%2C20%2C30%5D%2C%22a%2Fb%22"
                  "%3A%7B%22c~d%22%3Atrue%7D%7D"))});
  (*request.mutable_extract())["name"] = "/user/name";
  (*request.mutable_extract())["age"] = "/user/age";
  (*request.mutable_extract())["second"] = "/items/1";
  (*request.mutable_extract())["flag"] = "/a~1b/c~0d";
  Streamed s = Fetch(request);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  auto r = s.results();
  ASSERT_EQ(r[0].outcome(), v1::OUTCOME_OK) << r[0].error() << r[0].body();
  EXPECT_EQ(r[0].json(),
            R"({"age":null,"flag":true,"name":"ann","second":20})");

  (*request.mutable_extract())["bad"] = "items";
  Streamed bad = Fetch(request);
  EXPECT_EQ(bad.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad.status.error_message().find("extract[\"bad\"]"),
            std::string::npos);
}

TEST_F(ServiceTest, RoundTripStreamEqualsStoredResults) {
  StartServer(Config());
  std::vector<std::string> urls;
  for (int i = 0; i < 7; ++i)
    urls.push_back(upstream_->Url(absl::StrCat("/r?n=", i)));
  urls.push_back(upstream_->Url("/e?status=503&body=down"));
  urls.push_back("gopher://x");
  v1::FetchBatchRequest request = Batch(urls, 3);
  request.set_batch_id("round-trip-1");
  Streamed s = Fetch(request);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.batch_id(), "round-trip-1");

  int pages = 0;
  std::vector<v1::FetchResult> stored = ListAll("round-trip-1", 4, &pages);
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(stored.size(), 9u);
  auto streamed = s.results();
  for (uint32_t i = 0; i < stored.size(); ++i) {
    EXPECT_EQ(stored[i].index(), i);
    EXPECT_EQ(stored[i].SerializeAsString(), streamed[i].SerializeAsString())
        << "index " << i << "\nstored:   " << stored[i].ShortDebugString()
        << "\nstreamed: " << streamed[i].ShortDebugString();
  }
  absl::StatusOr<v1::BatchSummary> summary = GetBatch("round-trip-1");
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->SerializeAsString(), s.summary().SerializeAsString())
      << summary->ShortDebugString() << "\n"
      << s.summary().ShortDebugString();

  EXPECT_EQ(GetBatch("no-such-batch").status().code(),
            absl::StatusCode::kNotFound);
  grpc::ClientContext context;
  v1::ListResultsRequest list;
  list.set_batch_id("no-such-batch");
  v1::ListResultsResponse response;
  EXPECT_EQ(stub_->ListResults(&context, list, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServiceTest, ListResultsPagesAreBoundedInBytes) {
  ServerConfig config = Config();
  config.engine.max_body_bytes = 4 << 20;
  StartServer(config);
  std::vector<std::string> urls;
  for (int i = 0; i < 4; ++i) {
    urls.push_back(upstream_->Url(absl::StrCat("/big?bytes=1500000&n=", i)));
  }
  v1::FetchBatchRequest request = Batch(urls);
  request.set_batch_id("big-pages");
  ASSERT_TRUE(Fetch(request).status.ok());
  int pages = 0;
  std::vector<v1::FetchResult> stored = ListAll("big-pages", 100, &pages);
  EXPECT_EQ(stored.size(), 4u);
  EXPECT_GE(pages, 2);  // 6 MB of rows do not come back as one message
}

TEST_F(ServiceTest, RejectsBadBatchesWithSpecificStatus) {
  ServerConfig config = Config();
  config.service.max_batch_size = 10;
  StartServer(config);
  Streamed empty = Fetch(v1::FetchBatchRequest());
  EXPECT_EQ(empty.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(empty.status.error_message().find("no requests"),
            std::string::npos);

  std::vector<std::string> eleven(11, upstream_->Url("/x"));
  Streamed big = Fetch(Batch(eleven));
  EXPECT_EQ(big.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(big.status.error_message().find("at most 10"), std::string::npos);

  v1::FetchBatchRequest request = Batch({upstream_->Url("/x")});
  request.set_batch_id("dup-1");
  EXPECT_TRUE(Fetch(request).status.ok());
  Streamed dup = Fetch(request);
  EXPECT_EQ(dup.status.error_code(), grpc::StatusCode::ALREADY_EXISTS);

  request.set_batch_id("bad id with spaces");
  EXPECT_EQ(Fetch(request).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(upstream_->total_requests(), 1);
}

TEST_F(ServiceTest, CancelMidBatchStopsTransfersAndStoresCancelled) {
  StartServer(Config());
  std::vector<std::string> urls;
  urls.push_back(upstream_->Url("/fast"));
  for (int i = 0; i < 29; ++i)
    urls.push_back(upstream_->Url("/stuck?delay_ms=20000"));
  v1::FetchBatchRequest request = Batch(urls, 5);
  request.set_batch_id("cancel-me");
  const absl::Time start = absl::Now();
  Streamed s = Fetch(request, absl::Seconds(60), /*cancel_after=*/1);
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  // The stuck transfers were torn down, and no new ones started.
  EXPECT_TRUE(upstream_->AwaitAbortedAtLeast(5, absl::Seconds(5)));
  EXPECT_LE(upstream_->total_requests(), 6);

  // The server finishes the batch in the background after the client left.
  absl::StatusOr<v1::BatchSummary> summary;
  for (int i = 0; i < 100; ++i) {
    summary = GetBatch("cancel-me");
    if (summary.ok() && summary->state() != v1::BATCH_STATE_RUNNING) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->state(), v1::BATCH_STATE_CANCELLED);
  EXPECT_EQ(summary->stored(), 30u);
  int pages = 0;
  std::vector<v1::FetchResult> stored = ListAll("cancel-me", 100, &pages);
  ASSERT_EQ(stored.size(), 30u);
  EXPECT_EQ(stored[0].outcome(), v1::OUTCOME_OK);
  for (size_t i = 1; i < stored.size(); ++i) {
    EXPECT_EQ(stored[i].outcome(), v1::OUTCOME_CANCELLED) << i;
  }
  EXPECT_EQ(server_->engine().in_flight(), 0);
}

TEST_F(ServiceTest, ExpiredDeadlineCancelsTheBatch) {
  StartServer(Config());
  std::vector<std::string> urls(10, upstream_->Url("/stuck?delay_ms=20000"));
  v1::FetchBatchRequest request = Batch(urls, 2);
  request.set_batch_id("deadline-1");
  Streamed s = Fetch(request, absl::Milliseconds(500));
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(upstream_->AwaitAbortedAtLeast(2, absl::Seconds(5)));
  absl::StatusOr<v1::BatchSummary> summary;
  for (int i = 0; i < 100; ++i) {
    summary = GetBatch("deadline-1");
    if (summary.ok() && summary->state() != v1::BATCH_STATE_RUNNING) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(summary.ok());
  EXPECT_EQ(summary->state(), v1::BATCH_STATE_CANCELLED);
  EXPECT_EQ(summary->stored(), 10u);
  EXPECT_EQ(upstream_->total_requests(), 2);
}

// Under a gRPC deadline, a transfer that was running when it passed is
// stored TIMEOUT (cut at the deadline), never CANCELLED, whichever of the
// engine's deadline and gRPC's cancel is seen first; requests that never
// started are CANCELLED. Several rounds, since it used to be a race.
TEST_F(ServiceTest, GrpcDeadlineStoresRunningTransfersAsTimeout) {
  StartServer(Config());
  for (int round = 0; round < 6; ++round) {
    std::vector<std::string> urls;
    for (int i = 0; i < 8; ++i) {
      urls.push_back(
          upstream_->Url(absl::StrCat("/slow?delay_ms=10000&n=", i)));
    }
    v1::FetchBatchRequest request = Batch(urls, 4);
    const std::string id = absl::StrCat("grpc-deadline-", round);
    request.set_batch_id(id);
    Streamed s = Fetch(request, absl::Milliseconds(300));
    EXPECT_EQ(s.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
    absl::StatusOr<v1::BatchSummary> summary;
    for (int i = 0; i < 100; ++i) {
      summary = GetBatch(id);
      if (summary.ok() && summary->state() != v1::BATCH_STATE_RUNNING) break;
      absl::SleepFor(absl::Milliseconds(50));
    }
    ASSERT_TRUE(summary.ok()) << summary.status();
    EXPECT_EQ(summary->state(), v1::BATCH_STATE_CANCELLED);
    EXPECT_EQ(summary->stored(), 8u);
    int pages = 0;
    std::vector<v1::FetchResult> stored = ListAll(id, 100, &pages);
    ASSERT_EQ(stored.size(), 8u);
    int running = 0;
    for (const v1::FetchResult& r : stored) {
      if (r.attempts() > 0) {  // it had started
        ++running;
        EXPECT_EQ(r.outcome(), v1::OUTCOME_TIMEOUT)
            << "round " << round << ": " << r.ShortDebugString();
      } else {
        EXPECT_EQ(r.outcome(), v1::OUTCOME_CANCELLED)
            << "round " << round << ": " << r.ShortDebugString();
      }
    }
    EXPECT_EQ(running, 4) << "round " << round;
  }
}

TEST_F(ServiceTest, WriterReconnectsAfterConnectionLossWithoutLosingRows) {
  StartServer(Config());
  std::vector<std::string> urls;
  for (int i = 0; i < 60; ++i) {
    urls.push_back(upstream_->Url(absl::StrCat("/p?n=", i, "&delay_ms=30")));
  }
  Streamed s;
  std::thread fetch([&] { s = Fetch(Batch(urls, 4)); });
  // Kill every server connection to the test database mid-batch.
  EXPECT_TRUE(upstream_->AwaitTotalRequestsAtLeast(20, absl::Seconds(20)));
  auto ids = db_->Execute(
      absl::StrCat("SELECT id FROM information_schema.processlist WHERE db='",
                   database_, "' AND id <> CONNECTION_ID()"));
  EXPECT_TRUE(ids.ok()) << ids.status();
  int killed = 0;
  for (absl::string_view id :
       absl::StrSplit(ids.ok() ? *ids : "", '\n', absl::SkipEmpty())) {
    if (db_->Execute(absl::StrCat("KILL ", id)).ok()) ++killed;
  }
  EXPECT_GE(killed, 1);
  fetch.join();
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.summary().stored(), 60u);
  EXPECT_EQ(s.summary().state(), v1::BATCH_STATE_DONE);
  auto rows = db_->Execute(
      absl::StrCat("SELECT COUNT(*) FROM fetch_results WHERE batch_id='",
                   s.batch_id(), "'"),
      database_);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(absl::StripAsciiWhitespace(*rows), "60");
}

TEST_F(ServiceTest, DatabaseDownGivesUnavailable) {
  auto own_db = LocalMariaDb::Start(BATCHFETCH_SOURCE_DIR);
  ASSERT_TRUE(own_db.ok()) << own_db.status();
  StartServer(Config(own_db->get()));
  EXPECT_TRUE(Fetch(Batch({upstream_->Url("/x")})).status.ok());
  own_db->reset();  // stops the instance
  Streamed s = Fetch(Batch({upstream_->Url("/x")}));
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(s.status.error_message().find("database"), std::string::npos)
      << s.status.error_message();
}

TEST_F(ServiceTest, UnstorableResultsMakeTheBatchFailedNotLost) {
  ServerConfig config = Config();
  auto mysql = MysqlResultStore::Open(config.mysql);
  ASSERT_TRUE(mysql.ok()) << mysql.status();
  auto faulty =
      std::make_unique<testing::FaultInjectingResultStore>(*std::move(mysql));
  testing::FaultInjectingResultStore* faults = faulty.get();
  StartServer(config, std::move(faulty));

  faults->FailAppendsFromIndex(3);
  std::vector<std::string> urls;
  for (int i = 0; i < 5; ++i)
    urls.push_back(upstream_->Url(absl::StrCat("/f?n=", i)));
  v1::FetchBatchRequest request = Batch(urls);
  request.set_batch_id("store-fault-1");
  Streamed s = Fetch(request);
  // Every result still streams, the summary says what was not stored, and
  // the call ends UNAVAILABLE instead of pretending success.
  ExpectWellFormedStream(s, 5);
  EXPECT_EQ(s.summary().succeeded(), 5u);
  EXPECT_EQ(s.summary().stored(), 3u);
  EXPECT_EQ(s.summary().state(), v1::BATCH_STATE_FAILED);
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(s.status.error_message().find("2 of 5 results could not be stored"),
            std::string::npos)
      << s.status.error_message();
  absl::StatusOr<v1::BatchSummary> stored = GetBatch("store-fault-1");
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->state(), v1::BATCH_STATE_FAILED);
  // The injected fault only falsified the acknowledgements: the rows are
  // in the table, and the batch row counts what is there.
  EXPECT_EQ(stored->stored(), 5u);
}

TEST_F(ServiceTest, FetchPoliciesThroughTheApi) {
  StartServer(Config());
  // Retries: two 503s, then OK; attempts, final URL and timings come back
  // and are stored.
  v1::FetchBatchRequest request =
      Batch({upstream_->Url("/flaky?fail_first=2&fail_status=503"),
             upstream_->Url("/redirect?to=%2Flanded")});
  request.set_batch_id("policy-1");
  request.mutable_retry()->set_max_attempts(3);
  request.mutable_retry()->mutable_initial_backoff()->set_nanos(10000000);
  Streamed s = Fetch(request);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  auto r = s.results();
  EXPECT_EQ(r[0].outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(r[0].attempts(), 3u);
  EXPECT_GT(r[0].timings().total().nanos() + r[0].timings().total().seconds(),
            0);
  EXPECT_EQ(r[1].final_url(), upstream_->Url("/landed"));
  int pages = 0;
  std::vector<v1::FetchResult> stored = ListAll("policy-1", 10, &pages);
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored[0].SerializeAsString(), r[0].SerializeAsString());
  EXPECT_EQ(stored[1].final_url(), r[1].final_url());

  // Per-host cap from the request.
  upstream_->ResetStats();
  std::vector<std::string> urls(12, upstream_->Url("/h?delay_ms=50"));
  v1::FetchBatchRequest capped = Batch(urls, 10);
  capped.set_per_host_concurrency(2);
  EXPECT_TRUE(Fetch(capped).status.ok());
  EXPECT_EQ(upstream_->peak_in_flight(), 2);

  // The batch deadline: what cannot finish in time ends, the batch is done.
  v1::FetchBatchRequest bounded = Batch(
      {upstream_->Url("/stuck?delay_ms=10000"), upstream_->Url("/ok")}, 1);
  bounded.mutable_deadline()->set_nanos(400000000);
  Streamed d = Fetch(bounded);
  ASSERT_TRUE(d.status.ok()) << d.status.error_message();
  auto dr = d.results();
  EXPECT_EQ(dr[0].outcome(), v1::OUTCOME_TIMEOUT);
  EXPECT_NE(dr[0].error().find("deadline"), std::string::npos) << dr[0].error();
  EXPECT_EQ(dr[1].outcome(), v1::OUTCOME_CANCELLED);
  EXPECT_EQ(d.summary().state(), v1::BATCH_STATE_DONE);

  // Nonsense policies are refused up front.
  v1::FetchBatchRequest bad = Batch({upstream_->Url("/x")});
  bad.mutable_retry()->set_max_attempts(2);
  bad.mutable_retry()->add_retry_on_status(700);
  EXPECT_EQ(Fetch(bad).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServiceTest, StoreNoneStreamsButDoesNotStore) {
  ServerConfig config = Config();
  config.store_enabled = false;
  StartServer(config);
  Streamed s = Fetch(Batch({upstream_->Url("/x"), upstream_->Url("/y")}));
  ASSERT_TRUE(s.status.ok());
  EXPECT_EQ(s.summary().succeeded(), 2u);
  EXPECT_EQ(s.summary().stored(), 0u);
  EXPECT_EQ(GetBatch(s.batch_id()).status().code(),
            absl::StatusCode::kUnimplemented);
}

TEST_F(ServiceTest, StoreNoneStillRefusesABatchIdThatIsRunning) {
  ServerConfig config = Config();
  config.store_enabled = false;
  StartServer(config);
  v1::FetchBatchRequest slow = Batch({upstream_->Url("/slow?delay_ms=3000")});
  slow.set_batch_id("running-once");
  grpc::ClientContext context;
  auto reader = stub_->FetchBatch(&context, slow);
  v1::FetchBatchEvent event;
  ASSERT_TRUE(reader->Read(&event));
  ASSERT_TRUE(event.has_accepted());

  v1::FetchBatchRequest again = Batch({upstream_->Url("/x")});
  again.set_batch_id("running-once");
  Streamed refused = Fetch(again);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::ALREADY_EXISTS)
      << refused.status.error_message();
  context.TryCancel();
  while (reader->Read(&event)) {
  }
  reader->Finish();
  // Once it ended, the id is free again (nothing records it).
  const absl::Time until = absl::Now() + absl::Seconds(10);
  Streamed later;
  do {
    later = Fetch(again);
  } while (later.status.error_code() == grpc::StatusCode::ALREADY_EXISTS &&
           absl::Now() < until);
  EXPECT_TRUE(later.status.ok()) << later.status.error_message();
}

// What grpcurl relies on: the standard health service and server reflection.
TEST_F(ServiceTest, ServesHealthAndReflection) {
  ServerConfig config = Config();
  config.store_enabled = false;
  StartServer(config);
  testing::ExpectHealthAndReflectionServed(channel_);
}

// --- tests against the real binaries ----------------------------------------

// A listening socket on [::1]:`port` that accepts nothing while a test
// runs: the kernel queues every completed TCP handshake, and
// CountConnections() accepts (and closes) what was queued. Owns the socket.
class Ipv6LoopbackListener {
 public:
  explicit Ipv6LoopbackListener(int port) {
    fd_ = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in6 address{};
    address.sin6_family = AF_INET6;
    address.sin6_addr = in6addr_loopback;
    address.sin6_port = htons(static_cast<uint16_t>(port));
    const int one = 1;
    if (fd_ < 0 ||
        setsockopt(fd_, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0 ||
        bind(fd_, reinterpret_cast<const sockaddr*>(&address),
             sizeof(address)) != 0 ||
        listen(fd_, 64) != 0) {
      error_ = std::strerror(errno);
    }
  }
  ~Ipv6LoopbackListener() {
    if (fd_ >= 0) close(fd_);
  }
  Ipv6LoopbackListener(const Ipv6LoopbackListener&) = delete;
  Ipv6LoopbackListener& operator=(const Ipv6LoopbackListener&) = delete;

  // Empty when listening; else why not.
  const std::string& error() const { return error_; }
  int CountConnections() {
    int count = 0;
    for (int fd; (fd = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC)) >= 0;) {
      close(fd);
      ++count;
    }
    return count;
  }

 private:
  int fd_ = -1;
  std::string error_;
};

TEST_F(BinaryTest, DefaultEgressPolicyReachesNoLoopbackSpelling) {
  // The real binary with its default policy: every spelling of the loopback
  // upstream ends BLOCKED, naming the address and the rule, and neither the
  // upstream (127.0.0.1) nor a listener on the same port of ::1 accepts a
  // single connection.
  StartServerBinary({}, /*open_loopback=*/false);
  const int port = upstream_->port();
  Ipv6LoopbackListener ipv6_upstream(port);
  ASSERT_EQ(ipv6_upstream.error(), "") << "listening on [::1]:" << port;
  std::vector<std::string> urls;
  for (const char* host :
       {"127.0.0.1", "2130706433", "0177.0.0.1", "0x7f.1", "127.1",
        "0x7f000001", "017700000001", "127.000.000.001", "user@127.0.0.1",
        "user:pw@127.0.0.1", "localhost", "127.0.0.2", "0", "[::1]",
        "[::ffff:127.0.0.1]"}) {
    urls.push_back(absl::StrCat("http://", host, ":", port, "/secret"));
  }
  v1::FetchBatchRequest request = Batch(urls, 4);
  // Retries would not help, and must not be made.
  request.mutable_retry()->set_max_attempts(3);
  Streamed s = Fetch(request);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  auto results = s.results();
  ASSERT_EQ(results.size(), urls.size());
  for (const auto& [index, r] : results) {
    EXPECT_EQ(r.outcome(), v1::OUTCOME_BLOCKED)
        << urls[index] << " " << r.error();
    EXPECT_TRUE(absl::StrContains(r.error(), "denied by")) << r.error();
    // 0 is 0.0.0.0, which Linux connects to this host.
    const char* rule = absl::StartsWith(urls[index], "http://0:")
                           ? "this network"
                           : "loopback";
    EXPECT_TRUE(absl::StrContains(r.error(), rule))
        << urls[index] << " " << r.error();
    EXPECT_LE(r.attempts(), 1u) << urls[index];
  }
  EXPECT_EQ(upstream_->connections_accepted(), 0);
  EXPECT_EQ(ipv6_upstream.CountConnections(), 0);
}

TEST_F(BinaryTest, SlowReaderKeepsServerMemoryBounded) {
  StartServerBinary({"--max_body_bytes=2000000"});
  std::vector<std::string> urls;
  for (int i = 0; i < 300; ++i) {
    urls.push_back(upstream_->Url(absl::StrCat("/big?bytes=1000000&n=", i)));
  }
  grpc::ClientContext context;
  auto reader = stub_->FetchBatch(&context, Batch(urls, 8));
  v1::FetchBatchEvent event;
  ASSERT_TRUE(reader->Read(&event));
  ASSERT_TRUE(event.has_accepted());
  const int64_t baseline_kb = ServerRssKb();
  // Stop reading. Without backpressure the server would fetch all 300 MB.
  int64_t peak_kb = baseline_kb;
  for (int i = 0; i < 30; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    peak_kb = std::max(peak_kb, ServerRssKb());
  }
  const int fetched_while_stalled = upstream_->total_requests();
  std::cerr << "stalled reader: " << fetched_while_stalled << " fetched, RSS "
            << baseline_kb << " -> " << peak_kb << " kB\n";
  EXPECT_LT(fetched_while_stalled, 100);
#ifndef __SANITIZE_ADDRESS__  // ASan's quarantine keeps freed memory
  EXPECT_LT(peak_kb - baseline_kb, 120 * 1024)
      << "baseline " << baseline_kb << " kB, peak " << peak_kb << " kB";
#endif
  int results = 0;
  while (reader->Read(&event)) {
    if (event.has_result()) {
      ++results;
      EXPECT_EQ(event.result().outcome(), v1::OUTCOME_OK);
    }
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(results, 300);
}

TEST_F(BinaryTest, CliPrintsJsonLinesAndExitCodes) {
  StartServerBinary();
  const std::string server = absl::StrCat("--server=127.0.0.1:", port_);
  std::vector<std::string> lines;
  EXPECT_EQ(RunCli({"fetch", server, "--batch-id=cli-ok", "--extract=n=/n",
                    upstream_->Url("/a?n=1"), upstream_->Url("/b?n=2")},
                   &lines),
            0);
  ASSERT_EQ(lines.size(), 2u);
  for (const auto& line : lines) {
    EXPECT_NE(line.find(R"("outcome":"ok")"), std::string::npos) << line;
    EXPECT_NE(line.find(R"("json":{"n":)"), std::string::npos) << line;
  }

  lines.clear();
  EXPECT_EQ(RunCli({"fetch", server, upstream_->Url("/a"),
                    upstream_->Url("/gone?status=404")},
                   &lines),
            1);
  EXPECT_EQ(lines.size(), 2u);

  lines.clear();
  EXPECT_EQ(RunCli({"get", server, "cli-ok", "--results"}, &lines), 0);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_NE(lines[0].find(R"("state":"done")"), std::string::npos) << lines[0];

  lines.clear();
  EXPECT_EQ(RunCli({"get", server, "no-such"}, &lines), 1);
  lines.clear();
  EXPECT_EQ(
      RunCli({"fetch", "--server=127.0.0.1:1", upstream_->Url("/a")}, &lines),
      2);
  lines.clear();
  EXPECT_EQ(RunCli({"fetch", server}, &lines), 2);
}

TEST_F(BinaryTest, SigtermShutsDownGracefully) {
  StartServerBinary({"--shutdown_grace=1s"});
  std::vector<std::string> urls(4, upstream_->Url("/stuck?delay_ms=20000"));
  v1::FetchBatchRequest request = Batch(urls, 4);
  request.set_batch_id("shutdown-1");
  Streamed s;
  std::thread fetch([&] { s = Fetch(request); });
  EXPECT_TRUE(upstream_->AwaitInFlightAtLeast(4, absl::Seconds(10)));
  kill(server_process_->pid(), SIGTERM);
  EXPECT_EQ(server_process_->Wait(), 0);
  fetch.join();
  EXPECT_FALSE(s.status.ok());
  // Every request was recorded as cancelled before the process exited.
  auto rows = db_->Execute(
      "SELECT state, `stored` FROM batches WHERE batch_id='shutdown-1'",
      database_);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(absl::StripAsciiWhitespace(*rows), "3\t4");
}

}  // namespace
}  // namespace batchfetch

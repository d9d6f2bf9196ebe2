// Callers first (issue 11): detached batches, WatchBatch, CancelBatch and
// ListBatches against the real service in process (two replicas sharing
// one MariaDB database where the behaviour crosses replicas).
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "tests/support/logged_server.h"
#include "tests/support/service_fixture.h"

namespace batchfetch::e2e {
namespace {

class CallersTest : public ServiceTest {
 protected:
  // A second replica on the same database.
  std::unique_ptr<v1::BatchFetcher::Stub> StartSecondReplica(
      ServerConfig config) {
    auto server = BatchFetchServer::Start(config);
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return nullptr;
    second_ = *std::move(server);
    return v1::BatchFetcher::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", second_->port()),
                            grpc::InsecureChannelCredentials()));
  }

  // URLs that each take `delay_ms` upstream.
  v1::FetchBatchRequest SlowBatch(int n, int delay_ms, uint32_t concurrency) {
    std::vector<std::string> urls;
    for (int i = 0; i < n; ++i) {
      urls.push_back(
          upstream_->Url(absl::StrCat("/slow?n=", i, "&delay_ms=", delay_ms)));
    }
    return Batch(urls, concurrency);
  }

  // Starts a detached batch, reads `accepted`, then goes away (cancels
  // the call). Returns the batch id.
  std::string StartDetachedAndLeave(v1::FetchBatchRequest request,
                                    v1::BatchFetcher::Stub* stub = nullptr) {
    if (stub == nullptr) stub = stub_.get();
    request.set_detach(true);
    grpc::ClientContext context;
    auto reader = stub->FetchBatch(&context, request);
    v1::FetchBatchEvent event;
    EXPECT_TRUE(reader->Read(&event));
    EXPECT_TRUE(event.has_accepted()) << event.ShortDebugString();
    context.TryCancel();
    while (reader->Read(&event)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
    return event.has_accepted() ? event.accepted().batch_id() : std::string();
  }

  Streamed Watch(v1::BatchFetcher::Stub* stub, const std::string& id,
                 uint32_t from_index = 0) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    v1::WatchBatchRequest request;
    request.set_batch_id(id);
    request.set_from_index(from_index);
    Streamed out;
    auto reader = stub->WatchBatch(&context, request);
    v1::FetchBatchEvent event;
    while (reader->Read(&event)) out.events.push_back(event);
    out.status = reader->Finish();
    return out;
  }

  // Polls GetBatch until the batch is no longer RUNNING (or `within`).
  v1::BatchSummary WaitFinished(const std::string& id,
                                absl::Duration within = absl::Seconds(20)) {
    const absl::Time give_up = absl::Now() + within;
    while (true) {
      absl::StatusOr<v1::BatchSummary> summary = GetBatch(id);
      EXPECT_TRUE(summary.ok()) << summary.status();
      if (!summary.ok()) return {};
      if (summary->state() != v1::BATCH_STATE_RUNNING ||
          absl::Now() > give_up) {
        return *summary;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
  }

  grpc::Status ListBatches(const v1::ListBatchesRequest& request,
                           v1::ListBatchesResponse* response,
                           v1::BatchFetcher::Stub* stub = nullptr) {
    grpc::ClientContext context;
    return (stub != nullptr ? stub : stub_.get())
        ->ListBatches(&context, request, response);
  }

  // Every result index of `s` (with repeats).
  static std::multiset<uint32_t> Indices(const Streamed& s) {
    std::multiset<uint32_t> out;
    for (const auto& e : s.events) {
      if (e.has_result()) out.insert(e.result().index());
    }
    return out;
  }
  static std::multiset<uint32_t> Range(uint32_t from, uint32_t to) {
    std::multiset<uint32_t> out;
    for (uint32_t i = from; i < to; ++i) out.insert(i);
    return out;
  }

  std::unique_ptr<BatchFetchServer> second_;
};

TEST_F(CallersTest, DetachedBatchCompletesAfterItsCallerWentAway) {
  StartServer(Config());
  const std::string id = StartDetachedAndLeave(SlowBatch(6, 300, 2));
  ASSERT_FALSE(id.empty());
  const v1::BatchSummary summary = WaitFinished(id);
  EXPECT_EQ(summary.state(), v1::BATCH_STATE_DONE)
      << summary.ShortDebugString();
  EXPECT_EQ(summary.succeeded(), 6u);
  int pages = 0;
  const std::vector<v1::FetchResult> stored = ListAll(id, 100, &pages);
  ASSERT_EQ(stored.size(), 6u);
  for (const auto& r : stored) EXPECT_EQ(r.outcome(), v1::OUTCOME_OK);
}

TEST_F(CallersTest, DetachIsRefusedWithoutAStore) {
  ServerConfig config = Config();
  config.store_enabled = false;
  StartServer(config);
  v1::FetchBatchRequest request = Batch({upstream_->Url("/x")});
  request.set_detach(true);
  const Streamed s = Fetch(request);
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_NE(s.status.error_message().find("detach"), std::string::npos);
}

TEST_F(CallersTest, WatchFromTheStartOfARunningBatchSendsEveryIndexOnce) {
  StartServer(Config());
  const std::string id = StartDetachedAndLeave(SlowBatch(12, 150, 3));
  const Streamed watched = Watch(stub_.get(), id);
  ASSERT_TRUE(watched.status.ok()) << watched.status.error_message();
  ASSERT_GE(watched.events.size(), 2u);
  EXPECT_EQ(watched.events.front().accepted().batch_id(), id);
  EXPECT_EQ(watched.events.front().accepted().total(), 12u);
  ASSERT_TRUE(watched.events.back().has_summary());
  EXPECT_EQ(watched.events.back().summary().state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(Indices(watched), Range(0, 12));
}

TEST_F(CallersTest, WatchOnAnotherReplicaFollowsTheDatabase) {
  StartServer(Config());
  auto replica_b = StartSecondReplica(Config());
  ASSERT_NE(replica_b, nullptr);
  const std::string id = StartDetachedAndLeave(SlowBatch(10, 200, 2));
  const Streamed watched = Watch(replica_b.get(), id);
  ASSERT_TRUE(watched.status.ok()) << watched.status.error_message();
  EXPECT_TRUE(watched.events.front().has_accepted());
  ASSERT_TRUE(watched.events.back().has_summary());
  EXPECT_EQ(watched.events.back().summary().state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(Indices(watched), Range(0, 10));
}

TEST_F(CallersTest, WatchOfAFinishedBatchReplaysItFromTheIndexAsked) {
  StartServer(Config());
  std::vector<std::string> urls;
  for (int i = 0; i < 5; ++i) urls.push_back(upstream_->Url("/r?n=1"));
  const Streamed fetched = Fetch(Batch(urls));
  ASSERT_TRUE(fetched.status.ok());
  const Streamed all = Watch(stub_.get(), fetched.batch_id());
  ASSERT_TRUE(all.status.ok()) << all.status.error_message();
  EXPECT_EQ(Indices(all), Range(0, 5));
  EXPECT_EQ(all.events.back().summary().state(), v1::BATCH_STATE_DONE);
  // Stored results come in index order.
  EXPECT_EQ(all.events[1].result().index(), 0u);
  EXPECT_EQ(all.events[5].result().index(), 4u);
  const Streamed tail = Watch(stub_.get(), fetched.batch_id(), 3);
  EXPECT_EQ(Indices(tail), Range(3, 5));
}

TEST_F(CallersTest, WatchOfAnUnknownBatchIsNotFound) {
  StartServer(Config());
  const Streamed s = Watch(stub_.get(), "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(s.events.empty());
}

TEST_F(CallersTest, CancelFromAnotherReplicaEndsTheBatchWithinSeconds) {
  StartServer(Config());
  auto replica_b = StartSecondReplica(Config());
  ASSERT_NE(replica_b, nullptr);
  // 8 requests of 1 s one at a time: ~8 s if nobody cancels.
  const std::string id = StartDetachedAndLeave(SlowBatch(8, 1000, 1));
  absl::SleepFor(absl::Milliseconds(300));
  const absl::Time asked = absl::Now();
  grpc::ClientContext context;
  v1::CancelBatchRequest cancel;
  cancel.set_batch_id(id);
  v1::BatchSummary answered;
  ASSERT_TRUE(replica_b->CancelBatch(&context, cancel, &answered).ok());
  EXPECT_EQ(answered.batch_id(), id);
  const v1::BatchSummary summary = WaitFinished(id, absl::Seconds(5));
  EXPECT_LT(absl::Now() - asked, absl::Seconds(3));
  EXPECT_EQ(summary.state(), v1::BATCH_STATE_CANCELLED)
      << summary.ShortDebugString();
  int pages = 0;
  const std::vector<v1::FetchResult> stored = ListAll(id, 100, &pages);
  EXPECT_EQ(stored.size(), 8u);
  int cancelled = 0;
  for (const auto& r : stored)
    cancelled += r.outcome() == v1::OUTCOME_CANCELLED;
  EXPECT_GE(cancelled, 5);
}

TEST_F(CallersTest, CancelOfAFinishedBatchChangesNothing) {
  StartServer(Config());
  const Streamed fetched = Fetch(Batch({upstream_->Url("/done")}));
  ASSERT_TRUE(fetched.status.ok());
  grpc::ClientContext context;
  v1::CancelBatchRequest cancel;
  cancel.set_batch_id(fetched.batch_id());
  v1::BatchSummary answered;
  ASSERT_TRUE(stub_->CancelBatch(&context, cancel, &answered).ok());
  EXPECT_EQ(answered.state(), v1::BATCH_STATE_DONE);
  grpc::ClientContext unknown_context;
  cancel.set_batch_id("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
  EXPECT_EQ(
      stub_->CancelBatch(&unknown_context, cancel, &answered).error_code(),
      grpc::StatusCode::NOT_FOUND);
}

TEST_F(CallersTest, ListBatchesPagesNewestFirstAndFiltersByState) {
  StartServer(Config());
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    const Streamed s = Fetch(Batch({upstream_->Url("/l")}));
    ASSERT_TRUE(s.status.ok());
    ids.push_back(s.batch_id());
  }
  // A cancelled one, newest.
  const Streamed cancelled =
      Fetch(SlowBatch(3, 2000, 1), absl::Seconds(60), /*cancel_after=*/1);
  ids.push_back(cancelled.batch_id());
  WaitFinished(ids.back());

  v1::ListBatchesRequest request;
  request.set_page_size(3);
  v1::ListBatchesResponse first;
  ASSERT_TRUE(ListBatches(request, &first).ok());
  ASSERT_EQ(first.batches_size(), 3);
  EXPECT_EQ(first.batches(0).batch_id(), ids[3]);
  EXPECT_EQ(first.batches(1).batch_id(), ids[2]);
  EXPECT_EQ(first.batches(2).batch_id(), ids[1]);
  ASSERT_FALSE(first.next_page_token().empty());
  request.set_page_token(first.next_page_token());
  v1::ListBatchesResponse second;
  ASSERT_TRUE(ListBatches(request, &second).ok());
  ASSERT_EQ(second.batches_size(), 1);
  EXPECT_EQ(second.batches(0).batch_id(), ids[0]);
  EXPECT_TRUE(second.next_page_token().empty());

  v1::ListBatchesRequest done_only;
  done_only.set_state(v1::BATCH_STATE_DONE);
  v1::ListBatchesResponse done;
  ASSERT_TRUE(ListBatches(done_only, &done).ok());
  ASSERT_EQ(done.batches_size(), 3);
  for (const auto& b : done.batches()) {
    EXPECT_EQ(b.state(), v1::BATCH_STATE_DONE);
  }
  v1::ListBatchesRequest cancelled_only;
  cancelled_only.set_state(v1::BATCH_STATE_CANCELLED);
  v1::ListBatchesResponse only;
  ASSERT_TRUE(ListBatches(cancelled_only, &only).ok());
  ASSERT_EQ(only.batches_size(), 1);
  EXPECT_EQ(only.batches(0).batch_id(), ids[3]);
}

TEST_F(CallersTest, ListBatchesRefusesATamperedTokenAndAnOversizedPage) {
  StartServer(Config());
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(Fetch(Batch({upstream_->Url("/t")})).status.ok());
  }
  v1::ListBatchesRequest request;
  request.set_page_size(1);
  v1::ListBatchesResponse first;
  ASSERT_TRUE(ListBatches(request, &first).ok());
  std::string token = first.next_page_token();
  ASSERT_FALSE(token.empty());
  token[token.size() / 2] = token[token.size() / 2] == 'A' ? 'B' : 'A';
  request.set_page_token(token);
  v1::ListBatchesResponse ignored;
  grpc::Status tampered = ListBatches(request, &ignored);
  EXPECT_EQ(tampered.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(tampered.error_message().find("page_token"), std::string::npos);
  // The token of another query (another state filter) is refused too.
  request.set_page_token(first.next_page_token());
  request.set_state(v1::BATCH_STATE_DONE);
  EXPECT_EQ(ListBatches(request, &ignored).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  v1::ListBatchesRequest huge;
  huge.set_page_size(1001);
  grpc::Status too_big = ListBatches(huge, &ignored);
  EXPECT_EQ(too_big.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(too_big.error_message().find("page_size"), std::string::npos);
}

TEST_F(CallersTest, AnotherReplicaAcceptsTheTokensThisOneIssued) {
  StartServer(Config());
  auto replica_b = StartSecondReplica(Config());
  ASSERT_NE(replica_b, nullptr);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(Fetch(Batch({upstream_->Url("/s")})).status.ok());
  }
  v1::ListBatchesRequest request;
  request.set_page_size(1);
  v1::ListBatchesResponse first;
  ASSERT_TRUE(ListBatches(request, &first).ok());
  request.set_page_token(first.next_page_token());
  v1::ListBatchesResponse second;
  grpc::Status status = ListBatches(request, &second, replica_b.get());
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(second.batches_size(), 1);
  EXPECT_NE(second.batches(0).batch_id(), first.batches(0).batch_id());
}

TEST_F(CallersTest, OtherOwnersBatchesAreInvisibleToWatchCancelAndList) {
  const std::string token_file =
      absl::StrCat(::testing::TempDir(), "/callers_tokens_", getpid());
  {
    std::ofstream out(token_file);
    out << "alice alice-token-0123456789abcdef\n"
        << "bob bob-token-0123456789abcdef01\n";
  }
  ServerConfig config = Config();
  config.auth_token_file = token_file;
  StartServer(config);
  auto as = [](grpc::ClientContext* context, const std::string& token) {
    context->AddMetadata("authorization", "Bearer " + token);
  };
  grpc::ClientContext fetch_context;
  as(&fetch_context, "alice-token-0123456789abcdef");
  auto reader =
      stub_->FetchBatch(&fetch_context, Batch({upstream_->Url("/own")}));
  v1::FetchBatchEvent event;
  std::string id;
  while (reader->Read(&event)) {
    if (event.has_accepted()) id = event.accepted().batch_id();
  }
  ASSERT_TRUE(reader->Finish().ok());

  grpc::ClientContext watch_context;
  as(&watch_context, "bob-token-0123456789abcdef01");
  v1::WatchBatchRequest watch;
  watch.set_batch_id(id);
  auto watcher = stub_->WatchBatch(&watch_context, watch);
  while (watcher->Read(&event)) {
  }
  EXPECT_EQ(watcher->Finish().error_code(), grpc::StatusCode::NOT_FOUND);

  grpc::ClientContext cancel_context;
  as(&cancel_context, "bob-token-0123456789abcdef01");
  v1::CancelBatchRequest cancel;
  cancel.set_batch_id(id);
  v1::BatchSummary summary;
  EXPECT_EQ(stub_->CancelBatch(&cancel_context, cancel, &summary).error_code(),
            grpc::StatusCode::NOT_FOUND);

  grpc::ClientContext list_bob;
  as(&list_bob, "bob-token-0123456789abcdef01");
  v1::ListBatchesResponse bobs;
  ASSERT_TRUE(stub_->ListBatches(&list_bob, {}, &bobs).ok());
  EXPECT_EQ(bobs.batches_size(), 0);
  grpc::ClientContext list_alice;
  as(&list_alice, "alice-token-0123456789abcdef");
  v1::ListBatchesResponse alices;
  ASSERT_TRUE(stub_->ListBatches(&list_alice, {}, &alices).ok());
  ASSERT_EQ(alices.batches_size(), 1);
  EXPECT_EQ(alices.batches(0).batch_id(), id);
  std::remove(token_file.c_str());
}

TEST_F(CallersTest, TheCliDetachesWatchesListsAndCancels) {
  StartServer(Config());
  const std::string server = absl::StrCat("127.0.0.1:", server_->port());
  auto run = [&](const std::string& args, std::string* out) {
    out->clear();
    return RunCommand(absl::StrCat(BATCHFETCH_CLI_BINARY, " ", args,
                                   " --server=", server, " 2>/dev/null"),
                      out);
  };
  std::string out;
  ASSERT_EQ(run(absl::StrCat("fetch --detach '",
                             upstream_->Url("/cli?n=1&delay_ms=300"), "' '",
                             upstream_->Url("/cli?n=2&delay_ms=300"), "'"),
                &out),
            0)
      << out;
  const std::string id(absl::StripAsciiWhitespace(out));
  ASSERT_EQ(id.size(), 36u) << out;
  ASSERT_EQ(run("watch " + id, &out), 0) << out;
  EXPECT_NE(out.find("\"index\":0"), std::string::npos) << out;
  EXPECT_NE(out.find("\"index\":1"), std::string::npos) << out;
  EXPECT_NE(out.find("\"summary\""), std::string::npos) << out;
  ASSERT_EQ(run("list --state done", &out), 0) << out;
  EXPECT_NE(out.find(id), std::string::npos) << out;
  ASSERT_EQ(run("cancel " + id, &out), 0) << out;
  EXPECT_NE(out.find(id), std::string::npos) << out;
  EXPECT_EQ(run("cancel 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", &out), 1);
}

TEST_F(CallersTest, AResumedBatchIsNotCancelledByAnEarlierCancel) {
  StartServer(Config());
  v1::FetchBatchRequest request = SlowBatch(4, 1000, 1);
  const std::string id = StartDetachedAndLeave(request);
  grpc::ClientContext context;
  v1::CancelBatchRequest cancel;
  cancel.set_batch_id(id);
  v1::BatchSummary answered;
  ASSERT_TRUE(stub_->CancelBatch(&context, cancel, &answered).ok());
  ASSERT_EQ(WaitFinished(id).state(), v1::BATCH_STATE_CANCELLED);
  // Resumed: the old request must not reach the poller again.
  request.set_batch_id(id);
  request.set_resume(true);
  request.set_concurrency(4);
  const Streamed resumed = Fetch(request);
  ASSERT_TRUE(resumed.status.ok()) << resumed.status.error_message();
  EXPECT_EQ(resumed.summary().state(), v1::BATCH_STATE_DONE);
}

TEST_F(CallersTest, AWatcherThatStopsReadingDoesNotStallTheBatch) {
  StartServer(Config());
  // 200 results of ~16 KB at concurrency 4 (an engine window of 8 slots),
  // far more than the watcher's flow-control window. The first four wait,
  // so the watcher is live (subscribed, caught up) before results come.
  std::vector<std::string> urls;
  for (int i = 0; i < 200; ++i) {
    urls.push_back(upstream_->Url(absl::StrCat("/r?n=", i, "&bytes=16384",
                                               i < 4 ? "&delay_ms=1000" : "")));
  }
  const std::string id = StartDetachedAndLeave(Batch(urls, 4));
  ASSERT_FALSE(id.empty());
  // A watcher with a small receive window that reads `accepted` and then
  // nothing more.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 10);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // own connection
  auto stalled_stub = v1::BatchFetcher::NewStub(
      grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext context;
  v1::WatchBatchRequest request;
  request.set_batch_id(id);
  auto reader = stalled_stub->WatchBatch(&context, request);
  v1::FetchBatchEvent event;
  ASSERT_TRUE(reader->Read(&event));
  ASSERT_TRUE(event.has_accepted());

  const v1::BatchSummary summary = WaitFinished(id, absl::Seconds(15));
  EXPECT_EQ(summary.state(), v1::BATCH_STATE_DONE)
      << summary.ShortDebugString();
  EXPECT_EQ(summary.succeeded(), 200u);
  context.TryCancel();
  while (reader->Read(&event)) {
  }
  reader->Finish();
}

}  // namespace
}  // namespace batchfetch::e2e

// Issue 11, callers' side of result sizes and paging, on the in-process
// server with MariaDB and a loopback upstream: per-request max_body_bytes
// and its stream-safe default, ListResults rows cut to what a default
// client can read, opaque page tokens, more_may_come, body_text.
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/support/service_fixture.h"

namespace batchfetch {
namespace e2e {
namespace {

constexpr int kSixMib = 6 << 20;

class ResultSizeTest : public ServiceTest {
 protected:
  void SetUp() override {
    ServiceTest::SetUp();
    StartServer(Config());
  }

  // A stub whose channel accepts messages of any size (a caller that raised
  // its receive limit).
  std::unique_ptr<v1::BatchFetcher::Stub> BigMessageStub() {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    return v1::BatchFetcher::NewStub(
        grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                  grpc::InsecureChannelCredentials(), args));
  }

  grpc::Status ListPage(const std::string& batch_id, uint32_t page_size,
                        const std::string& token,
                        v1::ListResultsResponse* response) {
    grpc::ClientContext context;
    v1::ListResultsRequest request;
    request.set_batch_id(batch_id);
    request.set_page_size(page_size);
    request.set_page_token(token);
    return stub_->ListResults(&context, request, response);
  }
};

TEST_F(ResultSizeTest, OneBigBodyEndsTooLargeAndTheDefaultClientGetsTheRest) {
  // The default client (4 MiB receive limit) and the default per-request
  // cap: the 6 MiB body must not reach the stream, or the whole call would
  // fail with RESOURCE_EXHAUSTED.
  Streamed s =
      Fetch(Batch({upstream_->Url("/a?n=1"),
                   upstream_->Url(absl::StrCat("/big?bytes=", kSixMib)),
                   upstream_->Url("/c?n=3")}));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  ExpectWellFormedStream(s, 3);
  auto results = s.results();
  EXPECT_EQ(results[0].outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(results[1].outcome(), v1::OUTCOME_TOO_LARGE);
  EXPECT_TRUE(absl::StrContains(results[1].error(), "max_body_bytes"))
      << results[1].error();
  EXPECT_EQ(results[2].outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(s.summary().state(), v1::BATCH_STATE_DONE);
}

TEST_F(ResultSizeTest, AStreamSafeBodyJustUnderTheDefaultCapArrives) {
  // 3.5 MiB minus a little: the largest default result still streams to a
  // default client.
  Streamed s = Fetch(Batch({upstream_->Url(
      absl::StrCat("/edge?bytes=", kStreamSafeMaxBodyBytes - 16))}));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.results()[0].outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(s.results()[0].json().size(),
            static_cast<size_t>(kStreamSafeMaxBodyBytes - 16));
}

TEST_F(ResultSizeTest, MaxBodyBytesAboveTheServerCapIsRejected) {
  v1::FetchBatchRequest request = Batch({upstream_->Url("/a")});
  request.set_max_body_bytes((8 << 20) + 1);
  Streamed s = Fetch(request);
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StartsWith(s.status.error_message(), "max_body_bytes: "))
      << s.status.error_message();
}

TEST_F(ResultSizeTest, ACallerMayAskForMoreAndListResultsCutsTheBigRow) {
  // A caller with a large receive limit asks for 8 MiB bodies: the 6 MiB
  // JSON body arrives whole.
  auto big_stub = BigMessageStub();
  v1::FetchBatchRequest request =
      Batch({upstream_->Url("/a?n=1"),
             upstream_->Url(absl::StrCat("/big?bytes=", kSixMib)),
             upstream_->Url(absl::StrCat("/big?status=500&bytes=", kSixMib))});
  request.set_max_body_bytes(8 << 20);
  grpc::ClientContext context;
  auto reader = big_stub->FetchBatch(&context, request);
  v1::FetchBatchEvent event;
  std::string batch_id;
  std::map<uint32_t, v1::FetchResult> results;
  while (reader->Read(&event)) {
    if (event.has_accepted()) batch_id = event.accepted().batch_id();
    if (event.has_result()) results[event.result().index()] = event.result();
  }
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_EQ(results[1].outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(results[1].json().size(), static_cast<size_t>(kSixMib));
  ASSERT_EQ(results[2].outcome(), v1::OUTCOME_HTTP_ERROR);
  EXPECT_EQ(results[2].body().size(), static_cast<size_t>(kSixMib));

  // The default client still reads every page: each big row alone, cut
  // and flagged; the small row whole.
  std::vector<v1::FetchResult> listed;
  std::string token;
  int pages = 0;
  do {
    v1::ListResultsResponse response;
    grpc::Status status = ListPage(batch_id, 100, token, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_LT(response.ByteSizeLong(), 4u << 20);
    for (const auto& r : response.results()) listed.push_back(r);
    token = response.next_page_token();
    ASSERT_LT(++pages, 10);
  } while (!token.empty());
  ASSERT_EQ(listed.size(), 3u);
  EXPECT_FALSE(listed[0].truncated());
  EXPECT_EQ(listed[0].json(), results[0].json());
  EXPECT_TRUE(listed[1].truncated());
  EXPECT_TRUE(absl::StartsWith(results[1].json(), listed[1].json()));
  EXPECT_GT(listed[1].json().size(), 3u << 20);
  EXPECT_TRUE(listed[2].truncated());
  EXPECT_TRUE(listed[2].json().empty());
  EXPECT_TRUE(absl::StartsWith(results[2].body(), listed[2].body()));
  EXPECT_GT(listed[2].body().size(), 3u << 20);
}

TEST_F(ResultSizeTest, PageTokensAreOpaqueTiedToTheBatchAndTamperEvident) {
  std::vector<std::string> urls;
  for (int i = 0; i < 5; ++i) {
    urls.push_back(upstream_->Url(absl::StrCat("/p?n=", i)));
  }
  Streamed first = Fetch(Batch(urls));
  Streamed second = Fetch(Batch(urls));
  ASSERT_TRUE(first.status.ok() && second.status.ok());

  int pages = 0;
  std::vector<v1::FetchResult> all = ListAll(first.batch_id(), 2, &pages);
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(all.size(), 5u);
  for (uint32_t i = 0; i < 5; ++i) EXPECT_EQ(all[i].index(), i);

  v1::ListResultsResponse page;
  ASSERT_TRUE(ListPage(first.batch_id(), 2, "", &page).ok());
  const std::string token = page.next_page_token();
  ASSERT_FALSE(token.empty());
  EXPECT_FALSE(page.more_may_come());  // more pages follow, the batch ended
  EXPECT_NE(token, "2");               // not the bare index any more

  // The same token for another batch, an altered one, the old numeric form.
  std::string altered = token;
  altered[altered.size() / 2] = altered[altered.size() / 2] == 'A' ? 'B' : 'A';
  for (const auto& [batch_id, bad] :
       std::vector<std::pair<std::string, std::string>>{
           {second.batch_id(), token},
           {first.batch_id(), altered},
           {first.batch_id(), "2"}}) {
    v1::ListResultsResponse response;
    grpc::Status status = ListPage(batch_id, 2, bad, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_TRUE(absl::StartsWith(status.error_message(), "page_token: "))
        << status.error_message();
  }
}

TEST_F(ResultSizeTest, TheLastPageOfARunningBatchSaysMoreMayCome) {
  v1::FetchBatchRequest request = Batch(
      {upstream_->Url("/fast?n=0"), upstream_->Url("/slow?delay_ms=1500")}, 2);
  grpc::ClientContext context;
  auto reader = stub_->FetchBatch(&context, request);
  v1::FetchBatchEvent event;
  std::string batch_id;
  // Wait for the fast result: it is streamed only once stored.
  while (reader->Read(&event)) {
    if (event.has_accepted()) batch_id = event.accepted().batch_id();
    if (event.has_result()) break;
  }
  v1::ListResultsResponse running;
  ASSERT_TRUE(ListPage(batch_id, 100, "", &running).ok());
  EXPECT_EQ(running.results_size(), 1);
  EXPECT_TRUE(running.next_page_token().empty());
  EXPECT_TRUE(running.more_may_come());
  while (reader->Read(&event)) {
  }
  ASSERT_TRUE(reader->Finish().ok());
  v1::ListResultsResponse done;
  ASSERT_TRUE(ListPage(batch_id, 100, "", &done).ok());
  EXPECT_EQ(done.results_size(), 2);
  EXPECT_FALSE(done.more_may_come());
}

TEST_F(ResultSizeTest, BodyTextIsPostedAsUtf8) {
  v1::FetchBatchRequest request = Batch({upstream_->Url("/e?echo=1")});
  request.mutable_requests(0)->set_method("POST");
  request.mutable_requests(0)->set_body_text(R"({"name":"Zoë"})");
  Streamed s = Fetch(request);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.results()[0].outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(s.results()[0].json(), R"({"name":"Zoë"})");

  request.mutable_requests(0)->set_body("{}");
  Streamed both = Fetch(request);
  EXPECT_EQ(both.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(
      absl::StartsWith(both.status.error_message(), "requests[0].body_text: "))
      << both.status.error_message();
}

TEST_F(ResultSizeTest, AWatcherWithTheDefaultLimitReadsABigLiveResultCut) {
  // A detached batch that asked for 8 MiB bodies; its 6 MiB result comes
  // after a second, when the watcher is live (subscribed, caught up).
  v1::FetchBatchRequest request = Batch(
      {upstream_->Url(absl::StrCat("/big?delay_ms=1000&bytes=", kSixMib))});
  request.set_max_body_bytes(8 << 20);
  request.set_detach(true);
  std::string batch_id;
  {
    grpc::ClientContext context;
    auto reader = stub_->FetchBatch(&context, request);
    v1::FetchBatchEvent event;
    ASSERT_TRUE(reader->Read(&event));
    batch_id = event.accepted().batch_id();
    context.TryCancel();
    while (reader->Read(&event)) {
    }
    reader->Finish();
  }
  ASSERT_FALSE(batch_id.empty());
  // The default client (4 MiB receive limit) watches it.
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  v1::WatchBatchRequest watch;
  watch.set_batch_id(batch_id);
  auto reader = stub_->WatchBatch(&context, watch);
  std::vector<v1::FetchBatchEvent> events;
  v1::FetchBatchEvent event;
  while (reader->Read(&event)) events.push_back(event);
  const grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(events.size(), 3u);
  ASSERT_TRUE(events[1].has_result());
  EXPECT_EQ(events[1].result().outcome(), v1::OUTCOME_OK);
  EXPECT_TRUE(events[1].result().truncated());
  EXPECT_GT(events[1].result().json().size(), 3u << 20);
  EXPECT_LT(events[1].result().ByteSizeLong(), 4u << 20);
  EXPECT_TRUE(events[2].has_summary());
}

}  // namespace
}  // namespace e2e
}  // namespace batchfetch

// End-to-end hostile inputs (issue 9): upstreams that break HTTP framing,
// never stop sending, reset, lie about lengths, send JSON built to hurt, loop
// redirects or stay silent each end their own request with one exact outcome
// and a helpful error, in a batch whose normal URLs are unaffected; and
// values too big for their columns (a 70 KiB URL) are still stored, cut with
// a marker. In-process server, real MariaDB, loopback upstreams.
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "batchfetch/v1/batchfetch.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "service/store/mysql/mysql_values.h"
#include "tests/support/hostile_upstream.h"
#include "tests/support/service_fixture.h"

namespace batchfetch {
namespace {

using e2e::ServiceTest;
using e2e::Streamed;
using testing::HostileUpstream;

// Small, so that the endless body hits it at once.
constexpr int64_t kMaxBodyBytes = 64 << 10;

// What one hostile URL must end with.
struct Expected {
  std::string path;
  v1::Outcome outcome;
  std::string error_contains;  // empty: `error` must be empty
  int http_status;
};

class HostileUpstreamTest : public ServiceTest {
 protected:
  void SetUp() override {
    ServiceTest::SetUp();
    auto hostile = HostileUpstream::Start();
    ASSERT_TRUE(hostile.ok()) << hostile.status();
    hostile_ = *std::move(hostile);
  }

  // Every stored result of `batch_id`, by index.
  std::map<uint32_t, v1::FetchResult> Stored(const std::string& batch_id) {
    int pages = 0;
    std::map<uint32_t, v1::FetchResult> by_index;
    for (v1::FetchResult& r : ListAll(batch_id, 1000, &pages)) {
      by_index[r.index()] = std::move(r);
    }
    return by_index;
  }

  std::unique_ptr<HostileUpstream> hostile_;
};

TEST_F(HostileUpstreamTest,
       EachHostileUpstreamGetsItsExactOutcomeAndTheNormalUrlsAreUnaffected) {
  ServerConfig config = Config();
  config.engine.max_body_bytes = kMaxBodyBytes;
  StartServer(config);

  const std::vector<Expected> hostile = {
      // libcurl refuses more than 300 KB of response headers.
      {"/endless-headers", v1::OUTCOME_TRANSPORT_ERROR,
       "Too large response headers", 200},
      {"/bad-chunked", v1::OUTCOME_TRANSPORT_ERROR,
       "Illegal or missing hexadecimal sequence in chunked-encoding", 200},
      {"/reset-mid-body", v1::OUTCOME_TRANSPORT_ERROR,
       "Connection reset by peer", 200},
      {"/short-body", v1::OUTCOME_TRANSPORT_ERROR,
       "transfer closed with 990 bytes remaining to read", 200},
      // Without a length the cap is enforced as the body arrives.
      {"/endless-body", v1::OUTCOME_TOO_LARGE,
       absl::StrCat("response body exceeds ", kMaxBodyBytes, " bytes"), 200},
      {"/deep-json", v1::OUTCOME_INVALID_JSON,
       "JSON nested deeper than 256 levels", 200},
      {"/bad-utf8-json", v1::OUTCOME_INVALID_JSON,
       "body is not valid JSON: Invalid encoding in string", 200},
      {"/surrogate-json", v1::OUTCOME_INVALID_JSON,
       "body is not valid JSON: a string holds an unpaired UTF-16 surrogate",
       200},
      {"/redirect-loop", v1::OUTCOME_TRANSPORT_ERROR,
       "Maximum (5) redirects followed", 302},
      // Followed; libcurl percent-encodes the raw bytes of the Location, so
      // its final URL is valid UTF-8 (FillResult would encode them too).
      {"/redirect-bad-utf8", v1::OUTCOME_OK, "", 200},
      // An empty 200 is not a JSON document (only 204/205 and HEAD may be
      // empty).
      {"/empty", v1::OUTCOME_INVALID_JSON,
       "body is not valid JSON: The document is empty", 200},
      {"/silent", v1::OUTCOME_TIMEOUT, "milliseconds with 0 bytes received", 0},
  };
  // Each hostile URL between two normal ones.
  v1::FetchBatchRequest request;
  request.set_concurrency(64);
  request.mutable_timeout()->set_seconds(1);
  request.mutable_retry()->set_max_attempts(1);
  std::map<uint32_t, Expected> hostile_at;
  std::vector<uint32_t> normal_at;
  int n = 0;
  const auto add_normal = [&] {
    normal_at.push_back(static_cast<uint32_t>(request.requests_size()));
    request.add_requests()->set_url(
        upstream_->Url(absl::StrCat("/normal?n=", n++)));
  };
  for (const Expected& e : hostile) {
    add_normal();
    hostile_at[static_cast<uint32_t>(request.requests_size())] = e;
    request.add_requests()->set_url(hostile_->Url(e.path));
  }
  add_normal();
  const int total = request.requests_size();

  const absl::Time start = absl::Now();
  Streamed s = Fetch(request);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  e2e::ExpectWellFormedStream(s, total);
  // The slowest is the silent upstream's 1 s timeout.
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));

  const std::map<uint32_t, v1::FetchResult> streamed = s.results();
  for (const auto& [index, e] : hostile_at) {
    SCOPED_TRACE(e.path);
    const v1::FetchResult& r = streamed.at(index);
    EXPECT_EQ(r.outcome(), e.outcome) << r.ShortDebugString();
    EXPECT_EQ(r.http_status(), e.http_status) << r.ShortDebugString();
    if (e.error_contains.empty()) {
      EXPECT_EQ(r.error(), "");
    } else {
      EXPECT_TRUE(absl::StrContains(r.error(), e.error_contains)) << r.error();
    }
    EXPECT_EQ(r.attempts(), 1u);
    EXPECT_GE(hostile_->requests(e.path), 1) << "never sent";
  }
  const v1::FetchResult& redirected = streamed.at(
      std::find_if(hostile_at.begin(), hostile_at.end(), [](const auto& p) {
        return p.second.path == "/redirect-bad-utf8";
      })->first);
  EXPECT_EQ(redirected.final_url(), hostile_->Url("/landed-%ff%fe?x=1"));
  EXPECT_EQ(redirected.json(), R"({"landed":true})");
  for (uint32_t index : normal_at) {
    const v1::FetchResult& r = streamed.at(index);
    EXPECT_EQ(r.outcome(), v1::OUTCOME_OK) << r.ShortDebugString();
    EXPECT_TRUE(absl::StrContains(r.json(), R"("ok":true)")) << r.json();
  }

  // All stored, as streamed; the batch is DONE.
  EXPECT_EQ(s.summary().state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(s.summary().stored(), static_cast<uint32_t>(total));
  auto summary = GetBatch(s.batch_id());
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(summary->stored(), static_cast<uint32_t>(total));
  const std::map<uint32_t, v1::FetchResult> stored = Stored(s.batch_id());
  ASSERT_EQ(stored.size(), static_cast<size_t>(total));
  for (const auto& [index, r] : streamed) {
    EXPECT_EQ(stored.at(index).outcome(), r.outcome()) << index;
    EXPECT_EQ(stored.at(index).error(), r.error()) << index;
    EXPECT_EQ(stored.at(index).final_url(), r.final_url()) << index;
  }

  // The server is still there and still fetches.
  Streamed again = Fetch(e2e::Batch({upstream_->Url("/after")}));
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_EQ(again.results().at(0).outcome(), v1::OUTCOME_OK);
}

// A URL over the 8192-byte limit is INVALID_REQUEST, and its row must still
// be stored: the url column (TEXT) holds 65535 bytes, so a 70 KiB URL is
// stored cut, ending with a marker that gives its size. So are the other
// values an upstream can make too long: a final URL after a 70 KB redirect
// (cut by the engine to 8192 bytes) and a 1000-byte Content-Type (the column
// holds 255). The batch is DONE, every row stored.
TEST_F(HostileUpstreamTest, OversizedValuesAreStoredCutWithAMarker) {
  StartServer(Config());
  const std::string prefix = upstream_->Url("/?pad=");
  const std::string long_url =
      prefix + std::string(70 * 1024 - prefix.size(), 'p');
  ASSERT_EQ(long_url.size(), 70u * 1024);
  Streamed s = Fetch(e2e::Batch({upstream_->Url("/?n=1"), long_url,
                                 hostile_->Url("/redirect-long"),
                                 hostile_->Url("/long-content-type")}));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  e2e::ExpectWellFormedStream(s, 4);
  const std::map<uint32_t, v1::FetchResult> streamed = s.results();
  const v1::FetchResult& refused = streamed.at(1);
  EXPECT_EQ(refused.outcome(), v1::OUTCOME_INVALID_REQUEST);
  EXPECT_TRUE(absl::StrContains(refused.error(), "url is 71680 bytes"))
      << refused.error();
  EXPECT_EQ(refused.url(), long_url);  // the stream echoes it whole
  const v1::FetchResult& redirected = streamed.at(2);
  EXPECT_EQ(redirected.outcome(), v1::OUTCOME_OK) << redirected.error();
  const std::string landed = hostile_->Url("/landed-");
  EXPECT_EQ(redirected.final_url().size(), 8192u);
  EXPECT_TRUE(absl::StartsWith(redirected.final_url(), landed + "xxxx"));
  EXPECT_TRUE(absl::EndsWith(redirected.final_url(),
                             absl::StrCat("xxx\xE2\x80\xA6[truncated: ",
                                          landed.size() + 70000, " bytes]")))
      << redirected.final_url().substr(8100);
  const v1::FetchResult& typed = streamed.at(3);
  EXPECT_EQ(typed.outcome(), v1::OUTCOME_OK) << typed.error();
  EXPECT_EQ(typed.content_type().size(), 1000u);
  EXPECT_EQ(s.summary().state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(s.summary().stored(), 4u);

  auto summary = GetBatch(s.batch_id());
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->state(), v1::BATCH_STATE_DONE);
  EXPECT_EQ(summary->stored(), 4u);
  const std::map<uint32_t, v1::FetchResult> stored = Stored(s.batch_id());
  ASSERT_EQ(stored.size(), 4u);
  EXPECT_EQ(stored.at(0).outcome(), v1::OUTCOME_OK);
  const v1::FetchResult& row = stored.at(1);
  EXPECT_EQ(row.outcome(), v1::OUTCOME_INVALID_REQUEST);
  EXPECT_EQ(row.url().size(), kMaxStoredUrlBytes);
  EXPECT_TRUE(
      absl::EndsWith(row.url(), "p\xE2\x80\xA6[truncated: 71680 bytes]"))
      << row.url().substr(row.url().size() - 40);
  EXPECT_TRUE(absl::StartsWith(long_url, row.url().substr(0, 60000)));
  EXPECT_EQ(row.error(), refused.error());
  EXPECT_EQ(stored.at(2).final_url(), redirected.final_url());
  EXPECT_EQ(stored.at(2).json(), R"({"landed":true})");
  const std::string& stored_type = stored.at(3).content_type();
  EXPECT_EQ(stored_type.size(), kMaxStoredContentTypeBytes);
  EXPECT_TRUE(absl::StartsWith(stored_type, "application/json; pad=ppp"));
  EXPECT_TRUE(
      absl::EndsWith(stored_type, "p\xE2\x80\xA6[truncated: 1000 bytes]"))
      << stored_type;
}

}  // namespace
}  // namespace batchfetch

// `batchfetch fetch` flags added in issue 11, end to end: the real CLI
// against the real server binary, MariaDB and a loopback upstream.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/support/service_fixture.h"

namespace batchfetch {
namespace e2e {
namespace {

class CliFetchTest : public BinaryTest {
 protected:
  void SetUp() override {
    BinaryTest::SetUp();
    StartServerBinary();
  }
  std::string Server() const { return absl::StrCat("127.0.0.1:", port_); }
};

TEST_F(CliFetchTest, CsvOutputHasTheHeaderAndOneRowPerResult) {
  std::vector<std::string> lines;
  const int code =
      RunCli({"fetch", "--server", Server(), "--quiet", "--output", "csv",
              "--concurrency", "1", upstream_->Url("/a?n=1"),
              upstream_->Url("/b?status=404")},
             &lines);
  EXPECT_EQ(code, 1);  // one result failed
  ASSERT_EQ(lines.size(), 3u) << absl::StrJoin(lines, "\n");
  EXPECT_EQ(lines[0],
            "index,url,outcome,http_status,attempts,elapsed_ms,content_type,"
            "error");
  std::vector<std::string> ok, failed;
  for (size_t i = 1; i < 3; ++i) {
    (absl::StrContains(lines[i], ",ok,200,") ? ok : failed).push_back(lines[i]);
  }
  ASSERT_EQ(ok.size(), 1u) << absl::StrJoin(lines, "\n");
  EXPECT_TRUE(absl::StartsWith(
      ok[0], absl::StrCat("0,", upstream_->Url("/a?n=1"), ",ok,200,1,")))
      << ok[0];
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_TRUE(absl::StrContains(failed[0], ",http_error,404,")) << failed[0];
}

TEST_F(CliFetchTest, RetryFlagsReachTheServer) {
  // The first try of this exact URL fails 503; --retry 3 --retry-on 5xx
  // brings the second.
  std::vector<std::string> lines;
  const int code =
      RunCli({"fetch", "--server", Server(), "--quiet", "--retry", "3",
              "--retry-on", "5xx", "--per-host", "1", "--deadline-batch", "30s",
              upstream_->Url("/flaky?fail_first=1&n=7")},
             &lines);
  EXPECT_EQ(code, 0) << absl::StrJoin(lines, "\n");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(absl::StrContains(lines[0], R"("attempts":2)")) << lines[0];
}

TEST_F(CliFetchTest, BodyIsPostedAsText) {
  std::vector<std::string> lines;
  const int code =
      RunCli({"fetch", "--server", Server(), "--quiet", "--method", "POST",
              "--body", R"({"hello":"wörld"})", upstream_->Url("/echo?echo=1")},
             &lines);
  EXPECT_EQ(code, 0) << absl::StrJoin(lines, "\n");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(absl::StrContains(lines[0], R"("json":{"hello":"wörld"})"))
      << lines[0];
}

TEST_F(CliFetchTest, NdjsonIsTheDefaultOutput) {
  std::vector<std::string> lines;
  EXPECT_EQ(RunCli({"fetch", "--server", Server(), "--quiet", "--output",
                    "ndjson", upstream_->Url("/a")},
                   &lines),
            0);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(absl::StartsWith(lines[0], R"({"index":0,)")) << lines[0];
}

}  // namespace
}  // namespace e2e
}  // namespace batchfetch

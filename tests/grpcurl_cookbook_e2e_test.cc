// The README's "grpcurl cookbook", run as written: every ```sh block of
// that section runs (bash -euo pipefail, in order, in one scratch directory)
// with the real grpcurl and jq against the in-process server, ADDR set to
// it and API to a loopback upstream; each block must exit 0 and print every
// text its "# prints: TEXT" lines promise. Skipped, saying why, without
// grpcurl or jq.
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/support/grpcurl.h"
#include "tests/support/service_fixture.h"

namespace batchfetch {
namespace e2e {
namespace {

struct CookbookBlock {
  std::string script;
  std::vector<std::string> prints;  // from "# prints: TEXT" lines
  int line = 0;                     // README line of the opening fence
};

// The ```sh blocks of README.md's "## grpcurl cookbook" section.
std::vector<CookbookBlock> ReadCookbook() {
  std::ifstream in(absl::StrCat(BATCHFETCH_SOURCE_DIR, "/README.md"));
  std::vector<CookbookBlock> blocks;
  std::string line;
  bool in_section = false;
  bool in_block = false;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (absl::StartsWith(line, "## ")) {
      in_section = line == "## grpcurl cookbook";
      continue;
    }
    if (!in_section) continue;
    if (!in_block && line == "```sh") {
      in_block = true;
      blocks.push_back(CookbookBlock{"", {}, number});
    } else if (in_block && line == "```") {
      in_block = false;
    } else if (in_block) {
      absl::string_view rest = line;
      if (absl::ConsumePrefix(&rest, "# prints: ")) {
        blocks.back().prints.emplace_back(rest);
      }
      absl::StrAppend(&blocks.back().script, line, "\n");
    }
  }
  return blocks;
}

class GrpcurlCookbookTest : public ServiceTest {
 protected:
  void SetUp() override {
    grpcurl_ = FindGrpcurl();
    if (grpcurl_.empty()) GTEST_SKIP() << kNoGrpcurl;
    std::string jq;
    if (RunCommand("command -v jq", &jq) != 0) {
      GTEST_SKIP() << "no jq on PATH: the cookbook's commands need it";
    }
    ServiceTest::SetUp();
    StartServer(Config());
    char dir[] = "/tmp/batchfetch_cookbook_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    // `-import-path proto` as in the README, from the scratch directory.
    ASSERT_EQ(symlink(absl::StrCat(BATCHFETCH_SOURCE_DIR, "/proto").c_str(),
                      absl::StrCat(dir_, "/proto").c_str()),
              0);
  }
  void TearDown() override {
    if (!dir_.empty()) {
      std::string ignored;
      RunCommand(absl::StrCat("rm -rf '", dir_, "'"), &ignored);
    }
  }

  std::string grpcurl_;
  std::string dir_;
};

TEST_F(GrpcurlCookbookTest, EveryReadmeCommandRunsAndPrintsWhatItSays) {
  std::vector<CookbookBlock> blocks = ReadCookbook();
  ASSERT_GE(blocks.size(), 8u) << "the README's cookbook section is missing";
  std::string api = upstream_->Url("");
  while (!api.empty() && api.back() == '/') api.pop_back();
  const std::string grpcurl_dir = grpcurl_.substr(0, grpcurl_.rfind('/'));
  for (size_t i = 0; i < blocks.size(); ++i) {
    const CookbookBlock& block = blocks[i];
    const std::string path = absl::StrCat(dir_, "/block", i, ".sh");
    std::ofstream(path) << block.script;
    std::string output;
    const int code = RunCommand(
        absl::StrCat("cd '", dir_, "' && ADDR=127.0.0.1:", server_->port(),
                     " API='", api, "' PATH='", grpcurl_dir,
                     "':\"$PATH\" bash -euo pipefail ", path),
        &output);
    EXPECT_EQ(code, 0) << "README.md line " << block.line << ":\n"
                       << block.script << "output:\n"
                       << output;
    for (const std::string& text : block.prints) {
      EXPECT_TRUE(absl::StrContains(output, text))
          << "README.md line " << block.line << " promises \"" << text
          << "\"; the commands printed:\n"
          << output;
    }
  }
}

TEST_F(GrpcurlCookbookTest, DescribeWithTheProtoFilesShowsComments) {
  // What the cookbook says reflection cannot do and the .proto files can.
  std::string by_reflection;
  ASSERT_EQ(RunCommand(absl::StrCat(grpcurl_,
                                    " -plaintext 127.0.0.1:", server_->port(),
                                    " describe batchfetch.v1.FetchRequest"),
                       &by_reflection),
            0)
      << by_reflection;
  EXPECT_FALSE(absl::StrContains(by_reflection, "//")) << by_reflection;
  std::string from_files;
  ASSERT_EQ(RunCommand(absl::StrCat("cd '", dir_, "' && ", grpcurl_,
                                    " -import-path proto -proto "
                                    "batchfetch/v1/batchfetch.proto describe "
                                    "batchfetch.v1.FetchRequest"),
                       &from_files),
            0)
      << from_files;
  EXPECT_TRUE(absl::StrContains(from_files, "// GET (default)")) << from_files;
}

TEST_F(GrpcurlCookbookTest, BothBodyAndBodyTextAreRejectedNamingTheField) {
  std::string output;
  const int code = RunCommand(
      absl::StrCat(grpcurl_, " -plaintext -d '{\"requests\": [{\"url\": \"",
                   upstream_->Url("/x"),
                   "\", \"body\": \"e30=\", \"body_text\": \"{}\"}]}' "
                   "127.0.0.1:",
                   server_->port(), " batchfetch.v1.BatchFetcher/FetchBatch"),
      &output);
  EXPECT_NE(code, 0);
  EXPECT_TRUE(absl::StrContains(output, "InvalidArgument")) << output;
  EXPECT_TRUE(absl::StrContains(output, "requests[0].body_text")) << output;
}

}  // namespace
}  // namespace e2e
}  // namespace batchfetch

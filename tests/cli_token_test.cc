// The CLI's --token-file: the file's format and where the file comes from
// (flag, then BATCHFETCH_TOKEN_FILE). No process, no server.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/cli_args.h"
#include "gtest/gtest.h"

namespace batchfetch::cli {
namespace {

TEST(ParseTokenFileContents, TakesTheTokenAloneTrimmed) {
  EXPECT_EQ(ParseTokenFileContents("  s3cret-token \n").value(),
            "s3cret-token");
  EXPECT_EQ(ParseTokenFileContents("s3cret-token").value(), "s3cret-token");
}

TEST(ParseTokenFileContents, AcceptsTheServersNameTokenLine) {
  EXPECT_EQ(ParseTokenFileContents("# mine\n\nalice\ts3cret-token\nbob other\n")
                .value(),
            "s3cret-token");
}

TEST(ParseTokenFileContents, RefusesFilesWithoutATokenWithoutQuotingThem) {
  auto empty = ParseTokenFileContents("# only a comment\n\n");
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(empty.status().message(), "it holds no token");
  auto three = ParseTokenFileContents("alice s3cret-token extra\n");
  EXPECT_EQ(three.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(absl::StrContains(three.status().message(), "s3cret"));
}

class ResolveTokenTest : public ::testing::Test {
 protected:
  void TearDown() override { std::remove(path_.c_str()); }
  const std::string& Write(const std::string& contents) {
    std::ofstream(path_) << contents;
    return path_;
  }
  EnvLookup Env() const {
    return [this](const char* name) -> const char* {
      auto it = env_.find(name);
      return it == env_.end() ? nullptr : it->second.c_str();
    };
  }

  std::string path_ =
      absl::StrCat(::testing::TempDir(), "cli_token_test_", getpid());
  std::map<std::string, std::string> env_;
};

TEST_F(ResolveTokenTest, NoFlagAndNoVariableSendsNoToken) {
  EXPECT_EQ(ResolveToken(std::nullopt, Env()).value(), "");
  env_["BATCHFETCH_TOKEN_FILE"] = "";
  EXPECT_EQ(ResolveToken(std::nullopt, Env()).value(), "");
}

TEST_F(ResolveTokenTest, TheVariableNamesTheFileWhenTheFlagIsAbsent) {
  env_["BATCHFETCH_TOKEN_FILE"] = Write("from-variable\n");
  EXPECT_EQ(ResolveToken(std::nullopt, Env()).value(), "from-variable");
}

TEST_F(ResolveTokenTest, TheFlagWinsOverTheVariable) {
  env_["BATCHFETCH_TOKEN_FILE"] = "/nonexistent/variable-file";
  EXPECT_EQ(ResolveToken(Write("from-flag"), Env()).value(), "from-flag");
}

TEST_F(ResolveTokenTest, ErrorsNameTheFlagOrVariableAndThePath) {
  auto missing = ResolveToken(std::string("/nonexistent/tokens"), Env());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(missing.status().message(),
                               "cannot read --token-file file "
                               "'/nonexistent/tokens'"))
      << missing.status();

  env_["BATCHFETCH_TOKEN_FILE"] = Write("\n# no token\n");
  auto empty = ResolveToken(std::nullopt, Env());
  EXPECT_EQ(empty.status().message(),
            absl::StrCat("BATCHFETCH_TOKEN_FILE file '", path_,
                         "': it holds no token"));
}

TEST(TokenFileFlag, IsAConnectionFlagOfBothCommands) {
  std::istringstream no_stdin;
  auto fetch = ParseFetchArgs({"--token-file=/run/token", "http://x/"},
                              "localhost:1", no_stdin);
  ASSERT_TRUE(fetch.ok()) << fetch.status();
  EXPECT_EQ(fetch->connection.token_file, "/run/token");
  auto get =
      ParseGetArgs({"id-1", "--token-file", "/run/token"}, "localhost:1");
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->connection.token_file, "/run/token");
  EXPECT_FALSE(ParseGetArgs({"id-1"}, "localhost:1")->connection.token_file);
  EXPECT_FALSE(ParseGetArgs({"id-1", "--token-file="}, "localhost:1").ok());
  EXPECT_TRUE(absl::StrContains(kUsage, "--token-file FILE"));
  EXPECT_TRUE(absl::StrContains(kUsage, "$BATCHFETCH_TOKEN_FILE"));
}

}  // namespace
}  // namespace batchfetch::cli

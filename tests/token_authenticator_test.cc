// TokenAuthenticator and its file format: parsing, errors that name the line
// but never the token, the constant-shape comparison's answers, reloads.
#include "service/api/token_authenticator.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace batchfetch {
namespace {

constexpr char kAliceToken[] = "alice-token-0123456789";
constexpr char kBobToken[] = "bob-token-abcdefghijkl";

std::string Bearer(const std::string& token) { return "Bearer " + token; }

absl::StatusOr<std::string> AuthenticateWith(const TokenAuthenticator& auth,
                                             const std::string& value) {
  return auth.Authenticate({value});
}

TEST(ParseTokenFile, ReadsNamesAndSkipsBlankLinesAndComments) {
  auto entries = ParseTokenFile(
      absl::StrCat("# callers\n\n  alice ", kAliceToken, "\n\tbob\t", kBobToken,
                   "  \r\n   # indented comment\n"));
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].name, "alice");
  EXPECT_EQ((*entries)[1].name, "bob");
  EXPECT_NE((*entries)[0].digest, (*entries)[1].digest);
}

TEST(ParseTokenFile, ErrorsNameTheLineAndNeverTheToken) {
  const std::string secret = "s3cret-token-never-shown";
  struct Case {
    std::string contents;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"\n" + secret + "\n", "line 2: expected '<name> <token>'"},
      {"alice " + secret + " extra\n", "line 1: expected '<name> <token>'"},
      {"alice short\n", "line 1: token is shorter than 16 characters"},
      {"al/ice " + secret + "\n", "line 1: name may hold only"},
      {std::string(65, 'n') + " " + secret + "\n",
       "line 1: name is longer than 64"},
      {"alice " + secret + "\x01\n", "line 1: token has a character"},
      {"alice " + secret + "\n#\nalice " + kBobToken + "\n",
       "line 3: name 'alice' was already given on line 1"},
      {"alice " + secret + "\nbob " + secret + "\n",
       "line 2: same token as on line 1"},
      {"# nothing here\n\n", "no '<name> <token>' line"},
  };
  for (const Case& c : cases) {
    auto entries = ParseTokenFile(c.contents);
    ASSERT_FALSE(entries.ok()) << c.expected;
    EXPECT_EQ(entries.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(entries.status().message(), c.expected))
        << entries.status();
    EXPECT_FALSE(absl::StrContains(entries.status().message(), secret))
        << entries.status();
    EXPECT_FALSE(absl::StrContains(entries.status().message(), "s3cret"));
  }
}

TEST(ParseTokenFile, AcceptsATokenOfExactlyTheMinimumLength) {
  EXPECT_TRUE(
      ParseTokenFile("alice " + std::string(kMinTokenLength, 'x')).ok());
  EXPECT_FALSE(
      ParseTokenFile("alice " + std::string(kMinTokenLength - 1, 'x')).ok());
}

class AuthenticatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto entries = ParseTokenFile(
        absl::StrCat("alice ", kAliceToken, "\nbob ", kBobToken, "\n"));
    ASSERT_TRUE(entries.ok()) << entries.status();
    auth_ = std::make_unique<TokenAuthenticator>(*std::move(entries));
  }
  std::unique_ptr<TokenAuthenticator> auth_;
};

TEST_F(AuthenticatorTest, EachTokenIsItsNamesIdentity) {
  EXPECT_EQ(AuthenticateWith(*auth_, Bearer(kAliceToken)).value(), "alice");
  EXPECT_EQ(AuthenticateWith(*auth_, Bearer(kBobToken)).value(), "bob");
  // The scheme is case-insensitive (RFC 6750).
  EXPECT_EQ(
      AuthenticateWith(*auth_, absl::StrCat("bearer ", kBobToken)).value(),
      "bob");
}

TEST_F(AuthenticatorTest, MissingOrWrongCredentialsAreUnauthenticated) {
  struct Case {
    std::vector<std::string_view> values;
    std::string expected;
  };
  const std::string wrong = Bearer("alice-token-0123456788");
  const std::string prefix = Bearer("alice-token-012345678");
  const std::string basic = absl::StrCat("Basic ", kAliceToken);
  const std::string alice = Bearer(kAliceToken);
  const std::vector<Case> cases = {
      {{}, "missing 'authorization: Bearer <token>' metadata"},
      {{wrong}, "bearer token is not valid"},
      {{prefix}, "bearer token is not valid"},
      {{basic}, "'authorization' metadata is not 'Bearer <token>'"},
      {{"Bearer "}, "'authorization' metadata is not 'Bearer <token>'"},
      {{kAliceToken}, "'authorization' metadata is not 'Bearer <token>'"},
      {{alice, alice}, "more than one 'authorization' metadata value"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<std::string> identity = auth_->Authenticate(c.values);
    ASSERT_FALSE(identity.ok()) << c.expected;
    EXPECT_EQ(identity.status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(identity.status().message(), c.expected);
    EXPECT_FALSE(absl::StrContains(identity.status().message(), "token-"));
  }
}

// A file in the test's temporary directory.
std::string WriteFile(const std::string& name, const std::string& contents) {
  std::string path =
      absl::StrCat(::testing::TempDir(), "auth_test_", getpid(), "_", name);
  std::ofstream(path) << contents;
  return path;
}

TEST(TokenAuthenticatorFile, ReloadReplacesTheTokensOrKeepsThemOnError) {
  const std::string path =
      WriteFile("reload", absl::StrCat("alice ", kAliceToken, "\n"));
  auto auth = TokenAuthenticator::FromFile(path);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ((*auth)->token_count(), 1u);
  EXPECT_FALSE(AuthenticateWith(**auth, Bearer(kBobToken)).ok());

  // bob added, alice removed.
  std::ofstream(path) << "bob " << kBobToken << "\n";
  ASSERT_TRUE((*auth)->Reload().ok());
  EXPECT_EQ((*auth)->token_count(), 1u);
  EXPECT_EQ(AuthenticateWith(**auth, Bearer(kBobToken)).value(), "bob");
  EXPECT_FALSE(AuthenticateWith(**auth, Bearer(kAliceToken)).ok());

  // A broken file is refused, naming the flag, the file and the line; bob's
  // token keeps working.
  std::ofstream(path) << "carol " << kAliceToken << "\ncarol2 tooshort\n";
  absl::Status reloaded = (*auth)->Reload();
  EXPECT_EQ(reloaded.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(reloaded.message(),
            absl::StrCat("--auth_token_file ", path,
                         ": line 2: token is shorter than 16 characters"));
  EXPECT_EQ(AuthenticateWith(**auth, Bearer(kBobToken)).value(), "bob");
  EXPECT_FALSE(AuthenticateWith(**auth, Bearer(kAliceToken)).ok());

  std::remove(path.c_str());
  EXPECT_TRUE(absl::StrContains((*auth)->Reload().message(), "cannot be read"));
  EXPECT_EQ(AuthenticateWith(**auth, Bearer(kBobToken)).value(), "bob");
}

TEST(TokenAuthenticatorFile, AMissingFileFailsNamingTheFlag) {
  auto auth = TokenAuthenticator::FromFile("/nonexistent/tokens");
  ASSERT_FALSE(auth.ok());
  EXPECT_EQ(auth.status().message(),
            "--auth_token_file /nonexistent/tokens: cannot be read");
}

}  // namespace
}  // namespace batchfetch

#include "service/base/log.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace batchfetch {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class LogEventTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetLogSinkForTest(
        [this](std::string_view line) { lines_.emplace_back(line); });
    SetLogLevel(LogLevel::kInfo);
  }
  void TearDown() override {
    SetLogSinkForTest(nullptr);
    SetLogLevel(LogLevel::kInfo);
  }
  std::vector<std::string> lines_;
};

TEST_F(LogEventTest, WritesOneJsonObjectWithTimestampLevelAndEvent) {
  LogEvent(LogLevel::kInfo, "batch_accepted")
      .Add("batch_id", "b1")
      .Add("total", 3)
      .Add("ratio", 0.5)
      .Add("detached", false);
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_THAT(lines_[0], ::testing::MatchesRegex(
                             R"(\{"ts":"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z",)"
                             R"("level":"info","event":"batch_accepted",)"
                             R"("batch_id":"b1","total":3,"ratio":0.5,)"
                             R"("detached":false\})"));
}

TEST_F(LogEventTest, DropsEventsBelowTheLevel) {
  SetLogLevel(LogLevel::kWarning);
  LogEvent(LogLevel::kInfo, "quiet").Add("k", "v");
  LogEvent(LogLevel::kError, "loud");
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_THAT(lines_[0], HasSubstr(R"("level":"error","event":"loud")"));
}

TEST_F(LogEventTest, CallerControlledValuesCannotBreakTheLineOrForgeAField) {
  LogEvent(LogLevel::kWarning, "request_blocked")
      .Add("url", "http://x/\"},\"admin\":true\n{\"a\x01\x7f");
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_THAT(lines_[0], Not(HasSubstr("\n")));
  EXPECT_THAT(
      lines_[0],
      HasSubstr(R"("url":"http://x/\"},\"admin\":true\n{\"a\u0001\u007f"})"));
}

TEST_F(LogEventTest, BytesThatAreNotUtf8BecomeReplacementCharacters) {
  LogEvent(LogLevel::kInfo, "e").Add("v", "ok \xC3\xA9 bad \xFF\xC3 end");
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_THAT(lines_[0], HasSubstr("\"ok \xC3\xA9 bad \\ufffd\\ufffd end\""));
}

TEST_F(LogEventTest, NonFiniteNumbersAreNull) {
  LogEvent(LogLevel::kInfo, "e").Add("v", 1.0 / 0.0);
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_THAT(lines_[0], HasSubstr(R"("v":null)"));
}

TEST(ParseLogLevel, AcceptsTheFourNamesAndRejectsOthersByName) {
  EXPECT_EQ(*ParseLogLevel("debug"), LogLevel::kDebug);
  EXPECT_EQ(*ParseLogLevel("INFO"), LogLevel::kInfo);
  EXPECT_EQ(*ParseLogLevel("warn"), LogLevel::kWarning);
  EXPECT_EQ(*ParseLogLevel("error"), LogLevel::kError);
  absl::StatusOr<LogLevel> bad = ParseLogLevel("loud");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("\"loud\""));
}

}  // namespace
}  // namespace batchfetch

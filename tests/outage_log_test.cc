// OutageLog: an outage of a repeated operation is logged once when it
// starts and once when it ends.
#include "service/base/outage_log.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "service/base/log.h"

namespace batchfetch {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class OutageLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetLogSinkForTest(
        [this](std::string_view line) { lines_.emplace_back(line); });
  }
  void TearDown() override { SetLogSinkForTest(nullptr); }

  OutageLog outage_{"poll_failed", "poll_recovered"};
  std::vector<std::string> lines_;
};

TEST_F(OutageLogTest, SuccessesLogNothing) {
  EXPECT_TRUE(outage_.Record(absl::OkStatus()));
  EXPECT_TRUE(outage_.Record(absl::OkStatus()));
  EXPECT_FALSE(outage_.failing());
  EXPECT_TRUE(lines_.empty());
}

TEST_F(OutageLogTest, AnOutageIsLoggedOnceWithItsFirstErrorAndItsEndOnce) {
  EXPECT_FALSE(outage_.Record(absl::UnavailableError("db away")));
  EXPECT_FALSE(outage_.Record(absl::UnavailableError("still away")));
  EXPECT_TRUE(outage_.failing());
  EXPECT_TRUE(outage_.Record(absl::OkStatus()));
  EXPECT_FALSE(outage_.failing());
  ASSERT_EQ(lines_.size(), 2u);
  EXPECT_THAT(lines_[0],
              HasSubstr(R"("level":"warning","event":"poll_failed")"));
  EXPECT_THAT(lines_[0], HasSubstr(R"("error":"db away")"));
  EXPECT_THAT(lines_[1],
              HasSubstr(R"("level":"info","event":"poll_recovered")"));
}

TEST_F(OutageLogTest, EachNewOutageIsLoggedAgain) {
  outage_.Record(absl::InternalError("one"));
  outage_.Record(absl::OkStatus());
  outage_.Record(absl::InternalError("two"));
  std::vector<std::string> events;
  for (const std::string& line : lines_) {
    events.push_back(line.substr(line.find("\"event\"")));
  }
  EXPECT_THAT(events,
              ElementsAre(HasSubstr("poll_failed"), HasSubstr("poll_recovered"),
                          HasSubstr("poll_failed")));
  EXPECT_THAT(lines_[2], HasSubstr(R"("error":"two")"));
}

}  // namespace
}  // namespace batchfetch

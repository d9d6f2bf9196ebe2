// Value conversions of the MySQL store (no database).
#include "service/store/mysql/mysql_values.h"

#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"

namespace batchfetch {
namespace {

using google::protobuf::util::TimeUtil;

TEST(MysqlValuesTest, FormatAndParseRoundTrip) {
  const absl::Time t = absl::FromUnixMicros(1'700'000'000'123'456);
  EXPECT_EQ(FormatDateTime(t), "2023-11-14 22:13:20.123456");
  absl::StatusOr<absl::Time> back = ParseDateTime(FormatDateTime(t));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, t);
}

TEST(MysqlValuesTest, ParsesWithoutOrWithShortFraction) {
  absl::StatusOr<absl::Time> whole = ParseDateTime("2024-01-02 03:04:05");
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(absl::ToUnixSeconds(*whole), 1704164645);
  absl::StatusOr<absl::Time> milli = ParseDateTime("2024-01-02 03:04:05.250");
  ASSERT_TRUE(milli.ok());
  EXPECT_EQ(*milli - *whole, absl::Milliseconds(250));
}

TEST(MysqlValuesTest, ParseFailuresAreErrors) {
  for (const char* bad : {"", "garbage", "0000-00-00 00:00:00",
                          "2024-13-01 00:00:00", "2024-01-02"}) {
    absl::StatusOr<absl::Time> t = ParseDateTime(bad);
    EXPECT_TRUE(absl::IsInvalidArgument(t.status())) << "'" << bad << "'";
  }
}

// A failed parse used to become InfinitePast and then an out-of-range
// Timestamp.
TEST(MysqlValuesTest, TimestampFromBadDateTimeIsAnErrorNotOutOfRange) {
  for (const char* bad : {"garbage", "0000-00-00 00:00:00", ""}) {
    auto ts = TimestampFromDateTime(bad);
    EXPECT_FALSE(ts.ok()) << bad;
  }
  auto good = TimestampFromDateTime("2024-01-02 03:04:05.000007");
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(good->seconds(), 1704164645);
  EXPECT_EQ(good->nanos(), 7000);
}

TEST(MysqlValuesTest, ToTimestampRejectsOutOfRange) {
  google::protobuf::Timestamp ts;
  ts.set_seconds(42);
  EXPECT_TRUE(absl::IsOutOfRange(ToTimestamp(absl::InfinitePast(), &ts)));
  EXPECT_TRUE(absl::IsOutOfRange(ToTimestamp(absl::InfiniteFuture(), &ts)));
  EXPECT_TRUE(absl::IsOutOfRange(ToTimestamp(
      absl::FromUnixSeconds(TimeUtil::kTimestampMinSeconds - 1), &ts)));
  EXPECT_TRUE(absl::IsOutOfRange(ToTimestamp(
      absl::FromUnixSeconds(TimeUtil::kTimestampMaxSeconds + 1), &ts)));
  EXPECT_EQ(ts.seconds(), 42);  // untouched

  ASSERT_TRUE(
      ToTimestamp(absl::FromUnixSeconds(TimeUtil::kTimestampMinSeconds), &ts)
          .ok());
  EXPECT_EQ(ts.seconds(), TimeUtil::kTimestampMinSeconds);
  ASSERT_TRUE(
      ToTimestamp(absl::FromUnixSeconds(TimeUtil::kTimestampMaxSeconds) +
                      absl::Nanoseconds(999'999'000),
                  &ts)
          .ok());
  EXPECT_EQ(ts.seconds(), TimeUtil::kTimestampMaxSeconds);
  EXPECT_LT(ts.nanos(), 1'000'000'000);
}

TEST(MysqlValuesTest, TruncatedKeepsShortStrings) {
  EXPECT_EQ(Truncated("", 0), "");
  EXPECT_EQ(Truncated("abc", 3), "abc");
  EXPECT_EQ(Truncated("abcdef", 4), "abcd");
  EXPECT_EQ(Truncated("abc", 0), "");
}

TEST(MysqlValuesTest, TruncatedCutsOnUtf8Boundaries) {
  const std::string two = "a\xC3\xA9";        // a é (2 bytes)
  const std::string three = "a\xE2\x82\xAC";  // a € (3 bytes)
  const std::string four =
      "a\xF0\x9F\x98\x80"
      "b";  // a 😀 b (4 bytes)
  EXPECT_EQ(Truncated(two, 2), "a");
  EXPECT_EQ(Truncated(two, 3), two);
  EXPECT_EQ(Truncated(three, 2), "a");
  EXPECT_EQ(Truncated(three, 3), "a");
  EXPECT_EQ(Truncated(four, 2), "a");
  EXPECT_EQ(Truncated(four, 4), "a");
  EXPECT_EQ(Truncated(four, 5), "a\xF0\x9F\x98\x80");
  EXPECT_EQ(Truncated("\xE2\x82\xAC\xE2\x82\xAC", 4), "\xE2\x82\xAC");
  EXPECT_EQ(Truncated("\xE2\x82\xAC", 1), "");
}

TEST(MysqlValuesTest, FitColumnKeepsValuesThatFit) {
  EXPECT_EQ(FitColumn("", 0), "");
  EXPECT_EQ(FitColumn("abc", 3), "abc");
  const std::string exactly(kMaxStoredUrlBytes, 'u');
  EXPECT_EQ(FitColumn(exactly, kMaxStoredUrlBytes), exactly);
}

TEST(MysqlValuesTest, FitColumnCutsToTheLimitAndSaysHowLongTheValueWas) {
  const std::string url = "http://h/" + std::string(70000 - 9, 'u');
  const std::string fitted = FitColumn(url, kMaxStoredUrlBytes);
  EXPECT_EQ(fitted.size(), kMaxStoredUrlBytes);
  const std::string marker = "\xE2\x80\xA6[truncated: 70000 bytes]";
  EXPECT_EQ(TruncationMarker(70000), marker);
  ASSERT_GT(fitted.size(), marker.size());
  EXPECT_EQ(fitted.substr(fitted.size() - marker.size()), marker);
  EXPECT_EQ(fitted.substr(0, fitted.size() - marker.size()),
            url.substr(0, kMaxStoredUrlBytes - marker.size()));
}

TEST(MysqlValuesTest, FitColumnNeverSplitsAUtf8SequenceBeforeTheMarker) {
  // 30 euro signs (3 bytes each): 90 bytes into 40. The marker
  // "…[truncated: 90 bytes]" is 24 bytes, leaving 16 for the text: five
  // whole signs (15 bytes), not five and a third.
  std::string euros;
  for (int i = 0; i < 30; ++i) euros += "\xE2\x82\xAC";
  const std::string fitted = FitColumn(euros, 40);
  EXPECT_EQ(fitted, euros.substr(0, 15) + TruncationMarker(90));
  EXPECT_LE(fitted.size(), 40u);
}

TEST(MysqlValuesTest, FitColumnTooSmallForTheMarkerJustTruncates) {
  EXPECT_EQ(FitColumn("abcdefghij", 4), "abcd");
  EXPECT_EQ(FitColumn("a\xE2\x82\xAC", 3), "a");
}

TEST(MysqlValuesTest, FitColumnOfAnErrorKeepsItWithinTheErrorLimit) {
  const std::string error(10000, 'e');
  const std::string fitted = FitColumn(error, kMaxStoredErrorBytes);
  EXPECT_EQ(fitted.size(), kMaxStoredErrorBytes);
  EXPECT_NE(fitted.find("[truncated: 10000 bytes]"), std::string::npos);
}

}  // namespace
}  // namespace batchfetch

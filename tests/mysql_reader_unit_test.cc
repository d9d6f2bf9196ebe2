// MysqlReader's pure parts: where a page ends, and the counting SQL (no
// database).
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "service/store/mysql/mysql_reader.h"

namespace batchfetch {
namespace {

TEST(ResultPageLimiterTest, StopsAtMaxRows) {
  ResultPageLimiter limiter(3, 1 << 20);
  EXPECT_TRUE(limiter.Add(10));
  EXPECT_TRUE(limiter.Add(10));
  EXPECT_FALSE(limiter.full());
  EXPECT_TRUE(limiter.Add(10));
  EXPECT_TRUE(limiter.full());
  EXPECT_FALSE(limiter.Add(1));
  EXPECT_EQ(limiter.rows(), 3u);
}

TEST(ResultPageLimiterTest, StopsBeforeTheRowThatPassesTheByteBound) {
  ResultPageLimiter limiter(100, 1000);
  EXPECT_TRUE(limiter.Add(600));
  EXPECT_TRUE(limiter.Add(400));  // exactly at the bound
  EXPECT_FALSE(limiter.Add(1));
  EXPECT_EQ(limiter.rows(), 2u);
}

TEST(ResultPageLimiterTest, FirstRowAlwaysFits) {
  ResultPageLimiter limiter(100, 1000);
  EXPECT_TRUE(limiter.Add(5000));
  EXPECT_FALSE(limiter.Add(1));
  EXPECT_EQ(limiter.rows(), 1u);
}

TEST(ResultPageLimiterTest, ZeroRowsTakesNothing) {
  ResultPageLimiter limiter(0, 1000);
  EXPECT_TRUE(limiter.full());
  EXPECT_FALSE(limiter.Add(1));
}

TEST(ResultPageLimiterTest, ThreeMibPagesOfOneMibRows) {
  ResultPageLimiter limiter(1000, MysqlReader::kMaxPageBytes);
  int rows = 0;
  while (limiter.Add((1 << 20) + 100)) ++rows;
  EXPECT_EQ(rows, 2);
}

// The outcome counted as OK is bound from v1::OUTCOME_OK, not written into
// the SQL as a number.
TEST(MysqlReaderTest, CountSqlBindsTheOkOutcome) {
  const std::string sql = MysqlReader::kCountResultsSql;
  EXPECT_TRUE(absl::StrContains(sql, "outcome = ?"));
  EXPECT_FALSE(absl::StrContains(sql, "outcome = 1"));
  EXPECT_FALSE(absl::StrContains(sql, "outcome=1"));
  size_t placeholders = 0;
  for (char c : sql) placeholders += c == '?';
  EXPECT_EQ(placeholders, 2u);
}

TEST(FitResultTest, ResultThatFitsIsLeftAlone) {
  v1::FetchResult r;
  r.set_url("http://h/");
  r.set_body(std::string(1000, 'b'));
  const v1::FetchResult before = r;
  FitResult(2000, &r);
  EXPECT_EQ(r.body(), before.body());
  EXPECT_FALSE(r.truncated());
}

TEST(FitResultTest, CutsTheBodyToFitAndSaysSo) {
  v1::FetchResult r;
  r.set_url("http://h/");
  r.set_outcome(v1::OUTCOME_HTTP_ERROR);
  r.set_body(std::string(5 << 20, 'b'));
  FitResult(MysqlReader::kMaxRowBytes, &r);
  EXPECT_TRUE(r.truncated());
  EXPECT_LE(r.ByteSizeLong(), MysqlReader::kMaxRowBytes);
  // Cut no more than needed (the other fields and framing are small).
  EXPECT_GT(r.body().size(), MysqlReader::kMaxRowBytes - 100);
  EXPECT_EQ(r.url(), "http://h/");
}

TEST(FitResultTest, CutsJsonOnACharacterBoundary) {
  v1::FetchResult r;
  std::string json = "\"";
  while (json.size() < 10000) json += "\xc3\xa9";  // é, two bytes each
  r.set_json(json);
  for (size_t max = 5000; max < 5010; ++max) {
    v1::FetchResult cut = r;
    FitResult(max, &cut);
    EXPECT_TRUE(cut.truncated());
    EXPECT_LE(cut.ByteSizeLong(), max);
    // Ends after a whole character: the string stays valid UTF-8, so it
    // serializes and parses as a proto3 string.
    ASSERT_GE(cut.json().size(), 2u);
    EXPECT_EQ(static_cast<unsigned char>(cut.json().back()), 0xa9) << max;
    std::string wire;
    ASSERT_TRUE(cut.SerializeToString(&wire));
    v1::FetchResult parsed;
    EXPECT_TRUE(parsed.ParseFromString(wire));
  }
}

}  // namespace
}  // namespace batchfetch

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

}  // namespace
}  // namespace batchfetch

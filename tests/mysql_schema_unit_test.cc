// MysqlSchema's pure parts: the migration list and the idempotent column
// steps (no database).
#include <set>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "service/store/mysql/mysql_schema.h"

namespace batchfetch {
namespace {

using Column = MysqlSchema::Column;

TEST(MysqlSchemaTest, VersionsAscendFromOne) {
  const auto& migrations = MysqlSchema::Migrations();
  ASSERT_FALSE(migrations.empty());
  for (size_t i = 0; i < migrations.size(); ++i) {
    EXPECT_EQ(migrations[i].version, static_cast<int>(i) + 1);
  }
  EXPECT_EQ(MysqlSchema::LatestVersion(), migrations.back().version);
}

// Every step must be safe to run again after a crash before its record.
TEST(MysqlSchemaTest, EveryStepIsIdempotentByConstruction) {
  for (const auto& m : MysqlSchema::Migrations()) {
    ASSERT_FALSE(m.steps.empty()) << m.version;
    for (const auto& step : m.steps) {
      if (!step.table.empty()) {
        EXPECT_TRUE(step.statement.empty()) << m.version;
        EXPECT_FALSE(step.add_columns.empty()) << m.version;
        continue;
      }
      EXPECT_TRUE(
          absl::StartsWith(step.statement, "CREATE TABLE IF NOT EXISTS"))
          << m.version << ": " << step.statement;
    }
  }
}

TEST(MysqlSchemaTest, MissingColumnsComparesCaseInsensitively) {
  const std::vector<Column> wanted = {{"final_url", "TEXT NULL"},
                                      {"dns_us", "BIGINT NULL"},
                                      {"total_us", "BIGINT NULL"}};
  std::vector<Column> missing =
      MysqlSchema::MissingColumns(wanted, {"idx", "FINAL_URL", "total_us"});
  ASSERT_EQ(missing.size(), 1u);
  EXPECT_EQ(missing[0].name, "dns_us");
  EXPECT_TRUE(
      MysqlSchema::MissingColumns(wanted, {"final_url", "dns_us", "total_us"})
          .empty());
  EXPECT_EQ(MysqlSchema::MissingColumns(wanted, {}).size(), 3u);
}

TEST(MysqlSchemaTest, AddColumnsSqlAddsOnlyTheGivenColumns) {
  EXPECT_EQ(
      MysqlSchema::AddColumnsSql("fetch_results", {{"dns_us", "BIGINT NULL"},
                                                   {"tls_us", "BIGINT NULL"}}),
      "ALTER TABLE `fetch_results` ADD COLUMN `dns_us` BIGINT NULL, "
      "ADD COLUMN `tls_us` BIGINT NULL");
}

}  // namespace
}  // namespace batchfetch

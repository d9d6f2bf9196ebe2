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
        EXPECT_FALSE(step.add_columns.empty() && step.add_indexes.empty())
            << m.version;
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

TEST(MysqlSchemaTest, MissingIndexesComparesNamesCaseInsensitively) {
  const std::vector<MysqlSchema::Index> wanted = {
      {"batches_state_lease", "(state, lease_expires_at)"},
      {"batches_created_at", "(created_at)"}};
  std::vector<MysqlSchema::Index> missing =
      MysqlSchema::MissingIndexes(wanted, {"PRIMARY", "BATCHES_CREATED_AT"});
  ASSERT_EQ(missing.size(), 1u);
  EXPECT_EQ(missing[0].name, "batches_state_lease");
  EXPECT_TRUE(MysqlSchema::MissingIndexes(
                  wanted, {"batches_state_lease", "batches_created_at"})
                  .empty());
}

TEST(MysqlSchemaTest, AddIndexesSqlAddsOnlyTheGivenIndexes) {
  EXPECT_EQ(
      MysqlSchema::AddIndexesSql(
          "batches", {{"batches_state_lease", "(state, lease_expires_at)"}}),
      "ALTER TABLE `batches` ADD INDEX `batches_state_lease` "
      "(state, lease_expires_at)");
}

TEST(MysqlSchemaTest, LeaseMigrationIsVersionFive) {
  const auto& migrations = MysqlSchema::Migrations();
  ASSERT_GE(migrations.size(), 5u);
  const auto& lease = migrations[4];
  EXPECT_EQ(lease.version, 5);
  ASSERT_EQ(lease.steps.size(), 1u);
  EXPECT_EQ(lease.steps[0].table, "batches");
  std::set<std::string> columns;
  for (const auto& c : lease.steps[0].add_columns) columns.insert(c.name);
  EXPECT_EQ(columns, (std::set<std::string>{"lease_owner", "lease_expires_at",
                                            "state_reason"}));
  ASSERT_EQ(lease.steps[0].add_indexes.size(), 1u);
}

}  // namespace
}  // namespace batchfetch

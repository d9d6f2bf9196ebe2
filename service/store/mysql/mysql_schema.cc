#include "service/store/mysql/mysql_schema.h"

#include <cppconn/prepared_statement.h>
#include <cppconn/resultset.h>

#include <memory>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace batchfetch {

const std::vector<MysqlSchema::Migration>& MysqlSchema::Migrations() {
  static const auto* migrations = new std::vector<Migration>{
      {1,
       "batches and fetch_results",
       {{R"sql(CREATE TABLE IF NOT EXISTS batches (
  batch_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  state TINYINT UNSIGNED NOT NULL,
  total INT UNSIGNED NOT NULL,
  succeeded INT UNSIGNED NOT NULL DEFAULT 0,
  failed INT UNSIGNED NOT NULL DEFAULT 0,
  `stored` INT UNSIGNED NOT NULL DEFAULT 0,
  created_at DATETIME(6) NOT NULL,
  finished_at DATETIME(6) NULL,
  PRIMARY KEY (batch_id),
  KEY batches_created_at (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin)sql",
         "",
         {}},
        {R"sql(CREATE TABLE IF NOT EXISTS fetch_results (
  batch_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  idx INT UNSIGNED NOT NULL,
  url TEXT NOT NULL,
  outcome TINYINT UNSIGNED NOT NULL,
  http_status SMALLINT NOT NULL,
  error TEXT NOT NULL,
  `json` LONGTEXT NOT NULL,
  body LONGBLOB NOT NULL,
  content_type VARCHAR(255) NOT NULL,
  attempts INT UNSIGNED NOT NULL,
  elapsed_us BIGINT NOT NULL,
  fetched_at DATETIME(6) NOT NULL,
  PRIMARY KEY (batch_id, idx)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin)sql",
         "",
         {}}}},
      {2,
       "final URL and timing phases of the last attempt",
       {{"",
         "fetch_results",
         {{"final_url", "TEXT NULL"},
          {"dns_us", "BIGINT NULL"},
          {"connect_us", "BIGINT NULL"},
          {"tls_us", "BIGINT NULL"},
          {"first_byte_us", "BIGINT NULL"},
          {"total_us", "BIGINT NULL"}}}}},
      {3,
       "batch owner: the caller identity (token name) that created it",
       {{"",
         "batches",
         {{"owner",
           "VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL "
           "DEFAULT ''"}}}}},
      {4,
       "results of a batch still in a replica's local spool",
       {{"", "batches", {{"spooled", "INT UNSIGNED NOT NULL DEFAULT 0"}}}}},
      {5,
       "batch leases: the replica running a batch renews its lease; an "
       "expired lease marks the batch interrupted",
       {{"",
         "batches",
         {{"lease_owner",
           "VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL "
           "DEFAULT ''"},
          {"lease_expires_at", "DATETIME(6) NULL"},
          {"state_reason", "VARCHAR(255) NOT NULL DEFAULT ''"}},
         // The sweep: RUNNING batches whose lease has expired.
         {{"batches_state_lease", "(state, lease_expires_at)"}}}}},
      {6,
       "the requests of a batch, for resume and takeover",
       {{"",
         "batches",
         // Lower-case hex SHA-256 of the request list (RequestsSha256); ''
         // for batches created before this migration (not resumable).
         {{"requests_sha256",
           "CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL "
           "DEFAULT ''"}}},
        // The serialized FetchBatchRequest as accepted, in chunks of at
        // most MysqlReader::kRequestChunkBytes (a statement must fit
        // max_allowed_packet); chunk numbers start at 0.
        {R"sql(CREATE TABLE IF NOT EXISTS batch_requests (
  batch_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  chunk INT UNSIGNED NOT NULL,
  bytes LONGBLOB NOT NULL,
  PRIMARY KEY (batch_id, chunk)
) ENGINE=InnoDB)sql",
         "",
         {}}}},
      {7,
       "retention: batches by when they finished",
       {{"",
         "batches",
         {},
         // --retention finds the batches that finished before its cutoff
         // (and, by finished_at IS NULL, the interrupted ones) without
         // scanning the table.
         {{"batches_finished_at", "(finished_at)"}}}}},
      {8,
       "callers: cancel requests carried through the database, listing a "
       "caller's batches newest first, a shared page-token key",
       {{"",
         "batches",
         // Set by CancelBatch on any replica; the replica running the batch
         // polls for it (CancelRequestedBatches) and cancels the run.
         {{"cancel_requested", "TINYINT UNSIGNED NOT NULL DEFAULT 0"}},
         // ListBatches of one owner, newest first.
         {{"batches_owner_created_at", "(owner, created_at, batch_id)"}}},
        // Secrets every replica must share, created on first use (one row
        // per name; INSERT IGNORE makes the first replica's value win).
        {R"sql(CREATE TABLE IF NOT EXISTS service_secrets (
  name VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  secret VARBINARY(64) NOT NULL,
  PRIMARY KEY (name)
) ENGINE=InnoDB)sql",
         "",
         {}}}},
  };
  return *migrations;
}

int MysqlSchema::LatestVersion() { return Migrations().back().version; }

MysqlSchema::MysqlSchema(MysqlSession::Options server, std::string database,
                         const Clock* clock)
    : server_(std::move(server)),
      database_(std::move(database)),
      clock_(clock) {}

absl::Status MysqlSchema::WaitForServer(absl::Duration wait) {
  const MonoTime give_up = clock_->MonoNow() + wait;
  MysqlSession::Options options = server_;
  options.database.clear();
  while (true) {
    auto session = MysqlSession::Connect(options);
    if (session.ok()) {
      // Lacking the privilege is fine when the database already exists;
      // Migrate() reports it otherwise.
      MysqlSession::Guard("creating database", [&] {
        (*session)->Execute(absl::StrCat(
            "CREATE DATABASE IF NOT EXISTS `", database_,
            "` DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"));
        return absl::OkStatus();
      });
      return absl::OkStatus();
    }
    if (clock_->MonoNow() >= give_up ||
        !absl::IsUnavailable(session.status())) {
      return session.status();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

std::vector<MysqlSchema::Column> MysqlSchema::MissingColumns(
    const std::vector<Column>& wanted, const std::set<std::string>& existing) {
  std::set<std::string> have;
  for (const std::string& name : existing)
    have.insert(absl::AsciiStrToLower(name));
  std::vector<Column> missing;
  for (const Column& c : wanted) {
    if (have.count(absl::AsciiStrToLower(c.name)) == 0) missing.push_back(c);
  }
  return missing;
}

std::string MysqlSchema::AddColumnsSql(const std::string& table,
                                       const std::vector<Column>& columns) {
  return absl::StrCat(
      "ALTER TABLE `", table, "` ",
      absl::StrJoin(columns, ", ", [](std::string* out, const Column& c) {
        absl::StrAppend(out, "ADD COLUMN `", c.name, "` ", c.definition);
      }));
}

std::vector<MysqlSchema::Index> MysqlSchema::MissingIndexes(
    const std::vector<Index>& wanted, const std::set<std::string>& existing) {
  std::set<std::string> have;
  for (const std::string& name : existing)
    have.insert(absl::AsciiStrToLower(name));
  std::vector<Index> missing;
  for (const Index& index : wanted) {
    if (have.count(absl::AsciiStrToLower(index.name)) == 0) {
      missing.push_back(index);
    }
  }
  return missing;
}

std::string MysqlSchema::AddIndexesSql(const std::string& table,
                                       const std::vector<Index>& indexes) {
  return absl::StrCat(
      "ALTER TABLE `", table, "` ",
      absl::StrJoin(indexes, ", ", [](std::string* out, const Index& index) {
        absl::StrAppend(out, "ADD INDEX `", index.name, "` ", index.columns);
      }));
}

absl::Status MysqlSchema::ApplyStep(MysqlSession& session, const Step& step) {
  if (step.table.empty()) {
    session.Execute(step.statement);
    return absl::OkStatus();
  }
  sql::PreparedStatement& ps = session.Prepared(
      "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
      "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?");
  ps.setString(1, step.table);
  std::set<std::string> existing;
  std::unique_ptr<sql::ResultSet> rs(ps.executeQuery());
  while (rs->next()) existing.insert(rs->getString(1).asStdString());
  if (existing.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("table ", step.table, " is missing"));
  }
  std::vector<Column> missing = MissingColumns(step.add_columns, existing);
  if (!missing.empty()) session.Execute(AddColumnsSql(step.table, missing));
  if (step.add_indexes.empty()) return absl::OkStatus();
  sql::PreparedStatement& indexes_ps = session.Prepared(
      "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS "
      "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?");
  indexes_ps.setString(1, step.table);
  std::set<std::string> existing_indexes;
  std::unique_ptr<sql::ResultSet> index_rs(indexes_ps.executeQuery());
  while (index_rs->next()) {
    existing_indexes.insert(index_rs->getString(1).asStdString());
  }
  std::vector<Index> missing_indexes =
      MissingIndexes(step.add_indexes, existing_indexes);
  if (!missing_indexes.empty()) {
    session.Execute(AddIndexesSql(step.table, missing_indexes));
  }
  return absl::OkStatus();
}

absl::Status MysqlSchema::Migrate() {
  MysqlSession::Options options = server_;
  options.database = database_;
  // GET_LOCK waits server-side without sending a byte: the read timeout
  // must outlast it.
  options.io_timeout = server_.io_timeout + absl::Seconds(kLockWaitSeconds);
  auto session_or = MysqlSession::Connect(options);
  if (!session_or.ok()) return session_or.status();
  MysqlSession& s = **session_or;
  // Closing the session releases the lock on every path.
  return MysqlSession::Guard(
             "migrating schema",
             [&]() -> absl::Status {
               // Replicas starting together: one migrates, the others wait
               // here.
               {
                 std::unique_ptr<sql::ResultSet> lock(s.Query(absl::StrCat(
                     "SELECT GET_LOCK('batchfetch.schema_migrations', ",
                     kLockWaitSeconds, ") AS got")));
                 if (!lock->next() || lock->getInt(1) != 1) {
                   return absl::UnavailableError(
                       "timed out waiting for another replica's schema "
                       "migration");
                 }
               }
               s.Execute(R"sql(CREATE TABLE IF NOT EXISTS schema_migrations (
  version INT NOT NULL PRIMARY KEY,
  description VARCHAR(255) NOT NULL,
  applied_at DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4)sql");
               std::set<int> applied;
               {
                 std::unique_ptr<sql::ResultSet> rs(
                     s.Query("SELECT version FROM schema_migrations"));
                 while (rs->next()) applied.insert(rs->getInt(1));
               }
               if (!applied.empty() && *applied.rbegin() > LatestVersion()) {
                 s.Execute("DO RELEASE_LOCK('batchfetch.schema_migrations')");
                 return absl::FailedPreconditionError(
                     absl::StrCat("database schema version ", *applied.rbegin(),
                                  " is newer than this build knows (",
                                  LatestVersion(), ")"));
               }
               for (const Migration& m : Migrations()) {
                 if (applied.count(m.version) > 0) continue;
                 for (const Step& step : m.steps) {
                   absl::Status status = ApplyStep(s, step);
                   if (!status.ok()) return status;
                 }
                 sql::PreparedStatement& record = s.Prepared(
                     "INSERT INTO schema_migrations (version, description, "
                     "applied_at) "
                     "VALUES (?, ?, UTC_TIMESTAMP(6)) "
                     "ON DUPLICATE KEY UPDATE version = version");
                 record.setInt(1, m.version);
                 record.setString(2, m.description);
                 record.executeUpdate();
               }
               s.Execute("DO RELEASE_LOCK('batchfetch.schema_migrations')");
               return absl::OkStatus();
             })
      .status;
}

}  // namespace batchfetch

#ifndef BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_SCHEMA_H_
#define BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_SCHEMA_H_

#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "service/base/clock.h"
#include "service/store/mysql/mysql_session.h"

namespace batchfetch {

// The versioned schema and how a database is brought to it.
//
// Contract: migrations are append-only and numbered; each runs in order,
// under GET_LOCK('batchfetch.schema_migrations') so that replicas starting
// together migrate once, and is then recorded in `schema_migrations`. Every
// step is idempotent on MySQL 8 and MariaDB 10.11 (CREATE TABLE IF NOT
// EXISTS; columns are added only after information_schema.COLUMNS shows
// them missing, since MySQL 8 has no ADD COLUMN IF NOT EXISTS), so a
// migration whose row is missing after a crash between its DDL and its
// record is simply run again. Any missing version is run, not only those
// above the highest recorded one. A database whose highest version is newer
// than this build knows is refused (FAILED_PRECONDITION).
//
// Ownership: holds only the options; each call opens and closes its own
// session.
// Threading: the methods may run on any thread; one at a time per object.
class MysqlSchema {
 public:
  struct Column {
    std::string name;
    std::string definition;  // e.g. "BIGINT NULL"
  };
  struct Index {
    std::string name;
    std::string columns;  // e.g. "(state, lease_expires_at)"
  };
  // One idempotent step: a statement that is idempotent by itself, or
  // (when `table` is set) the columns of `add_columns` and then the indexes
  // of `add_indexes` that `table` lacks (by name, as information_schema
  // shows them: MySQL 8 has no CREATE INDEX IF NOT EXISTS).
  struct Step {
    std::string statement;
    std::string table;
    std::vector<Column> add_columns;
    std::vector<Index> add_indexes = {};
  };
  struct Migration {
    int version;
    std::string description;
    std::vector<Step> steps;
  };

  // How long Migrate() waits for another replica's migration.
  static constexpr int kLockWaitSeconds = 120;

  // `server` must not select a database; `database` is the one to create and
  // migrate. Uses `clock` for the start-up wait.
  MysqlSchema(MysqlSession::Options server, std::string database,
              const Clock* clock);

  // Connects until the server answers or `wait` has passed (retrying only
  // UNAVAILABLE errors, every 500 ms), then creates the database if it is
  // missing (lacking that privilege is fine if it exists).
  absl::Status WaitForServer(absl::Duration wait);

  // Applies every migration not yet recorded (see the class comment).
  absl::Status Migrate();

  static const std::vector<Migration>& Migrations();
  static int LatestVersion();

  // Pure helpers, exposed for tests.
  // The columns of `wanted` not in `existing` (compared case-insensitively).
  static std::vector<Column> MissingColumns(
      const std::vector<Column>& wanted, const std::set<std::string>& existing);
  // "ALTER TABLE t ADD COLUMN a ..., ADD COLUMN b ..." (non-empty `columns`).
  static std::string AddColumnsSql(const std::string& table,
                                   const std::vector<Column>& columns);
  // The indexes of `wanted` whose names are not in `existing` (compared
  // case-insensitively).
  static std::vector<Index> MissingIndexes(
      const std::vector<Index>& wanted, const std::set<std::string>& existing);
  // "ALTER TABLE t ADD INDEX `a` (...), ADD INDEX `b` (...)" (non-empty).
  static std::string AddIndexesSql(const std::string& table,
                                   const std::vector<Index>& indexes);

 private:
  absl::Status ApplyStep(MysqlSession& session, const Step& step);

  const MysqlSession::Options server_;
  const std::string database_;
  const Clock* const clock_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_SCHEMA_H_

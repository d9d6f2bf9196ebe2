#include "service/store/mysql/mysql_retention.h"

#include <cppconn/prepared_statement.h>
#include <cppconn/resultset.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "batchfetch/v1/batchfetch.pb.h"
#include "service/store/mysql/mysql_values.h"

namespace batchfetch {

namespace {

// The states a batch never leaves on its own (only a resume does).
const std::string& FinalStatesSql() {
  static const std::string* const sql = new std::string(
      absl::StrCat("state IN (", static_cast<int>(v1::BATCH_STATE_DONE), ", ",
                   static_cast<int>(v1::BATCH_STATE_CANCELLED), ", ",
                   static_cast<int>(v1::BATCH_STATE_FAILED), ", ",
                   static_cast<int>(v1::BATCH_STATE_INTERRUPTED), ")"));
  return *sql;
}

// Deletes the rows of `table` for `batch_id`, `chunk` rows per statement
// (each its own autocommit transaction); the number deleted.
uint64_t DeleteInChunks(MysqlSession& s, const char* table,
                        const std::string& batch_id, int chunk) {
  sql::PreparedStatement& ps = s.Prepared(
      absl::StrCat("DELETE FROM ", table, " WHERE batch_id = ? LIMIT ", chunk));
  uint64_t deleted = 0;
  while (true) {
    ps.setString(1, batch_id);
    const int n = ps.executeUpdate();
    deleted += static_cast<uint64_t>(std::max(n, 0));
    if (n < chunk) return deleted;
  }
}

// A chunk of 0 would never end a loop: at least 1 row per DELETE.
MysqlRetention::Options WithValidChunks(MysqlRetention::Options options) {
  options.result_rows_per_chunk = std::max(1, options.result_rows_per_chunk);
  options.request_rows_per_chunk = std::max(1, options.request_rows_per_chunk);
  return options;
}

}  // namespace

MysqlRetention::MysqlRetention(Options options)
    : options_(WithValidChunks(std::move(options))),
      session_(options_.session) {}

absl::StatusOr<std::vector<std::string>> MysqlRetention::SelectExpired(
    absl::Time ended_before, int limit) {
  std::vector<std::string> ids;
  absl::Status status =
      session_.Run("selecting expired batches", [&](MysqlSession& s) {
        ids.clear();
        const std::string cutoff = FormatDateTime(ended_before);
        // Finished batches, by the batches_finished_at index (migration 7).
        sql::PreparedStatement& finished = s.Prepared(absl::StrCat(
            "SELECT batch_id FROM batches WHERE finished_at < ? AND ",
            FinalStatesSql(), " AND spooled = 0 ORDER BY finished_at LIMIT ?"));
        finished.setDateTime(1, cutoff);
        finished.setInt(2, limit);
        {
          std::unique_ptr<sql::ResultSet> rs(finished.executeQuery());
          while (rs->next()) ids.push_back(rs->getString(1).asStdString());
        }
        if (static_cast<int>(ids.size()) >= limit) return absl::OkStatus();
        // Final batches without finished_at (INTERRUPTED): when the lease
        // of their replica expired, else when they were created.
        sql::PreparedStatement& unfinished = s.Prepared(absl::StrCat(
            "SELECT batch_id FROM batches WHERE finished_at IS NULL AND ",
            FinalStatesSql(),
            " AND spooled = 0 AND COALESCE(lease_expires_at, created_at) < ? "
            "LIMIT ?"));
        unfinished.setDateTime(1, cutoff);
        unfinished.setInt(2, limit - static_cast<int>(ids.size()));
        std::unique_ptr<sql::ResultSet> rs(unfinished.executeQuery());
        while (rs->next()) ids.push_back(rs->getString(1).asStdString());
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  return ids;
}

absl::Status MysqlRetention::DeleteBatch(const std::string& batch_id,
                                         absl::Time ended_before,
                                         RetentionPass* pass) {
  uint64_t rows = 0;
  bool deleted = false;
  absl::Status status =
      session_.Run("deleting an expired batch", [&](MysqlSession& s) {
        // `rows` keeps what a first, failed attempt deleted.
        deleted = false;
        const std::string due = absl::StrCat(
            "batch_id = ? AND ", FinalStatesSql(),
            " AND spooled = 0 AND COALESCE(finished_at, lease_expires_at, "
            "created_at) < ?");
        // 1: still due? Then no resume may start on it from now on.
        s.Execute("START TRANSACTION");
        sql::PreparedStatement& lock = s.Prepared(absl::StrCat(
            "SELECT batch_id FROM batches WHERE ", due, " FOR UPDATE"));
        lock.setString(1, batch_id);
        lock.setDateTime(2, FormatDateTime(ended_before));
        bool due_now = false;
        {
          std::unique_ptr<sql::ResultSet> rs(lock.executeQuery());
          due_now = rs->next();
        }
        if (!due_now) {
          s.Rollback();
          return absl::OkStatus();
        }
        sql::PreparedStatement& unresumable = s.Prepared(
            "UPDATE batches SET requests_sha256 = '' WHERE batch_id = ?");
        unresumable.setString(1, batch_id);
        unresumable.executeUpdate();
        s.Commit();
        // 2 and 3: the bulk, in chunks.
        rows += DeleteInChunks(s, "batch_requests", batch_id,
                               options_.request_rows_per_chunk);
        rows += DeleteInChunks(s, "fetch_results", batch_id,
                               options_.result_rows_per_chunk);
        // 4: the row itself, last.
        sql::PreparedStatement& row =
            s.Prepared(absl::StrCat("DELETE FROM batches WHERE ", due));
        row.setString(1, batch_id);
        row.setDateTime(2, FormatDateTime(ended_before));
        deleted = row.executeUpdate() > 0;
        return absl::OkStatus();
      });
  // Rows deleted before a failure are gone either way.
  pass->rows += rows;
  if (deleted) ++pass->batches;
  return status;
}

absl::StatusOr<RetentionPass> MysqlRetention::DeleteExpired(
    absl::Time ended_before, int max_batches) {
  absl::MutexLock lock(&mu_);
  RetentionPass pass;
  if (max_batches < 1) return pass;
  absl::StatusOr<std::vector<std::string>> ids =
      SelectExpired(ended_before, max_batches);
  if (!ids.ok()) return ids.status();
  for (const std::string& id : *ids) {
    if (absl::Status s = DeleteBatch(id, ended_before, &pass); !s.ok()) {
      return s;
    }
  }
  pass.more = static_cast<int>(ids->size()) >= max_batches;
  return pass;
}

}  // namespace batchfetch

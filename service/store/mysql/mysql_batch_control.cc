#include "service/store/mysql/mysql_batch_control.h"

#include <cppconn/prepared_statement.h>
#include <cppconn/resultset.h>

#include <memory>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "batchfetch/v1/batchfetch.pb.h"
#include "service/store/mysql/mysql_values.h"

namespace batchfetch {
namespace {

constexpr char kPageTokenKeyName[] = "list_batches_page_token";
constexpr size_t kKeyBytes = 32;

// Binds MysqlReader::kScopeSql's two parameters from index `first`.
void BindScope(sql::PreparedStatement& ps, int first, const ReadScope& scope) {
  ps.setInt(first, scope.owner.has_value() ? 0 : 1);
  ps.setString(first + 1, scope.owner.value_or(""));
}

}  // namespace

MysqlBatchControl::MysqlBatchControl(MysqlReader* reader,
                                     std::string replica_id)
    : reader_(reader), replica_id_(std::move(replica_id)) {}

absl::Status MysqlBatchControl::RequestCancel(const std::string& batch_id,
                                              const ReadScope& scope) {
  return reader_->RunOnPooledSession(
      "requesting cancel", [&](MysqlSession& s) -> absl::Status {
        sql::PreparedStatement& update = s.Prepared(absl::StrCat(
            "UPDATE batches SET cancel_requested = 1 WHERE batch_id = ? "
            "AND state = ?",
            MysqlReader::kScopeSql));
        update.setString(1, batch_id);
        update.setUInt(2, static_cast<uint32_t>(v1::BATCH_STATE_RUNNING));
        BindScope(update, 3, scope);
        update.executeUpdate();
        // Zero rows changed: not RUNNING, flag already set, or not ours to
        // see. Only the last is an error.
        sql::PreparedStatement& exists =
            s.Prepared(absl::StrCat("SELECT 1 FROM batches WHERE batch_id = ?",
                                    MysqlReader::kScopeSql));
        exists.setString(1, batch_id);
        BindScope(exists, 2, scope);
        std::unique_ptr<sql::ResultSet> rs(exists.executeQuery());
        if (!rs->next()) {
          return absl::NotFoundError(
              absl::StrCat("no batch with id '", batch_id, "'"));
        }
        return absl::OkStatus();
      });
}

absl::StatusOr<std::vector<std::string>> MysqlBatchControl::CancelRequested() {
  std::vector<std::string> ids;
  absl::Status status = reader_->RunOnPooledSession(
      "reading cancel requests", [&](MysqlSession& s) -> absl::Status {
        ids.clear();
        sql::PreparedStatement& ps = s.Prepared(
            "SELECT batch_id FROM batches WHERE state = ? AND lease_owner = ? "
            "AND cancel_requested <> 0");
        ps.setUInt(1, static_cast<uint32_t>(v1::BATCH_STATE_RUNNING));
        ps.setString(2, replica_id_);
        std::unique_ptr<sql::ResultSet> rs(ps.executeQuery());
        while (rs->next()) ids.push_back(rs->getString(1).asStdString());
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  return ids;
}

absl::StatusOr<BatchListPage> MysqlBatchControl::ListBatches(
    const ReadScope& scope, const BatchListQuery& query) {
  BatchListPage page;
  absl::Status status = reader_->RunOnPooledSession(
      "listing batches", [&](MysqlSession& s) -> absl::Status {
        page = BatchListPage();
        // The owner condition is spelled out only when scoped, so the
        // (owner, created_at, batch_id) index serves it; the statement
        // shapes are few (2 x 2 x 2 x 2), each prepared once per session.
        std::string sql =
            "SELECT batch_id, state, total, succeeded, failed, `stored`, "
            "spooled, state_reason, created_at, finished_at FROM batches "
            "WHERE created_at > ?";
        if (scope.owner.has_value()) absl::StrAppend(&sql, " AND owner = ?");
        if (query.state != v1::BATCH_STATE_UNSPECIFIED) {
          absl::StrAppend(&sql, " AND state = ?");
        }
        if (query.has_cursor) {
          absl::StrAppend(&sql,
                          " AND (created_at < ? OR (created_at = ? AND "
                          "batch_id < ?))");
        }
        absl::StrAppend(&sql,
                        " ORDER BY created_at DESC, batch_id DESC LIMIT ?");
        sql::PreparedStatement& ps = s.Prepared(sql);
        int i = 1;
        ps.setDateTime(i++, query.created_after == absl::InfinitePast()
                                ? std::string("0001-01-01 00:00:00.000000")
                                : FormatDateTime(query.created_after));
        if (scope.owner.has_value()) ps.setString(i++, *scope.owner);
        if (query.state != v1::BATCH_STATE_UNSPECIFIED) {
          ps.setUInt(i++, static_cast<uint32_t>(query.state));
        }
        if (query.has_cursor) {
          ps.setDateTime(i++, FormatDateTime(query.cursor_created_at));
          ps.setDateTime(i++, FormatDateTime(query.cursor_created_at));
          ps.setString(i++, query.cursor_batch_id);
        }
        ps.setUInt64(i++, static_cast<uint64_t>(query.limit) + 1);
        {
          std::unique_ptr<sql::ResultSet> rs(ps.executeQuery());
          while (rs->next()) {
            if (page.batches.size() >= query.limit) {
              page.more = true;
              break;
            }
            v1::BatchSummary& b = page.batches.emplace_back();
            b.set_batch_id(rs->getString("batch_id").asStdString());
            b.set_state(static_cast<v1::BatchState>(rs->getUInt("state")));
            b.set_total(rs->getUInt("total"));
            b.set_succeeded(rs->getUInt("succeeded"));
            b.set_failed(rs->getUInt("failed"));
            b.set_stored(rs->getUInt("stored"));
            b.set_spooled(rs->getUInt("spooled"));
            b.set_state_reason(rs->getString("state_reason").asStdString());
            auto created = TimestampFromDateTime(
                rs->getString("created_at").asStdString());
            if (created.ok()) *b.mutable_created_at() = *created;
            if (!rs->isNull("finished_at")) {
              auto finished = TimestampFromDateTime(
                  rs->getString("finished_at").asStdString());
              if (finished.ok()) *b.mutable_finished_at() = *finished;
            }
          }
        }
        // As GetBatch: a batch's counters are written when it ends.
        for (v1::BatchSummary& b : page.batches) {
          if (b.state() != v1::BATCH_STATE_RUNNING &&
              b.state() != v1::BATCH_STATE_INTERRUPTED) {
            continue;
          }
          sql::PreparedStatement& count =
              s.Prepared(MysqlReader::kCountResultsSql);
          count.setUInt(1, static_cast<uint32_t>(v1::OUTCOME_OK));
          count.setString(2, b.batch_id());
          std::unique_ptr<sql::ResultSet> counts(count.executeQuery());
          if (counts->next()) {
            const uint32_t n = counts->getUInt("n");
            const uint32_t ok = counts->getUInt("ok");
            b.set_stored(n);
            b.set_succeeded(ok);
            b.set_failed(n - ok);
          }
        }
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  return page;
}

absl::StatusOr<std::string> MysqlBatchControl::PageTokenKey() {
  std::string key;
  absl::Status status = reader_->RunOnPooledSession(
      "reading the page token key", [&](MysqlSession& s) -> absl::Status {
        std::random_device random;
        std::string fresh(kKeyBytes, '\0');
        for (char& c : fresh) c = static_cast<char>(random() & 0xff);
        sql::PreparedStatement& insert = s.Prepared(
            "INSERT IGNORE INTO service_secrets (name, secret) VALUES (?, ?)");
        insert.setString(1, kPageTokenKeyName);
        insert.setString(2, fresh);
        insert.executeUpdate();
        sql::PreparedStatement& select =
            s.Prepared("SELECT secret FROM service_secrets WHERE name = ?");
        select.setString(1, kPageTokenKeyName);
        std::unique_ptr<sql::ResultSet> rs(select.executeQuery());
        if (!rs->next()) {
          return absl::InternalError("the page token key was not stored");
        }
        key = rs->getString(1).asStdString();
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  if (key.size() < kKeyBytes) {
    return absl::InternalError("the stored page token key is too short");
  }
  return key;
}

}  // namespace batchfetch

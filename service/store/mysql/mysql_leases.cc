#include "service/store/mysql/mysql_leases.h"

#include <cppconn/prepared_statement.h>
#include <cppconn/resultset.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "batchfetch/v1/batchfetch.pb.h"
#include "service/store/mysql/mysql_values.h"

namespace batchfetch {

namespace {

constexpr size_t kMaxStateReasonBytes = 255;

}  // namespace

MysqlLeases::MysqlLeases(Options options)
    : options_(std::move(options)), session_(options_.session) {}

std::string MysqlLeases::InterruptedReason(absl::string_view owner,
                                           absl::Time expired_at) {
  return FitColumn(
      absl::StrCat("lease of replica ", owner, " expired at ",
                   absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", expired_at,
                                    absl::UTCTimeZone()),
                   ": the replica stopped (crash or lost database)"),
      kMaxStateReasonBytes);
}

absl::Status MysqlLeases::Renew(const std::vector<std::string>& live) {
  if (live.empty()) return absl::OkStatus();
  // One UPDATE per chunk of ids (each a short autocommit statement).
  constexpr size_t kIdsPerUpdate = 200;
  return session_.Run("renewing batch leases", [&](MysqlSession& s) {
    for (size_t at = 0; at < live.size(); at += kIdsPerUpdate) {
      const size_t n = std::min(kIdsPerUpdate, live.size() - at);
      std::string marks;
      for (size_t i = 0; i < n; ++i) marks += i == 0 ? "?" : ",?";
      sql::PreparedStatement& ps = s.Prepared(absl::StrCat(
          "UPDATE batches SET lease_expires_at = NOW(6) + INTERVAL ? "
          "MICROSECOND WHERE state = ? AND lease_owner = ? AND batch_id IN (",
          marks, ")"));
      ps.setInt64(1, absl::ToInt64Microseconds(options_.lease_duration));
      ps.setUInt(2, static_cast<uint32_t>(v1::BATCH_STATE_RUNNING));
      ps.setString(3, options_.replica_id);
      for (size_t i = 0; i < n; ++i) {
        ps.setString(static_cast<int>(4 + i), live[at + i]);
      }
      ps.executeUpdate();
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<std::string>> MysqlLeases::InterruptExpired(
    const std::set<std::string>& live) {
  std::vector<std::string> interrupted;
  absl::Status status =
      session_.Run("interrupting expired batch leases", [&](MysqlSession& s) {
        interrupted.clear();
        s.Execute("START TRANSACTION");
        sql::PreparedStatement& select = s.Prepared(absl::StrCat(
            "SELECT batch_id, lease_owner, lease_expires_at FROM batches "
            "WHERE state = ? AND lease_expires_at < NOW(6) "
            "ORDER BY lease_expires_at LIMIT ",
            kMaxInterruptsPerSweep, " FOR UPDATE"));
        select.setUInt(1, static_cast<uint32_t>(v1::BATCH_STATE_RUNNING));
        struct Expired {
          std::string batch_id;
          std::string reason;
        };
        std::vector<Expired> expired;
        {
          std::unique_ptr<sql::ResultSet> rs(select.executeQuery());
          while (rs->next()) {
            const std::string owner =
                rs->getString("lease_owner").asStdString();
            const std::string id = rs->getString("batch_id").asStdString();
            // Running here, only late: the keeper renews it next.
            if (owner == options_.replica_id && live.count(id) != 0) continue;
            absl::StatusOr<absl::Time> at =
                ParseDateTime(rs->getString("lease_expires_at").asStdString());
            expired.push_back(
                {rs->getString("batch_id").asStdString(),
                 InterruptedReason(rs->getString("lease_owner").asStdString(),
                                   at.ok() ? *at : absl::UnixEpoch())});
          }
        }
        sql::PreparedStatement& update = s.Prepared(
            "UPDATE batches SET state = ?, state_reason = ? "
            "WHERE batch_id = ? AND state = ?");
        for (const Expired& e : expired) {
          update.setUInt(1, static_cast<uint32_t>(v1::BATCH_STATE_INTERRUPTED));
          update.setString(2, e.reason);
          update.setString(3, e.batch_id);
          update.setUInt(4, static_cast<uint32_t>(v1::BATCH_STATE_RUNNING));
          // Under the row lock taken above, the row is still RUNNING.
          if (update.executeUpdate() > 0) interrupted.push_back(e.batch_id);
        }
        // Checked: a COMMIT lost with the connection throws, so no id is
        // reported for a change that did not happen.
        s.Commit();
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  return interrupted;
}

}  // namespace batchfetch

#include "service/store/mysql/mysql_session.h"

#include <cppconn/connection.h>
#include <cppconn/prepared_statement.h>
#include <cppconn/resultset.h>
#include <cppconn/statement.h>
#include <mysql_driver.h>

#include <climits>
#include <cmath>

#include "absl/strings/match.h"

namespace batchfetch {

MysqlSession::~MysqlSession() {
  // Closing sends COM_QUIT, bounded by the write timeout; nothing may throw
  // out of a destructor.
  try {
    prepared_.clear();
    conn_.reset();
  } catch (...) {
  }
}

absl::StatusOr<std::unique_ptr<MysqlSession>> MysqlSession::Connect(
    const Options& options) {
  const std::string what =
      absl::StrCat("connecting to MySQL at ", options.host, ":", options.port);
  auto session = std::unique_ptr<MysqlSession>(new MysqlSession);
  MysqlStatus status = Guard(what, [&] {
    sql::mysql::MySQL_Driver* driver = sql::mysql::get_mysql_driver_instance();
    sql::ConnectOptionsMap props;
    props["hostName"] =
        sql::SQLString(absl::StrCat("tcp://", options.host, ":", options.port));
    props["userName"] = sql::SQLString(options.user);
    props["password"] = sql::SQLString(options.password);
    props["OPT_CONNECT_TIMEOUT"] =
        static_cast<int>(absl::ToInt64Seconds(options.connect_timeout) + 1);
    const int io_seconds = TimeoutSeconds(options.io_timeout);
    if (io_seconds > 0) {
      props["OPT_READ_TIMEOUT"] = io_seconds;
      props["OPT_WRITE_TIMEOUT"] = io_seconds;
    }
    props["OPT_CHARSET_NAME"] = sql::SQLString("utf8mb4");
    session->conn_.reset(driver->connect(props));
    if (!options.database.empty()) session->conn_->setSchema(options.database);
    // Not conn_->setAutoCommit(false): it ignores a failure.
    session->Execute(options.autocommit
                         ? "SET SESSION time_zone = '+00:00'"
                         : "SET SESSION time_zone = '+00:00', autocommit = 0");
    return absl::OkStatus();
  });
  if (!status.ok()) return status.status;
  return session;
}

sql::PreparedStatement& MysqlSession::Prepared(const std::string& sql) {
  auto it = prepared_.find(sql);
  if (it == prepared_.end()) {
    it = prepared_
             .emplace(sql, std::unique_ptr<sql::PreparedStatement>(
                               conn_->prepareStatement(sql)))
             .first;
  }
  return *it->second;
}

void MysqlSession::Execute(const std::string& sql) {
  std::unique_ptr<sql::Statement> stmt(conn_->createStatement());
  stmt->execute(sql);
}

std::unique_ptr<sql::ResultSet> MysqlSession::Query(const std::string& sql) {
  std::unique_ptr<sql::Statement> stmt(conn_->createStatement());
  return std::unique_ptr<sql::ResultSet>(stmt->executeQuery(sql));
}

void MysqlSession::Commit() { Execute("COMMIT"); }

void MysqlSession::Rollback() { Execute("ROLLBACK"); }

MysqlErrorKind MysqlSession::Classify(int code, absl::string_view sql_state) {
  switch (code) {
    case kErrServerGone:
    case kErrServerLost:
    case kErrCantConnect:
    case kErrConnHostError:
    case kErrServerLostExtended:
    case kErrConnectionKilled:
      return MysqlErrorKind::kConnectionLost;
    case kErrDeadlock:
    case kErrLockWaitTimeout:
      return MysqlErrorKind::kRetryable;
    case kErrDupEntry:
      return MysqlErrorKind::kDuplicate;
    case 0:
      // No server/client error number (e.g. a Connector/C++ argument or
      // state error): only SQLSTATE class 08 says the connection is gone.
      return absl::StartsWith(sql_state, "08") ? MysqlErrorKind::kConnectionLost
                                               : MysqlErrorKind::kPermanent;
    default:
      return MysqlErrorKind::kPermanent;
  }
}

absl::Status MysqlSession::ToStatus(MysqlErrorKind kind, int code,
                                    absl::string_view what,
                                    absl::string_view message) {
  std::string text =
      absl::StrCat(what, ": ", message, " (MySQL error ", code, ")");
  switch (kind) {
    case MysqlErrorKind::kNone:
      return absl::OkStatus();
    case MysqlErrorKind::kConnectionLost:
      return absl::UnavailableError(text);
    case MysqlErrorKind::kDuplicate:
      return absl::AlreadyExistsError(text);
    case MysqlErrorKind::kRetryable:
    case MysqlErrorKind::kPermanent:
      break;
  }
  return absl::InternalError(text);
}

MysqlStatus MysqlSession::FromException(const sql::SQLException& e,
                                        absl::string_view what) {
  const int code = e.getErrorCode();
  const MysqlErrorKind kind = Classify(code, e.getSQLState());
  return {ToStatus(kind, code, what, e.what()), kind};
}

int MysqlSession::TimeoutSeconds(absl::Duration d) {
  if (d <= absl::ZeroDuration() || d == absl::InfiniteDuration()) return 0;
  const double seconds = std::ceil(absl::ToDoubleSeconds(d));
  if (seconds >= INT_MAX) return INT_MAX;
  return seconds < 1 ? 1 : static_cast<int>(seconds);
}

void MysqlSession::ThreadInit() {
  try {
    sql::mysql::get_mysql_driver_instance()->threadInit();
  } catch (...) {
  }
}

void MysqlSession::ThreadEnd() {
  try {
    sql::mysql::get_mysql_driver_instance()->threadEnd();
  } catch (...) {
  }
}

}  // namespace batchfetch

#ifndef BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_SESSION_H_
#define BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_SESSION_H_

#include <cppconn/exception.h>

#include <exception>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sql {
class Connection;
class PreparedStatement;
class ResultSet;
}  // namespace sql

namespace batchfetch {

// How to react to a failed MySQL call.
enum class MysqlErrorKind {
  kNone,            // not an error
  kConnectionLost,  // the connection is unusable: reconnect, then retry
  kRetryable,       // deadlock / lock-wait timeout: retry the transaction
  kDuplicate,       // duplicate key (1062)
  kPermanent,       // anything else: retrying the same statement won't help
};

// True for the kinds worth retrying (kConnectionLost, kRetryable).
inline bool IsTransient(MysqlErrorKind kind) {
  return kind == MysqlErrorKind::kConnectionLost ||
         kind == MysqlErrorKind::kRetryable;
}

// An absl::Status together with its MysqlErrorKind. `status` maps the kind
// as MysqlSession::ToStatus does.
struct MysqlStatus {
  absl::Status status;
  MysqlErrorKind kind = MysqlErrorKind::kNone;
  bool ok() const { return status.ok(); }
};

// One Connector/C++ 1.1 connection with its prepared statements, and the one
// place where Connector/C++ errors become absl::Status.
//
// Contract: Connect() applies every connect option (connect, read and write
// timeouts, utf8mb4, UTC session time zone, autocommit). The read/write
// timeouts bound every round trip, so a half-open connection fails with
// 2013 (kConnectionLost) after about `io_timeout` instead of hanging.
//
// Ownership: owns the sql::Connection and every statement prepared on it;
// references returned by conn()/Prepared() live as long as the session.
// Destroying the session closes the connection.
//
// Threading: not thread-safe; one thread at a time uses a session (the
// writer its own, a reader caller the one lent to it). The static functions
// are pure and safe from any thread.
//
// Exceptions: Connect(), Guard() and the static functions never throw.
// conn(), Prepared(), Execute(), Query(), Commit() and Rollback() throw
// sql::SQLException as Connector/C++ does; run them inside Guard().
//
// Transactions: use Commit()/Rollback(), never conn().commit(),
// conn().rollback() or conn().setAutoCommit(). In Connector/C++ 1.1.12 those
// three discard the result of mysql_commit/mysql_rollback/mysql_autocommit:
// a COMMIT that fails because the connection was lost (the server rolled the
// transaction back) returns normally, as if the rows were stored.
class MysqlSession {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    int port = 3306;
    std::string user;
    std::string password;
    // Selected after connecting; empty: none.
    std::string database;
    absl::Duration connect_timeout = absl::Seconds(5);
    // OPT_READ_TIMEOUT and OPT_WRITE_TIMEOUT (whole seconds, rounded up);
    // zero or infinite: none.
    absl::Duration io_timeout = absl::Seconds(30);
    // false: SET SESSION autocommit = 0 (checked, unlike setAutoCommit());
    // sql::Connection::getAutoCommit() then no longer tells the truth.
    bool autocommit = true;
  };

  // MySQL/MariaDB error codes acted on (both servers agree on them).
  static constexpr int kErrDupEntry = 1062;
  static constexpr int kErrLockWaitTimeout = 1205;
  static constexpr int kErrDeadlock = 1213;
  static constexpr int kErrCantConnect = 2002;
  static constexpr int kErrConnHostError = 2003;
  static constexpr int kErrServerGone = 2006;
  static constexpr int kErrServerLost = 2013;
  static constexpr int kErrServerLostExtended = 2055;
  // MariaDB: "Connection was killed" (KILL of our connection).
  static constexpr int kErrConnectionKilled = 1927;

  // Connects and configures a session. On failure the status is
  // UNAVAILABLE for a connection-level error, otherwise as ToStatus maps it
  // (e.g. INTERNAL for access denied).
  static absl::StatusOr<std::unique_ptr<MysqlSession>> Connect(
      const Options& options);

  MysqlSession(const MysqlSession&) = delete;
  MysqlSession& operator=(const MysqlSession&) = delete;
  ~MysqlSession();

  sql::Connection& conn() { return *conn_; }
  // The statement for `sql`, prepared on first use and kept.
  sql::PreparedStatement& Prepared(const std::string& sql);
  // Runs one statement that returns no rows.
  void Execute(const std::string& sql);
  // Runs one query; the caller owns the result set.
  std::unique_ptr<sql::ResultSet> Query(const std::string& sql);
  // COMMIT / ROLLBACK as statements, so that a failure (e.g. 2013 when the
  // connection was lost before the COMMIT reached the server) throws.
  void Commit();
  void Rollback();

  // Connector/C++ code 0 means "client-side error without a server code";
  // then only SQLSTATE class "08" (connection exception) is a lost
  // connection.
  static MysqlErrorKind Classify(int code, absl::string_view sql_state);

  // UNAVAILABLE for kConnectionLost, ALREADY_EXISTS for kDuplicate,
  // INTERNAL otherwise; the message is "<what>: <message> (MySQL error N)".
  static absl::Status ToStatus(MysqlErrorKind kind, int code,
                               absl::string_view what,
                               absl::string_view message);
  static MysqlStatus FromException(const sql::SQLException& e,
                                   absl::string_view what);

  // The option value for a timeout: whole seconds rounded up, at least 1;
  // 0 for "no timeout" (zero, negative or infinite).
  static int TimeoutSeconds(absl::Duration d);

  // Runs `fn` (returning absl::Status, possibly throwing Connector/C++
  // exceptions) and never throws: an exception becomes a classified status
  // described by `what`. A non-OK status returned by `fn` is kPermanent.
  template <typename Fn>
  static MysqlStatus Guard(absl::string_view what, Fn&& fn) noexcept {
    try {
      absl::Status status = std::forward<Fn>(fn)();
      return {status,
              status.ok() ? MysqlErrorKind::kNone : MysqlErrorKind::kPermanent};
    } catch (const sql::SQLException& e) {
      return FromException(e, what);
    } catch (const std::exception& e) {
      return {absl::InternalError(absl::StrCat(what, ": ", e.what())),
              MysqlErrorKind::kPermanent};
    } catch (...) {
      return {absl::InternalError(absl::StrCat(what, ": unknown exception")),
              MysqlErrorKind::kPermanent};
    }
  }

  // Per-thread Connector/C++ set-up for long-lived threads (the writer).
  static void ThreadInit();
  static void ThreadEnd();

 private:
  MysqlSession() = default;

  std::unique_ptr<sql::Connection> conn_;
  // Destroyed before conn_ (declared after it).
  std::map<std::string, std::unique_ptr<sql::PreparedStatement>> prepared_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_SESSION_H_

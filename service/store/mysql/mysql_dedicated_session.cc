#include "service/store/mysql/mysql_dedicated_session.h"

#include <utility>

namespace batchfetch {

MysqlDedicatedSession::MysqlDedicatedSession(MysqlSession::Options options)
    : options_(std::move(options)) {}

absl::Status MysqlDedicatedSession::Run(
    absl::string_view what, absl::FunctionRef<absl::Status(MysqlSession&)> fn) {
  absl::MutexLock lock(&mu_);
  for (int attempt = 0;; ++attempt) {
    if (session_ == nullptr) {
      auto session = MysqlSession::Connect(options_);
      if (!session.ok()) return session.status();
      session_ = *std::move(session);
    }
    MysqlStatus status =
        MysqlSession::Guard(what, [&] { return fn(*session_); });
    if (status.ok()) return status.status;
    // Closing the connection also rolls back a transaction left open.
    session_.reset();
    if (status.kind == MysqlErrorKind::kConnectionLost && attempt == 0) {
      continue;
    }
    return status.status;
  }
}

}  // namespace batchfetch

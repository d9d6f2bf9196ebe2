#ifndef BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_DEDICATED_SESSION_H_
#define BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_DEDICATED_SESSION_H_

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "service/store/mysql/mysql_session.h"

namespace batchfetch {

// One MySQL connection owned by one part of the store (MysqlLeases,
// MysqlRetention), for work that must not hold a read-pool connection:
// opened on first use, dropped after any failed call and reopened by the
// next one.
//
// Threading: Run() may be called from any thread; calls are serialized (a
// call waits for the one in progress).
class MysqlDedicatedSession {
 public:
  // `options` must select the database.
  explicit MysqlDedicatedSession(MysqlSession::Options options);
  MysqlDedicatedSession(const MysqlDedicatedSession&) = delete;
  MysqlDedicatedSession& operator=(const MysqlDedicatedSession&) = delete;

  // Runs `fn(session)` inside MysqlSession::Guard (errors described by
  // `what`), connecting first if needed. After a failure the connection is
  // closed (which also rolls back a transaction left open); a lost
  // connection is retried once on a new one, so `fn` must be safe to run
  // again from the start. Connecting fails: its status (UNAVAILABLE when
  // the server cannot be reached), `fn` not run.
  absl::Status Run(absl::string_view what,
                   absl::FunctionRef<absl::Status(MysqlSession&)> fn)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const MysqlSession::Options options_;
  absl::Mutex mu_;
  std::unique_ptr<MysqlSession> session_ ABSL_GUARDED_BY(mu_);
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_DEDICATED_SESSION_H_

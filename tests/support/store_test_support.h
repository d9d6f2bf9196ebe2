#ifndef BATCHFETCH_TESTS_SUPPORT_STORE_TEST_SUPPORT_H_
#define BATCHFETCH_TESTS_SUPPORT_STORE_TEST_SUPPORT_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "service/store/mysql/mysql_result_store.h"
#include "service/store/mysql/mysql_session.h"
#include "service/store/result_store.h"
#include "tests/support/local_mariadb.h"

// Helpers the store tests against MariaDB share (store_test executable).
// Header-only: the test support library does not link the store.
namespace batchfetch::testing {

// Session options for `db` as its batchfetch user, with `database`
// selected (empty: none); the other options keep their defaults.
inline MysqlSession::Options SessionOptions(const LocalMariaDb& db,
                                            const std::string& database = "") {
  MysqlSession::Options o;
  o.host = db.host();
  o.port = db.port();
  o.user = db.user();
  o.password = db.password();
  o.database = database;
  return o;
}

// Store options for `db` as its batchfetch user on `database` (created
// and migrated by Open), with the waits the store tests use: 10 s for the
// database at start-up, 5 s of retries per write.
inline MysqlResultStore::Options StoreOptions(const LocalMariaDb& db,
                                              const std::string& database) {
  MysqlResultStore::Options o;
  o.host = db.host();
  o.port = db.port();
  o.user = db.user();
  o.password = db.password();
  o.database = database;
  o.startup_wait = absl::Seconds(10);
  o.retry_budget = absl::Seconds(5);
  return o;
}

// Runs `write` (an AppendResult or FinishBatch call) with a Done callback
// and waits up to 30 s for it: the write's status, DEADLINE_EXCEEDED when
// Done never ran. The callback may run on any thread, also after a
// timeout (it owns what it touches).
inline absl::Status WaitForWrite(
    const std::function<void(ResultStore::Done)>& write) {
  auto done = std::make_shared<absl::Notification>();
  auto status = std::make_shared<absl::Status>();
  write([done, status](ResultStore::WriteOutcome outcome) {
    *status = outcome.status();
    done->Notify();
  });
  if (!done->WaitForNotificationWithTimeout(absl::Seconds(30))) {
    return absl::DeadlineExceededError("done never ran");
  }
  return *status;
}

}  // namespace batchfetch::testing

#endif  // BATCHFETCH_TESTS_SUPPORT_STORE_TEST_SUPPORT_H_

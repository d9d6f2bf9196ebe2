#ifndef BATCHFETCH_TESTS_SUPPORT_LOCAL_MARIADB_H_
#define BATCHFETCH_TESTS_SUPPORT_LOCAL_MARIADB_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace batchfetch::testing {

// A MariaDB server for tests: either a private instance started (and owned) via
// scripts/mariadb-local.sh in a fresh temp dir, or an already-running server
// that is merely pointed at (see Attach()).
//
// The server always has database `batchfetch` and user batchfetch/batchfetch
// with ALL PRIVILEGES on *.* (so tests may CREATE/DROP their own databases).
//
// Thread-safety: all const methods may be called concurrently.
class LocalMariaDb {
 public:
  // Starts a private instance in a new mkdtemp() directory under /tmp.
  // `source_dir` is the repository root (tests get it from the compile
  // definition BATCHFETCH_SOURCE_DIR). Blocks until the server accepts
  // connections (typically ~1 s, at most ~60 s). On failure the error message
  // includes the tail of the script's and the server's logs. The instance is
  // also stopped by a watchdog if this process dies without running the
  // destructor.
  static absl::StatusOr<std::unique_ptr<LocalMariaDb>> Start(
      const std::string& source_dir);

  // Refers to an already-running server on 127.0.0.1:`port` that has the
  // batchfetch user; it is not stopped by the destructor.
  static std::unique_ptr<LocalMariaDb> Attach(int port);

  LocalMariaDb(const LocalMariaDb&) = delete;
  LocalMariaDb& operator=(const LocalMariaDb&) = delete;

  // For an owned instance: stops the server and removes the temp dir.
  ~LocalMariaDb();

  int port() const { return port_; }
  std::string host() const { return "127.0.0.1"; }
  std::string user() const { return "batchfetch"; }
  std::string password() const { return "batchfetch"; }
  // True if the destructor stops the server (i.e. created by Start()).
  bool owned() const { return !dir_.empty(); }
  // Temp dir of an owned instance (data/, mysqld.log, ...); empty if attached.
  const std::string& dir() const { return dir_; }

  // Runs `sql` (one or more ';'-separated statements) with the `mariadb`
  // command line client as the batchfetch user over TCP, optionally with
  // `database` selected. Returns the client's stdout in batch mode
  // (tab-separated, no column names), or an error with its stderr.
  absl::StatusOr<std::string> Execute(const std::string& sql,
                                      const std::string& database = "") const;

 private:
  LocalMariaDb(int port, std::string dir, std::string script);

  const int port_;
  const std::string dir_;     // Empty unless owned.
  const std::string script_;  // Path of mariadb-local.sh; empty if attached.
};

// Returns the process-wide server, created on first use (thread-safe) and
// never null: if the environment variable BATCHFETCH_TEST_MYSQL_PORT is set,
// a server already running on that port (not stopped at exit); otherwise a
// private instance started from BATCHFETCH_SOURCE_DIR (compile definition,
// overridable by the environment variable of the same name) and stopped at
// process exit. Prints the error and calls std::abort() if it cannot start.
LocalMariaDb* SharedMariaDb();

}  // namespace batchfetch::testing

#endif  // BATCHFETCH_TESTS_SUPPORT_LOCAL_MARIADB_H_

#include "tests/support/local_mariadb.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

extern char** environ;

namespace batchfetch::testing {
namespace {

struct CommandResult {
  int exit_code = -1;  // -1 if terminated by a signal.
  std::string out;
  std::string err;
};

// Runs argv[0] (searched in PATH) with `extra_env` added to the environment,
// stdin from /dev/null, and returns its exit code and captured stdout/stderr.
// Uses posix_spawn, so it is safe to call from multithreaded processes; fds
// other than 0-2 are not inherited by the child.
absl::StatusOr<CommandResult> RunCommand(
    const std::vector<std::string>& args,
    const std::vector<std::string>& extra_env = {}) {
  std::vector<char*> argv;
  for (const std::string& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
  for (const std::string& e : extra_env) {
    envp.push_back(const_cast<char*>(e.c_str()));
  }
  envp.push_back(nullptr);

  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", std::strerror(errno)));
  }
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    close(out_pipe[0]);
    close(out_pipe[1]);
    return absl::InternalError(absl::StrCat("pipe2: ", std::strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  pid_t pid;
  int rc =
      posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (rc != 0) {
    close(out_pipe[0]);
    close(err_pipe[0]);
    return absl::InternalError(
        absl::StrCat("cannot run ", args[0], ": ", std::strerror(rc)));
  }

  CommandResult result;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  char buf[4096];
  while (open_fds > 0) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (pollfd& p : fds) {
    if (p.fd >= 0) close(p.fd);
  }
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
  return result;
}

// Last `max_lines` lines of the file at `path`, or a note if unreadable.
std::string TailOfFile(const std::string& path, int max_lines = 30) {
  std::ifstream in(path);
  if (!in) return absl::StrCat("(cannot read ", path, ")");
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(std::move(line));
    if (lines.size() > static_cast<size_t>(2 * max_lines)) {
      lines.erase(lines.begin(), lines.end() - max_lines);
    }
  }
  if (lines.size() > static_cast<size_t>(max_lines)) {
    lines.erase(lines.begin(), lines.end() - max_lines);
  }
  return absl::StrJoin(lines, "\n");
}

LocalMariaDb* shared_db = nullptr;

void DeleteSharedDb() {
  delete shared_db;
  shared_db = nullptr;
}

}  // namespace

LocalMariaDb::LocalMariaDb(int port, std::string dir, std::string script)
    : port_(port), dir_(std::move(dir)), script_(std::move(script)) {}

absl::StatusOr<std::unique_ptr<LocalMariaDb>> LocalMariaDb::Start(
    const std::string& source_dir) {
  std::string script = absl::StrCat(source_dir, "/scripts/mariadb-local.sh");
  if (access(script.c_str(), R_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("cannot read ", script));
  }
  char dir_template[] = "/tmp/batchfetch-mariadb-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", std::strerror(errno)));
  }
  std::string dir = dir_template;
  absl::StatusOr<CommandResult> result =
      RunCommand({"bash", script, "start", dir},
                 {absl::StrCat("BATCHFETCH_MARIADB_OWNER_PID=", getpid()),
                  "BATCHFETCH_MARIADB_OWNER_RMDIR=1"});
  int port = 0;
  if (result.ok() && result->exit_code == 0 &&
      absl::SimpleAtoi(absl::StripAsciiWhitespace(result->out), &port) &&
      port > 0) {
    return std::unique_ptr<LocalMariaDb>(
        new LocalMariaDb(port, std::move(dir), std::move(script)));
  }
  absl::Status error = !result.ok()
                           ? result.status()
                           : absl::InternalError(absl::StrCat(
                                 script, " start ", dir, " failed (exit code ",
                                 result->exit_code, ", stdout \"", result->out,
                                 "\")\n--- script stderr ---\n", result->err,
                                 "\n--- tail of mysqld.log ---\n",
                                 TailOfFile(dir + "/mysqld.log")));
  // Best effort: the script may have left a running server behind.
  (void)RunCommand({"bash", script, "stop", dir});
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return error;
}

std::unique_ptr<LocalMariaDb> LocalMariaDb::Attach(int port) {
  return std::unique_ptr<LocalMariaDb>(new LocalMariaDb(port, "", ""));
}

LocalMariaDb::~LocalMariaDb() {
  if (!owned()) return;
  absl::StatusOr<CommandResult> result =
      RunCommand({"bash", script_, "stop", dir_});
  if (!result.ok() || result->exit_code != 0) {
    std::fprintf(
        stderr, "LocalMariaDb: stopping the server in %s failed: %s\n",
        dir_.c_str(),
        result.ok() ? result->err.c_str() : result.status().ToString().c_str());
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

absl::StatusOr<std::string> LocalMariaDb::Execute(
    const std::string& sql, const std::string& database) const {
  std::vector<std::string> args = {"mariadb",
                                   "--no-defaults",
                                   "--protocol=TCP",
                                   absl::StrCat("--host=", host()),
                                   absl::StrCat("--port=", port_),
                                   absl::StrCat("--user=", user()),
                                   absl::StrCat("--password=", password()),
                                   "--batch",
                                   "--skip-column-names"};
  if (!database.empty()) args.push_back(absl::StrCat("--database=", database));
  args.push_back("--execute=" + sql);
  absl::StatusOr<CommandResult> result = RunCommand(args);
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    return absl::InternalError(absl::StrCat("mariadb exited with code ",
                                            result->exit_code, ": ",
                                            result->err, " (SQL: ", sql, ")"));
  }
  return std::move(result->out);
}

LocalMariaDb* SharedMariaDb() {
  static absl::once_flag once;
  absl::call_once(once, [] {
    if (const char* env_port = std::getenv("BATCHFETCH_TEST_MYSQL_PORT");
        env_port != nullptr && *env_port != '\0') {
      int port = 0;
      if (!absl::SimpleAtoi(env_port, &port) || port <= 0 || port > 65535) {
        std::fprintf(stderr, "BATCHFETCH_TEST_MYSQL_PORT is not a port: %s\n",
                     env_port);
        std::abort();
      }
      shared_db = LocalMariaDb::Attach(port).release();
      return;
    }
    std::string source_dir;
    if (const char* env_dir = std::getenv("BATCHFETCH_SOURCE_DIR");
        env_dir != nullptr && *env_dir != '\0') {
      source_dir = env_dir;
    } else {
#ifdef BATCHFETCH_SOURCE_DIR
      source_dir = BATCHFETCH_SOURCE_DIR;
#else
      std::fprintf(stderr,
                   "SharedMariaDb: compile with -DBATCHFETCH_SOURCE_DIR=... "
                   "or set the environment variable BATCHFETCH_SOURCE_DIR\n");
      std::abort();
#endif
    }
    absl::StatusOr<std::unique_ptr<LocalMariaDb>> db =
        LocalMariaDb::Start(source_dir);
    if (!db.ok()) {
      std::fprintf(stderr, "SharedMariaDb: cannot start MariaDB: %s\n",
                   db.status().ToString().c_str());
      std::abort();
    }
    shared_db = db->release();
    std::atexit(DeleteSharedDb);
  });
  return shared_db;
}

}  // namespace batchfetch::testing

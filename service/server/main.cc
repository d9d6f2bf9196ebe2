// batchfetch_server: assembles the server from flags and environment, runs
// it until SIGINT/SIGTERM, then shuts down gracefully.
#include <signal.h>
#include <sys/resource.h>

#include <cstdio>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "service/server/batchfetch_server.h"
#include "service/server/server_config.h"

ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(20),
          "On SIGTERM, how long running batches may finish before they are "
          "cancelled");

namespace {

// Each in-flight transfer needs a socket: lift the soft descriptor limit.
void RaiseFileLimit() {
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 &&
      limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // --help lists the server's flags, which live in service/.
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "service/");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "batchfetch gRPC server. Every flag can also be set as an environment "
      "variable BATCHFETCH_<FLAG_NAME>; the MySQL password only via "
      "BATCHFETCH_MYSQL_PASSWORD or --mysql_password_file.");
  if (absl::Status env = batchfetch::ApplyEnvironmentToFlags(); !env.ok()) {
    std::cerr << "batchfetch_server: " << env.message() << "\n";
    return 2;
  }
  absl::ParseCommandLine(argc, argv);
  absl::StatusOr<batchfetch::ServerConfig> config =
      batchfetch::ServerConfigFromFlags();
  if (!config.ok()) {
    std::cerr << "batchfetch_server: " << config.status().message() << "\n";
    return 2;
  }
  RaiseFileLimit();
  // Signals are taken synchronously by sigwait below, not by handlers.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto server = batchfetch::BatchFetchServer::Start(*config);
  if (!server.ok()) {
    std::cerr << "batchfetch_server: " << server.status() << "\n";
    return 1;
  }
  std::cout << "batchfetch_server listening on port " << (*server)->port()
            << " (store: " << (config->store_enabled ? "mysql" : "none") << ")"
            << std::endl;
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  std::cout << "batchfetch_server: signal " << signal_number
            << ", shutting down" << std::endl;
  (*server)->Shutdown(absl::GetFlag(FLAGS_shutdown_grace));
  server->reset();
  return 0;
}

// batchfetch_server: assembles the server from flags and environment, runs
// it until SIGINT/SIGTERM, then shuts down gracefully.
#include <signal.h>

#include <iostream>

#include "service/server/batchfetch_server.h"
#include "service/server/server_config.h"

int main(int argc, char** argv) {
  absl::StatusOr<batchfetch::ServerConfig> config =
      batchfetch::ParseServerConfig(argc, argv);
  if (!config.ok()) {
    std::cerr << "batchfetch_server: " << config.status().message() << "\n";
    return 2;
  }
  batchfetch::RaiseFileLimit();
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
  (*server)->Shutdown(config->shutdown_grace);
  server->reset();
  return 0;
}

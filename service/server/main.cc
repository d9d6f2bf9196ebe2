// batchfetch_server: assembles the server from flags and environment, runs
// it until SIGINT/SIGTERM, then drains (see BatchFetchServer::Shutdown) and
// exits 0. SIGHUP re-reads --auth_token_file.
#include <signal.h>

#include <iostream>
#include <string>

#include "service/base/log.h"
#include "service/server/batchfetch_server.h"
#include "service/server/server_config.h"
#include "service/server/startup_log.h"

int main(int argc, char** argv) {
  absl::StatusOr<batchfetch::ServerConfig> config =
      batchfetch::ParseServerConfig(argc, argv);
  if (!config.ok()) {
    std::cerr << "batchfetch_server: " << config.status().message() << "\n";
    return 2;
  }
  batchfetch::SetLogLevel(config->log_level);
  batchfetch::RaiseFileLimit();
  // Signals are taken synchronously by sigwait below, not by handlers.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto server = batchfetch::BatchFetchServer::Start(*config);
  if (!server.ok()) {
    std::cerr << "batchfetch_server: " << server.status() << "\n";
    return 1;
  }
  std::cout << "batchfetch_server listening on port " << (*server)->port()
            << " (store: " << (config->store_enabled ? "mysql" : "none") << ", "
            << batchfetch::TlsDescription(config->tls);
  if ((*server)->metrics_port() > 0) {
    std::cout << ", metrics port " << (*server)->metrics_port();
  }
  std::cout << ")" << std::endl;
  batchfetch::LogServerStarted(*config, (*server)->port(),
                               (*server)->metrics_port());
  int signal_number = 0;
  while (sigwait(&signals, &signal_number) == 0 && signal_number == SIGHUP) {
    // A refused file keeps the old tokens; its error names the line, never
    // a token.
    absl::StatusOr<size_t> tokens = (*server)->ReloadTokens();
    if (tokens.ok()) {
      batchfetch::LogEvent(batchfetch::LogLevel::kInfo, "auth_tokens_reloaded")
          .Add("tokens", static_cast<uint64_t>(*tokens));
    } else {
      batchfetch::LogEvent(batchfetch::LogLevel::kError,
                           "auth_tokens_reload_failed")
          .Add("error", std::string(tokens.status().message()));
    }
  }
  std::cout << "batchfetch_server: signal " << signal_number
            << ", shutting down" << std::endl;
  // The drain (BatchFetchServer::Shutdown): NOT_SERVING at once, the port
  // open while running batches get the grace, then the rest cancelled and
  // stored; the reset flushes the writer. A second signal meanwhile stays
  // blocked: the drain is bounded anyway.
  (*server)->Shutdown(config->shutdown_grace);
  server->reset();
  return 0;
}

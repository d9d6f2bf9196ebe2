#ifndef BATCHFETCH_SERVICE_SERVER_BATCHFETCH_SERVER_H_
#define BATCHFETCH_SERVICE_SERVER_BATCHFETCH_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "service/api/batch_fetcher_service.h"
#include "service/fetch/fetch_engine.h"
#include "service/server/server_config.h"
#include "service/store/mysql/mysql_result_store.h"
#include "service/store/result_store.h"

namespace grpc {
class Server;
}

namespace batchfetch {

// Lifts the soft RLIMIT_NOFILE to the hard limit: each in-flight transfer
// needs a socket. Best effort; for main(), before Start.
void RaiseFileLimit();

// The assembled server: store, engine, service and gRPC server, owned in
// the order they must be torn down (gRPC first, the store last).
//
// Threads it brings up: gRPC's callback threads, the engine's event-loop
// and delivery threads, the service's executor (ServiceOptions::
// store_threads, for CreateBatch/GetBatch/ListResults) and the store's
// writer thread.
class BatchFetchServer {
 public:
  // Opens the store (unless disabled or `store` is given: tests pass a
  // wrapped one), starts the engine and listens.
  static absl::StatusOr<std::unique_ptr<BatchFetchServer>> Start(
      const ServerConfig& config, std::unique_ptr<ResultStore> store = nullptr);

  // Stops accepting calls; running batches get `grace` to finish, then are
  // cancelled (their unfinished results are stored as CANCELLED).
  ~BatchFetchServer();
  void Shutdown(absl::Duration grace);
  // Blocks until Shutdown() has completed.
  void Wait();

  int port() const { return port_; }
  FetchEngine& engine() { return *engine_; }

  // Re-reads --auth_token_file (on SIGHUP): the number of tokens now
  // accepted, or why the file was refused (the old tokens then stay).
  // FAILED_PRECONDITION when auth is off. Thread-safe.
  absl::StatusOr<size_t> ReloadTokens();

 private:
  BatchFetchServer() = default;

  std::unique_ptr<ResultStore> store_;
  std::unique_ptr<FetchEngine> engine_;
  // Null without --auth_token_file; outlives the service that reads it.
  std::unique_ptr<TokenAuthenticator> authenticator_;
  std::unique_ptr<BatchFetcherService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_SERVER_BATCHFETCH_SERVER_H_

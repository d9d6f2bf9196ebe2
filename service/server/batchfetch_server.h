#ifndef BATCHFETCH_SERVICE_SERVER_BATCHFETCH_SERVER_H_
#define BATCHFETCH_SERVICE_SERVER_BATCHFETCH_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "service/api/batch_fetcher_service.h"
#include "service/api/health_service.h"
#include "service/base/clock.h"
#include "service/batch/batch_stats.h"
#include "service/fetch/fetch_engine.h"
#include "service/metrics/metrics_http_server.h"
#include "service/server/cancel_poller.h"
#include "service/server/health_checker.h"
#include "service/server/lease_keeper.h"
#include "service/server/retention_keeper.h"
#include "service/server/server_config.h"
#include "service/store/mysql/mysql_result_store.h"
#include "service/store/result_store.h"
#include "service/store/store_stats.h"

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
// store_threads, for CreateBatch/GetBatch/ListResults), the store's
// writer thread, the health checker's thread, the lease keeper's thread and,
// with --retention, the retention keeper's thread.
//
// Thread-safety: Shutdown, Wait and the destructor from one thread (main's).
class BatchFetchServer {
 public:
  // Opens the store (unless disabled or `store` is given: tests pass a
  // wrapped one), starts the engine and listens.
  static absl::StatusOr<std::unique_ptr<BatchFetchServer>> Start(
      const ServerConfig& config, std::unique_ptr<ResultStore> store = nullptr);

  // Drains (unless Shutdown did already) and tears down in order: the
  // service (joining its executor), the engine, the store (the writer
  // flushes its queue). Logs drain_finished after a drain.
  ~BatchFetchServer();
  // The drain (SIGTERM/SIGINT); blocks until the gRPC server has shut down.
  //  1. Health turns NOT_SERVING at once; the port stays open.
  //  2. New FetchBatch calls get UNAVAILABLE ("draining"); the store starts
  //     its drain (ResultStore::StartDraining): all its remaining writes
  //     share about one --store_retry_budget from here.
  //  3. Running batches get `grace` to finish.
  //  4. Then the batches still running (and any admitted batch not yet
  //     started) are cancelled by us (their
  //     unfinished requests end CANCELLED and are stored; each caller gets
  //     its results, the summary and CANCELLED), and we wait for their runs
  //     to finish (every result stored or given up by the store).
  //  5. Health Watch streams end; the gRPC server shuts down, giving the
  //     last summaries a few seconds to be written; the port closes.
  // Idempotent; logs drain_started.
  void Shutdown(absl::Duration grace);
  // Blocks until Shutdown() has completed.
  void Wait();

  // What the health service answers now (for tests).
  bool serving() const;

  int port() const { return port_; }
  // The port GET /metrics (and /readyz, /livez) is served on; 0 without
  // --metrics_listen.
  int metrics_port() const {
    return metrics_http_ != nullptr ? metrics_http_->port() : 0;
  }
  FetchEngine& engine() { return *engine_; }

  // Re-reads --auth_token_file (on SIGHUP): the number of tokens now
  // accepted, or why the file was refused (the old tokens then stay).
  // FAILED_PRECONDITION when auth is off. Thread-safe.
  absl::StatusOr<size_t> ReloadTokens();

 private:
  BatchFetchServer() = default;

  // The metrics cells the parts move (declared first: they outlive every
  // part that writes them). store_stats_ is wired only into a store this
  // class opens itself.
  std::unique_ptr<BatchStats> batch_stats_ = std::make_unique<BatchStats>();
  std::unique_ptr<StoreStats> store_stats_ = std::make_unique<StoreStats>();
  std::unique_ptr<ResultStore> store_;
  // Renews this replica's batch leases and sweeps expired ones; runs from
  // just after the store opens until just before it closes. Null without a
  // store.
  std::unique_ptr<LeaseKeeper> lease_keeper_;
  // --retention: deletes batches that ended long ago; runs from just after
  // the store opens until just before it closes. Null when off.
  std::unique_ptr<RetentionKeeper> retention_keeper_;
  std::unique_ptr<FetchEngine> engine_;
  // Null without --auth_token_file; outlives the service that reads it.
  std::unique_ptr<TokenAuthenticator> authenticator_;
  std::unique_ptr<BatchFetcherService> service_;
  // Carries CancelBatch from other replicas to this one's runs (reads the
  // store, calls the service): runs while both exist. Null without a store.
  std::unique_ptr<CancelPoller> cancel_poller_;
  // grpc.health.v1, fed by `health_checker_` (which reads the store and the
  // engine, so it is stopped before either goes); GET /readyz reads it too,
  // so it outlives `metrics_http_`.
  std::unique_ptr<HealthService> health_;
  std::unique_ptr<HealthChecker> health_checker_;
  std::unique_ptr<grpc::Server> server_;
  // GET /metrics, /readyz and /livez (--metrics_listen); reads the engine,
  // the stats and the health service above, so it stops before any of them
  // goes. Null when off.
  std::unique_ptr<MetricsHttpServer> metrics_http_;
  // How long the drain waits for cancelled runs to store their results:
  // about one store retry budget plus a round trip.
  absl::Duration cancel_wait_ = absl::Seconds(30);
  bool drained_ = false;    // Shutdown ran (main thread only)
  MonoTime drain_started_;  // on Clock::Real()
  int port_ = 0;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_SERVER_BATCHFETCH_SERVER_H_

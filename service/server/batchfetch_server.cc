#include "service/server/batchfetch_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>
#include <sys/resource.h>

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "service/base/clock.h"
#include "service/base/log.h"
#include "service/metrics/exposition.h"
#include "service/server/server_metrics.h"
#include "service/store/mysql/mysql_session.h"

namespace batchfetch {

namespace {

// Plaintext, TLS, or TLS that requires and verifies a client certificate
// (mTLS): a client without one, or with one from another CA, fails the
// handshake and never reaches a handler.
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const ServerTlsConfig& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(
      tls.mutual() ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                   : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_root_certs = tls.client_ca_pem;
  options.pem_key_cert_pairs.push_back(
      {tls.private_key_pem, tls.cert_chain_pem});
  return grpc::SslServerCredentials(options);
}

}  // namespace

void RaiseFileLimit() {
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 &&
      limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

absl::StatusOr<std::unique_ptr<BatchFetchServer>> BatchFetchServer::Start(
    const ServerConfig& config, std::unique_ptr<ResultStore> store) {
  std::unique_ptr<BatchFetchServer> server(new BatchFetchServer);
  std::string replica_id;  // known when we open the store ourselves
  if (store != nullptr) {
    server->store_ = std::move(store);
  } else if (config.store_enabled) {
    MysqlResultStore::Options mysql_options = config.mysql;
    mysql_options.stats = server->store_stats_.get();
    // This process's identity in the batch leases: new at every start, so
    // a restarted replica sweeps its predecessor's batches like any other.
    if (mysql_options.replica_id.empty()) {
      mysql_options.replica_id = MysqlResultStore::NewReplicaId();
    }
    replica_id = mysql_options.replica_id;
    absl::StatusOr<std::unique_ptr<ResultStore>> mysql;
    if (config.spool.spool.dir.empty()) {
      auto plain = MysqlResultStore::Open(mysql_options);
      if (plain.ok()) {
        mysql = std::unique_ptr<ResultStore>(*std::move(plain));
      } else {
        mysql = plain.status();
      }
    } else {
      SpoolingResultStore::Options spool_options = config.spool;
      spool_options.stats = server->store_stats_.get();
      mysql = SpoolingResultStore::Open(
          spool_options,
          [&mysql_options](GivenUpHandler on_group_given_up)
              -> absl::StatusOr<std::unique_ptr<ResultStore>> {
            MysqlResultStore::Options options = mysql_options;
            options.on_group_given_up = std::move(on_group_given_up);
            // What a drain gives up is spooled, not lost: no reason to
            // hold the exit for a whole retry budget.
            options.drain_retry_budget =
                std::min(options.retry_budget, absl::Seconds(2));
            auto opened = MysqlResultStore::Open(options);
            if (!opened.ok()) return opened.status();
            return std::unique_ptr<ResultStore>(*std::move(opened));
          });
    }
    if (!mysql.ok()) {
      // Fail fast, in one line that says what to fix.
      if (absl::IsUnavailable(mysql.status())) {
        return absl::UnavailableError(absl::StrCat(
            "the result database at ", config.mysql.host, ":",
            config.mysql.port, " is unreachable after --mysql_startup_wait=",
            absl::FormatDuration(config.mysql.startup_wait), ": ",
            mysql.status().message()));
      }
      return absl::Status(
          mysql.status().code(),
          absl::StrCat("opening the result store: ", mysql.status().message()));
    }
    server->store_ = *std::move(mysql);
  }
  if (server->store_ != nullptr) {
    LeaseKeeper::Options lease_options;
    lease_options.lease_duration = config.mysql.lease_duration;
    lease_options.thread_init = &MysqlSession::ThreadInit;
    lease_options.thread_end = &MysqlSession::ThreadEnd;
    server->lease_keeper_ = std::make_unique<LeaseKeeper>(
        server->store_.get(), server->store_stats_.get(),
        std::move(lease_options));
    // The first sweep runs now: batches a crashed replica (e.g. this one's
    // predecessor) left RUNNING are interrupted before we serve.
    server->lease_keeper_->Start();
    LogEvent(LogLevel::kInfo, "lease_keeper_started")
        .Add("replica_id", replica_id)
        .Add("lease_seconds",
             absl::ToDoubleSeconds(config.mysql.lease_duration));
    if (config.retention > absl::ZeroDuration()) {
      RetentionKeeper::Options retention_options;
      retention_options.retention = config.retention;
      // A short retention (tests, demos) is checked as often as it lasts.
      retention_options.interval =
          std::min(retention_options.interval, config.retention);
      retention_options.thread_init = &MysqlSession::ThreadInit;
      retention_options.thread_end = &MysqlSession::ThreadEnd;
      server->retention_keeper_ = std::make_unique<RetentionKeeper>(
          server->store_.get(), std::move(retention_options));
      server->retention_keeper_->Start();
    }
  }
  auto engine = FetchEngine::Create(config.engine);
  if (!engine.ok()) return engine.status();
  server->engine_ = *std::move(engine);
  ServiceOptions service_options = config.service;
  service_options.batch_stats = server->batch_stats_.get();
  // The engine's cap is the server's: a request may ask for at most that.
  service_options.max_body_bytes = config.engine.max_body_bytes;
  if (server->store_ != nullptr) {
    // The executor's threads make the store's round trips: the MySQL
    // client wants its per-thread setup there, as on the writer's thread.
    service_options.store_thread_init = &MysqlSession::ThreadInit;
    service_options.store_thread_end = &MysqlSession::ThreadEnd;
  }
  service_options.max_concurrency =
      std::min<uint32_t>(service_options.max_concurrency,
                         static_cast<uint32_t>(config.engine.max_in_flight));
  if (!config.auth_token_file.empty()) {
    auto authenticator = TokenAuthenticator::FromFile(config.auth_token_file);
    if (!authenticator.ok()) return authenticator.status();
    server->authenticator_ = *std::move(authenticator);
  }
  server->service_ = std::make_unique<BatchFetcherService>(
      service_options, server->engine_.get(), server->store_.get(),
      server->authenticator_.get());

  if (ResultStore* store = server->store_.get()) {
    CancelPoller::Options poller_options;
    poller_options.thread_init = &MysqlSession::ThreadInit;
    poller_options.thread_end = &MysqlSession::ThreadEnd;
    BatchFetcherService* service = server->service_.get();
    server->cancel_poller_ = std::make_unique<CancelPoller>(
        store,
        [service](const std::string& batch_id) {
          service->CancelLocalBatch(batch_id);
        },
        std::move(poller_options));
    server->cancel_poller_->Start();
    // Takeover: the batches the keeper's sweeps interrupt (its first
    // sweep's too) go to the service, which resumes the detached ones.
    server->lease_keeper_->SetSweepListener(
        [service](std::vector<std::string> interrupted) {
          service->TakeOverInterrupted(std::move(interrupted));
        });
  }

  server->cancel_wait_ = config.mysql.retry_budget +
                         2 * config.mysql.io_timeout + absl::Seconds(5);

  // Our own grpc.health.v1 service (not gRPC's built-in one, which
  // reflection cannot describe), fed by the background checker.
  server->health_ = std::make_unique<HealthService>();
  HealthChecker::Probes probes;
  if (ResultStore* store = server->store_.get()) {
    probes.ping_database = [store] { return store->Ping(); };
    probes.thread_init = &MysqlSession::ThreadInit;
    probes.thread_end = &MysqlSession::ThreadEnd;
  }
  FetchEngine* engine_ptr = server->engine_.get();
  probes.loop_turns = [engine_ptr] { return engine_ptr->loop_turns(); };
  probes.wake_loop = [engine_ptr] { engine_ptr->WakeLoop(); };
  HealthService* health = server->health_.get();
  server->health_checker_ = std::make_unique<HealthChecker>(
      std::move(probes),
      [health](bool serving) { health->SetServing(serving); },
      HealthChecker::Options{});

  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  if (!config.metrics_listen.empty()) {
    // Before the gRPC port opens, so a taken metrics port fails start-up
    // before any call is accepted. Scrapes and probes run on civetweb's
    // threads. /readyz answers what the health service answers for the
    // whole server (NOT_SERVING until the checker's first check, and from
    // the drain's start on): the readiness probe for a TLS gRPC port.
    const FetchEngine* engine = server->engine_.get();
    const BatchStats* batch_stats = server->batch_stats_.get();
    const StoreStats* store_stats =
        server->store_ != nullptr ? server->store_stats_.get() : nullptr;
    MetricsHttpServer::Options metrics_options;
    metrics_options.listen = config.metrics_listen;
    auto metrics = MetricsHttpServer::Start(
        metrics_options,
        [engine, batch_stats, store_stats] {
          return RenderText(
              CollectServerMetrics(engine->stats(), *batch_stats, store_stats));
        },
        [health] { return health->serving(); });
    if (!metrics.ok()) return metrics.status();
    server->metrics_http_ = *std::move(metrics);
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.listen, MakeServerCredentials(config.tls),
                           &server->port_);
  builder.RegisterService(server->service_.get());
  builder.RegisterService(server->health_.get());
  builder.SetMaxReceiveMessageSize(config.max_request_bytes);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    // gRPC also refuses to listen when the key does not match the
    // certificate; it says why only in its own log.
    return absl::UnavailableError(absl::StrCat(
        "could not listen on ", config.listen,
        config.tls.enabled()
            ? " (with TLS: also check that --tls_key belongs to --tls_cert)"
            : ""));
  }
  server->health_checker_->Start();
  return server;
}

absl::StatusOr<size_t> BatchFetchServer::ReloadTokens() {
  if (authenticator_ == nullptr) {
    return absl::FailedPreconditionError(
        "auth is off (no --auth_token_file): nothing to reload");
  }
  if (absl::Status reloaded = authenticator_->Reload(); !reloaded.ok()) {
    return reloaded;
  }
  return authenticator_->token_count();
}

void BatchFetchServer::Shutdown(absl::Duration grace) {
  if (drained_ || server_ == nullptr) return;
  drained_ = true;
  // Monotonic: a wall-clock step during the drain must not stretch or cut
  // the grace.
  const Clock& clock = *Clock::Real();
  drain_started_ = clock.MonoNow();
  LogEvent(LogLevel::kInfo, "drain_started")
      .Add("grace_seconds", absl::ToDoubleSeconds(grace))
      .Add("active_batches", service_->active_batches());
  // 1 and 2: NOT_SERVING and UNAVAILABLE for new batches, port still open.
  health_checker_->SetDraining();
  service_->StartDraining();
  // The store's remaining writes (the running batches' and the summaries
  // gRPC's Shutdown waits for) share about one retry budget from now, so a
  // dead or half-open database cannot make each queued group wait one.
  if (store_ != nullptr) store_->StartDraining();
  // 3: the grace. Polled: the count is cheap and the wait is long.
  const auto idle_by = [this, &clock](MonoTime deadline) {
    while (service_->active_batches() > 0 && clock.MonoNow() < deadline) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    return service_->active_batches() == 0;
  };
  // Saturates (an --shutdown_grace of "inf" waits for good).
  const auto after = [](MonoTime from, absl::Duration d) {
    return d >= absl::Hours(24 * 365 * 100) ? MonoTime::max() : from + d;
  };
  bool idle = idle_by(after(drain_started_, grace));
  // 4: cancel what is left ourselves, so callers get CANCELLED with their
  // results rather than gRPC's "Cancelling all calls". Even when idle: it
  // also makes a batch admitted but still queued on the executor (no run
  // yet) start cancelled.
  const int cancelled = service_->active_batches();
  service_->CancelRunningBatches();
  if (!idle) idle = idle_by(after(clock.MonoNow(), cancel_wait_));
  // 5: the probes stop before the parts they read go; then the port closes.
  health_->Shutdown();
  health_checker_->Stop();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server_->Wait();
  LogEvent(idle ? LogLevel::kInfo : LogLevel::kError, "grpc_server_stopped")
      .Add("batches_cancelled", cancelled)
      .Add("batches_unfinished", service_->active_batches());
}

bool BatchFetchServer::serving() const {
  return health_ != nullptr && health_->serving();
}

void BatchFetchServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

BatchFetchServer::~BatchFetchServer() {
  Shutdown(absl::ZeroDuration());
  if (health_checker_ != nullptr) health_checker_->Stop();
  server_.reset();
  // Reactors are gone (and with them the executor's work): join the
  // executor, then stop the engine before the store they fed (the writer
  // flushes what is queued). The poller and the keeper's sweep listener
  // call the service: they stop first.
  cancel_poller_.reset();
  if (lease_keeper_ != nullptr) lease_keeper_->SetSweepListener(nullptr);
  service_.reset();
  metrics_http_.reset();  // waits for a running scrape or probe
  // After the metrics server, whose /readyz reads it.
  health_.reset();
  engine_.reset();
  // Leases are renewed until the writer's final drain begins.
  lease_keeper_.reset();
  retention_keeper_.reset();
  store_.reset();
  if (drained_) {
    LogEvent(LogLevel::kInfo, "drain_finished")
        .Add("seconds", absl::ToDoubleSeconds(
                            Since(Clock::Real()->MonoNow(), drain_started_)));
  }
}

}  // namespace batchfetch

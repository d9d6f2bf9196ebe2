#include "service/server/batchfetch_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <sys/resource.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace batchfetch {

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
  if (store != nullptr) {
    server->store_ = std::move(store);
  } else if (config.store_enabled) {
    auto mysql = MysqlResultStore::Open(config.mysql);
    if (!mysql.ok()) {
      return absl::Status(
          mysql.status().code(),
          absl::StrCat("opening the result store: ", mysql.status().message()));
    }
    server->store_ = *std::move(mysql);
  }
  auto engine = FetchEngine::Create(config.engine);
  if (!engine.ok()) return engine.status();
  server->engine_ = *std::move(engine);
  ServiceOptions service_options = config.service;
  service_options.max_concurrency =
      std::min<uint32_t>(service_options.max_concurrency,
                         static_cast<uint32_t>(config.engine.max_in_flight));
  server->service_ = std::make_unique<BatchFetcherService>(
      service_options, server->engine_.get(), server->store_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.listen, grpc::InsecureServerCredentials(),
                           &server->port_);
  builder.RegisterService(server->service_.get());
  builder.SetMaxReceiveMessageSize(config.max_request_bytes);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("could not listen on ", config.listen));
  }
  return server;
}

void BatchFetchServer::Shutdown(absl::Duration grace) {
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() +
                      absl::ToChronoSeconds(grace));
  }
}

void BatchFetchServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

BatchFetchServer::~BatchFetchServer() {
  Shutdown(absl::ZeroDuration());
  server_.reset();
  // Reactors are gone (and with them the executor's work): join the
  // executor, then stop the engine before the store they fed.
  service_.reset();
  engine_.reset();
  store_.reset();
}

}  // namespace batchfetch

#include "service/server/batchfetch_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <sys/resource.h>

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"

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
  if (!config.auth_token_file.empty()) {
    auto authenticator = TokenAuthenticator::FromFile(config.auth_token_file);
    if (!authenticator.ok()) return authenticator.status();
    server->authenticator_ = *std::move(authenticator);
  }
  server->service_ = std::make_unique<BatchFetcherService>(
      service_options, server->engine_.get(), server->store_.get(),
      server->authenticator_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.listen, MakeServerCredentials(config.tls),
                           &server->port_);
  builder.RegisterService(server->service_.get());
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

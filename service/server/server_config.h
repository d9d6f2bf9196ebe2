#ifndef BATCHFETCH_SERVICE_SERVER_SERVER_CONFIG_H_
#define BATCHFETCH_SERVICE_SERVER_SERVER_CONFIG_H_

#include "absl/status/statusor.h"
#include <string>

#include "service/api/batch_fetcher_service.h"
#include "service/fetch/fetch_engine.h"
#include "service/store/mysql/mysql_result_store.h"

namespace batchfetch {

struct ServerConfig {
  std::string listen = "0.0.0.0:50051";
  bool store_enabled = true;  // false: --store=none
  MysqlResultStore::Options mysql;
  FetchEngine::Options engine;
  ServiceOptions service;
  // Largest FetchBatchRequest accepted (gRPC max receive message size).
  int max_request_bytes = 64 << 20;
};


// Applies BATCHFETCH_<FLAG> environment variables to flags not given on the
// command line (e.g. BATCHFETCH_MYSQL_HOST for --mysql_host). REQUIRES:
// called before absl::ParseCommandLine, which then overrides them.
absl::Status ApplyEnvironmentToFlags();

// Builds the server configuration from the parsed flags. The database
// password comes from BATCHFETCH_MYSQL_PASSWORD or --mysql_password_file,
// never from a flag value.
absl::StatusOr<ServerConfig> ServerConfigFromFlags();

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_SERVER_SERVER_CONFIG_H_

#include "service/server/server_config.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "gRPC listen address");
ABSL_FLAG(std::string, store, "mysql", "Result store: mysql or none");
ABSL_FLAG(std::string, mysql_host, "127.0.0.1", "MySQL host");
ABSL_FLAG(int, mysql_port, 3306, "MySQL port");
ABSL_FLAG(std::string, mysql_user, "batchfetch", "MySQL user");
ABSL_FLAG(std::string, mysql_database, "batchfetch", "MySQL database");
ABSL_FLAG(std::string, mysql_password_file, "",
          "File holding the MySQL password (else BATCHFETCH_MYSQL_PASSWORD)");
ABSL_FLAG(absl::Duration, mysql_startup_wait, absl::Seconds(30),
          "How long to wait for MySQL at start-up");
ABSL_FLAG(absl::Duration, store_retry_budget, absl::Seconds(30),
          "How long the writer retries a group through connection loss");
ABSL_FLAG(int, max_in_flight, 1000,
          "Server-wide cap on simultaneous transfers across all batches");
ABSL_FLAG(int, default_concurrency, 32,
          "Per-batch concurrency when the request says 0");
ABSL_FLAG(int, max_concurrency, 1000,
          "Per-batch concurrency cap (larger requests are clamped)");
ABSL_FLAG(int, max_batch_size, 100000, "Most requests in one batch");
ABSL_FLAG(int64_t, max_body_bytes, 8 << 20,
          "Largest decoded response body; larger ones end as TOO_LARGE");
ABSL_FLAG(absl::Duration, default_timeout, absl::Seconds(30),
          "Per-request timeout when the request says 0");
ABSL_FLAG(absl::Duration, max_timeout, absl::Minutes(5),
          "Largest per-request timeout a caller may ask for");
ABSL_FLAG(absl::Duration, connect_timeout, absl::Seconds(10),
          "TCP+TLS connect timeout per transfer");
ABSL_FLAG(int, max_redirects, 5, "Redirects followed per request");
ABSL_FLAG(int, max_request_mb, 64, "Largest FetchBatch request, in MiB");
ABSL_FLAG(int, max_attempts, 10, "Cap on RetryPolicy.max_attempts");
ABSL_FLAG(int, default_per_host_concurrency, 0,
          "Per-batch, per-host concurrency when the request says 0 (0 = no "
          "per-host cap)");
ABSL_FLAG(absl::Duration, max_retry_after, absl::Seconds(60),
          "Longest Retry-After honoured (longer ones are capped)");
ABSL_FLAG(int, low_speed_bytes, 64,
          "A transfer slower than this many bytes/s for --low_speed_time ends "
          "as TIMEOUT (0 = off)");
ABSL_FLAG(absl::Duration, low_speed_time, absl::Seconds(10),
          "Window for --low_speed_bytes");

namespace batchfetch {
namespace {}  // namespace

absl::Status ApplyEnvironmentToFlags() {
  // Every flag the server defines (in service/) has a variable.
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!absl::StrContains(flag->Filename(), "service/")) continue;
    const std::string env =
        absl::StrCat("BATCHFETCH_", absl::AsciiStrToUpper(name));
    const char* value = std::getenv(env.c_str());
    if (value == nullptr) continue;
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("environment variable ", env, ": ", error));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ServerConfig> ServerConfigFromFlags() {
  ServerConfig config;
  config.listen = absl::GetFlag(FLAGS_listen);
  const std::string store = absl::GetFlag(FLAGS_store);
  if (store == "none") {
    config.store_enabled = false;
  } else if (store != "mysql") {
    return absl::InvalidArgumentError(
        absl::StrCat("--store must be mysql or none, not '", store, "'"));
  }
  config.mysql.host = absl::GetFlag(FLAGS_mysql_host);
  config.mysql.port = absl::GetFlag(FLAGS_mysql_port);
  config.mysql.user = absl::GetFlag(FLAGS_mysql_user);
  config.mysql.database = absl::GetFlag(FLAGS_mysql_database);
  config.mysql.startup_wait = absl::GetFlag(FLAGS_mysql_startup_wait);
  config.mysql.retry_budget = absl::GetFlag(FLAGS_store_retry_budget);
  const std::string password_file = absl::GetFlag(FLAGS_mysql_password_file);
  if (!password_file.empty()) {
    std::ifstream in(password_file);
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read --mysql_password_file ", password_file));
    }
    std::stringstream contents;
    contents << in.rdbuf();
    config.mysql.password =
        std::string(absl::StripTrailingAsciiWhitespace(contents.str()));
  } else if (const char* password = std::getenv("BATCHFETCH_MYSQL_PASSWORD")) {
    config.mysql.password = password;
  }
  if (config.mysql.database.empty() ||
      config.mysql.database.find('`') != std::string::npos) {
    return absl::InvalidArgumentError(
        "--mysql_database is empty or has a backtick");
  }

  const auto positive = [](int value, const char* name) -> absl::Status {
    if (value >= 1) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be >= 1"));
  };
  for (auto [value, name] :
       {std::pair{absl::GetFlag(FLAGS_max_in_flight), "max_in_flight"},
        {absl::GetFlag(FLAGS_default_concurrency), "default_concurrency"},
        {absl::GetFlag(FLAGS_max_concurrency), "max_concurrency"},
        {absl::GetFlag(FLAGS_max_batch_size), "max_batch_size"},
        {absl::GetFlag(FLAGS_max_request_mb), "max_request_mb"},
        {absl::GetFlag(FLAGS_max_attempts), "max_attempts"},
        {absl::GetFlag(FLAGS_max_redirects) + 1, "max_redirects + 1"}}) {
    if (absl::Status s = positive(value, name); !s.ok()) return s;
  }
  if (absl::GetFlag(FLAGS_max_body_bytes) < 1) {
    return absl::InvalidArgumentError("--max_body_bytes must be >= 1");
  }
  config.engine.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  config.engine.max_body_bytes = absl::GetFlag(FLAGS_max_body_bytes);
  config.engine.max_redirects = absl::GetFlag(FLAGS_max_redirects);
  config.engine.connect_timeout = absl::GetFlag(FLAGS_connect_timeout);
  config.engine.max_retry_after = absl::GetFlag(FLAGS_max_retry_after);
  config.engine.low_speed_bytes = absl::GetFlag(FLAGS_low_speed_bytes);
  config.engine.low_speed_time = absl::GetFlag(FLAGS_low_speed_time);
  if (absl::GetFlag(FLAGS_default_per_host_concurrency) < 0 ||
      config.engine.low_speed_bytes < 0) {
    return absl::InvalidArgumentError(
        "--default_per_host_concurrency and --low_speed_bytes must be >= 0");
  }
  if (config.engine.max_retry_after < absl::ZeroDuration() ||
      config.engine.low_speed_time < absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        "--max_retry_after must be >= 0 and --low_speed_time >= 1s");
  }
  config.service.default_per_host_concurrency =
      static_cast<uint32_t>(absl::GetFlag(FLAGS_default_per_host_concurrency));
  config.service.max_attempts =
      static_cast<uint32_t>(absl::GetFlag(FLAGS_max_attempts));
  config.service.default_concurrency =
      static_cast<uint32_t>(absl::GetFlag(FLAGS_default_concurrency));
  config.service.max_concurrency =
      static_cast<uint32_t>(absl::GetFlag(FLAGS_max_concurrency));
  config.service.max_batch_size =
      static_cast<uint32_t>(absl::GetFlag(FLAGS_max_batch_size));
  config.service.default_timeout = absl::GetFlag(FLAGS_default_timeout);
  config.service.max_timeout = absl::GetFlag(FLAGS_max_timeout);
  if (config.service.default_timeout <= absl::ZeroDuration() ||
      config.service.max_timeout < config.service.default_timeout) {
    return absl::InvalidArgumentError(
        "--default_timeout must be > 0 and <= --max_timeout");
  }
  if (absl::GetFlag(FLAGS_max_request_mb) > 1024) {
    return absl::InvalidArgumentError("--max_request_mb must be <= 1024");
  }
  config.max_request_bytes = absl::GetFlag(FLAGS_max_request_mb) << 20;
  return config;
}

}  // namespace batchfetch

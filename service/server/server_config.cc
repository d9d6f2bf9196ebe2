#include "service/server/server_config.h"

#include <errno.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "service/fetch/egress_rules.h"
#include "service/metrics/metrics_http_server.h"

// Every flag defined here must be in ServerFlags() below, with its variable.
ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "gRPC listen address");
ABSL_FLAG(std::string, metrics_listen, "",
          "Where to serve Prometheus metrics (GET /metrics): IPV4:PORT, e.g. "
          "127.0.0.1:9090, or :PORT for every interface; empty: off");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain for the gRPC port; with --tls_key it turns "
          "TLS on (empty: plaintext)");
ABSL_FLAG(std::string, tls_key, "",
          "PEM private key of --tls_cert (keep the file readable only by the "
          "server's user)");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificates: every client must present a certificate "
          "signed by one (mTLS); needs --tls_cert and --tls_key");
ABSL_FLAG(std::string, store, "mysql", "Result store: mysql or none");
ABSL_FLAG(std::string, mysql_host, "127.0.0.1", "MySQL host");
ABSL_FLAG(int, mysql_port, 3306, "MySQL port");
ABSL_FLAG(std::string, mysql_user, "batchfetch", "MySQL user");
ABSL_FLAG(std::string, mysql_database, "batchfetch", "MySQL database");
ABSL_FLAG(std::string, mysql_password_file, "",
          "File holding the MySQL password (else BATCHFETCH_MYSQL_PASSWORD)");
ABSL_FLAG(absl::Duration, mysql_startup_wait, absl::Seconds(30),
          "How long to wait for MySQL at start-up");
ABSL_FLAG(absl::Duration, mysql_io_timeout, absl::Seconds(30),
          "Longest MySQL read or write on an open connection; a half-open "
          "connection fails after it instead of hanging");
ABSL_FLAG(absl::Duration, store_retry_budget, absl::Seconds(30),
          "How long the writer retries a group through connection loss");
ABSL_FLAG(std::string, spool_dir, "",
          "Directory of the local spool: results MySQL cannot take within "
          "--store_retry_budget are kept there (fsynced) and replayed when "
          "it is back, and at the next start. Empty: no spool (such results "
          "are lost and their batch ends FAILED)");
ABSL_FLAG(int64_t, spool_max_bytes, int64_t{1} << 30,
          "Bound on the spool's files; when full, new batches get "
          "UNAVAILABLE and health says NOT_SERVING until it is replayed");
ABSL_FLAG(absl::Duration, lease_duration, absl::Seconds(30),
          "How long a running batch's lease lasts without renewal (renewed "
          "every quarter of it); a batch whose replica stopped renewing is "
          "marked interrupted by another replica after it. At least 2s");
ABSL_FLAG(int, max_in_flight, 1000,
          "Server-wide cap on simultaneous transfers across all batches");
ABSL_FLAG(int, default_concurrency, 32,
          "Per-batch concurrency when the request says 0");
ABSL_FLAG(int, max_concurrency, 1000,
          "Per-batch concurrency cap (larger requests are clamped)");
ABSL_FLAG(int, max_batch_size, 100000, "Most requests in one batch");
ABSL_FLAG(int64_t, max_body_bytes, 8 << 20,
          "Largest decoded response body; larger ones end as TOO_LARGE. "
          "The most a request's max_body_bytes may ask for");
ABSL_FLAG(int64_t, default_max_body_bytes, batchfetch::kStreamSafeMaxBodyBytes,
          "Body cap of a request whose max_body_bytes is 0 (at most "
          "--max_body_bytes); the default keeps every streamed result under "
          "a default gRPC client's 4 MiB receive limit");
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
          "Longest Retry-After waited for: a longer one means no retry "
          "(the host's cooldown is capped to it)");
ABSL_FLAG(int, curl_multi_handles, 4,
          "libcurl multi handles the engine's one event loop drives (1-64); "
          "several smaller connection caches cost libcurl less per request");
ABSL_FLAG(int, low_speed_bytes, 64,
          "A transfer slower than this many bytes/s for --low_speed_time ends "
          "as TIMEOUT (0 = off)");
ABSL_FLAG(absl::Duration, low_speed_time, absl::Seconds(10),
          "Window for --low_speed_bytes");
// The three list flags below are repeatable: ApplyCommandLineToFlags keeps
// every occurrence (absl alone would keep only the last).
ABSL_FLAG(std::vector<std::string>, egress_allow_cidr, {},
          "CIDR ranges transfers may connect to although the built-in list "
          "denies them (e.g. 127.0.0.0/8 for local upstreams); "
          "comma-separated and repeatable");
ABSL_FLAG(std::vector<std::string>, egress_deny_cidr, {},
          "CIDR ranges transfers may never connect to (wins over "
          "--egress_allow_cidr); comma-separated and repeatable");
ABSL_FLAG(std::vector<std::string>, egress_allow_ports, {},
          "TCP ports transfers may connect to (empty: any port; public APIs "
          "live on many ports); comma-separated and repeatable");
ABSL_FLAG(std::string, proxy, "",
          "Proxy for every transfer, in curl syntax (e.g. "
          "http://proxy:3128); empty: none, whatever http_proxy, https_proxy "
          "or ALL_PROXY say. Only with --egress_enforced_by_proxy: through "
          "a proxy the egress policy sees the proxy's address, not the "
          "target's");
ABSL_FLAG(bool, egress_enforced_by_proxy, false,
          "The operator asserts that the --proxy (e.g. smokescreen) applies "
          "the egress policy to targets itself; required with --proxy, "
          "whose target addresses batchfetch cannot see");
ABSL_FLAG(std::string, ca_bundle, "",
          "PEM file of CA certificates upstream HTTPS is verified against, in "
          "place of the default bundle file (e.g. a private CA); empty: the "
          "system's. Verification is always on");
ABSL_FLAG(std::string, auth_token_file, "",
          "File of bearer tokens, one '<name> <token>' per line (reloaded on "
          "SIGHUP); every BatchFetcher call must then send 'authorization: "
          "Bearer <token>' and sees only its name's batches. Empty: no auth");
ABSL_FLAG(int, max_active_batches, 256,
          "Batches running at once, server-wide (0 = no limit); over it, "
          "FetchBatch gets RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_active_batches_per_caller, 64,
          "Batches running at once per caller: per token name with "
          "--auth_token_file, else per peer address (0 = no limit)");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(20),
          "On SIGTERM, how long running batches may finish before they are "
          "cancelled");
ABSL_FLAG(std::string, retention, "0",
          "Delete batches, with their results, that ended longer ago than "
          "this: days (30d) or a duration (12h); deleted in small chunks by "
          "a background pass every few minutes. 0: keep everything");
ABSL_FLAG(std::string, log_level, "info",
          "Least severe log events written to stderr: debug, info, warning "
          "or error");

namespace batchfetch {
namespace {

template <typename T>
ServerFlag Bind(const absl::Flag<T>& flag, const char* env) {
  return ServerFlag{&absl::GetFlagReflectionHandle(flag), env};
}

// The contents of the PEM file `path` given to --`flag`, which must hold a
// "-----BEGIN <...>`marker`-----" block. Errors name the flag and the path,
// never the contents (a key file must not reach a log).
absl::StatusOr<std::string> ReadPemFile(const std::string& path,
                                        const char* flag, const char* marker) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot read --", flag, " file '", path, "': ", std::strerror(errno)));
  }
  std::stringstream contents;
  contents << in.rdbuf();
  if (in.bad()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read --", flag, " file '", path, "'"));
  }
  std::string pem = contents.str();
  const size_t begin = pem.find("-----BEGIN ");
  if (begin == std::string::npos ||
      pem.find(absl::StrCat(marker, "-----"), begin) == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, " file '", path, "' holds no PEM ", marker, " block"));
  }
  return pem;
}

// --tls_cert, --tls_key and --tls_client_ca: both of the pair or neither;
// a client CA only on top of the pair.
absl::StatusOr<ServerTlsConfig> TlsConfigFromFlags() {
  const std::string cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string key = absl::GetFlag(FLAGS_tls_key);
  const std::string client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  ServerTlsConfig tls;
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError(cert.empty()
                                          ? "--tls_key needs --tls_cert"
                                          : "--tls_cert needs --tls_key");
  }
  if (cert.empty()) {
    if (!client_ca.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca needs --tls_cert and --tls_key (mTLS is on top of "
          "TLS)");
    }
    return tls;
  }
  absl::StatusOr<std::string> pem =
      ReadPemFile(cert, "tls_cert", "CERTIFICATE");
  if (!pem.ok()) return pem.status();
  tls.cert_chain_pem = *std::move(pem);
  pem = ReadPemFile(key, "tls_key", "PRIVATE KEY");
  if (!pem.ok()) return pem.status();
  tls.private_key_pem = *std::move(pem);
  if (!client_ca.empty()) {
    pem = ReadPemFile(client_ca, "tls_client_ca", "CERTIFICATE");
    if (!pem.ok()) return pem.status();
    tls.client_ca_pem = *std::move(pem);
  }
  return tls;
}

}  // namespace

const std::vector<ServerFlag>& ServerFlags() {
  static const std::vector<ServerFlag>* const flags =
      new std::vector<ServerFlag>{
          Bind(FLAGS_listen, "BATCHFETCH_LISTEN"),
          Bind(FLAGS_metrics_listen, "BATCHFETCH_METRICS_LISTEN"),
          Bind(FLAGS_tls_cert, "BATCHFETCH_TLS_CERT"),
          Bind(FLAGS_tls_key, "BATCHFETCH_TLS_KEY"),
          Bind(FLAGS_tls_client_ca, "BATCHFETCH_TLS_CLIENT_CA"),
          Bind(FLAGS_store, "BATCHFETCH_STORE"),
          Bind(FLAGS_mysql_host, "BATCHFETCH_MYSQL_HOST"),
          Bind(FLAGS_mysql_port, "BATCHFETCH_MYSQL_PORT"),
          Bind(FLAGS_mysql_user, "BATCHFETCH_MYSQL_USER"),
          Bind(FLAGS_mysql_database, "BATCHFETCH_MYSQL_DATABASE"),
          Bind(FLAGS_mysql_password_file, "BATCHFETCH_MYSQL_PASSWORD_FILE"),
          Bind(FLAGS_mysql_startup_wait, "BATCHFETCH_MYSQL_STARTUP_WAIT"),
          Bind(FLAGS_mysql_io_timeout, "BATCHFETCH_MYSQL_IO_TIMEOUT"),
          Bind(FLAGS_store_retry_budget, "BATCHFETCH_STORE_RETRY_BUDGET"),
          Bind(FLAGS_spool_dir, "BATCHFETCH_SPOOL_DIR"),
          Bind(FLAGS_spool_max_bytes, "BATCHFETCH_SPOOL_MAX_BYTES"),
          Bind(FLAGS_lease_duration, "BATCHFETCH_LEASE_DURATION"),
          Bind(FLAGS_max_in_flight, "BATCHFETCH_MAX_IN_FLIGHT"),
          Bind(FLAGS_default_concurrency, "BATCHFETCH_DEFAULT_CONCURRENCY"),
          Bind(FLAGS_max_concurrency, "BATCHFETCH_MAX_CONCURRENCY"),
          Bind(FLAGS_max_batch_size, "BATCHFETCH_MAX_BATCH_SIZE"),
          Bind(FLAGS_max_body_bytes, "BATCHFETCH_MAX_BODY_BYTES"),
          Bind(FLAGS_default_max_body_bytes,
               "BATCHFETCH_DEFAULT_MAX_BODY_BYTES"),
          Bind(FLAGS_default_timeout, "BATCHFETCH_DEFAULT_TIMEOUT"),
          Bind(FLAGS_max_timeout, "BATCHFETCH_MAX_TIMEOUT"),
          Bind(FLAGS_connect_timeout, "BATCHFETCH_CONNECT_TIMEOUT"),
          Bind(FLAGS_max_redirects, "BATCHFETCH_MAX_REDIRECTS"),
          Bind(FLAGS_max_request_mb, "BATCHFETCH_MAX_REQUEST_MB"),
          Bind(FLAGS_max_attempts, "BATCHFETCH_MAX_ATTEMPTS"),
          Bind(FLAGS_default_per_host_concurrency,
               "BATCHFETCH_DEFAULT_PER_HOST_CONCURRENCY"),
          Bind(FLAGS_max_retry_after, "BATCHFETCH_MAX_RETRY_AFTER"),
          Bind(FLAGS_low_speed_bytes, "BATCHFETCH_LOW_SPEED_BYTES"),
          Bind(FLAGS_low_speed_time, "BATCHFETCH_LOW_SPEED_TIME"),
          Bind(FLAGS_curl_multi_handles, "BATCHFETCH_CURL_MULTI_HANDLES"),
          Bind(FLAGS_proxy, "BATCHFETCH_PROXY"),
          Bind(FLAGS_egress_allow_cidr, "BATCHFETCH_EGRESS_ALLOW_CIDR"),
          Bind(FLAGS_egress_deny_cidr, "BATCHFETCH_EGRESS_DENY_CIDR"),
          Bind(FLAGS_egress_allow_ports, "BATCHFETCH_EGRESS_ALLOW_PORTS"),
          Bind(FLAGS_egress_enforced_by_proxy,
               "BATCHFETCH_EGRESS_ENFORCED_BY_PROXY"),
          Bind(FLAGS_ca_bundle, "BATCHFETCH_CA_BUNDLE"),
          Bind(FLAGS_auth_token_file, "BATCHFETCH_AUTH_TOKEN_FILE"),
          Bind(FLAGS_max_active_batches, "BATCHFETCH_MAX_ACTIVE_BATCHES"),
          Bind(FLAGS_max_active_batches_per_caller,
               "BATCHFETCH_MAX_ACTIVE_BATCHES_PER_CALLER"),
          Bind(FLAGS_shutdown_grace, "BATCHFETCH_SHUTDOWN_GRACE"),
          Bind(FLAGS_log_level, "BATCHFETCH_LOG_LEVEL"),
          Bind(FLAGS_retention, "BATCHFETCH_RETENTION"),
      };
  return *flags;
}

absl::Status ApplyEnvironmentToFlags() {
  for (const ServerFlag& entry : ServerFlags()) {
    const char* value = std::getenv(entry.env);
    if (value == nullptr) continue;
    // The list holds read-only handles; the registry hands out the same
    // flag for writing.
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(entry.flag->Name());
    std::string error;
    if (flag == nullptr || !flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("environment variable ", entry.env, ": ", error));
    }
  }
  return absl::OkStatus();
}

namespace {

// The repeatable list flags (see ApplyCommandLineToFlags).
constexpr absl::string_view kListFlags[] = {
    "egress_allow_cidr", "egress_deny_cidr", "egress_allow_ports"};

bool IsListFlag(absl::string_view name) {
  return std::find(std::begin(kListFlags), std::end(kListFlags), name) !=
         std::end(kListFlags);
}

// Whether absl takes the argument after `--name` (no '=') as its value:
// for every flag but a bool one (`--flag`, `--noflag`). An unknown name
// takes none (absl refuses it anyway).
bool TakesSeparateValue(absl::string_view name) {
  const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  return flag != nullptr && !flag->IsOfType<bool>();
}

}  // namespace

absl::StatusOr<std::map<std::string, std::vector<std::string>>>
ListFlagValuesOnCommandLine(int argc, char** argv) {
  std::map<std::string, std::vector<std::string>> values;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    // As absl reads argv: "-" and non-dash words are positional, a lone
    // "--" ends the flags, "-name" and "--name" are the same flag.
    if (arg.size() < 2 || arg[0] != '-') continue;
    arg.remove_prefix(1);
    absl::ConsumePrefix(&arg, "-");
    if (arg.empty()) break;
    const size_t equals = arg.find('=');
    const absl::string_view name = arg.substr(0, equals);
    if (name == "flagfile" || name == "fromenv" || name == "tryfromenv") {
      // absl would apply a list flag repeated in a flag file last-one-wins,
      // and --fromenv/--tryfromenv set flags (flagfile included) from
      // FLAGS_* variables, all out of this function's sight: refuse rather
      // than fail open.
      return absl::InvalidArgumentError(absl::StrCat(
          "--", name,
          " is not supported: pass flags on the command line or as "
          "BATCHFETCH_* environment variables"));
    }
    absl::string_view value;
    if (equals != absl::string_view::npos) {
      value = arg.substr(equals + 1);
    } else if (TakesSeparateValue(name)) {
      if (i + 1 >= argc) break;  // absl reports the missing value
      value = argv[++i];
    } else {
      continue;
    }
    if (IsListFlag(name)) values[std::string(name)].emplace_back(value);
  }
  return values;
}

absl::Status ApplyCommandLineToFlags(int argc, char** argv) {
  absl::StatusOr<std::map<std::string, std::vector<std::string>>> lists =
      ListFlagValuesOnCommandLine(argc, argv);
  if (!lists.ok()) return lists.status();
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (absl::Status none = CheckNoPositionalArguments(positional); !none.ok()) {
    return none;
  }
  // absl has checked each occurrence and kept the last; every one counts.
  for (const auto& [name, occurrences] : *lists) {
    std::vector<absl::string_view> pieces;
    for (const std::string& occurrence : occurrences) {
      if (!occurrence.empty()) pieces.push_back(occurrence);
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    std::string error;
    if (flag == nullptr ||
        !flag->ParseFrom(absl::StrJoin(pieces, ","), &error)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", error));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ServerConfig> ServerConfigFromFlags() {
  ServerConfig config;
  config.listen = absl::GetFlag(FLAGS_listen);
  config.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  if (!config.metrics_listen.empty()) {
    // Checked now, so a typo fails start-up naming the flag.
    absl::StatusOr<std::string> ports =
        CivetwebListeningPort(config.metrics_listen);
    if (!ports.ok()) return ports.status();
  }
  absl::StatusOr<ServerTlsConfig> tls = TlsConfigFromFlags();
  if (!tls.ok()) return tls.status();
  config.tls = *std::move(tls);
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
  config.mysql.io_timeout = absl::GetFlag(FLAGS_mysql_io_timeout);
  config.mysql.retry_budget = absl::GetFlag(FLAGS_store_retry_budget);
  config.spool.spool.dir = absl::GetFlag(FLAGS_spool_dir);
  const int64_t spool_max_bytes = absl::GetFlag(FLAGS_spool_max_bytes);
  if (spool_max_bytes < (int64_t{1} << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--spool_max_bytes must be at least 1048576 (1 MiB), not ",
                     spool_max_bytes));
  }
  config.spool.spool.max_bytes = static_cast<uint64_t>(spool_max_bytes);
  // Segments small enough that replayed space comes back in steps.
  config.spool.spool.segment_bytes = std::min<uint64_t>(
      config.spool.spool.segment_bytes,
      std::max<uint64_t>(config.spool.spool.max_bytes / 8, uint64_t{64} << 10));
  config.mysql.lease_duration = absl::GetFlag(FLAGS_lease_duration);
  if (config.mysql.lease_duration < absl::Seconds(2) ||
      config.mysql.lease_duration == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--lease_duration must be at least 2s and finite, not ",
                     absl::FormatDuration(config.mysql.lease_duration)));
  }
  if (config.mysql.io_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--mysql_io_timeout must be > 0");
  }
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
  if (absl::GetFlag(FLAGS_default_max_body_bytes) < 1) {
    return absl::InvalidArgumentError("--default_max_body_bytes must be >= 1");
  }
  config.service.max_body_bytes = absl::GetFlag(FLAGS_max_body_bytes);
  config.service.default_max_body_bytes =
      std::min(absl::GetFlag(FLAGS_default_max_body_bytes),
               absl::GetFlag(FLAGS_max_body_bytes));
  config.engine.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  config.engine.max_body_bytes = absl::GetFlag(FLAGS_max_body_bytes);
  config.engine.max_redirects = absl::GetFlag(FLAGS_max_redirects);
  config.engine.connect_timeout = absl::GetFlag(FLAGS_connect_timeout);
  config.engine.max_retry_after = absl::GetFlag(FLAGS_max_retry_after);
  config.engine.low_speed_bytes = absl::GetFlag(FLAGS_low_speed_bytes);
  config.engine.low_speed_time = absl::GetFlag(FLAGS_low_speed_time);
  config.engine.curl_multi_handles = absl::GetFlag(FLAGS_curl_multi_handles);
  if (config.engine.curl_multi_handles < 1 ||
      config.engine.curl_multi_handles > 64) {
    return absl::InvalidArgumentError(
        "--curl_multi_handles must be between 1 and 64");
  }
  config.engine.proxy = absl::GetFlag(FLAGS_proxy);
  // Through a proxy, the address libcurl connects to is the proxy's: the
  // target's address (resolved by the proxy, behind CONNECT for https) is
  // never seen here, so the egress policy cannot judge it. Refuse unless the
  // operator states that the proxy enforces egress itself.
  if (!config.engine.proxy.empty() &&
      !absl::GetFlag(FLAGS_egress_enforced_by_proxy)) {
    return absl::InvalidArgumentError(
        "--proxy: batchfetch cannot apply its egress policy to targets "
        "through a proxy (it sees only the proxy's address); pass "
        "--egress_enforced_by_proxy if the proxy enforces egress itself "
        "(e.g. smokescreen)");
  }
  config.engine.ca_bundle = absl::GetFlag(FLAGS_ca_bundle);
  if (!config.engine.ca_bundle.empty()) {
    // Checked now: libcurl would only fail each HTTPS transfer later.
    absl::StatusOr<std::string> bundle =
        ReadPemFile(config.engine.ca_bundle, "ca_bundle", "CERTIFICATE");
    if (!bundle.ok()) return bundle.status();
  }
  config.egress_enforced_by_proxy =
      absl::GetFlag(FLAGS_egress_enforced_by_proxy);
  EgressRules::Options& egress = config.egress;
  egress.allow_cidrs = absl::GetFlag(FLAGS_egress_allow_cidr);
  egress.deny_cidrs = absl::GetFlag(FLAGS_egress_deny_cidr);
  for (const std::string& port : absl::GetFlag(FLAGS_egress_allow_ports)) {
    int value = 0;
    if (!absl::SimpleAtoi(port, &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--egress_allow_ports: '", port, "' is not a port"));
    }
    egress.allow_ports.push_back(value);
  }
  // Internal destinations are denied unless opened explicitly.
  absl::StatusOr<std::shared_ptr<EgressRules>> rules =
      EgressRules::Create(egress);
  if (!rules.ok()) return rules.status();
  config.engine.egress = *std::move(rules);
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
  config.auth_token_file = absl::GetFlag(FLAGS_auth_token_file);
  config.service.max_active_batches = absl::GetFlag(FLAGS_max_active_batches);
  config.service.max_active_batches_per_caller =
      absl::GetFlag(FLAGS_max_active_batches_per_caller);
  if (config.service.max_active_batches < 0 ||
      config.service.max_active_batches_per_caller < 0) {
    return absl::InvalidArgumentError(
        "--max_active_batches and --max_active_batches_per_caller must be >= "
        "0 (0 = no limit)");
  }
  config.shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  absl::StatusOr<absl::Duration> retention =
      ParseRetention(absl::GetFlag(FLAGS_retention));
  if (!retention.ok()) return retention.status();
  config.retention = *retention;
  absl::StatusOr<LogLevel> log_level =
      ParseLogLevel(absl::GetFlag(FLAGS_log_level));
  if (!log_level.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--log_level: ", log_level.status().message()));
  }
  config.log_level = *log_level;
  if (config.shutdown_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--shutdown_grace must be >= 0");
  }
  return config;
}

absl::StatusOr<absl::Duration> ParseRetention(absl::string_view text) {
  const auto bad = [text](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("--retention: '", text, "' ", why));
  };
  absl::Duration retention;
  absl::string_view days = text;
  if (text == "0") return absl::ZeroDuration();
  if (absl::ConsumeSuffix(&days, "d")) {
    double count = 0;
    if (!absl::SimpleAtod(days, &count) || !(count >= 0)) {
      return bad("is not a number of days (e.g. 30d) or a duration (12h)");
    }
    retention = absl::Hours(24) * count;
  } else if (!absl::ParseDuration(text, &retention)) {
    return bad("is not a number of days (e.g. 30d) or a duration (12h)");
  }
  if (retention == absl::ZeroDuration()) return retention;
  if (retention < absl::Minutes(1) || retention == absl::InfiniteDuration()) {
    return bad("must be 0 (off) or between 1m and a finite number of days");
  }
  return retention;
}

std::string TlsDescription(const ServerTlsConfig& tls) {
  if (!tls.enabled()) return "tls: off";
  if (!tls.mutual()) return "tls: on";
  return "tls: on, client certificates required (mtls)";
}

absl::StatusOr<ServerConfig> ParseServerConfig(int argc, char** argv) {
  // --help lists the server's flags: those of this file.
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "service/server/server_config.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "batchfetch gRPC server. Every flag can also be set as an environment "
      "variable BATCHFETCH_<FLAG_NAME>; the MySQL password only via "
      "BATCHFETCH_MYSQL_PASSWORD or --mysql_password_file.");
  if (absl::Status env = ApplyEnvironmentToFlags(); !env.ok()) return env;
  if (absl::Status args = ApplyCommandLineToFlags(argc, argv); !args.ok()) {
    return args;
  }
  return ServerConfigFromFlags();
}

absl::Status CheckNoPositionalArguments(const std::vector<char*>& positional) {
  // positional[0] is the program itself.
  if (positional.size() <= 1) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "unexpected argument '", positional[1],
      "': batchfetch_server takes flags only (--name=value); to run the CLI "
      "from the container image, use --entrypoint batchfetch"));
}

}  // namespace batchfetch

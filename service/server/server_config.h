#ifndef BATCHFETCH_SERVICE_SERVER_SERVER_CONFIG_H_
#define BATCHFETCH_SERVICE_SERVER_SERVER_CONFIG_H_

#include <map>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "service/api/service_options.h"
#include "service/base/log.h"
#include "service/fetch/egress_rules.h"
#include "service/fetch/fetch_engine.h"
#include "service/store/mysql/mysql_result_store.h"
#include "service/store/spooling_result_store.h"

namespace batchfetch {

// TLS for the gRPC port (--tls_cert, --tls_key, --tls_client_ca). The PEM
// files are read when the configuration is built, so a missing or unreadable
// file fails start-up naming its flag rather than the first handshake. Holds
// the private key: never log it.
struct ServerTlsConfig {
  std::string cert_chain_pem;   // Empty: plaintext (then all three are).
  std::string private_key_pem;  // Matches cert_chain_pem.
  // Non-empty: every client must present a certificate that chains to one
  // of these CA certificates (mTLS); a call without one never reaches a
  // handler.
  std::string client_ca_pem;

  bool enabled() const { return !cert_chain_pem.empty(); }
  bool mutual() const { return !client_ca_pem.empty(); }
};

// Everything the server is assembled from (see BatchFetchServer::Start).
struct ServerConfig {
  std::string listen = "0.0.0.0:50051";
  // --metrics_listen: where GET /metrics (Prometheus text format) is
  // served, as "IPV4:PORT" or ":PORT"; empty: no metrics endpoint.
  std::string metrics_listen;
  ServerTlsConfig tls;
  bool store_enabled = true;  // false: --store=none
  MysqlResultStore::Options mysql;
  // --spool_dir, --spool_max_bytes; an empty `spool.spool.dir`: no spool.
  SpoolingResultStore::Options spool;
  FetchEngine::Options engine;
  // The egress settings as given (--egress_allow_cidr, --egress_deny_cidr
  // with every occurrence, --egress_allow_ports), for the start-up line:
  // `engine.egress` is the policy built from them.
  EgressRules::Options egress;
  // --egress_enforced_by_proxy: the operator says the --proxy applies the
  // egress policy to targets (required with a proxy).
  bool egress_enforced_by_proxy = false;
  ServiceOptions service;
  // Largest FetchBatchRequest accepted (gRPC max receive message size).
  int max_request_bytes = 64 << 20;
  // --auth_token_file: the bearer tokens; empty: auth is off (read by
  // BatchFetchServer::Start, re-read on SIGHUP).
  std::string auth_token_file;
  // On SIGTERM/SIGINT, how long running batches may go on before they are
  // cancelled.
  absl::Duration shutdown_grace = absl::Seconds(20);
  // --retention: batches that ended longer ago than this are deleted with
  // their results (RetentionKeeper); zero: kept for ever (the default).
  absl::Duration retention = absl::ZeroDuration();
  // --log_level: events below it are not written (main calls SetLogLevel).
  LogLevel log_level = LogLevel::kInfo;
};

// One server flag and the environment variable that can set it.
struct ServerFlag {
  const absl::CommandLineFlag* flag;
  const char* env;  // BATCHFETCH_<FLAG NAME IN UPPER CASE>
};

// The server's flags, each with its variable: the explicit list that
// ApplyEnvironmentToFlags goes by (a flag missing here has no variable,
// wherever it is defined). All are defined in server_config.cc, and --help
// lists that file's flags.
const std::vector<ServerFlag>& ServerFlags();

// Applies BATCHFETCH_<FLAG> environment variables to the flags of
// ServerFlags() (e.g. BATCHFETCH_MYSQL_HOST for --mysql_host); the command
// line then overrides them. INVALID_ARGUMENT naming the variable for a value
// that does not parse. REQUIRES: called before absl::ParseCommandLine.
absl::Status ApplyEnvironmentToFlags();

// Every value given on the command line `argv` to each repeatable list flag
// (--egress_allow_cidr, --egress_deny_cidr, --egress_allow_ports), in
// order, keyed by flag name (a flag not given has no entry). Reads argv as
// absl does: `--name=value`, `-name=value`, `--name value` and
// `-name value` (a bool flag takes no separate value), up to a lone `--`.
// INVALID_ARGUMENT for --flagfile, whose lines absl would apply out of
// this function's sight (a list flag repeated there would keep only its
// last value).
absl::StatusOr<std::map<std::string, std::vector<std::string>>>
ListFlagValuesOnCommandLine(int argc, char** argv);

// Parses the command line into the flags (absl::ParseCommandLine: exits on
// --help or an unknown or malformed flag), refuses stray positional
// arguments, and then gives each list flag every one of its occurrences
// joined: absl on its own keeps only the last, which for
// `--egress_deny_cidr=127.0.0.1/32 --egress_deny_cidr=10.0.0.0/8` would
// silently drop the first deny. A list flag given on the command line
// replaces its BATCHFETCH_* variable (as for every flag: the command line
// wins); the variable alone is a comma-separated list.
// REQUIRES: after ApplyEnvironmentToFlags.
absl::Status ApplyCommandLineToFlags(int argc, char** argv);

// Builds the server configuration from the (parsed) flags, checking their
// ranges: INVALID_ARGUMENT naming the flag. The database password comes from
// --mysql_password_file or else BATCHFETCH_MYSQL_PASSWORD, never from a flag
// value.
absl::StatusOr<ServerConfig> ServerConfigFromFlags();

// Parses a --retention value: "0" (off), a number of days ("30d", "1.5d")
// or an absl duration ("12h", "90m"). INVALID_ARGUMENT naming --retention
// for anything else, a negative or infinite value, or one under a minute
// (that would delete results before a caller could read them).
absl::StatusOr<absl::Duration> ParseRetention(absl::string_view text);

// How the gRPC port is secured, for the start-up line: "tls: off",
// "tls: on" or "tls: on, client certificates required (mtls)".
std::string TlsDescription(const ServerTlsConfig& tls);

// What main() does with argv: sets --help up to list ServerFlags(), applies
// the environment, then the command line (ApplyCommandLineToFlags) and
// builds the configuration. Call once per process (absl's usage message
// may be set only once).
absl::StatusOr<ServerConfig> ParseServerConfig(int argc, char** argv);

// INVALID_ARGUMENT naming the first argument after the program name in
// `positional` (what absl::ParseCommandLine leaves): a server that silently
// ignored `batchfetch fetch URL` would start instead of failing.
absl::Status CheckNoPositionalArguments(const std::vector<char*>& positional);

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_SERVER_SERVER_CONFIG_H_

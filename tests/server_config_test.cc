#include "service/server/server_config.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace batchfetch {
namespace {

// A valid value, other than the default, for every flag of ServerFlags().
const std::map<std::string, std::string>& Samples() {
  static const auto* samples = new std::map<std::string, std::string>{
      {"listen", "127.0.0.1:6000"},
      {"metrics_listen", "127.0.0.1:9090"},
      {"tls_cert", "/run/secrets/server.crt"},
      {"tls_key", "/run/secrets/server.key"},
      {"tls_client_ca", "/run/secrets/client-ca.crt"},
      {"store", "none"},
      {"mysql_host", "db.example"},
      {"mysql_port", "3307"},
      {"mysql_user", "someone"},
      {"mysql_database", "other_db"},
      {"mysql_password_file", "/run/secrets/pw"},
      {"mysql_startup_wait", "45s"},
      {"mysql_io_timeout", "7s"},
      {"store_retry_budget", "12s"},
      {"spool_dir", "/var/lib/batchfetch/spool"},
      {"spool_max_bytes", "2097152"},
      {"lease_duration", "9s"},
      {"max_in_flight", "77"},
      {"default_concurrency", "5"},
      {"max_concurrency", "66"},
      {"max_batch_size", "1234"},
      {"max_body_bytes", "4096"},
      {"default_max_body_bytes", "2048"},
      {"default_timeout", "11s"},
      {"max_timeout", "2m"},
      {"connect_timeout", "3s"},
      {"max_redirects", "2"},
      {"max_request_mb", "16"},
      {"max_attempts", "4"},
      {"default_per_host_concurrency", "6"},
      {"max_retry_after", "9s"},
      {"low_speed_bytes", "10"},
      {"low_speed_time", "4s"},
      {"curl_multi_handles", "2"},
      {"proxy", "http://proxy.example:3128"},
      {"egress_allow_cidr", "127.0.0.0/8,::1/128"},
      {"egress_deny_cidr", "127.0.0.2/32"},
      {"egress_allow_ports", "80,443"},
      {"egress_enforced_by_proxy", "true"},
      {"ca_bundle", "/etc/batchfetch/private-ca.pem"},
      {"shutdown_grace", "3s"},
      {"retention", "30d"},
      {"log_level", "warning"},
      {"auth_token_file", "/run/secrets/tokens"},
      {"max_active_batches", "12"},
      {"max_active_batches_per_caller", "3"},
  };
  return *samples;
}

// Sets environment variables for one test and removes them after.
class ScopedEnv {
 public:
  void Set(const std::string& name, const std::string& value) {
    setenv(name.c_str(), value.c_str(), 1);
    names_.insert(name);
  }
  ~ScopedEnv() {
    for (const std::string& name : names_) unsetenv(name.c_str());
  }

 private:
  std::set<std::string> names_;
};

TEST(ServerFlags, EveryListedFlagHasItsVariable) {
  std::set<std::string> envs;
  for (const ServerFlag& entry : ServerFlags()) {
    ASSERT_NE(entry.flag, nullptr);
    EXPECT_EQ(std::string(entry.env),
              "BATCHFETCH_" + absl::AsciiStrToUpper(entry.flag->Name()));
    EXPECT_TRUE(envs.insert(entry.env).second) << "twice: " << entry.env;
  }
  EXPECT_EQ(envs.size(), Samples().size());
}

// A flag defined anywhere in service/ but missing from the list would have
// no variable: the list is what decides, not the file a flag lives in.
TEST(ServerFlags, EveryServiceFlagIsListed) {
  std::set<std::string> listed;
  for (const ServerFlag& entry : ServerFlags()) {
    listed.insert(std::string(entry.flag->Name()));
  }
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!absl::StrContains(flag->Filename(), "service/")) continue;
    EXPECT_TRUE(listed.count(std::string(name)))
        << "--" << name << " (" << flag->Filename()
        << ") is not in ServerFlags()";
  }
}

TEST(ServerFlags, EachVariableSetsItsFlag) {
  absl::FlagSaver saver;
  ScopedEnv env;
  for (const ServerFlag& entry : ServerFlags()) {
    const std::string name(entry.flag->Name());
    auto sample = Samples().find(name);
    ASSERT_NE(sample, Samples().end()) << "no sample value for --" << name;
    ASSERT_NE(entry.flag->DefaultValue(), sample->second) << name;
    env.Set(entry.env, sample->second);
  }
  ASSERT_TRUE(ApplyEnvironmentToFlags().ok());
  for (const ServerFlag& entry : ServerFlags()) {
    EXPECT_EQ(entry.flag->CurrentValue(),
              Samples().at(std::string(entry.flag->Name())))
        << entry.env;
  }
}

TEST(ServerFlags, VariablesReachTheConfig) {
  absl::FlagSaver saver;
  ScopedEnv env;
  env.Set("BATCHFETCH_PROXY", "http://proxy.example:3128");
  env.Set("BATCHFETCH_EGRESS_ENFORCED_BY_PROXY", "true");
  env.Set("BATCHFETCH_MYSQL_IO_TIMEOUT", "7s");
  env.Set("BATCHFETCH_SHUTDOWN_GRACE", "3s");
  env.Set("BATCHFETCH_MYSQL_HOST", "db.example");
  env.Set("BATCHFETCH_MAX_IN_FLIGHT", "77");
  ASSERT_TRUE(ApplyEnvironmentToFlags().ok());
  absl::StatusOr<ServerConfig> config = ServerConfigFromFlags();
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->engine.proxy, "http://proxy.example:3128");
  EXPECT_EQ(config->mysql.io_timeout, absl::Seconds(7));
  EXPECT_EQ(config->shutdown_grace, absl::Seconds(3));
  EXPECT_EQ(config->mysql.host, "db.example");
  EXPECT_EQ(config->engine.max_in_flight, 77);
}

TEST(ServerFlags, DefaultsOfTheNewFlags) {
  absl::FlagSaver saver;
  absl::StatusOr<ServerConfig> config = ServerConfigFromFlags();
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->engine.proxy, "");
  EXPECT_EQ(config->mysql.io_timeout, absl::Seconds(30));
  EXPECT_EQ(config->shutdown_grace, absl::Seconds(20));
  EXPECT_EQ(config->mysql.lease_duration, absl::Seconds(30));
}

TEST(ServerFlags, TheSpoolIsOffByDefaultAndItsFlagsReachTheConfig) {
  {
    absl::FlagSaver saver;
    absl::StatusOr<ServerConfig> config = ServerConfigFromFlags();
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->spool.spool.dir, "");
    EXPECT_EQ(config->spool.spool.max_bytes, uint64_t{1} << 30);
  }
  absl::FlagSaver saver;
  ScopedEnv env;
  env.Set("BATCHFETCH_SPOOL_DIR", "/var/lib/batchfetch/spool");
  env.Set("BATCHFETCH_SPOOL_MAX_BYTES", "2097152");
  ASSERT_TRUE(ApplyEnvironmentToFlags().ok());
  absl::StatusOr<ServerConfig> config = ServerConfigFromFlags();
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->spool.spool.dir, "/var/lib/batchfetch/spool");
  EXPECT_EQ(config->spool.spool.max_bytes, 2097152u);
  EXPECT_LE(config->spool.spool.segment_bytes, 2097152u / 8);
}

TEST(ServerFlags, LeaseDurationReachesTheStoreOptions) {
  absl::FlagSaver saver;
  ScopedEnv env;
  env.Set("BATCHFETCH_LEASE_DURATION", "2s");
  ASSERT_TRUE(ApplyEnvironmentToFlags().ok());
  absl::StatusOr<ServerConfig> config = ServerConfigFromFlags();
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->mysql.lease_duration, absl::Seconds(2));
}

TEST(ServerFlags, ABadValueNamesItsVariable) {
  absl::FlagSaver saver;
  ScopedEnv env;
  env.Set("BATCHFETCH_MAX_IN_FLIGHT", "lots");
  absl::Status status = ApplyEnvironmentToFlags();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "BATCHFETCH_MAX_IN_FLIGHT"))
      << status;
}

TEST(ServerFlags, RangesAreChecked) {
  for (const auto& [env_name, value, flag] :
       {std::tuple{"BATCHFETCH_MYSQL_IO_TIMEOUT", "0s", "mysql_io_timeout"},
        {"BATCHFETCH_SHUTDOWN_GRACE", "-1s", "shutdown_grace"},
        {"BATCHFETCH_LEASE_DURATION", "1s", "--lease_duration"},
        {"BATCHFETCH_SPOOL_MAX_BYTES", "1000", "--spool_max_bytes"},
        {"BATCHFETCH_LEASE_DURATION", "inf", "--lease_duration"},
        {"BATCHFETCH_MAX_IN_FLIGHT", "0", "max_in_flight"}}) {
    absl::FlagSaver saver;
    ScopedEnv env;
    env.Set(env_name, value);
    ASSERT_TRUE(ApplyEnvironmentToFlags().ok());
    absl::StatusOr<ServerConfig> config = ServerConfigFromFlags();
    EXPECT_FALSE(config.ok()) << env_name;
    EXPECT_TRUE(absl::StrContains(config.status().message(), flag))
        << config.status();
  }
}

TEST(ServerFlags, AuthAndActiveBatchLimitsReachTheConfig) {
  absl::FlagSaver saver;
  {
    absl::StatusOr<ServerConfig> defaults = ServerConfigFromFlags();
    ASSERT_TRUE(defaults.ok()) << defaults.status();
    EXPECT_EQ(defaults->auth_token_file, "");  // auth off
    EXPECT_EQ(defaults->service.max_active_batches, 256);
    EXPECT_EQ(defaults->service.max_active_batches_per_caller, 64);
  }
  ScopedEnv env;
  env.Set("BATCHFETCH_AUTH_TOKEN_FILE", "/run/secrets/tokens");
  env.Set("BATCHFETCH_MAX_ACTIVE_BATCHES", "12");
  env.Set("BATCHFETCH_MAX_ACTIVE_BATCHES_PER_CALLER", "0");
  ASSERT_TRUE(ApplyEnvironmentToFlags().ok());
  absl::StatusOr<ServerConfig> config = ServerConfigFromFlags();
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->auth_token_file, "/run/secrets/tokens");
  EXPECT_EQ(config->service.max_active_batches, 12);
  EXPECT_EQ(config->service.max_active_batches_per_caller, 0);
}

TEST(ServerFlags, NegativeActiveBatchLimitsAreRefused) {
  for (const char* env_name : {"BATCHFETCH_MAX_ACTIVE_BATCHES",
                               "BATCHFETCH_MAX_ACTIVE_BATCHES_PER_CALLER"}) {
    absl::FlagSaver saver;
    ScopedEnv env;
    env.Set(env_name, "-1");
    ASSERT_TRUE(ApplyEnvironmentToFlags().ok());
    absl::StatusOr<ServerConfig> config = ServerConfigFromFlags();
    EXPECT_FALSE(config.ok()) << env_name;
    EXPECT_TRUE(
        absl::StrContains(config.status().message(), "--max_active_batches"))
        << config.status();
  }
}

TEST(ServerFlags, LogLevelReachesTheConfig) {
  {
    absl::FlagSaver saver;
    absl::StatusOr<ServerConfig> defaults = ServerConfigFromFlags();
    ASSERT_TRUE(defaults.ok()) << defaults.status();
    EXPECT_EQ(defaults->log_level, LogLevel::kInfo);
  }
  absl::FlagSaver saver;
  ScopedEnv env;
  env.Set("BATCHFETCH_LOG_LEVEL", "error");
  ASSERT_TRUE(ApplyEnvironmentToFlags().ok());
  absl::StatusOr<ServerConfig> config = ServerConfigFromFlags();
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->log_level, LogLevel::kError);
}

TEST(ServerFlags, MetricsListenIsOffByDefaultAndReachesTheConfig) {
  {
    absl::FlagSaver saver;
    absl::StatusOr<ServerConfig> defaults = ServerConfigFromFlags();
    ASSERT_TRUE(defaults.ok()) << defaults.status();
    EXPECT_EQ(defaults->metrics_listen, "");
  }
  absl::FlagSaver saver;
  ScopedEnv env;
  env.Set("BATCHFETCH_METRICS_LISTEN", ":9090");
  ASSERT_TRUE(ApplyEnvironmentToFlags().ok());
  absl::StatusOr<ServerConfig> config = ServerConfigFromFlags();
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->metrics_listen, ":9090");
}

TEST(ServerFlags, AMetricsAddressCivetwebCannotBindIsRefusedNamingTheFlag) {
  for (const char* bad : {"[::1]:9090", "localhost:9090", "127.0.0.1:99999"}) {
    absl::FlagSaver saver;
    ScopedEnv env;
    env.Set("BATCHFETCH_METRICS_LISTEN", bad);
    ASSERT_TRUE(ApplyEnvironmentToFlags().ok());
    absl::StatusOr<ServerConfig> config = ServerConfigFromFlags();
    ASSERT_FALSE(config.ok()) << bad;
    EXPECT_TRUE(absl::IsInvalidArgument(config.status()));
    EXPECT_TRUE(
        absl::StrContains(config.status().message(), "--metrics_listen"))
        << config.status();
  }
}

TEST(ServerFlags, AnUnknownLogLevelIsRefusedNamingTheFlag) {
  absl::FlagSaver saver;
  ScopedEnv env;
  env.Set("BATCHFETCH_LOG_LEVEL", "loud");
  ASSERT_TRUE(ApplyEnvironmentToFlags().ok());
  absl::StatusOr<ServerConfig> config = ServerConfigFromFlags();
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(absl::StrContains(config.status().message(), "--log_level"))
      << config.status();
}

// --- TLS flags (--tls_cert, --tls_key, --tls_client_ca) -------------------

// PEM-shaped stand-ins: the configuration checks the blocks are there; gRPC
// parses them when it listens (tests/tls_e2e_test.cc uses real ones).
constexpr char kCertPem[] =
    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
constexpr char kKeyPem[] =
    "-----BEGIN PRIVATE KEY-----\nsecret-key-bytes\n-----END PRIVATE "
    "KEY-----\n";
constexpr char kCaPem[] =
    "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n";

// A file in the test's temporary directory, removed at the end of the test.
class TempFile {
 public:
  TempFile(const std::string& name, const std::string& contents)
      : path_(absl::StrCat(::testing::TempDir(), "server_config_test_",
                           getpid(), "_", name)) {
    std::ofstream(path_) << contents;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Builds the configuration from the given BATCHFETCH_* variables.
absl::StatusOr<ServerConfig> ConfigFromEnv(
    const std::map<std::string, std::string>& variables) {
  ScopedEnv env;
  for (const auto& [name, value] : variables) env.Set(name, value);
  if (absl::Status s = ApplyEnvironmentToFlags(); !s.ok()) return s;
  return ServerConfigFromFlags();
}

TEST(ServerTls, IsOffWithoutTheFlags) {
  absl::FlagSaver saver;
  absl::StatusOr<ServerConfig> config = ServerConfigFromFlags();
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->tls.enabled());
  EXPECT_FALSE(config->tls.mutual());
  EXPECT_EQ(TlsDescription(config->tls), "tls: off");
}

TEST(ServerTls, CertAndKeyTurnTlsOnWithTheFileContents) {
  absl::FlagSaver saver;
  TempFile cert("cert.pem", kCertPem), key("key.pem", kKeyPem);
  absl::StatusOr<ServerConfig> config =
      ConfigFromEnv({{"BATCHFETCH_TLS_CERT", cert.path()},
                     {"BATCHFETCH_TLS_KEY", key.path()}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->tls.enabled());
  EXPECT_FALSE(config->tls.mutual());
  EXPECT_EQ(config->tls.cert_chain_pem, kCertPem);
  EXPECT_EQ(config->tls.private_key_pem, kKeyPem);
  EXPECT_EQ(TlsDescription(config->tls), "tls: on");
}

TEST(ServerTls, ClientCaTurnsMutualTlsOn) {
  absl::FlagSaver saver;
  TempFile cert("cert.pem", kCertPem), key("key.pem", kKeyPem),
      ca("ca.pem", kCaPem);
  absl::StatusOr<ServerConfig> config =
      ConfigFromEnv({{"BATCHFETCH_TLS_CERT", cert.path()},
                     {"BATCHFETCH_TLS_KEY", key.path()},
                     {"BATCHFETCH_TLS_CLIENT_CA", ca.path()}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->tls.mutual());
  EXPECT_EQ(config->tls.client_ca_pem, kCaPem);
  EXPECT_EQ(TlsDescription(config->tls),
            "tls: on, client certificates required (mtls)");
}

TEST(ServerTls, HalfPairsAndAClientCaAloneAreRejectedNamingTheFlag) {
  TempFile cert("cert.pem", kCertPem), key("key.pem", kKeyPem),
      ca("ca.pem", kCaPem);
  for (const auto& [variables, message] :
       std::vector<std::pair<std::map<std::string, std::string>, std::string>>{
           {{{"BATCHFETCH_TLS_CERT", cert.path()}},
            "--tls_cert needs --tls_key"},
           {{{"BATCHFETCH_TLS_KEY", key.path()}}, "--tls_key needs --tls_cert"},
           {{{"BATCHFETCH_TLS_CLIENT_CA", ca.path()}},
            "--tls_client_ca needs --tls_cert and --tls_key"},
           {{{"BATCHFETCH_TLS_CLIENT_CA", ca.path()},
             {"BATCHFETCH_TLS_CERT", cert.path()}},
            "--tls_cert needs --tls_key"},
       }) {
    absl::FlagSaver saver;
    absl::StatusOr<ServerConfig> config = ConfigFromEnv(variables);
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument)
        << message;
    EXPECT_TRUE(absl::StartsWith(config.status().message(), message))
        << config.status();
  }
}

TEST(ServerTls, AnUnreadableFileIsRejectedNamingItsFlag) {
  TempFile cert("cert.pem", kCertPem), key("key.pem", kKeyPem);
  const std::string missing =
      absl::StrCat(::testing::TempDir(), "server_config_test_missing.pem");
  for (const auto& [variables, flag] :
       std::vector<std::pair<std::map<std::string, std::string>, std::string>>{
           {{{"BATCHFETCH_TLS_CERT", missing},
             {"BATCHFETCH_TLS_KEY", key.path()}},
            "--tls_cert"},
           {{{"BATCHFETCH_TLS_CERT", cert.path()},
             {"BATCHFETCH_TLS_KEY", missing}},
            "--tls_key"},
           {{{"BATCHFETCH_TLS_CERT", cert.path()},
             {"BATCHFETCH_TLS_KEY", key.path()},
             {"BATCHFETCH_TLS_CLIENT_CA", missing}},
            "--tls_client_ca"},
       }) {
    absl::FlagSaver saver;
    absl::StatusOr<ServerConfig> config = ConfigFromEnv(variables);
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(config.status().message(),
              absl::StrCat("cannot read ", flag, " file '", missing,
                           "': No such file or directory"));
  }
}

TEST(ServerTls, AFileWithoutItsPemBlockIsRejectedWithoutEchoingIt) {
  // A certificate given as the key, and a key given as the certificate.
  TempFile cert("cert.pem", kCertPem), key("key.pem", kKeyPem);
  for (const auto& [cert_path, key_path, flag] :
       {std::tuple{cert.path(), cert.path(), "--tls_key"},
        {key.path(), key.path(), "--tls_cert"}}) {
    absl::FlagSaver saver;
    absl::StatusOr<ServerConfig> config = ConfigFromEnv(
        {{"BATCHFETCH_TLS_CERT", cert_path}, {"BATCHFETCH_TLS_KEY", key_path}});
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(config.status().message(), flag))
        << config.status();
    EXPECT_TRUE(absl::StrContains(config.status().message(), "holds no PEM"))
        << config.status();
    EXPECT_FALSE(absl::StrContains(config.status().message(), "secret-key"))
        << config.status();
  }
}

// --- Upstream egress: --proxy, --ca_bundle ---------------------------------

TEST(ServerEgress, ProxyIsRefusedUnlessTheOperatorSaysItEnforcesEgress) {
  absl::FlagSaver saver;
  absl::StatusOr<ServerConfig> refused =
      ConfigFromEnv({{"BATCHFETCH_PROXY", "http://proxy.example:3128"}});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "--proxy"))
      << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(),
                                "--egress_enforced_by_proxy"))
      << refused.status();
}

TEST(ServerEgress, ProxyWithEgressEnforcedByProxyKeepsThePolicyOnTheProxy) {
  absl::FlagSaver saver;
  absl::StatusOr<ServerConfig> config =
      ConfigFromEnv({{"BATCHFETCH_PROXY", "http://proxy.example:3128"},
                     {"BATCHFETCH_EGRESS_ENFORCED_BY_PROXY", "true"}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->engine.proxy, "http://proxy.example:3128");
  // The policy still judges the address connected to: the proxy's.
  ASSERT_NE(config->engine.egress, nullptr);
  EXPECT_FALSE(config->engine.egress->CheckPeer("10.0.0.1", 3128).ok());
}

TEST(ServerEgress, CaBundleDefaultsToTheSystemBundle) {
  absl::FlagSaver saver;
  absl::StatusOr<ServerConfig> config = ServerConfigFromFlags();
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->engine.ca_bundle, "");
}

TEST(ServerEgress, AReadableCaBundleReachesTheEngine) {
  absl::FlagSaver saver;
  TempFile bundle("ca-bundle.pem", kCaPem);
  absl::StatusOr<ServerConfig> config =
      ConfigFromEnv({{"BATCHFETCH_CA_BUNDLE", bundle.path()}});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->engine.ca_bundle, bundle.path());
}

TEST(ServerEgress, AnUnreadableCaBundleStopsTheServerNamingTheFlag) {
  absl::FlagSaver saver;
  TempFile not_pem("not-a-bundle.txt", "hello\n");
  for (const std::string& path :
       {std::string("/nonexistent/ca.pem"), not_pem.path()}) {
    absl::StatusOr<ServerConfig> config =
        ConfigFromEnv({{"BATCHFETCH_CA_BUNDLE", path}});
    ASSERT_FALSE(config.ok()) << path;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(config.status().message(), "--ca_bundle"))
        << config.status();
  }
}

// --- Repeatable list flags (--egress_allow_cidr, --egress_deny_cidr,
// --egress_allow_ports) -------------------------------------------------

// A command line for ApplyCommandLineToFlags: argv[0] is the program.
class CommandLine {
 public:
  explicit CommandLine(std::vector<std::string> args) : args_(std::move(args)) {
    args_.insert(args_.begin(), "batchfetch_server");
    for (std::string& arg : args_) argv_.push_back(arg.data());
    argv_.push_back(nullptr);
  }
  int argc() const { return static_cast<int>(args_.size()); }
  char** argv() { return argv_.data(); }

 private:
  std::vector<std::string> args_;
  std::vector<char*> argv_;
};

// Builds the configuration from `args` on top of the BATCHFETCH_* variables
// already set, as main() does.
absl::StatusOr<ServerConfig> ConfigFromCommandLine(
    std::vector<std::string> args) {
  CommandLine command_line(std::move(args));
  if (absl::Status s = ApplyEnvironmentToFlags(); !s.ok()) return s;
  if (absl::Status s =
          ApplyCommandLineToFlags(command_line.argc(), command_line.argv());
      !s.ok()) {
    return s;
  }
  return ServerConfigFromFlags();
}

using Strings = std::vector<std::string>;

// The auditor's repro: with absl alone only the last --egress_deny_cidr was
// kept, so 127.0.0.1 went through the --egress_allow_cidr=127.0.0.0/8.
TEST(ServerListFlags, EveryRepeatedDenyIsKeptAndEnforced) {
  absl::FlagSaver saver;
  absl::StatusOr<ServerConfig> config = ConfigFromCommandLine(
      {"--store=none", "--egress_deny_cidr=127.0.0.1/32",
       "--egress_deny_cidr=10.0.0.0/8", "--egress_allow_cidr=127.0.0.0/8"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->egress.deny_cidrs, (Strings{"127.0.0.1/32", "10.0.0.0/8"}));
  EXPECT_EQ(config->egress.allow_cidrs, Strings{"127.0.0.0/8"});
  ASSERT_NE(config->engine.egress, nullptr);
  absl::Status loopback = config->engine.egress->CheckPeer("127.0.0.1", 80);
  EXPECT_EQ(loopback.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(loopback.message(),
            "egress to 127.0.0.1 denied by 127.0.0.1/32 (--egress_deny_cidr)");
  EXPECT_FALSE(config->engine.egress->CheckPeer("10.9.8.7", 80).ok());
  EXPECT_TRUE(config->engine.egress->CheckPeer("127.0.0.2", 80).ok());
}

TEST(ServerListFlags, EverySpellingAndOccurrenceAddsInOrder) {
  absl::FlagSaver saver;
  absl::StatusOr<ServerConfig> config = ConfigFromCommandLine(
      {"--egress_allow_cidr=10.1.0.0/16", "--egress_allow_ports=80",
       "--egress_allow_cidr", "10.2.0.0/16,10.3.0.0/16", "--max_in_flight", "7",
       "-egress_allow_cidr=10.4.0.0/16", "--egress_enforced_by_proxy",
       "-egress_allow_cidr", "10.5.0.0/16", "--egress_allow_ports", "443,8443",
       "--egress_deny_cidr=10.1.2.0/24", "--egress_deny_cidr="});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->egress.allow_cidrs,
            (Strings{"10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16", "10.4.0.0/16",
                     "10.5.0.0/16"}));
  EXPECT_EQ(config->egress.deny_cidrs, Strings{"10.1.2.0/24"});
  EXPECT_EQ(config->egress.allow_ports, (std::vector<int>{80, 443, 8443}));
  EXPECT_EQ(config->engine.max_in_flight, 7);
  EXPECT_TRUE(config->egress_enforced_by_proxy);
  const EgressPolicy& policy = *config->engine.egress;
  EXPECT_TRUE(policy.CheckPeer("10.5.0.1", 8443).ok());
  EXPECT_FALSE(policy.CheckPeer("10.5.0.1", 8080).ok());
  EXPECT_FALSE(policy.CheckPeer("10.1.2.3", 80).ok());
}

// The variable is a comma-separated list; given on the command line too, the
// flag replaces it, as every command-line flag wins over its variable.
TEST(ServerListFlags, TheVariableIsAListAndTheCommandLineReplacesIt) {
  {
    absl::FlagSaver saver;
    ScopedEnv env;
    env.Set("BATCHFETCH_EGRESS_DENY_CIDR", "127.0.0.1/32,10.0.0.0/8");
    env.Set("BATCHFETCH_EGRESS_ALLOW_PORTS", "80,443");
    absl::StatusOr<ServerConfig> config = ConfigFromCommandLine({});
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->egress.deny_cidrs,
              (Strings{"127.0.0.1/32", "10.0.0.0/8"}));
    EXPECT_EQ(config->egress.allow_ports, (std::vector<int>{80, 443}));
  }
  absl::FlagSaver saver;
  ScopedEnv env;
  env.Set("BATCHFETCH_EGRESS_DENY_CIDR", "127.0.0.1/32,10.0.0.0/8");
  absl::StatusOr<ServerConfig> config =
      ConfigFromCommandLine({"--egress_deny_cidr=192.168.0.0/16",
                             "--egress_deny_cidr=172.16.0.0/12"});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->egress.deny_cidrs,
            (Strings{"192.168.0.0/16", "172.16.0.0/12"}));
}

TEST(ServerListFlags, ABadOccurrenceAnywhereIsRefusedNamingTheFlag) {
  absl::FlagSaver saver;
  absl::StatusOr<ServerConfig> config = ConfigFromCommandLine(
      {"--egress_deny_cidr=10.0.0.0/33", "--egress_deny_cidr=10.0.0.0/8"});
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(absl::StrContains(config.status().message(),
                                "--egress_deny_cidr: '10.0.0.0/33'"))
      << config.status();
  config = ConfigFromCommandLine(
      {"--egress_allow_ports=http", "--egress_allow_ports=443"});
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(absl::StrContains(config.status().message(),
                                "--egress_allow_ports: 'http'"))
      << config.status();
}

TEST(ServerListFlags, TheScanReadsArgvAsAbslDoes) {
  CommandLine command_line(
      {"--max_in_flight", "--egress_deny_cidr=1.1.1.1/32",  // int's value
       "--egress_enforced_by_proxy", "--egress_deny_cidr=2.2.2.2/32",
       "positional", "---egress_deny_cidr=3.3.3.3/32", "-",
       "--egress_deny_cidr", "--egress_allow_cidr=4.4.4.4/32", "--",
       "--egress_deny_cidr=5.5.5.5/32"});
  auto values =
      ListFlagValuesOnCommandLine(command_line.argc(), command_line.argv());
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ(*values, (std::map<std::string, Strings>{
                         {"egress_deny_cidr",
                          {"2.2.2.2/32", "--egress_allow_cidr=4.4.4.4/32"}}}));
}

TEST(ServerListFlags, AFlagFileIsRefused) {
  CommandLine command_line({"--flagfile=/etc/batchfetch.flags"});
  auto values =
      ListFlagValuesOnCommandLine(command_line.argc(), command_line.argv());
  EXPECT_EQ(values.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(values.status().message(), "--flagfile"))
      << values.status();
}

// absl's --fromenv/--tryfromenv read FLAGS_<name> variables (FLAGS_flagfile
// included), which would set a list flag behind the scan's back.
TEST(ServerListFlags, FromEnvAndTryFromEnvAreRefusedInEverySpelling) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {"--fromenv=flagfile"},
           {"-fromenv", "egress_deny_cidr"},
           {"--tryfromenv=egress_deny_cidr", "--egress_deny_cidr=1.2.3.4/32"},
           {"-tryfromenv", "x"}}) {
    CommandLine command_line(args);
    auto values =
        ListFlagValuesOnCommandLine(command_line.argc(), command_line.argv());
    EXPECT_EQ(values.status().code(), absl::StatusCode::kInvalidArgument)
        << args[0];
    EXPECT_TRUE(absl::StrContains(values.status().message(), "fromenv"))
        << values.status();
  }
}

TEST(ServerListFlags, StrayPositionalArgumentsAreStillRefused) {
  absl::FlagSaver saver;
  CommandLine command_line({"--egress_deny_cidr=10.0.0.0/8", "fetch"});
  absl::Status status =
      ApplyCommandLineToFlags(command_line.argc(), command_line.argv());
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_TRUE(
      absl::StrContains(status.message(), "unexpected argument 'fetch'"))
      << status;
}

TEST(ServerArguments, StrayPositionalArgumentsAreRefusedNamingTheFirst) {
  char program[] = "batchfetch_server";
  char fetch[] = "fetch";
  char url[] = "https://example.com/";
  EXPECT_TRUE(CheckNoPositionalArguments({program}).ok());
  absl::Status stray = CheckNoPositionalArguments({program, fetch, url});
  EXPECT_TRUE(absl::IsInvalidArgument(stray)) << stray;
  EXPECT_NE(stray.message().find("unexpected argument 'fetch'"),
            absl::string_view::npos)
      << stray;
  EXPECT_NE(stray.message().find("--entrypoint batchfetch"),
            absl::string_view::npos)
      << stray;
}

TEST(ServerFlags, RetentionIsOffByDefaultAndTakesDaysOrADuration) {
  {
    absl::FlagSaver saver;
    absl::StatusOr<ServerConfig> config = ServerConfigFromFlags();
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->retention, absl::ZeroDuration());
  }
  absl::FlagSaver saver;
  ScopedEnv env;
  env.Set("BATCHFETCH_RETENTION", "30d");
  ASSERT_TRUE(ApplyEnvironmentToFlags().ok());
  absl::StatusOr<ServerConfig> config = ServerConfigFromFlags();
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->retention, absl::Hours(24 * 30));
  EXPECT_EQ(*ParseRetention("12h"), absl::Hours(12));
  EXPECT_EQ(*ParseRetention("1.5d"), absl::Hours(36));
  EXPECT_EQ(*ParseRetention("0"), absl::ZeroDuration());
  EXPECT_EQ(*ParseRetention("0d"), absl::ZeroDuration());
}

TEST(ServerFlags, ABadRetentionNamesTheFlag) {
  for (const char* value :
       {"30", "thirty days", "-1d", "-5h", "30s", "inf", "infd", "d", ""}) {
    absl::StatusOr<absl::Duration> retention = ParseRetention(value);
    EXPECT_FALSE(retention.ok()) << value;
    EXPECT_TRUE(absl::StartsWith(retention.status().message(), "--retention"))
        << retention.status();
  }
}

}  // namespace
}  // namespace batchfetch

#include "service/server/server_config.h"

#include <stdlib.h>

#include <map>
#include <set>
#include <string>
#include <tuple>

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
      {"store", "none"},
      {"mysql_host", "db.example"},
      {"mysql_port", "3307"},
      {"mysql_user", "someone"},
      {"mysql_database", "other_db"},
      {"mysql_password_file", "/run/secrets/pw"},
      {"mysql_startup_wait", "45s"},
      {"mysql_io_timeout", "7s"},
      {"store_retry_budget", "12s"},
      {"max_in_flight", "77"},
      {"default_concurrency", "5"},
      {"max_concurrency", "66"},
      {"max_batch_size", "1234"},
      {"max_body_bytes", "4096"},
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
      {"shutdown_grace", "3s"},
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

}  // namespace
}  // namespace batchfetch

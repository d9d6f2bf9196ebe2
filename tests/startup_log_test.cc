// The server_started log line: the effective configuration, and never a
// secret (MySQL password, TLS key, proxy credentials).
#include "service/server/startup_log.h"

#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "service/base/log.h"

namespace batchfetch {
namespace {

class StartupLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetLogSinkForTest(
        [this](std::string_view line) { lines_.emplace_back(line); });
  }
  void TearDown() override { SetLogSinkForTest(nullptr); }

  std::string LogFor(const ServerConfig& config) {
    lines_.clear();
    LogServerStarted(config, 50051, 9090);
    EXPECT_EQ(lines_.size(), 1u);
    return lines_.empty() ? "" : lines_[0];
  }

  std::vector<std::string> lines_;
};

ServerConfig ConfigWithSecrets() {
  ServerConfig config;
  config.listen = "0.0.0.0:0";
  config.metrics_listen = "127.0.0.1:0";
  config.mysql.host = "db.example";
  config.mysql.password = "hunter2-db-password";
  config.tls.cert_chain_pem =
      "-----BEGIN CERTIFICATE-----\nCERTBYTES\n-----END CERTIFICATE-----\n";
  config.tls.private_key_pem =
      "-----BEGIN PRIVATE KEY-----\nKEYBYTES\n-----END PRIVATE KEY-----\n";
  config.engine.proxy = "http://proxyuser:proxy-password@proxy.example:3128";
  config.auth_token_file = "/run/secrets/tokens";
  config.retention = absl::Hours(24 * 30);
  return config;
}

TEST_F(StartupLogTest, TheLineCarriesTheEffectiveConfiguration) {
  const std::string line = LogFor(ConfigWithSecrets());
  for (const char* field :
       {"\"event\":\"server_started\"", "\"level\":\"info\"", "\"port\":50051",
        "\"metrics_port\":9090", "\"tls\":\"on\"", "\"auth\":\"on\"",
        "\"auth_token_file\":\"/run/secrets/tokens\"",
        "\"mysql_host\":\"db.example\"", "\"mysql_password_set\":true",
        "\"retention\":\"720h\"", "\"max_in_flight\":1000",
        "\"shutdown_grace\":\"20s\"", "\"log_level\":\"info\""}) {
    EXPECT_TRUE(absl::StrContains(line, field)) << field << " in " << line;
  }
}

TEST_F(StartupLogTest, NoSecretIsLogged) {
  const std::string line = LogFor(ConfigWithSecrets());
  for (const char* secret : {"hunter2", "KEYBYTES", "PRIVATE KEY", "CERTBYTES",
                             "proxy-password", "proxyuser"}) {
    EXPECT_FALSE(absl::StrContains(line, secret)) << secret << " in " << line;
  }
  EXPECT_TRUE(absl::StrContains(line, "proxy.example:3128")) << line;
}

TEST_F(StartupLogTest, MutualTlsAndNoStoreAreNamed) {
  ServerConfig config = ConfigWithSecrets();
  config.tls.client_ca_pem = "-----BEGIN CERTIFICATE-----\nCA\n";
  config.store_enabled = false;
  const std::string line = LogFor(config);
  EXPECT_TRUE(absl::StrContains(line, "\"tls\":\"mtls\"")) << line;
  EXPECT_TRUE(absl::StrContains(line, "\"store\":\"none\"")) << line;
  EXPECT_FALSE(absl::StrContains(line, "mysql_host")) << line;
}

}  // namespace
}  // namespace batchfetch

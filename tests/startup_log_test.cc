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
    EXPECT_GE(lines_.size(), 1u);
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

TEST_F(StartupLogTest, TheEgressSettingsAreShownAsEnforced) {
  ServerConfig config = ConfigWithSecrets();
  config.egress.allow_cidrs = {"127.0.0.1/8", "::1"};
  config.egress.deny_cidrs = {"127.0.0.2/32", "10.0.0.0/8"};
  config.egress.allow_ports = {80, 443};
  config.egress_enforced_by_proxy = true;
  const std::string line = LogFor(config);
  for (const char* field :
       {"\"egress_allow_cidr\":\"127.0.0.0/8,::1/128\"",
        "\"egress_deny_cidr\":\"127.0.0.2/32,10.0.0.0/8\"",
        "\"egress_allow_ports\":\"80,443\"", "\"proxy_set\":true",
        "\"egress_enforced_by_proxy\":true"}) {
    EXPECT_TRUE(absl::StrContains(line, field)) << field << " in " << line;
  }
  EXPECT_FALSE(absl::StrContains(line, "proxy-password")) << line;
}

TEST_F(StartupLogTest, TheDefaultEgressIsNamed) {
  const std::string line = LogFor(ServerConfig{});
  for (const char* field :
       {"\"egress_allow_cidr\":\"none\"", "\"egress_deny_cidr\":\"none\"",
        "\"egress_allow_ports\":\"any\"", "\"proxy_set\":false",
        "\"egress_enforced_by_proxy\":false"}) {
    EXPECT_TRUE(absl::StrContains(line, field)) << field << " in " << line;
  }
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

ServerConfig Listening(const std::string& listen, bool tls, bool mutual,
                       bool tokens) {
  ServerConfig config;
  config.listen = listen;
  if (tls) {
    config.tls.cert_chain_pem = "cert";
    config.tls.private_key_pem = "key";
    if (mutual) config.tls.client_ca_pem = "ca";
  }
  if (tokens) config.auth_token_file = "/run/secrets/tokens";
  return config;
}

TEST(ExposureWarning, LoopbackAndUnixSocketsAreNeverExposed) {
  for (const char* listen :
       {"127.0.0.1:50051", "127.9.9.9:1", "localhost:50051", "[::1]:50051",
        "LOCALHOST:0", "unix:/run/batchfetch.sock"}) {
    EXPECT_EQ(ExposureWarning(Listening(listen, false, false, false)), "")
        << listen;
  }
}

TEST(ExposureWarning, PlaintextBeyondLoopbackIsNamedWithWhatToSet) {
  for (const char* listen : {"0.0.0.0:50051", "[::]:50051", "10.1.2.3:50051",
                             "host.example:1", ":50051"}) {
    const std::string open =
        ExposureWarning(Listening(listen, false, false, false));
    EXPECT_TRUE(absl::StrContains(open, "no authentication")) << listen;
    EXPECT_TRUE(absl::StrContains(open, "--auth_token_file")) << listen;
    const std::string tokens =
        ExposureWarning(Listening(listen, false, false, true));
    EXPECT_TRUE(absl::StrContains(tokens, "bearer tokens and results cross"))
        << listen;
    EXPECT_TRUE(absl::StrContains(tokens, "--tls_cert")) << listen;
  }
}

TEST(ExposureWarning, TlsNeedsTokensOrClientCertificates) {
  EXPECT_TRUE(absl::StrContains(
      ExposureWarning(Listening("0.0.0.0:1", true, false, false)),
      "no caller authentication"));
  EXPECT_EQ(ExposureWarning(Listening("0.0.0.0:1", true, false, true)), "");
  EXPECT_EQ(ExposureWarning(Listening("0.0.0.0:1", true, true, false)), "");
}

TEST_F(StartupLogTest, AnExposedListenerAddsOneInsecureListenerWarning) {
  lines_.clear();
  LogServerStarted(Listening("0.0.0.0:50051", false, false, true), 50051, 0);
  ASSERT_EQ(lines_.size(), 2u);
  EXPECT_TRUE(absl::StrContains(lines_[0], "\"event\":\"server_started\""));
  EXPECT_TRUE(absl::StrContains(lines_[1], "\"level\":\"warning\""));
  EXPECT_TRUE(absl::StrContains(lines_[1], "\"event\":\"insecure_listener\""));
  EXPECT_TRUE(absl::StrContains(lines_[1], "\"listen\":\"0.0.0.0:50051\""));
  lines_.clear();
  LogServerStarted(Listening("127.0.0.1:50051", false, false, false), 50051, 0);
  EXPECT_EQ(lines_.size(), 1u);
}

}  // namespace
}  // namespace batchfetch

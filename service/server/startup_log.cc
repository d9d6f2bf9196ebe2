#include "service/server/startup_log.h"

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "service/base/log.h"
#include "service/fetch/egress_rules.h"
#include "service/fetch/url_redaction.h"

namespace batchfetch {
namespace {

// "10.0.0.0/8,fc00::/7" as enforced (host bits cleared), or `empty` for no
// range. The config was checked, so every entry parses; one that does not
// is shown as given.
std::string CidrList(const std::vector<std::string>& cidrs,
                     absl::string_view empty) {
  if (cidrs.empty()) return std::string(empty);
  std::vector<std::string> shown;
  for (const std::string& cidr : cidrs) {
    absl::StatusOr<IpNetwork> network = IpNetwork::Parse(cidr);
    shown.push_back(network.ok() ? network->ToString() : cidr);
  }
  return absl::StrJoin(shown, ",");
}

// Whether --listen's host is this machine only: 127.0.0.0/8, ::1,
// "localhost", or a unix: socket.
bool ListensOnLoopbackOnly(absl::string_view listen) {
  if (absl::StartsWith(listen, "unix:")) return true;
  absl::string_view host = listen;
  if (const size_t colon = host.rfind(':'); colon != absl::string_view::npos) {
    host = host.substr(0, colon);
  }
  absl::ConsumePrefix(&host, "[");
  absl::ConsumeSuffix(&host, "]");
  if (absl::EqualsIgnoreCase(host, "localhost")) return true;
  absl::StatusOr<IpAddress> address = IpAddress::Parse(host);
  if (!address.ok()) return false;  // a name, or "" and "0.0.0.0": beyond
  static const IpNetwork* const kLoopback4 =
      new IpNetwork(*IpNetwork::Parse("127.0.0.0/8"));
  static const IpNetwork* const kLoopback6 =
      new IpNetwork(*IpNetwork::Parse("::1/128"));
  return kLoopback4->Contains(*address) || kLoopback6->Contains(*address);
}

}  // namespace

std::string ExposureWarning(const ServerConfig& config) {
  if (ListensOnLoopbackOnly(config.listen)) return "";
  const bool tokens = !config.auth_token_file.empty();
  if (!config.tls.enabled()) {
    return tokens
               ? "plaintext beyond loopback: bearer tokens and results cross "
                 "the network unencrypted; set --tls_cert/--tls_key, or keep "
                 "the port inside a mesh that encrypts it"
               : "plaintext and no authentication beyond loopback: anyone who "
                 "reaches the port can fetch through this server and read "
                 "every batch; set --auth_token_file and --tls_cert/--tls_key "
                 "(docs/SECURITY.md)";
  }
  if (!tokens && !config.tls.mutual()) {
    return "no caller authentication: any client can fetch through this "
           "server and read every batch; set --auth_token_file or "
           "--tls_client_ca";
  }
  return "";
}

void LogServerStarted(const ServerConfig& config, int port, int metrics_port) {
  const auto duration = [](absl::Duration d) {
    return absl::FormatDuration(d);
  };
  {  // written when `event` goes, before the warning below
    LogEvent event(LogLevel::kInfo, "server_started");
    event.Add("listen", config.listen)
        .Add("port", port)
        .Add("metrics_listen", config.metrics_listen)
        .Add("metrics_port", metrics_port)
        .Add("tls", !config.tls.enabled() ? "off"
                    : config.tls.mutual() ? "mtls"
                                          : "on")
        .Add("auth", config.auth_token_file.empty() ? "off" : "on")
        .Add("auth_token_file", config.auth_token_file)
        .Add("store", config.store_enabled ? "mysql" : "none");
    if (config.store_enabled) {
      event.Add("mysql_host", config.mysql.host)
          .Add("mysql_port", config.mysql.port)
          .Add("mysql_user", config.mysql.user)
          .Add("mysql_database", config.mysql.database)
          .Add("mysql_password_set", !config.mysql.password.empty())
          .Add("mysql_startup_wait", duration(config.mysql.startup_wait))
          .Add("mysql_io_timeout", duration(config.mysql.io_timeout))
          .Add("store_retry_budget", duration(config.mysql.retry_budget))
          .Add("lease_duration", duration(config.mysql.lease_duration))
          .Add("spool_dir", config.spool.spool.dir)
          .Add("spool_max_bytes", config.spool.spool.max_bytes)
          .Add("retention", config.retention > absl::ZeroDuration()
                                ? duration(config.retention)
                                : std::string("off"));
    }
    event.Add("max_in_flight", config.engine.max_in_flight)
        .Add("curl_multi_handles", config.engine.curl_multi_handles)
        .Add("max_body_bytes", config.engine.max_body_bytes)
        .Add("max_redirects", config.engine.max_redirects)
        .Add("connect_timeout", duration(config.engine.connect_timeout))
        .Add("proxy", RedactUserinfo(config.engine.proxy))
        .Add("proxy_set", !config.engine.proxy.empty())
        .Add("egress_enforced_by_proxy", config.egress_enforced_by_proxy)
        .Add("egress_allow_cidr", CidrList(config.egress.allow_cidrs, "none"))
        .Add("egress_deny_cidr", CidrList(config.egress.deny_cidrs, "none"))
        .Add("egress_allow_ports",
             config.egress.allow_ports.empty()
                 ? std::string("any")
                 : absl::StrJoin(config.egress.allow_ports, ","))
        .Add("ca_bundle", config.engine.ca_bundle)
        .Add("max_batch_size", config.service.max_batch_size)
        .Add("default_concurrency", config.service.default_concurrency)
        .Add("max_concurrency", config.service.max_concurrency)
        .Add("default_timeout", duration(config.service.default_timeout))
        .Add("max_timeout", duration(config.service.max_timeout))
        .Add("max_attempts", config.service.max_attempts)
        .Add("max_active_batches", config.service.max_active_batches)
        .Add("max_active_batches_per_caller",
             config.service.max_active_batches_per_caller)
        .Add("max_request_bytes", config.max_request_bytes)
        .Add("shutdown_grace", duration(config.shutdown_grace))
        .Add("log_level", LogLevelName(config.log_level));
  }
  if (std::string why = ExposureWarning(config); !why.empty()) {
    LogEvent(LogLevel::kWarning, "insecure_listener")
        .Add("listen", config.listen)
        .Add("why", why);
  }
}

}  // namespace batchfetch

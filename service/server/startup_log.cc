#include "service/server/startup_log.h"

#include <string>

#include "absl/time/time.h"
#include "service/base/log.h"
#include "service/fetch/url_redaction.h"

namespace batchfetch {

void LogServerStarted(const ServerConfig& config, int port, int metrics_port) {
  const auto duration = [](absl::Duration d) {
    return absl::FormatDuration(d);
  };
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

}  // namespace batchfetch

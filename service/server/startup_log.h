#ifndef BATCHFETCH_SERVICE_SERVER_STARTUP_LOG_H_
#define BATCHFETCH_SERVICE_SERVER_STARTUP_LOG_H_

#include "service/server/server_config.h"

namespace batchfetch {

// Writes the `server_started` LogEvent (info): the ports the server got and
// its effective configuration, so an operator can see what a replica runs
// with. Secrets never appear: not the MySQL password (only whether one is
// set), not the TLS key or any PEM contents (TLS is "off", "on" or "mtls"),
// not the bearer tokens (only the --auth_token_file path), and the --proxy
// URL with its userinfo redacted. File paths are logged as given. The
// egress settings are shown as enforced: egress_allow_cidr and
// egress_deny_cidr as canonical ranges ("none" for no range),
// egress_allow_ports ("any" when not narrowed), proxy_set and
// egress_enforced_by_proxy.
//
// Then, when ExposureWarning(config) is not empty, one `insecure_listener`
// warning with `listen` and `why`: a start-up that is legal but exposed, so
// that it shows in the log rather than only in docs/SECURITY.md.
void LogServerStarted(const ServerConfig& config, int port, int metrics_port);

// Why the gRPC port, as configured, is exposed, or "" when it is not: the
// port listens beyond loopback (any address but 127.0.0.0/8, ::1 and
// "localhost"; unix: sockets are local) and either TLS is off (bearer
// tokens and results would cross the network in plaintext, or with no
// tokens anyone reaching the port can fetch through the server and read
// every batch) or neither bearer tokens nor client certificates identify
// callers. Pure.
std::string ExposureWarning(const ServerConfig& config);

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_SERVER_STARTUP_LOG_H_

#ifndef BATCHFETCH_SERVICE_SERVER_STARTUP_LOG_H_
#define BATCHFETCH_SERVICE_SERVER_STARTUP_LOG_H_

#include "service/server/server_config.h"

namespace batchfetch {

// Writes the `server_started` LogEvent (info): the ports the server got and
// its effective configuration, so an operator can see what a replica runs
// with. Secrets never appear: not the MySQL password (only whether one is
// set), not the TLS key or any PEM contents (TLS is "off", "on" or "mtls"),
// not the bearer tokens (only the --auth_token_file path), and the --proxy
// URL with its userinfo redacted. File paths are logged as given.
void LogServerStarted(const ServerConfig& config, int port, int metrics_port);

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_SERVER_STARTUP_LOG_H_

#ifndef BATCHFETCH_SERVICE_SERVER_CONFIG_H_
#define BATCHFETCH_SERVICE_SERVER_CONFIG_H_

#include "absl/status/statusor.h"
#include "service/batchfetch_server.h"

namespace batchfetch {

// Applies BATCHFETCH_<FLAG> environment variables to flags not given on the
// command line (e.g. BATCHFETCH_MYSQL_HOST for --mysql_host). REQUIRES:
// called before absl::ParseCommandLine, which then overrides them.
absl::Status ApplyEnvironmentToFlags();

// Builds the server configuration from the parsed flags. The database
// password comes from BATCHFETCH_MYSQL_PASSWORD or --mysql_password_file,
// never from a flag value.
absl::StatusOr<ServerConfig> ServerConfigFromFlags();

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_SERVER_CONFIG_H_

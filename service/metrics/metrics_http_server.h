#ifndef BATCHFETCH_SERVICE_METRICS_METRICS_HTTP_SERVER_H_
#define BATCHFETCH_SERVICE_METRICS_METRICS_HTTP_SERVER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

struct mg_context;
struct mg_connection;

namespace batchfetch {

// Turns a --metrics_listen value into civetweb's listening_ports syntax:
// "127.0.0.1:9090" stays; ":9090" and "9090" (every IPv4 interface) become
// "9090"; port 0 asks for any free port. INVALID_ARGUMENT naming the flag
// for anything else: a host name, an IPv6 address (Debian's civetweb is
// built without IPv6), a port outside 0..65535, or an empty value.
absl::StatusOr<std::string> CivetwebListeningPort(absl::string_view listen);

// The HTTP endpoint Prometheus scrapes: GET (or HEAD) /metrics answers 200
// with `render()` as text/plain; version=0.0.4; any other path is 404 and
// another method on /metrics is 405. Nothing else is served (no files).
//
// Built on civetweb (Debian's libcivetweb-dev): a small embedded server in
// C, maintained, packaged by Debian, so we do not write an HTTP parser.
//
// Threads: civetweb's master thread plus `Options::threads` workers; at
// most that many scrapes run at once (more connections wait in the listen
// backlog). `render` runs on a worker, so it must be thread-safe and must
// not block for long. Each request must arrive within `request_timeout`.
// Keep-alive is off: a scraper's connection never pins a worker.
class MetricsHttpServer {
 public:
  struct Options {
    // --metrics_listen as given ("127.0.0.1:9090", ":9090").
    std::string listen;
    int threads = 2;
    absl::Duration request_timeout = absl::Seconds(10);
  };
  using Render = std::function<std::string()>;

  // Listens, or says why not (bad address, port taken), naming
  // --metrics_listen.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const Options& options, Render render);

  // Stops listening and waits for running scrapes to end (after which
  // `render` is never called again). Takes up to about 2 s: civetweb's
  // master thread notices the stop only when its poll times out.
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // The port listened on (the one chosen, when the listen port was 0).
  int port() const { return port_; }

 private:
  explicit MetricsHttpServer(Render render) : render_(std::move(render)) {}
  static int Handle(mg_connection* connection, void* self);

  const Render render_;
  struct mg_context* context_ = nullptr;
  int port_ = 0;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_METRICS_METRICS_HTTP_SERVER_H_

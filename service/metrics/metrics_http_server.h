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

// The HTTP endpoint Prometheus scrapes, which also answers the kubelet's
// HTTP probes (a TLS gRPC port cannot take its plaintext gRPC probes):
//  - GET /metrics: 200 with `render()` as text/plain; version=0.0.4;
//  - GET /readyz: 200 "SERVING\n" while `ready()` is true, else 503
//    "NOT_SERVING\n" (the readiness probe);
//  - GET /livez: 200 "ok\n" whenever a worker answers at all (the liveness
//    probe: it depends on nothing but the process).
// HEAD is answered like GET without the body; another method on one of
// these paths is 405; any other path is 404. Nothing else is served (no
// files). Responses are not cacheable.
//
// Built on civetweb (Debian's libcivetweb-dev): a small embedded server in
// C, maintained, packaged by Debian, so we do not write an HTTP parser.
//
// Threads: civetweb's master thread plus `Options::threads` workers; at
// most that many requests run at once (more connections wait in the listen
// backlog). `render` and `ready` run on a worker, so they must be
// thread-safe and must not block for long. Each request must arrive within
// `request_timeout`. Keep-alive is off: a scraper's or a probe's
// connection never pins a worker.
class MetricsHttpServer {
 public:
  struct Options {
    // --metrics_listen as given ("127.0.0.1:9090", ":9090").
    std::string listen;
    int threads = 2;
    absl::Duration request_timeout = absl::Seconds(10);
  };
  // The metrics text, in the exposition format.
  using Render = std::function<std::string()>;
  // Whether the server should get traffic now (its health is SERVING).
  using Ready = std::function<bool()>;

  // Listens, or says why not (bad address, port taken), naming
  // --metrics_listen. INVALID_ARGUMENT when `render` or `ready` is empty.
  // Both must stay callable until the server is destroyed.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const Options& options, Render render, Ready ready);

  // Stops listening and waits for running requests to end (after which
  // `render` and `ready` are never called again). Takes up to about 2 s:
  // civetweb's master thread notices the stop only when its poll times out.
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // The port listened on (the one chosen, when the listen port was 0).
  int port() const { return port_; }

 private:
  MetricsHttpServer(Render render, Ready ready)
      : render_(std::move(render)), ready_(std::move(ready)) {}
  static int Handle(mg_connection* connection, void* self);

  const Render render_;
  const Ready ready_;
  struct mg_context* context_ = nullptr;
  int port_ = 0;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_METRICS_METRICS_HTTP_SERVER_H_

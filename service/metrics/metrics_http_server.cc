#include "service/metrics/metrics_http_server.h"

#include <arpa/inet.h>
#include <civetweb.h>

#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "service/base/log.h"
#include "service/metrics/exposition.h"

namespace batchfetch {
namespace {

// What civetweb reports while mg_start2 runs on this thread (e.g. "cannot
// bind to 127.0.0.1:9090: 98 (Address already in use)"), for the error.
thread_local std::vector<std::string>* start_messages = nullptr;

// civetweb's own log lines: kept for Start's error while starting, logged
// as warnings afterwards (a client's broken request, for instance).
int LogCivetwebMessage(const struct mg_connection*, const char* message) {
  if (start_messages != nullptr) {
    start_messages->push_back(message);
  } else {
    LogEvent(LogLevel::kWarning, "metrics_http_error").Add("error", message);
  }
  return 1;  // handled: civetweb writes nothing itself
}

constexpr char kProbeContentType[] = "text/plain; charset=utf-8";

// Answers `status` with `body` (left out for HEAD, Content-Length still
// its size) and headers that keep caches from storing it: a probe or a
// scrape must see the state of now.
int SendText(mg_connection* connection, int status, const char* content_type,
             const std::string& body, bool head) {
  const std::string length = absl::StrCat(body.size());
  mg_response_header_start(connection, status);
  mg_response_header_add(connection, "Content-Type", content_type, -1);
  mg_response_header_add(connection, "Content-Length", length.c_str(), -1);
  mg_response_header_add(connection, "Cache-Control", "no-store", -1);
  mg_response_header_send(connection);
  if (!head) mg_write(connection, body.data(), body.size());
  return status;
}

}  // namespace

absl::StatusOr<std::string> CivetwebListeningPort(absl::string_view listen) {
  const auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metrics_listen '", listen, "': ", why,
        " (expected IPV4_ADDRESS:PORT, :PORT or PORT, e.g. 127.0.0.1:9090)"));
  };
  absl::string_view host;
  absl::string_view port = listen;
  if (const size_t colon = listen.rfind(':');
      colon != absl::string_view::npos) {
    host = listen.substr(0, colon);
    port = listen.substr(colon + 1);
  }
  int port_number = 0;
  if (port.empty() || !absl::SimpleAtoi(port, &port_number) ||
      port_number < 0 || port_number > 65535 ||
      port.find_first_not_of("0123456789") != absl::string_view::npos) {
    return invalid("the port must be a number from 0 to 65535");
  }
  if (host.empty()) return std::string(port);
  if (host.find(':') != absl::string_view::npos || host.front() == '[') {
    return invalid("IPv6 is not supported (civetweb is built without it)");
  }
  in_addr address;
  if (inet_pton(AF_INET, std::string(host).c_str(), &address) != 1) {
    return invalid("the host must be an IPv4 address");
  }
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const Options& options, Render render, Ready ready) {
  if (!render || !ready) {
    return absl::InvalidArgumentError(
        "MetricsHttpServer::Start: render and ready must both be set");
  }
  absl::StatusOr<std::string> ports = CivetwebListeningPort(options.listen);
  if (!ports.ok()) return ports.status();
  // Once per process; no TLS, no other features.
  static std::once_flag library_initialized;
  std::call_once(library_initialized, [] { mg_init_library(0); });

  std::unique_ptr<MetricsHttpServer> server(
      new MetricsHttpServer(std::move(render), std::move(ready)));
  const std::string threads = absl::StrCat(options.threads);
  const std::string timeout_ms =
      absl::StrCat(absl::ToInt64Milliseconds(options.request_timeout));
  // No document_root: civetweb serves no files.
  const char* configuration[] = {"listening_ports",
                                 ports->c_str(),
                                 "num_threads",
                                 threads.c_str(),
                                 "request_timeout_ms",
                                 timeout_ms.c_str(),
                                 "enable_keep_alive",
                                 "no",
                                 nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  callbacks.log_message = LogCivetwebMessage;
  // Every request goes to Handle through begin_request, which (unlike
  // mg_set_request_handler) is in place before mg_start2 starts listening:
  // no scrape or probe can come in before the handler and get civetweb's
  // 404. Handle answers every request itself (never 0).
  callbacks.begin_request = [](mg_connection* connection) {
    return Handle(connection, mg_get_user_data(mg_get_context(connection)));
  };
  mg_init_data init;
  init.callbacks = &callbacks;
  init.user_data = server.get();
  init.configuration_options = configuration;
  char error_text[256] = "";
  unsigned error_code = 0;
  mg_error_data error;
  error.code = &error_code;
  error.text = error_text;
  error.text_buffer_size = sizeof(error_text);
  std::vector<std::string> messages;
  start_messages = &messages;
  server->context_ = mg_start2(&init, &error);
  start_messages = nullptr;
  if (server->context_ == nullptr) {
    if (messages.empty()) messages.push_back(error_text);
    return absl::UnavailableError(
        absl::StrCat("--metrics_listen '", options.listen,
                     "': cannot listen: ", absl::StrJoin(messages, "; ")));
  }
  mg_server_port bound[4];
  const int count = mg_get_server_ports(server->context_, 4, bound);
  if (count >= 1) server->port_ = bound[0].port;
  return server;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (context_ != nullptr) mg_stop(context_);
}

int MetricsHttpServer::Handle(mg_connection* connection, void* self) {
  const MetricsHttpServer& server = *static_cast<MetricsHttpServer*>(self);
  const mg_request_info* request = mg_get_request_info(connection);
  const char* path = request->local_uri != nullptr ? request->local_uri : "";
  enum class Page { kMetrics, kReadyz, kLivez };
  Page page;
  if (std::strcmp(path, "/metrics") == 0) {
    page = Page::kMetrics;
  } else if (std::strcmp(path, "/readyz") == 0) {
    page = Page::kReadyz;
  } else if (std::strcmp(path, "/livez") == 0) {
    page = Page::kLivez;
  } else {
    mg_send_http_error(connection, 404, "%s",
                       "not found: metrics are at /metrics, the probes at "
                       "/readyz and /livez\n");
    return 404;
  }
  const bool head = std::strcmp(request->request_method, "HEAD") == 0;
  if (!head && std::strcmp(request->request_method, "GET") != 0) {
    mg_send_http_error(connection, 405, "method not allowed: use GET %s\n",
                       path);
    return 405;
  }
  switch (page) {
    case Page::kMetrics:
      return SendText(connection, 200, kExpositionContentType, server.render_(),
                      head);
    case Page::kReadyz:
      return server.ready_() ? SendText(connection, 200, kProbeContentType,
                                        "SERVING\n", head)
                             : SendText(connection, 503, kProbeContentType,
                                        "NOT_SERVING\n", head);
    case Page::kLivez:
      return SendText(connection, 200, kProbeContentType, "ok\n", head);
  }
  return 500;  // not reached: every Page is handled above
}

}  // namespace batchfetch

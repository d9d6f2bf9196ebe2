#ifndef BATCHFETCH_TESTS_SUPPORT_TEST_UPSTREAM_H_
#define BATCHFETCH_TESTS_SUPPORT_TEST_UPSTREAM_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace batchfetch::testing {

// An HTTP/1.1 server on 127.0.0.1 (ephemeral port) standing in for the
// third-party API in integration tests. One thread per connection, keep-alive,
// request bodies with Content-Length (chunked request bodies get 411).
//
// The response is controlled by query parameters, which combine on any path:
//   status=N       status code (default 200)
//   body=TEXT      literal (URL-decoded) body
//   bytes=N        JSON body {"pad":"xxx..."} of exactly N bytes (N >= 10)
//   echo=1         body is the request body
//   n=N            default body is {"ok":true,"path":"<path>","n":N} (N: 0 if
//                  absent)
//   ctype=TYPE     Content-Type (default application/json)
//   delay_ms=N     wait N ms before responding
//   drip_ms=N      send the body one byte every N ms (Content-Length is set)
//   no_length=1    no Content-Length; the connection is closed after the body
//   close=1        respond with "Connection: close" and close afterwards
//   drop=1         close the connection without responding
//   retry_after=V  add the header "Retry-After: V" (V URL-decoded, verbatim:
//                  seconds or an HTTP-date)
//   fail_first=K   stateful: the first K requests with this exact request
//                  target (path and query as received, byte for byte) get
//                  status fail_status instead of `status`; later ones get the
//                  normal response. Counted when the headers arrive; a failing
//                  response has the body that body/bytes/echo/n select (never
//                  gzip_zeros, never a redirect) and, if given, Retry-After.
//                  Counters are per TestUpstream and cleared by ResetStats().
//   fail_status=S  status for fail_first failures (default 503)
//   gzip_zeros=N   body is the JSON array [0,0,...,0] of exactly N bytes
//                  decoded ("[ 0,...,0]" for even N; N < 3: "", "0", "[]"),
//                  gzip-compressed, with "Content-Encoding: gzip" and
//                  Content-Length = compressed size. Compressed bytes are
//                  cached per N for the process; N up to ~2e8 is cheap (a
//                  few hundred KB compressed, no N-byte buffer is allocated).
// Special path /redirect?to=URL-ENCODED-LOCATION[&status=302] responds with
// a Location header. HEAD requests get headers only.
//
// While waiting (delay_ms, drip_ms) the connection is watched; if the client
// disconnects, the request counts as aborted and its handling stops.
// Every response has Content-Type and (unless no_length=1) Content-Length.
//
// Thread-safety: all public methods are thread-safe. The destructor closes all
// connections (in-flight requests count as aborted) and joins all threads.
class TestUpstream {
 public:
  struct Arrival {
    std::string path_and_query;  // Request target as sent, e.g. "/x?a=1".
    absl::Time at;               // When the request's headers were read.
    std::string method;
  };

  static absl::StatusOr<std::unique_ptr<TestUpstream>> Start();
  // Listens on `ipv4_address` instead of 127.0.0.1, e.g. "127.0.0.2" (any
  // 127.0.0.0/8 address is local on Linux).
  static absl::StatusOr<std::unique_ptr<TestUpstream>> Start(
      const std::string& ipv4_address);

  TestUpstream(const TestUpstream&) = delete;
  TestUpstream& operator=(const TestUpstream&) = delete;
  ~TestUpstream();

  int port() const { return port_; }
  // "http://ADDRESS:PORT" + path_and_query (which should start with '/');
  // ADDRESS is 127.0.0.1 unless Start was given another.
  std::string Url(absl::string_view path_and_query) const;

  // Requests being handled: from headers received until the response is fully
  // written, the request is aborted or dropped.
  int in_flight() const;
  // Maximum of in_flight() since start or the last ResetStats().
  int peak_in_flight() const;
  int total_requests() const;
  // Requests whose client disconnected before the response was fully written.
  int aborted() const;
  int connections_accepted() const;
  // In arrival order.
  std::vector<Arrival> arrivals() const;
  // Zeroes the counters and arrivals; peak_in_flight restarts at in_flight().
  void ResetStats();

  // Block until the condition holds or `timeout` passes; return whether it
  // holds. For waiting on asynchronous effects (e.g. abort detection).
  bool AwaitInFlightAtLeast(int n, absl::Duration timeout) const;
  bool AwaitAbortedAtLeast(int n, absl::Duration timeout) const;
  bool AwaitTotalRequestsAtLeast(int n, absl::Duration timeout) const;

 private:
  struct Connection {
    int fd = -1;  // -1 once the connection thread has closed it.
    bool done = false;
    std::thread thread;
  };

  TestUpstream(int listen_fd, int wake_fd, int port, std::string address);
  void AcceptLoop();
  void ServeConnection(int64_t id, int fd);
  void ReapFinishedConnections();
  bool AwaitCounter(const int* counter, int n, absl::Duration timeout) const;

  // Stats hooks used by the connection threads.
  void OnRequestStart(absl::string_view method, absl::string_view target);
  void OnRequestEnd(bool aborted);
  // Counts a request to `target` carrying fail_first=K; returns whether it is
  // among the first K to that target (and so must fail).
  bool CountFailFirst(absl::string_view target, int k);

  const int listen_fd_;
  const int wake_fd_;  // eventfd that interrupts AcceptLoop.
  const int port_;
  const std::string address_;  // what the socket is bound to
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;

  mutable absl::Mutex conn_mu_;
  std::map<int64_t, Connection> connections_ ABSL_GUARDED_BY(conn_mu_);

  mutable absl::Mutex stats_mu_;
  int in_flight_ ABSL_GUARDED_BY(stats_mu_) = 0;
  int peak_in_flight_ ABSL_GUARDED_BY(stats_mu_) = 0;
  int total_requests_ ABSL_GUARDED_BY(stats_mu_) = 0;
  int aborted_ ABSL_GUARDED_BY(stats_mu_) = 0;
  int connections_accepted_ ABSL_GUARDED_BY(stats_mu_) = 0;
  std::vector<Arrival> arrivals_ ABSL_GUARDED_BY(stats_mu_);
  // fail_first: requests seen so far per request target.
  std::map<std::string, int, std::less<>> fail_first_seen_
      ABSL_GUARDED_BY(stats_mu_);
};

}  // namespace batchfetch::testing

#endif  // BATCHFETCH_TESTS_SUPPORT_TEST_UPSTREAM_H_

#ifndef BATCHFETCH_TESTS_SUPPORT_HOSTILE_UPSTREAM_H_
#define BATCHFETCH_TESTS_SUPPORT_HOSTILE_UPSTREAM_H_

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace batchfetch::testing {

// A raw TCP server on 127.0.0.1 (ephemeral port) that speaks just enough
// HTTP/1.1 to misbehave on command, for testing that every hostile answer
// ends its own request with a precise outcome and harms nothing else.
// TestUpstream cannot do this: it always sends well-formed responses.
//
// It reads one request head per connection and picks the behaviour from
// the request path (the query is ignored):
//   /endless-headers  a 200 status line, then header lines ("X-Pad-N: ..."
//                     of ~1 KB each) without end, until the client leaves
//                     (or 64 MiB were sent)
//   /bad-chunked      Transfer-Encoding: chunked with a chunk size that is
//                     not hexadecimal
//   /reset-mid-body   Content-Length: 1000, 100 bytes, then a reset (RST:
//                     SO_LINGER 0)
//   /short-body       Content-Length: 1000, 10 bytes, then a normal close
//   /endless-body     no Content-Length, not chunked, "Connection: close",
//                     then JSON-looking bytes without end, until the client
//                     leaves (or 64 MiB were sent)
//   /deep-json        a complete 200 whose body is [[[...]]] nested 10000
//                     deep (valid JSON, with a Content-Length)
//   /bad-utf8-json    a 200 JSON object whose string holds the byte 0xFF
//   /surrogate-json   a 200 JSON object whose string is the escape \udc00
//                     (an unpaired UTF-16 low surrogate)
//   /redirect-loop    302 with "Location: /redirect-loop", every time
//   /redirect-bad-utf8  302 to "/landed-\xFF\xFE" (raw bytes, not UTF-8);
//                     /landed-... answers 200 {"landed":true}
//   /redirect-long    302 to "/landed-" followed by 70000 'x' (a 70 KB
//                     Location, within libcurl's 100 KB header line limit)
//   /long-content-type  200 {"ok":true} with a 1000-byte Content-Type
//   /empty            200, Content-Type application/json, Content-Length 0
//   /silent           reads the request and never answers (the connection
//                     stays open until the client leaves)
//   anything else     200 {"ok":true}
// Every response but the endless ones carries "Connection: close" and the
// connection is closed after it.
//
// One thread accepts; each connection gets its own thread. Thread-safety:
// every public method may be called from any thread. The destructor shuts
// every connection down (so writers and the silent waits end) and joins
// all threads.
class HostileUpstream {
 public:
  static absl::StatusOr<std::unique_ptr<HostileUpstream>> Start();

  HostileUpstream(const HostileUpstream&) = delete;
  HostileUpstream& operator=(const HostileUpstream&) = delete;
  ~HostileUpstream();

  int port() const { return port_; }
  // "http://127.0.0.1:PORT" + path_and_query (which should start with '/').
  std::string Url(absl::string_view path_and_query) const;

  // How many requests arrived for `path` (without the query), so far.
  int requests(const std::string& path) const;

 private:
  HostileUpstream(int listen_fd, int wake_fd, int port);
  void AcceptLoop();
  void Serve(int fd);

  const int listen_fd_;
  const int wake_fd_;  // eventfd: the destructor wakes the accept loop
  const int port_;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  mutable absl::Mutex mu_;
  std::vector<int> open_fds_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> connection_threads_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> requests_ ABSL_GUARDED_BY(mu_);
};

}  // namespace batchfetch::testing

#endif  // BATCHFETCH_TESTS_SUPPORT_HOSTILE_UPSTREAM_H_

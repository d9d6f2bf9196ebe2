#ifndef BATCHFETCH_TESTS_SUPPORT_LOOPBACK_LISTENER_H_
#define BATCHFETCH_TESTS_SUPPORT_LOOPBACK_LISTENER_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

namespace batchfetch::testing {

// The plumbing the loopback proxies (TcpBlackHoleProxy, MysqlCommitCutter)
// share: a listening socket on 127.0.0.1 (ephemeral port) and an eventfd
// that wakes their poll loop, plus the socket helpers below.
//
// Ownership: owns both descriptors and closes them in the destructor;
// movable, not copyable. Threading: Wake() from any thread; the rest from
// the proxy's loop thread (or before it starts).
class LoopbackListener {
 public:
  static absl::StatusOr<LoopbackListener> Open();

  LoopbackListener(LoopbackListener&& other) noexcept;
  LoopbackListener& operator=(LoopbackListener&&) = delete;
  LoopbackListener(const LoopbackListener&) = delete;
  LoopbackListener& operator=(const LoopbackListener&) = delete;
  ~LoopbackListener();

  int port() const { return port_; }
  // Poll these for POLLIN: a client is waiting / Wake() was called.
  int listen_fd() const { return listen_fd_; }
  int wake_fd() const { return wake_fd_; }
  // Makes the loop's next (or current) poll on wake_fd() return.
  void Wake() const;
  // One waiting client (TCP_NODELAY, close-on-exec); -1 when none.
  int Accept() const;

 private:
  LoopbackListener(int listen_fd, int wake_fd, int port)
      : listen_fd_(listen_fd), wake_fd_(wake_fd), port_(port) {}

  int listen_fd_;
  int wake_fd_;
  int port_;
};

// Sends all of `n` bytes at `data` (no SIGPIPE); false when the peer is gone.
bool SendAll(int fd, const char* data, size_t n);
// A TCP connection (TCP_NODELAY) to IPv4 `host`:`port`; -1 on failure.
int ConnectTo(const std::string& host, int port);
// Closes `fd` unless it is -1, and sets it to -1.
void CloseFd(int& fd);

}  // namespace batchfetch::testing

#endif  // BATCHFETCH_TESTS_SUPPORT_LOOPBACK_LISTENER_H_

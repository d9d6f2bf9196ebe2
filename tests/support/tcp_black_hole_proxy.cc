#include "tests/support/tcp_black_hole_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace batchfetch::testing {
namespace {

// Sends all of `data`; false when the peer is gone.
bool SendAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t sent = send(fd, data, n, MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += sent;
    n -= static_cast<size_t>(sent);
  }
  return true;
}

int ConnectTo(const std::string& host, int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1 ||
      connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TcpBlackHoleProxy>> TcpBlackHoleProxy::Start(
    int target_port, const std::string& target_host) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(fd, 128) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    close(fd);
    return absl::InternalError(
        absl::StrCat("bind/listen on 127.0.0.1: ", std::strerror(err)));
  }
  int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    const int err = errno;
    close(fd);
    return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(err)));
  }
  return std::unique_ptr<TcpBlackHoleProxy>(new TcpBlackHoleProxy(
      fd, wake, ntohs(addr.sin_port), target_host, target_port));
}

TcpBlackHoleProxy::TcpBlackHoleProxy(int listen_fd, int wake_fd, int port,
                                     std::string target_host, int target_port)
    : listen_fd_(listen_fd),
      wake_fd_(wake_fd),
      port_(port),
      target_host_(std::move(target_host)),
      target_port_(target_port) {
  thread_ = std::thread([this] { Run(); });
}

TcpBlackHoleProxy::~TcpBlackHoleProxy() {
  stop_.store(true);
  const uint64_t one = 1;
  ssize_t ignored = write(wake_fd_, &one, sizeof(one));
  (void)ignored;
  thread_.join();
  close(listen_fd_);
  close(wake_fd_);
}

void TcpBlackHoleProxy::CutOnClientBytes(std::string pattern) {
  std::lock_guard<std::mutex> lock(cut_mu_);
  cut_pattern_ = std::move(pattern);
  cut_after_ = false;
}

void TcpBlackHoleProxy::CutAfterClientBytes(std::string pattern) {
  std::lock_guard<std::mutex> lock(cut_mu_);
  cut_pattern_ = std::move(pattern);
  cut_after_ = true;
}

void TcpBlackHoleProxy::Run() {
  // A client connection and its target connection (-1: none / closed).
  struct Pair {
    int client;
    int target;
  };
  std::vector<Pair> pairs;
  std::vector<char> buffer(64 * 1024);
  auto close_fd = [](int& fd) {
    if (fd >= 0) close(fd);
    fd = -1;
  };

  while (!stop_.load()) {
    std::vector<pollfd> fds;
    fds.push_back({listen_fd_, POLLIN, 0});
    fds.push_back({wake_fd_, POLLIN, 0});
    // For each pair: the client, then the target (fd -1 is ignored).
    for (const Pair& p : pairs) {
      fds.push_back({p.client, POLLIN, 0});
      fds.push_back({p.target, POLLIN, 0});
    }
    if (poll(fds.data(), fds.size(), 1000) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (stop_.load()) break;
    const bool black_hole = black_hole_.load();
    for (size_t i = 0; i < pairs.size(); ++i) {
      Pair& p = pairs[i];
      for (int side = 0; side < 2; ++side) {
        const pollfd& pfd = fds[2 + 2 * i + side];
        if (pfd.fd < 0 || pfd.revents == 0) continue;
        int& from = side == 0 ? p.client : p.target;
        int& to = side == 0 ? p.target : p.client;
        if (from < 0) continue;
        ssize_t n = read(from, buffer.data(), buffer.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          // Closed (or failed). The client's end closes the pair; in black
          // hole mode a target that goes away is not reported to the client.
          if (side == 0 || !black_hole) {
            close_fd(p.client);
            close_fd(p.target);
          } else {
            close_fd(p.target);
          }
          continue;
        }
        if (black_hole || to < 0) continue;  // dropped
        if (side == 0) {
          std::lock_guard<std::mutex> lock(cut_mu_);
          if (!cut_pattern_.empty() &&
              std::string_view(buffer.data(), static_cast<size_t>(n))
                      .find(cut_pattern_) != std::string_view::npos) {
            cut_pattern_.clear();
            cuts_.fetch_add(1);
            if (cut_after_) {
              // The target gets the bytes before it sees the close.
              SendAll(to, buffer.data(), static_cast<size_t>(n));
            }
            close_fd(p.client);
            close_fd(p.target);
            continue;
          }
        }
        if (!SendAll(to, buffer.data(), static_cast<size_t>(n))) {
          close_fd(p.client);
          close_fd(p.target);
        }
      }
    }
    std::vector<Pair> live;
    for (const Pair& p : pairs) {
      if (p.client >= 0) {
        live.push_back(p);
      } else if (p.target >= 0) {
        close(p.target);
      }
    }
    pairs.swap(live);
    if (fds[0].revents & POLLIN) {
      int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client >= 0) {
        accepted_.fetch_add(1);
        int one = 1;
        setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        int target = -1;
        if (!black_hole_.load()) {
          target = ConnectTo(target_host_, target_port_);
          if (target < 0) {
            close(client);
            client = -1;
          }
        }
        if (client >= 0) pairs.push_back({client, target});
      }
    }
  }
  for (Pair& p : pairs) {
    close_fd(p.client);
    close_fd(p.target);
  }
}

}  // namespace batchfetch::testing

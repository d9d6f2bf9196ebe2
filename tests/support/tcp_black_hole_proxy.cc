#include "tests/support/tcp_black_hole_proxy.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace batchfetch::testing {

absl::StatusOr<std::unique_ptr<TcpBlackHoleProxy>> TcpBlackHoleProxy::Start(
    int target_port, const std::string& target_host) {
  absl::StatusOr<LoopbackListener> listener = LoopbackListener::Open();
  if (!listener.ok()) return listener.status();
  return std::unique_ptr<TcpBlackHoleProxy>(
      new TcpBlackHoleProxy(*std::move(listener), target_host, target_port));
}

TcpBlackHoleProxy::TcpBlackHoleProxy(LoopbackListener listener,
                                     std::string target_host, int target_port)
    : listener_(std::move(listener)),
      target_host_(std::move(target_host)),
      target_port_(target_port) {
  thread_ = std::thread([this] { Run(); });
}

TcpBlackHoleProxy::~TcpBlackHoleProxy() {
  stop_.store(true);
  listener_.Wake();
  thread_.join();
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

  while (!stop_.load()) {
    std::vector<pollfd> fds;
    fds.push_back({listener_.listen_fd(), POLLIN, 0});
    fds.push_back({listener_.wake_fd(), POLLIN, 0});
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
            CloseFd(p.client);
            CloseFd(p.target);
          } else {
            CloseFd(p.target);
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
            CloseFd(p.client);
            CloseFd(p.target);
            continue;
          }
        }
        if (!SendAll(to, buffer.data(), static_cast<size_t>(n))) {
          CloseFd(p.client);
          CloseFd(p.target);
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
      int client = listener_.Accept();
      if (client >= 0) {
        accepted_.fetch_add(1);
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
    CloseFd(p.client);
    CloseFd(p.target);
  }
}

}  // namespace batchfetch::testing

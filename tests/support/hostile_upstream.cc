#include "tests/support/hostile_upstream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace batchfetch::testing {
namespace {

// The endless behaviours stop here, so a client that never gives up cannot
// make a test run forever.
constexpr size_t kMaxEndlessBytes = 64 << 20;

// Writes all of `data`; false once the peer is gone (or the fd was shut
// down). MSG_NOSIGNAL: a vanished peer must not raise SIGPIPE.
bool SendAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    const ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// A complete response with "Connection: close".
std::string Response(absl::string_view status_line, absl::string_view body,
                     absl::string_view extra_headers = "") {
  return absl::StrCat("HTTP/1.1 ", status_line,
                      "\r\nContent-Type: application/json\r\n"
                      "Content-Length: ",
                      body.size(), "\r\n", extra_headers,
                      "Connection: close\r\n\r\n", body);
}

}  // namespace

absl::StatusOr<std::unique_ptr<HostileUpstream>> HostileUpstream::Start() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(strerror(errno));
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      listen(fd, 128) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string error = strerror(errno);
    close(fd);
    return absl::InternalError(absl::StrCat("hostile upstream: ", error));
  }
  const int wake = eventfd(0, EFD_CLOEXEC);
  if (wake < 0) {
    close(fd);
    return absl::InternalError(strerror(errno));
  }
  return std::unique_ptr<HostileUpstream>(
      new HostileUpstream(fd, wake, ntohs(addr.sin_port)));
}

HostileUpstream::HostileUpstream(int listen_fd, int wake_fd, int port)
    : listen_fd_(listen_fd), wake_fd_(wake_fd), port_(port) {
  accept_thread_ = std::thread([this] { AcceptLoop(); });
}

HostileUpstream::~HostileUpstream() {
  stopping_.store(true);
  const uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
  accept_thread_.join();
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    // Ends blocked reads (they see EOF) and writes (EPIPE); each thread
    // then closes its own fd.
    for (int fd : open_fds_) shutdown(fd, SHUT_RDWR);
    threads = std::move(connection_threads_);
  }
  for (std::thread& t : threads) t.join();
  close(listen_fd_);
  close(wake_fd_);
}

std::string HostileUpstream::Url(absl::string_view path_and_query) const {
  return absl::StrCat("http://127.0.0.1:", port_, path_and_query);
}

int HostileUpstream::requests(const std::string& path) const {
  absl::MutexLock lock(&mu_);
  auto it = requests_.find(path);
  return it == requests_.end() ? 0 : it->second;
}

void HostileUpstream::AcceptLoop() {
  while (!stopping_.load()) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) continue;
    if (fds[1].revents != 0) break;
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    absl::MutexLock lock(&mu_);
    open_fds_.push_back(fd);
    connection_threads_.emplace_back([this, fd] { Serve(fd); });
  }
}

void HostileUpstream::Serve(int fd) {
  std::string head;
  char buf[4096];
  while (!absl::StrContains(head, "\r\n\r\n") && head.size() < (64 << 10)) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    head.append(buf, static_cast<size_t>(n));
  }
  // "GET /path?query HTTP/1.1": the path is between the first space and the
  // next space or '?'.
  std::string path;
  const size_t start = head.find(' ');
  if (start != std::string::npos) {
    const size_t end = head.find_first_of(" ?", start + 1);
    path = head.substr(start + 1, end == std::string::npos ? std::string::npos
                                                           : end - start - 1);
  }
  {
    absl::MutexLock lock(&mu_);
    ++requests_[path];
  }
  bool reset = false;
  if (path == "/endless-headers") {
    if (SendAll(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")) {
      const std::string pad(1000, 'h');
      for (size_t sent = 0, i = 0; sent < kMaxEndlessBytes; ++i) {
        const std::string line = absl::StrCat("X-Pad-", i, ": ", pad, "\r\n");
        if (!SendAll(fd, line)) break;
        sent += line.size();
      }
    }
  } else if (path == "/bad-chunked") {
    SendAll(fd,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            "zz\r\n{}\r\n0\r\n\r\n");
  } else if (path == "/reset-mid-body") {
    SendAll(fd,
            absl::StrCat("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         "Content-Length: 1000\r\n\r\n",
                         std::string(100, ' ')));
    // Let the client read what was sent, so the reset hits mid-body rather
    // than racing the headers.
    usleep(50 * 1000);
    reset = true;
  } else if (path == "/short-body") {
    SendAll(fd,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\nConnection: close\r\n\r\n[1,2,3,4,5");
  } else if (path == "/endless-body") {
    if (SendAll(fd,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                "Connection: close\r\n\r\n[")) {
      const std::string chunk = [] {
        std::string s;
        for (int i = 0; i < 2048; ++i) s += "0,";
        return s;
      }();
      for (size_t sent = 0; sent < kMaxEndlessBytes; sent += chunk.size()) {
        if (!SendAll(fd, chunk)) break;
      }
    }
  } else if (path == "/deep-json") {
    SendAll(fd, Response("200 OK",
                         std::string(10000, '[') + std::string(10000, ']')));
  } else if (path == "/bad-utf8-json") {
    SendAll(fd, Response("200 OK", "{\"s\":\"bad \xFF byte\"}"));
  } else if (path == "/surrogate-json") {
    SendAll(fd, Response("200 OK", R"({"s":"lone \udc00 surrogate"})"));
  } else if (path == "/redirect-loop") {
    SendAll(fd, Response("302 Found", "", "Location: /redirect-loop\r\n"));
  } else if (path == "/redirect-bad-utf8") {
    SendAll(fd,
            Response("302 Found", "", "Location: /landed-\xFF\xFE?x=1\r\n"));
  } else if (path == "/redirect-long") {
    SendAll(fd, Response("302 Found", "",
                         absl::StrCat("Location: /landed-",
                                      std::string(70000, 'x'), "\r\n")));
  } else if (path == "/long-content-type") {
    SendAll(fd, absl::StrCat("HTTP/1.1 200 OK\r\nContent-Type: application/"
                             "json; pad=",
                             std::string(1000 - 22, 'p'),
                             "\r\nContent-Length: 11\r\nConnection: "
                             "close\r\n\r\n{\"ok\":true}"));
  } else if (absl::StartsWith(path, "/landed-")) {
    SendAll(fd, Response("200 OK", R"({"landed":true})"));
  } else if (path == "/empty") {
    SendAll(fd, Response("200 OK", ""));
  } else if (path == "/silent") {
    // Wait, answering nothing, until the client leaves (EOF) or the
    // destructor shuts the socket down.
    while (true) {
      const ssize_t n = read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
    }
  } else {
    SendAll(fd, Response("200 OK", R"({"ok":true})"));
  }
  {
    absl::MutexLock lock(&mu_);
    open_fds_.erase(std::find(open_fds_.begin(), open_fds_.end(), fd));
  }
  if (reset) {
    const linger abort_on_close{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_on_close,
               sizeof(abort_on_close));
  } else {
    shutdown(fd, SHUT_WR);
  }
  close(fd);
}

}  // namespace batchfetch::testing

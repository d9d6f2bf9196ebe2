#include "tests/support/test_upstream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace batchfetch::testing {
namespace {

constexpr size_t kMaxHeaderBytes = 64 * 1024;

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes %XX escapes and '+' (as space); malformed escapes are kept as is.
std::string UrlDecode(absl::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out.push_back(' ');
    } else if (in[i] == '%' && i + 2 < in.size() && HexValue(in[i + 1]) >= 0 &&
               HexValue(in[i + 2]) >= 0) {
      out.push_back(
          static_cast<char>(HexValue(in[i + 1]) * 16 + HexValue(in[i + 2])));
      i += 2;
    } else {
      out.push_back(in[i]);
    }
  }
  return out;
}

std::string JsonEscape(absl::string_view in) {
  std::string out;
  for (char c : in) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppend(&out, "\\u00", absl::Hex(c, absl::kZeroPad2));
        } else {
          out.push_back(c);
        }
    }
  }
  return out;
}

const char* ReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Status";
  }
}

// Feeds `in` to `z` and appends the produced bytes to `out`.
void Deflate(z_stream* z, absl::string_view in, int flush, std::string* out) {
  z->next_in =
      reinterpret_cast<Bytef*>(const_cast<char*>(in.empty() ? "" : in.data()));
  z->avail_in = static_cast<uInt>(in.size());
  unsigned char buf[16384];
  int rc;
  do {
    z->next_out = buf;
    z->avail_out = sizeof(buf);
    rc = deflate(z, flush);
    out->append(reinterpret_cast<char*>(buf), sizeof(buf) - z->avail_out);
  } while (z->avail_out == 0 || (flush == Z_FINISH && rc != Z_STREAM_END));
}

// Gzip of the JSON array "[0,0,...,0]" of exactly `n` decoded bytes ("[ 0,..."
// for even n; "", "0", "[]" for n < 3), compressed from a small repeated
// buffer rather than an n-byte one.
std::string GzipZeros(size_t n) {
  std::string prefix, suffix;
  size_t pairs = 0;  // Count of "0," between prefix and suffix.
  if (n == 1) {
    suffix = "0";
  } else if (n == 2) {
    suffix = "[]";
  } else if (n >= 3) {
    prefix = n % 2 == 1 ? "[" : "[ ";
    suffix = "0]";
    pairs = (n - prefix.size() - suffix.size()) / 2;
  }
  z_stream z = {};
  if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 9,
                   Z_DEFAULT_STRATEGY) != Z_OK) {
    return "";
  }
  std::string out;
  Deflate(&z, prefix, Z_NO_FLUSH, &out);
  std::string chunk;
  for (int i = 0; i < 32768; ++i) chunk += "0,";
  const size_t chunk_pairs = chunk.size() / 2;
  while (pairs > 0) {
    const size_t now = std::min(pairs, chunk_pairs);
    Deflate(&z, absl::string_view(chunk).substr(0, 2 * now), Z_NO_FLUSH, &out);
    pairs -= now;
  }
  Deflate(&z, suffix, Z_FINISH, &out);
  deflateEnd(&z);
  return out;
}

// GzipZeros(n), computed once per n for the whole process.
std::shared_ptr<const std::string> CachedGzipZeros(size_t n) {
  static absl::Mutex mu(absl::kConstInit);
  static auto* cache =
      new std::map<size_t, std::shared_ptr<const std::string>>();
  // Held while compressing so concurrent requests for n compress it once.
  absl::MutexLock lock(&mu);
  std::shared_ptr<const std::string>& entry = (*cache)[n];
  if (entry == nullptr)
    entry = std::make_shared<const std::string>(GzipZeros(n));
  return entry;
}

// Sends all of `data`; false if the peer is gone.
bool SendAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Sleeps for `duration` while watching `fd`; returns false as soon as the peer
// disconnects (or `stopping` becomes true), true after the full duration.
// Pipelined request bytes from the peer are left unread.
bool WaitWatchingPeer(int fd, absl::Duration duration,
                      const std::atomic<bool>& stopping) {
  const absl::Time deadline = absl::Now() + duration;
  short events = POLLIN | POLLRDHUP;
  while (true) {
    if (stopping.load()) return false;
    absl::Duration remaining = deadline - absl::Now();
    if (remaining <= absl::ZeroDuration()) return true;
    // Capped so that `stopping` is re-checked regularly.
    int timeout_ms = static_cast<int>(std::min<int64_t>(
        absl::ToInt64Milliseconds(absl::Ceil(remaining, absl::Milliseconds(1))),
        100));
    pollfd p = {fd, events, 0};
    int rc = poll(&p, 1, std::max(timeout_ms, 1));
    if (rc < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (rc == 0) continue;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return false;
    if (p.revents & POLLIN) {
      char c;
      ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n == 0) return false;
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return false;
      }
      if (n > 0) events = POLLRDHUP;  // Pipelined data; only watch for hangup.
    }
  }
}

struct Request {
  std::string method;
  std::string target;
  std::string path;
  std::vector<std::pair<std::string, std::string>> params;
  bool http10 = false;
  bool connection_close = false;
  bool connection_keep_alive = false;
  bool expect_continue = false;
  bool chunked = false;
  size_t content_length = 0;
  std::string body;

  const std::string* Param(absl::string_view name) const {
    const std::string* found = nullptr;
    for (const auto& [k, v] : params) {
      if (k == name) found = &v;  // Last occurrence wins.
    }
    return found;
  }
  int IntParam(absl::string_view name, int default_value) const {
    const std::string* v = Param(name);
    int result;
    return v != nullptr && absl::SimpleAtoi(*v, &result) ? result
                                                         : default_value;
  }
};

// Parses the request line and headers (`head` excludes the blank line).
bool ParseHead(absl::string_view head, Request* req) {
  std::vector<absl::string_view> lines = absl::StrSplit(head, "\r\n");
  if (lines.empty()) return false;
  std::vector<absl::string_view> parts =
      absl::StrSplit(lines[0], ' ', absl::SkipEmpty());
  if (parts.size() != 3 || !absl::StartsWith(parts[2], "HTTP/1.")) {
    return false;
  }
  req->method = std::string(parts[0]);
  req->target = std::string(parts[1]);
  req->http10 = parts[2] == "HTTP/1.0";
  std::pair<absl::string_view, absl::string_view> path_query =
      absl::StrSplit(parts[1], absl::MaxSplits('?', 1));
  req->path = UrlDecode(path_query.first);
  for (absl::string_view kv :
       absl::StrSplit(path_query.second, '&', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> p =
        absl::StrSplit(kv, absl::MaxSplits('=', 1));
    req->params.emplace_back(UrlDecode(p.first), UrlDecode(p.second));
  }
  for (size_t i = 1; i < lines.size(); ++i) {
    std::pair<absl::string_view, absl::string_view> h =
        absl::StrSplit(lines[i], absl::MaxSplits(':', 1));
    absl::string_view name = absl::StripAsciiWhitespace(h.first);
    const std::string value =
        absl::AsciiStrToLower(absl::StripAsciiWhitespace(h.second));
    if (absl::EqualsIgnoreCase(name, "Content-Length")) {
      if (!absl::SimpleAtoi(value, &req->content_length)) return false;
    } else if (absl::EqualsIgnoreCase(name, "Connection")) {
      req->connection_close |= absl::StrContains(value, "close");
      req->connection_keep_alive |= absl::StrContains(value, "keep-alive");
    } else if (absl::EqualsIgnoreCase(name, "Expect")) {
      req->expect_continue = value == "100-continue";
    } else if (absl::EqualsIgnoreCase(name, "Transfer-Encoding")) {
      req->chunked = absl::StrContains(value, "chunked");
    }
  }
  return true;
}

enum class Outcome { kKeepAlive, kClose, kAborted };

// Writes the response for `req` as configured by its query parameters. If
// `fail_status` is nonzero, this is a fail_first failure with that status.
Outcome Respond(int fd, const Request& req, int fail_status,
                const std::atomic<bool>& stopping) {
  const int delay_ms = req.IntParam("delay_ms", 0);
  if (delay_ms > 0 &&
      !WaitWatchingPeer(fd, absl::Milliseconds(delay_ms), stopping)) {
    return Outcome::kAborted;
  }
  if (req.IntParam("drop", 0) == 1) return Outcome::kClose;

  int status = fail_status != 0 ? fail_status : req.IntParam("status", 200);
  std::string body;
  std::string extra_headers;
  if (const std::string* retry_after = req.Param("retry_after")) {
    absl::StrAppend(&extra_headers, "Retry-After: ", *retry_after, "\r\n");
  }
  const std::string* gzip_zeros = req.Param("gzip_zeros");
  if (fail_status == 0 && gzip_zeros != nullptr) {
    size_t n = 0;
    (void)absl::SimpleAtoi(*gzip_zeros, &n);
    body = *CachedGzipZeros(n);
    absl::StrAppend(&extra_headers, "Content-Encoding: gzip\r\n");
  } else if (fail_status == 0 && req.path == "/redirect") {
    status = req.IntParam("status", 302);
    const std::string* to = req.Param("to");
    absl::StrAppend(&extra_headers, "Location: ", to ? *to : "/", "\r\n");
    body = absl::StrCat("{\"redirect\":\"", JsonEscape(to ? *to : "/"), "\"}");
  } else if (const std::string* literal = req.Param("body")) {
    body = *literal;
  } else if (const std::string* bytes = req.Param("bytes")) {
    size_t n = 0;
    (void)absl::SimpleAtoi(*bytes, &n);
    constexpr absl::string_view kOverhead = "{\"pad\":\"\"}";
    body = absl::StrCat(
        "{\"pad\":\"",
        std::string(n > kOverhead.size() ? n - kOverhead.size() : 0, 'x'),
        "\"}");
  } else if (req.IntParam("echo", 0) == 1) {
    body = req.body;
  } else {
    body = absl::StrCat("{\"ok\":true,\"path\":\"", JsonEscape(req.path),
                        "\",\"n\":", req.IntParam("n", 0), "}");
  }
  const std::string* ctype = req.Param("ctype");
  const bool no_length = req.IntParam("no_length", 0) == 1;
  const bool close = no_length || req.IntParam("close", 0) == 1 ||
                     req.connection_close ||
                     (req.http10 && !req.connection_keep_alive);
  std::string head =
      absl::StrCat("HTTP/1.1 ", status, " ", ReasonPhrase(status), "\r\n",
                   "Content-Type: ", ctype ? *ctype : "application/json",
                   "\r\n", extra_headers);
  if (!no_length)
    absl::StrAppend(&head, "Content-Length: ", body.size(), "\r\n");
  absl::StrAppend(&head, "Connection: ", close ? "close" : "keep-alive",
                  "\r\n\r\n");
  if (req.method == "HEAD") body.clear();

  const int drip_ms = req.IntParam("drip_ms", 0);
  if (drip_ms <= 0 || body.empty()) {
    if (!SendAll(fd, head + body)) return Outcome::kAborted;
  } else {
    if (!SendAll(fd, head)) return Outcome::kAborted;
    for (size_t i = 0; i < body.size(); ++i) {
      if (!WaitWatchingPeer(fd, absl::Milliseconds(drip_ms), stopping) ||
          !SendAll(fd, absl::string_view(body).substr(i, 1))) {
        return Outcome::kAborted;
      }
    }
  }
  return close ? Outcome::kClose : Outcome::kKeepAlive;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TestUpstream>> TestUpstream::Start() {
  return Start("127.0.0.1");
}

absl::StatusOr<std::unique_ptr<TestUpstream>> TestUpstream::Start(
    const std::string& ipv4_address) {
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  if (inet_pton(AF_INET, ipv4_address.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("not an IPv4 address: ", ipv4_address));
  }
  addr.sin_port = 0;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(fd, 4096) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    absl::Status error = absl::InternalError(absl::StrCat(
        "bind/listen on ", ipv4_address, ": ", std::strerror(errno)));
    close(fd);
    return error;
  }
  int wake_fd = eventfd(0, EFD_CLOEXEC);
  if (wake_fd < 0) {
    absl::Status error =
        absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
    close(fd);
    return error;
  }
  std::unique_ptr<TestUpstream> upstream(
      new TestUpstream(fd, wake_fd, ntohs(addr.sin_port), ipv4_address));
  upstream->accept_thread_ =
      std::thread([u = upstream.get()] { u->AcceptLoop(); });
  return upstream;
}

TestUpstream::TestUpstream(int listen_fd, int wake_fd, int port,
                           std::string address)
    : listen_fd_(listen_fd),
      wake_fd_(wake_fd),
      port_(port),
      address_(std::move(address)) {}

TestUpstream::~TestUpstream() {
  stopping_.store(true);
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
  if (accept_thread_.joinable()) accept_thread_.join();
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&conn_mu_);
    for (auto& [id, conn] : connections_) {
      if (conn.fd >= 0) shutdown(conn.fd, SHUT_RDWR);
      threads.push_back(std::move(conn.thread));
    }
  }
  for (std::thread& t : threads) {
    if (t.joinable()) t.join();
  }
  close(listen_fd_);
  close(wake_fd_);
}

std::string TestUpstream::Url(absl::string_view path_and_query) const {
  return absl::StrCat("http://", address_, ":", port_, path_and_query);
}

void TestUpstream::AcceptLoop() {
  int64_t next_id = 0;
  while (!stopping_.load()) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    int rc = poll(fds, 2, 1000);
    ReapFinishedConnections();
    if (rc < 0 && errno != EINTR) break;
    if (rc <= 0 || (fds[1].revents & POLLIN)) continue;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      // EMFILE and friends: back off instead of spinning.
      if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
        absl::SleepFor(absl::Milliseconds(10));
      }
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    {
      absl::MutexLock lock(&stats_mu_);
      ++connections_accepted_;
    }
    const int64_t id = next_id++;
    absl::MutexLock lock(&conn_mu_);
    Connection& conn = connections_[id];
    conn.fd = fd;
    conn.thread = std::thread([this, id, fd] { ServeConnection(id, fd); });
  }
}

void TestUpstream::ReapFinishedConnections() {
  std::vector<std::thread> finished;
  {
    absl::MutexLock lock(&conn_mu_);
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (it->second.done) {
        finished.push_back(std::move(it->second.thread));
        it = connections_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (std::thread& t : finished) t.join();
}

void TestUpstream::ServeConnection(int64_t id, int fd) {
  std::string buf;
  char chunk[16384];
  // Appends at least one more chunk from the peer to `buf`; false on EOF/error.
  auto read_more = [&]() {
    while (true) {
      ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
      if (n > 0) {
        buf.append(chunk, static_cast<size_t>(n));
        return true;
      }
      if (n < 0 && errno == EINTR) continue;
      return false;
    }
  };
  while (!stopping_.load()) {
    size_t head_end;
    bool have_head = true;
    while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
      if (buf.size() > kMaxHeaderBytes) {
        SendAll(fd,
                "HTTP/1.1 431 Request Header Fields Too Large\r\n"
                "Content-Type: text/plain\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n");
        have_head = false;
        break;
      }
      if (!read_more()) {
        have_head = false;
        break;
      }
    }
    if (!have_head) break;
    Request req;
    if (!ParseHead(absl::string_view(buf).substr(0, head_end), &req)) {
      SendAll(fd,
              "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
              "Content-Length: 0\r\nConnection: close\r\n\r\n");
      break;
    }
    buf.erase(0, head_end + 4);
    OnRequestStart(req.method, req.target);
    const int fail_first = req.IntParam("fail_first", 0);
    const int fail_status =
        fail_first > 0 && CountFailFirst(req.target, fail_first)
            ? req.IntParam("fail_status", 503)
            : 0;
    if (req.chunked) {
      SendAll(fd,
              "HTTP/1.1 411 Length Required\r\nContent-Type: text/plain\r\n"
              "Content-Length: 0\r\nConnection: close\r\n\r\n");
      OnRequestEnd(/*aborted=*/false);
      break;
    }
    if (req.expect_continue && req.content_length > buf.size()) {
      SendAll(fd, "HTTP/1.1 100 Continue\r\n\r\n");
    }
    bool body_complete = true;
    while (buf.size() < req.content_length) {
      if (!read_more()) {
        body_complete = false;
        break;
      }
    }
    if (!body_complete) {
      OnRequestEnd(/*aborted=*/true);
      break;
    }
    req.body = buf.substr(0, req.content_length);
    buf.erase(0, req.content_length);
    Outcome outcome = Respond(fd, req, fail_status, stopping_);
    OnRequestEnd(outcome == Outcome::kAborted);
    if (outcome != Outcome::kKeepAlive) break;
  }
  absl::MutexLock lock(&conn_mu_);
  close(fd);
  Connection& conn = connections_[id];
  conn.fd = -1;
  conn.done = true;
}

void TestUpstream::OnRequestStart(absl::string_view method,
                                  absl::string_view target) {
  absl::MutexLock lock(&stats_mu_);
  ++total_requests_;
  ++in_flight_;
  peak_in_flight_ = std::max(peak_in_flight_, in_flight_);
  arrivals_.push_back(
      Arrival{std::string(target), absl::Now(), std::string(method)});
}

bool TestUpstream::CountFailFirst(absl::string_view target, int k) {
  absl::MutexLock lock(&stats_mu_);
  auto it = fail_first_seen_.find(target);
  if (it == fail_first_seen_.end()) {
    it = fail_first_seen_.emplace(std::string(target), 0).first;
  }
  return it->second++ < k;
}

void TestUpstream::OnRequestEnd(bool aborted) {
  absl::MutexLock lock(&stats_mu_);
  --in_flight_;
  if (aborted) ++aborted_;
}

int TestUpstream::in_flight() const {
  absl::MutexLock lock(&stats_mu_);
  return in_flight_;
}

int TestUpstream::peak_in_flight() const {
  absl::MutexLock lock(&stats_mu_);
  return peak_in_flight_;
}

int TestUpstream::total_requests() const {
  absl::MutexLock lock(&stats_mu_);
  return total_requests_;
}

int TestUpstream::aborted() const {
  absl::MutexLock lock(&stats_mu_);
  return aborted_;
}

int TestUpstream::connections_accepted() const {
  absl::MutexLock lock(&stats_mu_);
  return connections_accepted_;
}

std::vector<TestUpstream::Arrival> TestUpstream::arrivals() const {
  absl::MutexLock lock(&stats_mu_);
  return arrivals_;
}

void TestUpstream::ResetStats() {
  absl::MutexLock lock(&stats_mu_);
  peak_in_flight_ = in_flight_;
  total_requests_ = 0;
  aborted_ = 0;
  connections_accepted_ = 0;
  arrivals_.clear();
  fail_first_seen_.clear();
}

bool TestUpstream::AwaitCounter(const int* counter, int n,
                                absl::Duration timeout) const {
  auto reached = [counter, n]() { return *counter >= n; };
  absl::MutexLock lock(&stats_mu_);
  return stats_mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
}

bool TestUpstream::AwaitInFlightAtLeast(int n, absl::Duration timeout) const {
  return AwaitCounter(&in_flight_, n, timeout);
}

bool TestUpstream::AwaitAbortedAtLeast(int n, absl::Duration timeout) const {
  return AwaitCounter(&aborted_, n, timeout);
}

bool TestUpstream::AwaitTotalRequestsAtLeast(int n,
                                             absl::Duration timeout) const {
  return AwaitCounter(&total_requests_, n, timeout);
}

}  // namespace batchfetch::testing

#include "service/fetch/curl_driver.h"

#include <curl/curl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "service/base/clock.h"

namespace batchfetch {
namespace {

constexpr int kMaxEpollEvents = 256;
// Longest single epoll_wait, so a lost wake-up cannot stall us for long.
constexpr absl::Duration kMaxPollWait = absl::Seconds(60);

absl::Duration TimeInfo(CURL* easy, CURLINFO info) {
  curl_off_t us = 0;
  curl_easy_getinfo(easy, info, &us);
  return absl::Microseconds(us);
}

// Records the first failing curl_easy_setopt, naming the option.
class OptionSetter {
 public:
  explicit OptionSetter(CURL* easy) : easy_(easy) {}
  template <typename T>
  void operator()(CURLoption option, T value, const char* name) {
    const CURLcode rc = curl_easy_setopt(easy_, option, value);
    if (rc != CURLE_OK && status_.ok()) {
      status_ = absl::InternalError(
          absl::StrCat("setting ", name, ": ", curl_easy_strerror(rc)));
    }
  }
  const absl::Status& status() const { return status_; }

 private:
  CURL* const easy_;
  absl::Status status_;
};
#define BF_SET(setter, option, value) setter(option, value, #option)

// An entry for CURLOPT_RESOLVE: "name:port:address[,address...]", IPv6
// addresses in brackets. (curl's own forms that remove an entry, "-name:
// port", or set a timeout, "+name", are not accepted.)
absl::Status ValidateResolveEntry(absl::string_view entry) {
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("resolve entry '", entry, "': ", why,
                     " (expected name:port:address[,address...])"));
  };
  const std::vector<absl::string_view> parts =
      absl::StrSplit(entry, absl::MaxSplits(':', 2));
  if (parts.size() != 3) return bad("not three ':'-separated parts");
  if (parts[0].empty() || parts[0][0] == '-' || parts[0][0] == '+') {
    return bad("no name");
  }
  int port = 0;
  if (!absl::SimpleAtoi(parts[1], &port) || port < 1 || port > 65535) {
    return bad("the port must be 1 to 65535");
  }
  for (absl::string_view address : absl::StrSplit(parts[2], ',')) {
    absl::string_view bare = address;
    if (absl::ConsumePrefix(&bare, "[") && !absl::ConsumeSuffix(&bare, "]")) {
      return bad(absl::StrCat("'", address, "' lacks its ']'"));
    }
    if (!IpAddress::Parse(bare).ok()) {
      return bad(absl::StrCat("'", address, "' is not an IP address"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

TransferResult MapCurlCode(int curl_code) {
  switch (static_cast<CURLcode>(curl_code)) {
    case CURLE_OK:
      return TransferResult::kResponse;
    case CURLE_OPERATION_TIMEDOUT:
      return TransferResult::kTimeout;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
      return TransferResult::kDnsError;
    case CURLE_COULDNT_CONNECT:
      return TransferResult::kConnectError;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
      return TransferResult::kTlsError;
    case CURLE_FILESIZE_EXCEEDED:
      return TransferResult::kTooLarge;
    case CURLE_UNSUPPORTED_PROTOCOL:
      // A redirect to a scheme other than http(s) (first URLs are validated
      // up front), or a reply that is not HTTP (libcurl's HTTP/0.9
      // refusal): the transfer's last URL tells them apart (ClassifyEnd).
      return TransferResult::kBlocked;
    default:
      return TransferResult::kTransportError;
  }
}

struct Shard;

// One running attempt. Owned by the driver from Start to completion/Abort.
struct DriverTransfer {
  Shard* shard = nullptr;  // the multi handle running it
  TransferToken token;
  CurlDriver::TransferId id = 0;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  std::string body;
  int64_t max_body_bytes = 0;
  bool too_large = false;
  bool head = false;
  bool timeout_is_deadline = false;
  absl::Duration timeout;
  const EgressPolicy* egress = nullptr;
  // Why the egress policy refused a request on the connection it was to go
  // out on (CURLOPT_PREREQFUNCTION): always reported as blocked.
  std::string refused_request;
  // The connection attempts of the current hop, counted since the last
  // request the policy let out: why it denied the first address it denied
  // a socket for, and how many addresses it allowed one for. One denied
  // address is no verdict by itself: curl goes on to the name's next
  // address (happy eyeballs), which may connect and be answered.
  std::string denied_address;
  int allowed_addresses = 0;
  std::string socket_error;  // epoll_ctl refused its socket
  char error[CURL_ERROR_SIZE] = {0};
};

// One multi handle (connection cache, DNS cache, timer) of the driver.
// libcurl 7.88 walks a host's whole connection list on every transfer start
// (ConnectionExists) and every curl_multi_remove_handle
// (close_connect_only), so N smaller caches cost less per request than one.
struct Shard {
  void* impl = nullptr;  // the CurlDriver::Impl
  uint32_t index = 0;
  CURLM* multi = nullptr;
  MonoTime deadline = MonoTime::max();  // curl's timer for this multi
  int running = 0;                      // transfers in this multi
};

constexpr uint64_t kWakeData = ~uint64_t{0};
uint64_t EventData(uint32_t shard, curl_socket_t fd) {
  return (uint64_t{shard} << 32) | static_cast<uint32_t>(fd);
}

class CurlDriver::Impl {
 public:
  Impl(const Options& options, FetchStats* stats)
      : options_(options),
        stats_(stats),
        shard_count_(std::max(1, options.multi_handles)),
        lazy_epoll_(options.lazy_epoll) {}

  absl::Status Init() {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll_fd_ < 0 || wake_fd_ < 0) {
      return absl::InternalError(
          absl::StrCat("curl driver init failed: ", std::strerror(errno)));
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kWakeData;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0) {
      return absl::InternalError(
          absl::StrCat("epoll_ctl(eventfd): ", std::strerror(errno)));
    }
    for (int i = 0; i < shard_count_; ++i) {
      auto shard = std::make_unique<Shard>();
      shard->impl = this;
      shard->index = static_cast<uint32_t>(i);
      shard->multi = curl_multi_init();
      if (shard->multi == nullptr) {
        return absl::InternalError("curl_multi_init failed");
      }
      CURLM* multi = shard->multi;
      Shard* data = shard.get();
      shards_.push_back(std::move(shard));
      CURLMcode rc = CURLM_OK;
      auto set = [&](CURLMoption option, auto value) {
        if (rc == CURLM_OK) rc = curl_multi_setopt(multi, option, value);
      };
      set(CURLMOPT_SOCKETFUNCTION, &Impl::OnSocket);
      set(CURLMOPT_SOCKETDATA, data);
      set(CURLMOPT_TIMERFUNCTION, &Impl::OnTimer);
      set(CURLMOPT_TIMERDATA, data);
      // Keep every connection our concurrency may use alive for reuse. The
      // multi handle also holds the DNS cache shared by all its transfers.
      set(CURLMOPT_MAXCONNECTS,
          static_cast<long>((options_.max_connections + shard_count_ - 1) /
                            shard_count_));
      set(CURLMOPT_PIPELINING, static_cast<long>(CURLPIPE_MULTIPLEX));
      if (rc != CURLM_OK) {
        return absl::InternalError(
            absl::StrCat("curl_multi_setopt: ", curl_multi_strerror(rc)));
      }
    }
    default_headers_ = curl_slist_append(nullptr, "Accept: application/json");
    // No "Expect: 100-continue" round trip for request bodies.
    default_headers_ = curl_slist_append(default_headers_, "Expect:");
    if (default_headers_ == nullptr) {
      return absl::ResourceExhaustedError("out of memory for headers");
    }
    for (const std::string& entry : options_.resolve) {
      if (absl::Status valid = ValidateResolveEntry(entry); !valid.ok()) {
        return valid;
      }
      curl_slist* appended = curl_slist_append(resolve_, entry.c_str());
      if (appended == nullptr) {
        return absl::ResourceExhaustedError("out of memory for resolve");
      }
      resolve_ = appended;
    }
    return absl::OkStatus();
  }

  ~Impl() {
    for (DriverTransfer* t : slots_) {
      if (t == nullptr) continue;
      curl_multi_remove_handle(t->shard->multi, t->easy);
      curl_easy_cleanup(t->easy);
      curl_slist_free_all(t->headers);
      delete t;
    }
    for (CURL* easy : idle_easy_) curl_easy_cleanup(easy);
    curl_slist_free_all(default_headers_);
    curl_slist_free_all(resolve_);
    for (auto& shard : shards_) {
      if (shard->multi != nullptr) curl_multi_cleanup(shard->multi);
    }
    if (epoll_fd_ >= 0) close(epoll_fd_);
    if (wake_fd_ >= 0) close(wake_fd_);
  }

  absl::StatusOr<TransferId> Start(const TransferSpec& spec) {
    absl::StatusOr<CURL*> easy_or = TakeEasy();
    if (!easy_or.ok()) return easy_or.status();
    CURL* easy = *easy_or;
    auto* t = new DriverTransfer;
    t->token = spec.token;
    t->easy = easy;
    t->max_body_bytes =
        spec.max_body_bytes > 0
            ? std::min(spec.max_body_bytes, options_.max_body_bytes)
            : options_.max_body_bytes;
    t->timeout = spec.timeout;
    t->timeout_is_deadline = spec.timeout_is_deadline;
    t->egress = options_.egress.get();
    // The least busy multi: keeps each one's connection count (and what
    // libcurl scans per request) near in-flight / shards, and idle
    // connections reused across batches.
    t->shard = shards_[0].get();
    for (auto& shard : shards_) {
      if (shard->running < t->shard->running) t->shard = shard.get();
    }
    const FetchSpec& request = *spec.request;
    OptionSetter set(easy);
    // Options common to every transfer were set when the handle was made;
    // these differ per request (all of them, every time, since handles are
    // reused without curl_easy_reset).
    BF_SET(set, CURLOPT_PRIVATE, t);
    BF_SET(set, CURLOPT_URL, request.url.c_str());
    BF_SET(set, CURLOPT_WRITEDATA, t);
    BF_SET(set, CURLOPT_ERRORBUFFER, t->error);
    if (t->egress != nullptr || lazy_epoll_) {
      BF_SET(set, CURLOPT_OPENSOCKETDATA, t);
    }
    if (t->egress != nullptr) BF_SET(set, CURLOPT_PREREQDATA, t);
    if (resolve_ != nullptr) {
      // libcurl loads the entries into the DNS cache of the multi running
      // the transfer, once per setting: set again on every start, as a
      // pooled handle may run in another multi (each has its own cache).
      BF_SET(set, CURLOPT_RESOLVE, resolve_);
    }
    // Per transfer: batches may cap bodies below the driver's limit (an
    // announced Content-Length over it fails before any byte is kept).
    BF_SET(set, CURLOPT_MAXFILESIZE_LARGE,
           static_cast<curl_off_t>(t->max_body_bytes));
    BF_SET(set, CURLOPT_TIMEOUT_MS,
           static_cast<long>(std::max<int64_t>(
               1, absl::ToInt64Milliseconds(
                      absl::Ceil(spec.timeout, absl::Milliseconds(1))))));
    // Back to a plain GET whatever the handle did before. (Setting
    // POSTFIELDS, even to null, selects POST; HTTPGET must come after it.)
    BF_SET(set, CURLOPT_POSTFIELDS, static_cast<const char*>(nullptr));
    BF_SET(set, CURLOPT_CUSTOMREQUEST, static_cast<const char*>(nullptr));
    BF_SET(set, CURLOPT_HTTPGET, 1L);
    BF_SET(set, CURLOPT_POSTREDIR, 0L);
    const HttpMethod method = spec.method;
    if (method == HttpMethod::kHead) {
      t->head = true;
      BF_SET(set, CURLOPT_NOBODY, 1L);
    } else if (method != HttpMethod::kGet || !request.body.empty()) {
      if (method != HttpMethod::kPost) {
        BF_SET(set, CURLOPT_CUSTOMREQUEST, MethodName(method).data());
      }
      if (!request.body.empty() || method == HttpMethod::kPost ||
          method == HttpMethod::kPut || method == HttpMethod::kPatch) {
        BF_SET(set, CURLOPT_POSTFIELDSIZE_LARGE,
               static_cast<curl_off_t>(request.body.size()));
        BF_SET(set, CURLOPT_POSTFIELDS, request.body.data());
        if (method != HttpMethod::kPost) {
          // A PUT/PATCH/DELETE keeps its method on 301-303 (custom
          // request); without this it would arrive there without its body.
          BF_SET(set, CURLOPT_POSTREDIR,
                 static_cast<long>(CURL_REDIR_POST_ALL));
        }
      }
    }
    // A request that sends a body never leaves its connection for reuse.
    // An upstream may answer without reading the body (many routes take
    // none); the unread bytes stay on the connection and are parsed as the
    // next request, whose answer would then be handed to whichever request
    // (another caller's, perhaps) reuses it next: request smuggling through
    // the pool. Only HTTP/1 framing could tell where the upstream thinks the
    // request ended, and we cannot see it. The price: POST-heavy workloads
    // pay a new connection (and TLS handshake) per request with a body.
    // Set every start: handles are reused.
    BF_SET(set, CURLOPT_FORBID_REUSE, request.body.empty() ? 0L : 1L);
    if (request.headers.empty()) {
      BF_SET(set, CURLOPT_HTTPHEADER, default_headers_);
    } else {
      bool has_accept = false;
      for (const auto& [name, value] : request.headers) {
        has_accept = has_accept || absl::EqualsIgnoreCase(name, "accept");
        const std::string line = value.empty()
                                     ? absl::StrCat(name, ";")
                                     : absl::StrCat(name, ": ", value);
        t->headers = curl_slist_append(t->headers, line.c_str());
      }
      if (!has_accept) {
        t->headers = curl_slist_append(t->headers, "Accept: application/json");
      }
      t->headers = curl_slist_append(t->headers, "Expect:");
      BF_SET(set, CURLOPT_HTTPHEADER, t->headers);
    }
    absl::Status status = set.status();
    if (status.ok()) {
      const CURLMcode rc = curl_multi_add_handle(t->shard->multi, easy);
      if (rc != CURLM_OK) {
        status = absl::InternalError(absl::StrCat("could not start transfer: ",
                                                  curl_multi_strerror(rc)));
      }
    }
    if (!status.ok()) {
      Release(t);
      return status;
    }
    t->id = Slot(t);
    ++t->shard->running;
    if (stats_ != nullptr) {
      stats_->transfers_in_flight.fetch_add(1, std::memory_order_relaxed);
      stats_->transfers_started.fetch_add(1, std::memory_order_relaxed);
    }
    return t->id;
  }

  void Abort(TransferId id) {
    if (id >= slots_.size() || slots_[id] == nullptr) return;
    DriverTransfer* t = slots_[id];
    curl_multi_remove_handle(t->shard->multi, t->easy);
    Finish(t);
  }

  void Poll(absl::Duration max_wait, std::vector<CompletedTransfer>* done) {
    absl::Duration left = std::min(max_wait, kMaxPollWait);
    const MonoTime now = SteadyNow();
    for (const auto& shard : shards_) {
      if (shard->deadline != MonoTime::max()) {
        left = std::min(left, Since(shard->deadline, now));
      }
    }
    const int wait_ms = left <= absl::ZeroDuration()
                            ? 0
                            : static_cast<int>(absl::ToInt64Milliseconds(
                                  absl::Ceil(left, absl::Milliseconds(1))));
    epoll_event events[kMaxEpollEvents];
    const int n = epoll_wait(epoll_fd_, events, kMaxEpollEvents, wait_ms);
    int still_running = 0;
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u64 == kWakeData) {
        uint64_t value;
        [[maybe_unused]] ssize_t r = read(wake_fd_, &value, sizeof(value));
        continue;
      }
      const auto fd = static_cast<curl_socket_t>(events[i].data.u64);
      Shard& shard = *shards_[events[i].data.u64 >> 32];
      if (lazy_epoll_ && Ours(fd) && !Wanted(fd)) {
        // An idle keep-alive connection left in the set spoke (usually:
        // the server closed it). curl does not watch it: drop it now.
        epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
        registered_[static_cast<size_t>(fd)] = 0;
        continue;
      }
      int flags = 0;
      if (events[i].events & EPOLLIN) flags |= CURL_CSELECT_IN;
      if (events[i].events & EPOLLOUT) flags |= CURL_CSELECT_OUT;
      if (events[i].events & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
      curl_multi_socket_action(shard.multi, fd, flags, &still_running);
    }
    const MonoTime after = SteadyNow();
    for (auto& shard : shards_) {
      if (shard->deadline <= after) {
        shard->deadline = MonoTime::max();
        curl_multi_socket_action(shard->multi, CURL_SOCKET_TIMEOUT, 0,
                                 &still_running);
      }
    }
    for (auto& shard : shards_) Collect(shard->multi, done);
    FailSockets(done);
  }

  void Wake() {
    uint64_t one = 1;
    // EAGAIN means the counter is already non-zero: a wake is pending.
    [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof(one));
  }

  // Every occupied slot is a running transfer.
  int running() const {
    return static_cast<int>(slots_.size() - free_slots_.size());
  }

 private:
  // curl's timer runs on the monotonic clock, so a wall-clock step cannot
  // hold back timeouts. (Real time on purpose: curl's own timeouts are.)
  static MonoTime SteadyNow() { return std::chrono::steady_clock::now(); }

  // Tracks which events epoll watches for a socket, so that curl
  // re-announcing the same interest costs no system call.
  static constexpr uintptr_t kWatchIn = 1, kWatchOut = 2, kAssigned = 4;

  // Lazy epoll applies only to connection sockets, whose whole life we see
  // (CURLOPT_OPENSOCKETFUNCTION / CURLOPT_CLOSESOCKETFUNCTION). Others, such
  // as the threaded resolver's socketpair, keep the eager path.
  bool Ours(curl_socket_t fd) const {
    return fd >= 0 && static_cast<size_t>(fd) < ours_.size() &&
           ours_[static_cast<size_t>(fd)];
  }
  bool Wanted(curl_socket_t fd) const {
    return wanted_[static_cast<size_t>(fd)];  // REQUIRES: Ours(fd)
  }

  // A new connection socket: nothing registered under its number yet.
  void Opened(curl_socket_t fd) {
    if (fd < 0) return;
    const auto i = static_cast<size_t>(fd);
    if (i >= ours_.size()) {
      ours_.resize(i + 1, 0);
      registered_.resize(i + 1, 0);
      wanted_.resize(i + 1, 0);
    }
    ours_[i] = 1;
    registered_[i] = 0;
    wanted_[i] = 0;
  }

  // close() takes it out of the epoll set; its number may come back as
  // anything.
  static int OnCloseSocket(void* clientp, curl_socket_t fd) {
    auto* self = static_cast<Impl*>(clientp);
    if (self->Ours(fd)) {
      const auto i = static_cast<size_t>(fd);
      self->ours_[i] = 0;
      self->registered_[i] = 0;
      self->wanted_[i] = 0;
    }
    return close(fd);
  }

  static int OnSocket(CURL* easy, curl_socket_t fd, int what, void* userp,
                      void* socketp) {
    auto* shard = static_cast<Shard*>(userp);
    Impl* self = static_cast<Impl*>(shard->impl);
    const uintptr_t current = reinterpret_cast<uintptr_t>(socketp);
    const bool lazy = self->lazy_epoll_ && self->Ours(fd);
    if (what == CURL_POLL_REMOVE) {
      if (lazy) {
        // Usually an idle keep-alive connection that the next request will
        // reuse: leave it in the set (Poll drops it if it speaks first).
        self->wanted_[static_cast<size_t>(fd)] = 0;
        return 0;
      }
      // The descriptor may already be closed (and so gone from the set).
      epoll_ctl(self->epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
      return 0;
    }
    const uintptr_t wanted = kAssigned |
                             ((what & CURL_POLL_IN) ? kWatchIn : 0) |
                             ((what & CURL_POLL_OUT) ? kWatchOut : 0);
    if (wanted == current) return 0;
    epoll_event ev{};
    ev.data.u64 = EventData(shard->index, fd);
    ev.events = ((wanted & kWatchIn) ? EPOLLIN : 0u) |
                ((wanted & kWatchOut) ? EPOLLOUT : 0u);
    if (lazy) {
      const auto i = static_cast<size_t>(fd);
      self->wanted_[i] = 1;
      if (self->registered_[i] != ev.events) {
        int op = self->registered_[i] == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
        if (epoll_ctl(self->epoll_fd_, op, fd, &ev) != 0) {
          if (errno != EEXIST && errno != ENOENT)
            return self->SocketFailed(easy, errno);
          op = op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
          if (epoll_ctl(self->epoll_fd_, op, fd, &ev) != 0)
            return self->SocketFailed(easy, errno);
        }
        self->registered_[i] = ev.events;
      }
      curl_multi_assign(shard->multi, fd, reinterpret_cast<void*>(wanted));
      return 0;
    }
    int op = current == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (epoll_ctl(self->epoll_fd_, op, fd, &ev) != 0) {
      // A descriptor number reused after close (EEXIST), or one curl
      // re-announces after it left the set (ENOENT): try the other way.
      if (errno != EEXIST && errno != ENOENT)
        return self->SocketFailed(easy, errno);
      op = op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
      if (epoll_ctl(self->epoll_fd_, op, fd, &ev) != 0)
        return self->SocketFailed(easy, errno);
    }
    curl_multi_assign(shard->multi, fd, reinterpret_cast<void*>(wanted));
    return 0;
  }

  // Never -1: libcurl 7.88 would mark the whole multi dead (every transfer
  // in it fails, its timers stop, and it has been seen to crash). Only the
  // transfer that owns the socket fails, after socket_action returns.
  int SocketFailed(CURL* easy, int err) {
    DriverTransfer* t = nullptr;
    if (easy != nullptr) curl_easy_getinfo(easy, CURLINFO_PRIVATE, &t);
    if (t != nullptr && t->socket_error.empty()) {
      t->socket_error = absl::StrCat("epoll_ctl: ", std::strerror(err));
      socket_failed_.push_back(t->id);
    }
    return 0;
  }
  void FailSockets(std::vector<CompletedTransfer>* done) {
    std::vector<TransferId> ids;
    ids.swap(socket_failed_);
    for (TransferId id : ids) {
      if (id >= slots_.size() || slots_[id] == nullptr) continue;
      DriverTransfer* t = slots_[id];
      if (t->socket_error.empty()) continue;
      CompletedTransfer& c = done->emplace_back();
      c.token = t->token;
      c.response.result = TransferResult::kTransportError;
      c.response.error = std::move(t->socket_error);
      curl_multi_remove_handle(t->shard->multi, t->easy);
      Finish(t);
    }
  }

  static int OnTimer(CURLM*, long timeout_ms, void* userp) {
    auto* self = static_cast<Shard*>(userp);
    self->deadline = timeout_ms < 0
                         ? MonoTime::max()
                         : SteadyNow() + absl::Milliseconds(timeout_ms);
    return 0;
  }

  static size_t OnWrite(char* data, size_t size, size_t count, void* userp) {
    auto* t = static_cast<DriverTransfer*>(userp);
    const size_t n = size * count;
    if (static_cast<int64_t>(t->body.size() + n) > t->max_body_bytes) {
      t->too_large = true;
      return 0;  // aborts the transfer with CURLE_WRITE_ERROR
    }
    if (t->body.capacity() == 0) {
      // One allocation for the whole body when the length is announced.
      curl_off_t length = -1;
      curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
      if (length > 0 && length <= t->max_body_bytes) {
        t->body.reserve(static_cast<size_t>(length));
      }
    }
    t->body.append(data, n);
    return n;
  }

  // Asks the egress policy before every new socket, with the address that
  // will be connected to. (Reused connections do not come through here:
  // OnPrerequest covers them.)
  static curl_socket_t OnOpenSocket(void* clientp, curlsocktype purpose,
                                    curl_sockaddr* address) {
    auto* t = static_cast<DriverTransfer*>(clientp);
    if (t != nullptr && t->egress != nullptr && purpose == CURLSOCKTYPE_IPCXN) {
      absl::Status allowed =
          t->egress->CheckSocketAddress(&address->addr, address->addrlen);
      if (!allowed.ok()) {
        // curl tries the next address, if any; ClassifyEnd decides.
        if (t->denied_address.empty()) {
          t->denied_address = std::string(allowed.message());
        }
        return CURL_SOCKET_BAD;
      }
      ++t->allowed_addresses;
    }
    const curl_socket_t fd = socket(
        address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
    if (t != nullptr && t->shard != nullptr) {
      static_cast<Impl*>(t->shard->impl)->Opened(fd);
    }
    return fd;
  }

  // Asks the egress policy again before every request is sent, with the
  // address and port of the connection it goes out on: a reused keep-alive
  // connection (opened while the policy allowed it) and every redirect hop
  // are judged too. With a proxy this is the proxy's address. A refusal
  // aborts the transfer (CURLE_ABORTED_BY_CALLBACK) before any byte of the
  // request is written; ClassifyEnd reports it as blocked. A request let out
  // ends its hop's connection attempts: addresses denied on the way to this
  // connection no longer matter.
  static int OnPrerequest(void* clientp, char* primary_ip, char* /*local_ip*/,
                          int primary_port, int /*local_port*/) {
    auto* t = static_cast<DriverTransfer*>(clientp);
    if (t == nullptr || t->egress == nullptr) return CURL_PREREQFUNC_OK;
    absl::Status allowed = t->egress->CheckPeer(
        primary_ip != nullptr ? primary_ip : "", primary_port);
    if (!allowed.ok()) {
      t->refused_request = std::string(allowed.message());
      return CURL_PREREQFUNC_ABORT;
    }
    t->denied_address.clear();
    t->allowed_addresses = 0;
    return CURL_PREREQFUNC_OK;
  }

  absl::StatusOr<CURL*> TakeEasy() {
    if (!idle_easy_.empty()) {
      CURL* easy = idle_easy_.back();
      idle_easy_.pop_back();
      return easy;
    }
    CURL* easy = curl_easy_init();
    if (easy == nullptr) {
      return absl::ResourceExhaustedError("curl_easy_init failed");
    }
    OptionSetter set(easy);
    BF_SET(set, CURLOPT_NOSIGNAL, 1L);
    BF_SET(set, CURLOPT_PROTOCOLS_STR, "http,https");
    BF_SET(set, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    BF_SET(set, CURLOPT_FOLLOWLOCATION, 1L);
    BF_SET(set, CURLOPT_MAXREDIRS, static_cast<long>(options_.max_redirects));
    BF_SET(
        set, CURLOPT_CONNECTTIMEOUT_MS,
        static_cast<long>(absl::ToInt64Milliseconds(options_.connect_timeout)));
    // An empty proxy disables http_proxy/https_proxy/ALL_PROXY from the
    // server's environment: egress goes where the caller asked, directly.
    BF_SET(set, CURLOPT_PROXY, options_.proxy.c_str());
    // And with a proxy, no_proxy/NO_PROXY from the environment must not send
    // any host around it: an empty list (not null, which means "read the
    // environment") exempts nothing. (Without a proxy it changes nothing.)
    BF_SET(set, CURLOPT_NOPROXY, "");
    if (options_.low_speed_bytes > 0) {
      BF_SET(set, CURLOPT_LOW_SPEED_LIMIT,
             static_cast<long>(options_.low_speed_bytes));
      BF_SET(set, CURLOPT_LOW_SPEED_TIME,
             static_cast<long>(std::max<int64_t>(
                 1, absl::ToInt64Seconds(options_.low_speed_time))));
    }
    // Decoded size is what the write callback counts, so the body cap also
    // holds against compression bombs.
    BF_SET(set, CURLOPT_ACCEPT_ENCODING, "");
    BF_SET(set, CURLOPT_MAXFILESIZE_LARGE,
           static_cast<curl_off_t>(options_.max_body_bytes));
    BF_SET(set, CURLOPT_USERAGENT, options_.user_agent.c_str());
    BF_SET(set, CURLOPT_WRITEFUNCTION, &Impl::OnWrite);
    BF_SET(set, CURLOPT_HTTP_VERSION,
           static_cast<long>(CURL_HTTP_VERSION_2TLS));
    if (lazy_epoll_) {
      BF_SET(set, CURLOPT_CLOSESOCKETFUNCTION, &Impl::OnCloseSocket);
      BF_SET(set, CURLOPT_CLOSESOCKETDATA, this);
    }
    if (options_.egress != nullptr || lazy_epoll_) {
      BF_SET(set, CURLOPT_OPENSOCKETFUNCTION, &Impl::OnOpenSocket);
    }
    if (options_.egress != nullptr) {
      BF_SET(set, CURLOPT_PREREQFUNCTION, &Impl::OnPrerequest);
    }
    // Peer and host verification stay at libcurl's defaults (on); nothing
    // here turns them off. A private CA is trusted through the bundle.
    if (!options_.ca_bundle.empty()) {
      BF_SET(set, CURLOPT_CAINFO, options_.ca_bundle.c_str());
    }
    if (!set.status().ok()) {
      curl_easy_cleanup(easy);
      return set.status();
    }
    return easy;
  }

  TransferId Slot(DriverTransfer* t) {
    TransferId id;
    if (!free_slots_.empty()) {
      id = free_slots_.back();
      free_slots_.pop_back();
      slots_[id] = t;
    } else {
      id = static_cast<TransferId>(slots_.size());
      slots_.push_back(t);
    }
    return id;
  }

  // Returns the handle to the pool and frees `t` (not in a slot).
  void Release(DriverTransfer* t) {
    // Nothing may point into the finished transfer.
    curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, nullptr);
    curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, nullptr);
    curl_easy_setopt(t->easy, CURLOPT_PRIVATE, nullptr);
    curl_easy_setopt(t->easy, CURLOPT_OPENSOCKETDATA, nullptr);
    curl_easy_setopt(t->easy, CURLOPT_PREREQDATA, nullptr);
    idle_easy_.push_back(t->easy);
    curl_slist_free_all(t->headers);
    delete t;
  }

  // Empties `t`'s slot and releases it. REQUIRES: removed from the multi.
  void Finish(DriverTransfer* t) {
    --t->shard->running;
    slots_[t->id] = nullptr;
    free_slots_.push_back(t->id);
    if (stats_ != nullptr) {
      stats_->transfers_in_flight.fetch_sub(1, std::memory_order_relaxed);
    }
    Release(t);
  }

  // How an attempt ended (result, end reason, error) from curl's code, the
  // URL of its last hop (r.final_url, set) and what the transfer itself saw.
  // One branch per case.
  static void ClassifyEnd(CURLcode code, DriverTransfer& t,
                          FetchedResponse& r) {
    const auto curl_error = [&] {
      return t.error[0] != '\0' ? std::string(t.error)
                                : std::string(curl_easy_strerror(code));
    };
    // BLOCKED means the egress policy (or a refused scheme) decided: the
    // request on its connection was refused, or every address of the hop
    // was denied and no other was even tried. Not retried either way.
    if (!t.refused_request.empty()) {
      r.result = TransferResult::kBlocked;
      r.end_reason = EndReason::kBlockedByPolicy;
      r.error = std::move(t.refused_request);
      return;
    }
    if (code == CURLE_COULDNT_CONNECT && !t.denied_address.empty() &&
        t.allowed_addresses == 0) {
      r.result = TransferResult::kBlocked;
      r.end_reason = EndReason::kBlockedByPolicy;
      r.error = std::move(t.denied_address);
      return;
    }
    r.result = code == CURLE_WRITE_ERROR && t.too_large
                   ? TransferResult::kTooLarge
                   : MapCurlCode(code);
    // An allowed address was tried too and the hop failed on its own: its
    // outcome stands, the denied address is worth a mention.
    const auto with_denied = [&](std::string error) {
      if (t.denied_address.empty()) return error;
      return absl::StrCat(error, "; ", t.denied_address);
    };
    switch (r.result) {
      case TransferResult::kResponse:
        return;
      case TransferResult::kTooLarge:
        r.error = absl::StrCat("response body exceeds ", t.max_body_bytes,
                               " bytes (max_body_bytes)");
        return;
      case TransferResult::kBlocked: {
        // CURLE_UNSUPPORTED_PROTOCOL. First URLs are validated up front,
        // so a scheme other than http(s) here is a redirect target, which
        // CURLINFO_EFFECTIVE_URL already names. (The response code is no
        // guide: it still holds the previous hop's 3xx.)
        const std::string scheme = SchemeOf(r.final_url);
        if (scheme != "http" && scheme != "https") {
          r.end_reason = EndReason::kBlockedByPolicy;
          r.error = scheme.empty()
                        ? absl::StrCat(
                              "redirect refused: only http and https "
                              "are allowed (",
                              curl_error(), ")")
                        : absl::StrCat("redirect to scheme \"", scheme,
                                       "\" refused: only http and https are "
                                       "allowed");
          return;
        }
        // Otherwise the peer's reply was not HTTP (libcurl refuses
        // HTTP/0.9), e.g. a database or SSH port.
        r.result = TransferResult::kTransportError;
        r.error =
            absl::StrCat("the upstream's reply is not HTTP/1.x or HTTP/2 (",
                         curl_error(), ")");
        return;
      }
      case TransferResult::kTimeout:
        // A timeout shortened to the deadline that ran (nearly) its full
        // length was cut by the deadline, not by the request's own timeout.
        if (t.timeout_is_deadline &&
            r.timings.total + absl::Milliseconds(5) >= t.timeout) {
          r.end_reason = EndReason::kDeadlineCut;
          r.error = with_denied(
              absl::StrCat("batch deadline reached: ", curl_error()));
          return;
        }
        r.error = with_denied(curl_error());
        return;
      default:
        r.error = with_denied(curl_error());
        return;
    }
  }

  // The lower-cased scheme of `url` ("" when it has none).
  static std::string SchemeOf(absl::string_view url) {
    const size_t colon = url.find(':');
    if (colon == absl::string_view::npos || colon == 0) return "";
    for (size_t i = 0; i < colon; ++i) {
      const unsigned char c = static_cast<unsigned char>(url[i]);
      if (!absl::ascii_isalpha(c) &&
          (i == 0 ||
           (!absl::ascii_isdigit(c) && c != '+' && c != '-' && c != '.'))) {
        return "";
      }
    }
    return absl::AsciiStrToLower(url.substr(0, colon));
  }

  void Collect(CURLM* multi, std::vector<CompletedTransfer>* done) {
    int pending = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &pending)) {
      if (msg->msg != CURLMSG_DONE) continue;
      DriverTransfer* t = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &t);
      if (t == nullptr) continue;
      const CURLcode code = msg->data.result;
      CURL* easy = t->easy;
      CompletedTransfer& c = done->emplace_back();
      c.token = t->token;
      FetchedResponse& r = c.response;
      long status = 0;
      curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
      r.http_status = static_cast<int>(status);
      r.timings.dns = TimeInfo(easy, CURLINFO_NAMELOOKUP_TIME_T);
      r.timings.connect = TimeInfo(easy, CURLINFO_CONNECT_TIME_T);
      r.timings.tls = TimeInfo(easy, CURLINFO_APPCONNECT_TIME_T);
      r.timings.first_byte = TimeInfo(easy, CURLINFO_STARTTRANSFER_TIME_T);
      r.timings.total = TimeInfo(easy, CURLINFO_TOTAL_TIME_T);
      char* content_type = nullptr;
      curl_easy_getinfo(easy, CURLINFO_CONTENT_TYPE, &content_type);
      if (content_type != nullptr) {
        // Upstream bytes end up in proto3 strings, which must be UTF-8.
        for (const char* p = content_type; *p != '\0'; ++p) {
          const bool printable = *p >= 0x20 && *p < 0x7f;
          r.content_type.push_back(printable ? *p : '?');
        }
      }
      char* final_url = nullptr;
      curl_easy_getinfo(easy, CURLINFO_EFFECTIVE_URL, &final_url);
      if (final_url != nullptr) {
        r.final_url = final_url;
        // Redirects can lengthen it past what we accept from callers: cut,
        // saying so. libcurl may hand back raw non-ASCII bytes from a
        // Location header (not necessarily UTF-8), and the cut may split a
        // UTF-8 sequence: result_conversion's ValidUtf8 pass makes final_url
        // valid UTF-8 (percent-encoding bad bytes) before it reaches a proto.
        if (r.final_url.size() > kMaxUrlLength) {
          const std::string marker = absl::StrCat(
              "\xE2\x80\xA6[truncated: ", r.final_url.size(), " bytes]");
          r.final_url.resize(kMaxUrlLength - marker.size());
          r.final_url += marker;
        }
      }
      long redirects = 0;
      curl_easy_getinfo(easy, CURLINFO_REDIRECT_COUNT, &redirects);
      c.redirected = redirects > 0;
      r.body_expected = !t->head;
      ClassifyEnd(code, *t, r);
      if (r.result == TransferResult::kResponse) {
        if (stats_ != nullptr) {
          stats_->response_bytes.fetch_add(static_cast<int64_t>(t->body.size()),
                                           std::memory_order_relaxed);
        }
        r.body = std::move(t->body);
        if (status == 429 || status == 503) {
          curl_header* header = nullptr;
          if (curl_easy_header(easy, "Retry-After", 0, CURLH_HEADER, -1,
                               &header) == CURLHE_OK) {
            c.retry_after = std::string(header->value);
          }
        }
      }
      curl_multi_remove_handle(multi, easy);
      Finish(t);
    }
  }

  // Constant after construction.
  const Options options_;
  FetchStats* const stats_;
  const int shard_count_;
  const bool lazy_epoll_;
  std::vector<std::unique_ptr<Shard>> shards_;
  // lazy epoll, by descriptor: a connection socket of ours, the events
  // registered for it (0: not in the set), and whether curl wants it.
  std::vector<char> ours_;
  std::vector<uint32_t> registered_;
  std::vector<char> wanted_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  curl_slist* default_headers_ = nullptr;
  curl_slist* resolve_ = nullptr;  // Options::resolve; null when empty

  // Engine thread only.
  std::vector<DriverTransfer*> slots_;  // by TransferId; null when free
  std::vector<TransferId> free_slots_;
  std::vector<CURL*> idle_easy_;  // reusable, common options already set
  std::vector<TransferId> socket_failed_;
};

CurlDriver::CurlDriver(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CurlDriver::~CurlDriver() = default;

absl::StatusOr<std::unique_ptr<CurlDriver>> CurlDriver::Create(
    const Options& options, FetchStats* stats) {
  static const CURLcode global_init = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (global_init != CURLE_OK) {
    return absl::InternalError(absl::StrCat("curl_global_init failed: ",
                                            curl_easy_strerror(global_init)));
  }
  auto impl = std::make_unique<Impl>(options, stats);
  if (absl::Status status = impl->Init(); !status.ok()) return status;
  return std::unique_ptr<CurlDriver>(new CurlDriver(std::move(impl)));
}

absl::StatusOr<CurlDriver::TransferId> CurlDriver::Start(
    const TransferSpec& spec) {
  return impl_->Start(spec);
}
void CurlDriver::Abort(TransferId id) { impl_->Abort(id); }
void CurlDriver::Poll(absl::Duration max_wait,
                      std::vector<CompletedTransfer>* done) {
  impl_->Poll(max_wait, done);
}
void CurlDriver::Wake() { impl_->Wake(); }
int CurlDriver::running() const { return impl_->running(); }

}  // namespace batchfetch

#include "service/fetch/fetch_engine.h"

#include <curl/curl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <optional>
#include <queue>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"

namespace batchfetch {
namespace {

constexpr size_t kMaxUrlLength = 8192;
constexpr size_t kMaxHeaders = 100;
constexpr size_t kMaxHeaderLength = 8192;
constexpr int kMaxEpollEvents = 256;
using SteadyClock = std::chrono::steady_clock;
using SteadyTime = SteadyClock::time_point;
// A transfer is not started with less time than this before the deadline.
constexpr absl::Duration kMinUsefulTime = absl::Milliseconds(10);

bool IsTokenChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

// Returns an empty string when `spec` may be sent, else why not. Parses the
// URL with libcurl's own parser so that what we accept is what it sends.
std::string ValidateSpec(const FetchSpec& spec, std::string* method,
                         std::string* host_key) {
  if (spec.url.empty()) return "url is empty";
  if (spec.url.size() > kMaxUrlLength) {
    return absl::StrCat("url is longer than ", kMaxUrlLength, " bytes");
  }
  CURLU* parsed = curl_url();
  if (parsed == nullptr) return "out of memory parsing url";
  std::string why;
  CURLUcode rc = curl_url_set(parsed, CURLUPART_URL, spec.url.c_str(),
                              CURLU_NON_SUPPORT_SCHEME);
  char* scheme = nullptr;
  char* host = nullptr;
  char* port = nullptr;
  if (rc != CURLUE_OK) {
    why = absl::StrCat("malformed url: ", curl_url_strerror(rc));
  } else if (curl_url_get(parsed, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
             scheme == nullptr) {
    why = "url has no scheme";
  } else if (std::strcmp(scheme, "http") != 0 &&
             std::strcmp(scheme, "https") != 0) {
    why = absl::StrCat("scheme '", scheme,
                       "' is not allowed; only http and https are");
  } else if (curl_url_get(parsed, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
             host == nullptr || host[0] == '\0') {
    why = "url has no host";
  } else if (curl_url_get(parsed, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) !=
                 CURLUE_OK ||
             port == nullptr) {
    why = "url has no usable port";
  } else {
    *host_key =
        absl::StrCat(scheme, "://", absl::AsciiStrToLower(host), ":", port);
  }
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(parsed);
  if (!why.empty()) return why;

  *method = spec.method.empty() ? "GET" : absl::AsciiStrToUpper(spec.method);
  static constexpr const char* kMethods[] = {"GET",   "HEAD",   "POST",   "PUT",
                                             "PATCH", "DELETE", "OPTIONS"};
  bool known = false;
  for (const char* m : kMethods) known = known || *method == m;
  if (!known) {
    return absl::StrCat("method '", spec.method,
                        "' is not one of GET HEAD POST PUT PATCH DELETE "
                        "OPTIONS");
  }
  if (*method == "HEAD" && !spec.body.empty()) return "HEAD cannot have a body";
  if (spec.headers.size() > kMaxHeaders) {
    return absl::StrCat("more than ", kMaxHeaders, " headers");
  }
  for (const auto& [name, value] : spec.headers) {
    if (name.empty() || name.size() + value.size() > kMaxHeaderLength) {
      return absl::StrCat("header '", name, "' is empty or too long");
    }
    for (char c : name) {
      if (!IsTokenChar(c)) {
        return absl::StrCat("header name '", name,
                            "' has a character not allowed in a token");
      }
    }
    for (char c : value) {
      if (c == '\r' || c == '\n' || c == '\0') {
        return absl::StrCat("header '", name, "' value contains CR, LF or NUL");
      }
    }
  }
  return "";
}

// Sets `*key` to scheme://host:port of `url` when it parses.
void HostKeyOf(const std::string& url, std::string* key) {
  FetchSpec spec;
  spec.url = url;
  std::string method, parsed;
  if (ValidateSpec(spec, &method, &parsed).empty()) *key = std::move(parsed);
}

TransferResult MapCurlCode(CURLcode code) {
  switch (code) {
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
      // Initial URLs are validated up front, so this is a redirect target.
      return TransferResult::kBlocked;
    default:
      return TransferResult::kTransportError;
  }
}

bool IsIdempotent(absl::string_view method) {
  return method == "GET" || method == "HEAD" || method == "PUT" ||
         method == "DELETE" || method == "OPTIONS";
}

// Parses a Retry-After value: delta-seconds or an HTTP-date.
std::optional<absl::Duration> ParseRetryAfter(const char* value,
                                              absl::Time now) {
  absl::string_view text = absl::StripAsciiWhitespace(value);
  int64_t seconds = 0;
  if (absl::SimpleAtoi(text, &seconds)) {
    if (seconds < 0) return std::nullopt;
    return absl::Seconds(seconds);
  }
  const time_t when = curl_getdate(std::string(text).c_str(), nullptr);
  if (when < 0) return std::nullopt;
  return std::max(absl::FromTimeT(when) - now, absl::ZeroDuration());
}

absl::Duration TimeInfo(CURL* easy, CURLINFO info) {
  curl_off_t us = 0;
  curl_easy_getinfo(easy, info, &us);
  return absl::Microseconds(us);
}

}  // namespace

RetryOptions RetryOptions::Defaults(int max_attempts) {
  RetryOptions retry;
  retry.max_attempts = max_attempts;
  retry.on_connect_error = true;
  retry.on_timeout = true;
  retry.on_429 = true;
  retry.on_status = {502, 503, 504};
  return retry;
}

class FetchEngine::Impl {
 public:
  struct Batch;

  // One running HTTP transfer (one attempt). Owned by the engine thread.
  struct Transfer {
    std::shared_ptr<Batch> batch;
    uint32_t index = 0;
    CURL* easy = nullptr;
    curl_slist* headers = nullptr;
    std::string body;
    int64_t max_body_bytes = 0;
    bool too_large = false;
    bool head = false;        // a HEAD request: no body comes back
    bool redirected = false;  // the response came from a redirect target
    // Set when the timeout was shortened to end at the batch deadline.
    absl::Duration deadline_timeout = absl::InfiniteDuration();
    char error[CURL_ERROR_SIZE] = {0};
  };

  // Per-request bookkeeping of a batch.
  struct RequestState {
    uint32_t attempts = 0;
    uint32_t host = 0;  // index into Batch::hosts, once classified
    bool done = false;  // delivered
    absl::Time first_start = absl::InfinitePast();
  };

  // A batch's requests to one scheme+host+port that wait for a slot.
  struct HostQueue {
    std::string key;
    std::deque<uint32_t> queued;
    int in_flight = 0;
  };

  // How a handle reaches the engine. Handles (and the results holding them)
  // may outlive the engine, e.g. rows still in the store's queue at
  // shutdown; ~Impl clears `impl` under `mu`, after which they are no-ops.
  struct EngineLink {
    absl::Mutex mu;
    Impl* impl ABSL_GUARDED_BY(mu);
  };

  // A submitted batch. Fields without a comment belong to the engine thread.
  struct Batch : FetchBatchHandle, std::enable_shared_from_this<Batch> {
    Batch(std::shared_ptr<EngineLink> engine, std::vector<FetchSpec> requests,
          const BatchOptions& options, std::shared_ptr<FetchSink> sink)
        : engine(std::move(engine)),
          requests(std::move(requests)),
          options(options),
          sink(std::move(sink)),
          state(this->requests.size()) {}

    void Cancel() override {
      absl::MutexLock lock(&engine->mu);
      if (engine->impl != nullptr) engine->impl->PostCancel(this, false);
    }
    void EndAtDeadline() override {
      absl::MutexLock lock(&engine->mu);
      if (engine->impl != nullptr) engine->impl->PostCancel(this, true);
    }
    void Release(int n) override {
      backlog.fetch_sub(n);
      if (!stalled.exchange(false)) return;
      absl::MutexLock lock(&engine->mu);
      if (engine->impl != nullptr) engine->impl->Wake();
    }

    // Constant after construction.
    const std::shared_ptr<EngineLink> engine;
    std::vector<FetchSpec> requests;
    const BatchOptions options;

    std::shared_ptr<FetchSink> sink;  // reset after the last delivery
    std::vector<RequestState> state;
    size_t next = 0;  // first request not yet classified into a host queue
    std::vector<HostQueue> hosts;
    std::unordered_map<std::string, uint32_t> host_ids;
    std::vector<uint32_t> ready_hosts;  // hosts with queued requests
    size_t host_cursor = 0;             // round-robin over ready_hosts
    size_t delivered = 0;
    int in_flight = 0;
    bool cancelled = false;
    bool deadline_passed = false;
    bool listed = false;  // in Impl::active_
    std::unordered_set<Transfer*> transfers;
    // Outcome of the last attempt of each request waiting for a retry.
    std::unordered_map<uint32_t, FetchedResponse> last_outcome;
    // Shared with the sink's threads (Release).
    std::atomic<int> backlog{0};       // delivered, not yet released
    std::atomic<bool> stalled{false};  // waiting for Release to make room
  };

  // Something the loop must do at a given time.
  struct TimerEvent {
    absl::Time at;
    // Expired or null: only wake (a cooldown ended, or the batch is done;
    // a batch is kept alive by batches_ until its last delivery).
    std::weak_ptr<Batch> batch;
    uint32_t index = 0;
    bool is_retry = false;  // else: the batch's deadline
    bool operator>(const TimerEvent& other) const { return at > other.at; }
  };

  explicit Impl(const Options& options)
      : options_(options), link_(std::make_shared<EngineLink>()) {
    absl::MutexLock lock(&link_->mu);
    link_->impl = this;
  }

  absl::Status Init() {
    multi_ = curl_multi_init();
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (multi_ == nullptr || epoll_fd_ < 0 || wake_fd_ < 0) {
      return absl::InternalError(
          absl::StrCat("fetch engine init failed: ", std::strerror(errno)));
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = wake_fd_;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
    curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &Impl::OnSocket);
    curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &Impl::OnTimer);
    curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
    // Keep every connection our concurrency may use alive for reuse. The
    // multi handle also holds the DNS cache shared by all its transfers, so
    // answers and connections carry over from batch to batch.
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS,
                      static_cast<long>(options_.max_in_flight));
    curl_multi_setopt(multi_, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    default_headers_ = curl_slist_append(nullptr, "Accept: application/json");
    // No "Expect: 100-continue" round trip for request bodies.
    default_headers_ = curl_slist_append(default_headers_, "Expect:");
    delivery_thread_ = std::thread([this] { DeliveryLoop(); });
    thread_ = std::thread([this] { Run(); });
    return absl::OkStatus();
  }

  ~Impl() {
    {
      absl::MutexLock lock(&link_->mu);
      link_->impl = nullptr;
    }
    if (thread_.joinable()) {
      {
        absl::MutexLock lock(&mu_);
        stopping_ = true;
      }
      Wake();
      thread_.join();
      delivery_thread_.join();  // Run() told it to stop once drained
    }
    for (CURL* easy : idle_easy_) curl_easy_cleanup(easy);
    curl_slist_free_all(default_headers_);
    if (multi_ != nullptr) curl_multi_cleanup(multi_);
    if (epoll_fd_ >= 0) close(epoll_fd_);
    if (wake_fd_ >= 0) close(wake_fd_);
  }

  std::shared_ptr<FetchBatchHandle> Submit(std::vector<FetchSpec> requests,
                                           const BatchOptions& options,
                                           std::shared_ptr<FetchSink> sink) {
    // Not make_shared: a deadline timer's weak_ptr would keep the whole
    // object's memory, not just the control block, until it fires.
    BatchOptions checked = options;
    checked.concurrency = std::max(checked.concurrency, 1);
    checked.window = std::max(checked.window, checked.concurrency);
    std::shared_ptr<Batch> batch(
        new Batch(link_, std::move(requests), checked, std::move(sink)));
    {
      absl::MutexLock lock(&mu_);
      submitted_.push_back(batch);
    }
    Wake();
    return batch;
  }

  void PostCancel(Batch* batch, bool at_deadline) {
    {
      absl::MutexLock lock(&mu_);
      (at_deadline ? deadline_requests_ : cancel_requests_)
          .push_back(batch->shared_from_this());
    }
    Wake();
  }

  void Wake() {
    uint64_t one = 1;
    // EAGAIN means the counter is already non-zero: a wake is pending.
    [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof(one));
  }

  int in_flight() const { return in_flight_.load(); }

 private:
  // --- libcurl callbacks (engine thread) ---------------------------------
  static int OnSocket(CURL*, curl_socket_t fd, int what, void* userp,
                      void* socketp) {
    auto* self = static_cast<Impl*>(userp);
    if (what == CURL_POLL_REMOVE) {
      epoll_ctl(self->epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
      return 0;
    }
    epoll_event ev{};
    ev.data.fd = fd;
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) |
                ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
    int op = socketp == nullptr ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (epoll_ctl(self->epoll_fd_, op, fd, &ev) != 0) {
      // A descriptor number reused after close, or curl re-announcing one.
      op = op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
      epoll_ctl(self->epoll_fd_, op, fd, &ev);
    }
    if (socketp == nullptr) {
      curl_multi_assign(self->multi_, fd, reinterpret_cast<void*>(1));
    }
    return 0;
  }

  static int OnTimer(CURLM*, long timeout_ms, void* userp) {
    auto* self = static_cast<Impl*>(userp);
    // Monotonic: a wall-clock step must not hold back curl's timeouts.
    self->curl_deadline_ =
        timeout_ms < 0
            ? SteadyTime::max()
            : SteadyClock::now() + std::chrono::milliseconds(timeout_ms);
    return 0;
  }

  static size_t OnWrite(char* data, size_t size, size_t count, void* userp) {
    auto* transfer = static_cast<Transfer*>(userp);
    const size_t n = size * count;
    if (static_cast<int64_t>(transfer->body.size() + n) >
        transfer->max_body_bytes) {
      transfer->too_large = true;
      return 0;  // aborts the transfer with CURLE_WRITE_ERROR
    }
    if (transfer->body.capacity() == 0) {
      // One allocation for the whole body when the length is announced.
      curl_off_t length = -1;
      curl_easy_getinfo(transfer->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T,
                        &length);
      if (length > 0 && length <= transfer->max_body_bytes) {
        transfer->body.reserve(static_cast<size_t>(length));
      }
    }
    transfer->body.append(data, n);
    return n;
  }

  // --- event loop ---------------------------------------------------------
  void Run() {
    epoll_event events[kMaxEpollEvents];
    while (true) {
      absl::Duration left = absl::InfiniteDuration();
      if (curl_deadline_ != SteadyTime::max()) {
        left = absl::FromChrono(curl_deadline_ - SteadyClock::now());
      }
      if (!timers_.empty())
        left = std::min(left, timers_.top().at - absl::Now());
      int wait_ms = -1;
      if (left != absl::InfiniteDuration()) {
        wait_ms = left <= absl::ZeroDuration()
                      ? 0
                      : static_cast<int>(std::min<int64_t>(
                            absl::ToInt64Milliseconds(
                                absl::Ceil(left, absl::Milliseconds(1))),
                            60000));
      }
      const int n = epoll_wait(epoll_fd_, events, kMaxEpollEvents, wait_ms);
      int running = 0;
      for (int i = 0; i < n; ++i) {
        if (events[i].data.fd == wake_fd_) {
          uint64_t value;
          [[maybe_unused]] ssize_t r = read(wake_fd_, &value, sizeof(value));
          continue;
        }
        int flags = 0;
        if (events[i].events & EPOLLIN) flags |= CURL_CSELECT_IN;
        if (events[i].events & EPOLLOUT) flags |= CURL_CSELECT_OUT;
        if (events[i].events & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
        curl_multi_socket_action(multi_, events[i].data.fd, flags, &running);
      }
      if (curl_deadline_ <= SteadyClock::now()) {
        curl_deadline_ = SteadyTime::max();
        curl_multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &running);
      }
      CollectCompleted();
      RunDueTimers(absl::Now());
      const bool stopping = TakeCommands();
      if (!stopping) Admit();
      HandOver();
      if (stopping) break;
    }
    // Shutting down: everything not yet delivered ends as cancelled.
    std::vector<std::shared_ptr<Batch>> all(batches_.begin(), batches_.end());
    for (const auto& batch : all) CancelBatch(*batch, kCancelledText);
    HandOver();
    absl::MutexLock lock(&delivery_mu_);
    delivery_stopping_ = true;
  }

  // Passes this loop turn's responses to the delivery thread in one go.
  void HandOver() {
    if (outbox_.empty()) return;
    absl::MutexLock lock(&delivery_mu_);
    if (deliveries_.empty()) {
      deliveries_.swap(outbox_);
    } else {
      for (auto& d : outbox_) deliveries_.push_back(std::move(d));
      outbox_.clear();
    }
  }

  // Runs the sinks, so that classifying and cleaning bodies (which can take
  // milliseconds for a large JSON document) never stalls the event loop.
  void DeliveryLoop() {
    std::vector<Delivery> batch;
    while (true) {
      {
        absl::MutexLock lock(&delivery_mu_);
        delivery_mu_.Await(absl::Condition(
            +[](Impl* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->delivery_mu_) {
              return !self->deliveries_.empty() || self->delivery_stopping_;
            },
            this));
        if (deliveries_.empty()) return;  // stopping, all delivered
        batch.swap(deliveries_);
      }
      for (Delivery& d : batch) {
        d.sink->OnFetched(std::move(d.response), d.handle);
      }
      batch.clear();
    }
  }

  // Moves posted submissions and cancellations onto the engine thread.
  // Returns true when the engine is stopping.
  bool TakeCommands() {
    std::vector<std::shared_ptr<Batch>> submitted, cancels, deadlines;
    bool stopping;
    {
      absl::MutexLock lock(&mu_);
      submitted.swap(submitted_);
      cancels.swap(cancel_requests_);
      deadlines.swap(deadline_requests_);
      stopping = stopping_;
    }
    for (auto& batch : submitted) {
      batches_.insert(batch);
      if (batch->options.deadline != absl::InfiniteFuture()) {
        // A far deadline needs no timer: Start() checks the deadline too,
        // and this keeps timers for finished batches from piling up.
        if (batch->options.deadline - absl::Now() < absl::Hours(1)) {
          timers_.push({batch->options.deadline, batch, 0, false});
        }
      }
      List(batch);
    }
    for (auto& batch : deadlines) CutAtDeadline(*batch);
    for (auto& batch : cancels) CancelBatch(*batch, kCancelledText);
    return stopping;
  }

  void List(const std::shared_ptr<Batch>& batch) {
    if (batch->listed) return;
    batch->listed = true;
    active_.push_back(batch);
  }

  static bool HasQueued(const Batch& batch) {
    return batch.next < batch.requests.size() || !batch.ready_hosts.empty();
  }

  void RunDueTimers(absl::Time now) {
    while (!timers_.empty() && timers_.top().at <= now) {
      TimerEvent event = timers_.top();
      timers_.pop();
      std::shared_ptr<Batch> owner = event.batch.lock();
      if (owner == nullptr) continue;  // a cooldown ended: just Admit
      Batch& batch = *owner;
      if (!event.is_retry) {
        ExpireDeadline(batch);
        continue;
      }
      if (batch.state[event.index].done || batch.cancelled) continue;
      // The retry goes first in its host's queue.
      Enqueue(batch, batch.state[event.index].host, event.index,
              /*front=*/true);
      List(owner);
    }
  }

  void Enqueue(Batch& batch, uint32_t host, uint32_t index, bool front) {
    HostQueue& queue = batch.hosts[host];
    if (queue.queued.empty()) batch.ready_hosts.push_back(host);
    if (front) {
      queue.queued.push_front(index);
    } else {
      queue.queued.push_back(index);
    }
  }

  // Starts transfers while there is room: one per batch per round, so that
  // batches share the engine-wide cap fairly.
  void Admit() {
    const absl::Time now = absl::Now();
    bool progressed = true;
    while (progressed && !active_.empty() &&
           in_flight_.load() < options_.max_in_flight) {
      progressed = false;
      for (size_t turns = active_.size(); turns > 0 && !active_.empty();
           --turns) {
        if (in_flight_.load() >= options_.max_in_flight) return;
        if (cursor_ >= active_.size()) cursor_ = 0;
        Batch* batch = active_[cursor_].get();
        if (!HasQueued(*batch) || batch->cancelled) {
          batch->listed = false;
          active_.erase(active_.begin() + static_cast<ptrdiff_t>(cursor_));
          continue;
        }
        ++cursor_;
        if (!HasRoom(*batch)) continue;
        if (StartOne(*batch, now)) progressed = true;
      }
    }
  }

  bool HasRoom(Batch& batch) {
    if (batch.in_flight >= batch.options.concurrency) return false;
    auto fits = [&] {
      return batch.in_flight + batch.backlog.load() < batch.options.window;
    };
    if (fits()) return true;
    // Publish that we wait before re-checking, so a concurrent Release
    // either is seen here or sees `stalled` and wakes us.
    batch.stalled.store(true);
    if (!fits()) return false;
    batch.stalled.store(false);
    return true;
  }

  bool HostOpen(const Batch& batch, uint32_t host, absl::Time now) const {
    const HostQueue& queue = batch.hosts[host];
    if (batch.options.per_host_concurrency > 0 &&
        queue.in_flight >= batch.options.per_host_concurrency) {
      return false;
    }
    auto cooldown = cooldowns_.find(queue.key);
    return cooldown == cooldowns_.end() || cooldown->second <= now;
  }

  // Starts (or answers without I/O) one request of `batch`. Returns false
  // when every queued request waits for its host.
  bool StartOne(Batch& batch, absl::Time now) {
    // Requests already queued per host, hosts taking turns.
    for (size_t tries = batch.ready_hosts.size(); tries > 0; --tries) {
      if (batch.host_cursor >= batch.ready_hosts.size()) batch.host_cursor = 0;
      const uint32_t host = batch.ready_hosts[batch.host_cursor];
      if (!HostOpen(batch, host, now)) {
        ++batch.host_cursor;
        continue;
      }
      HostQueue& queue = batch.hosts[host];
      const uint32_t index = queue.queued.front();
      queue.queued.pop_front();
      if (queue.queued.empty()) {
        batch.ready_hosts.erase(batch.ready_hosts.begin() +
                                static_cast<ptrdiff_t>(batch.host_cursor));
      } else {
        ++batch.host_cursor;
      }
      Start(batch, index);
      return true;
    }
    // Then new requests, in order; those whose host is closed are queued.
    while (batch.next < batch.requests.size()) {
      const uint32_t index = static_cast<uint32_t>(batch.next++);
      std::string method, host_key;
      std::string invalid =
          ValidateSpec(batch.requests[index], &method, &host_key);
      if (!invalid.empty()) {
        FetchedResponse response;
        response.index = index;
        response.result = TransferResult::kInvalidRequest;
        response.error = std::move(invalid);
        Deliver(batch, std::move(response));
        return true;
      }
      // Canonical from here on: Start and ShouldRetry read it as is.
      batch.requests[index].method = std::move(method);
      auto [it, inserted] = batch.host_ids.try_emplace(
          host_key, static_cast<uint32_t>(batch.hosts.size()));
      if (inserted) batch.hosts.push_back(HostQueue{host_key, {}, 0});
      batch.state[index].host = it->second;
      if (HostOpen(batch, it->second, now)) {
        Start(batch, index);
        return true;
      }
      Enqueue(batch, it->second, index, /*front=*/false);
    }
    return false;
  }

  void Start(Batch& batch, uint32_t index) {
    const absl::Time now = absl::Now();  // an Admit pass can be long
    FetchSpec& spec = batch.requests[index];
    RequestState& state = batch.state[index];
    // Too little time left to do anything useful: the batch is out of time.
    if (batch.options.deadline - now < kMinUsefulTime) {
      DeliverOutOfTime(batch, index, kDeadlineText);
      return;
    }
    batch.last_outcome.erase(index);
    const std::string& method = spec.method;  // canonical (StartOne)
    auto* transfer = new Transfer;
    transfer->batch = batch.shared_from_this();
    transfer->index = index;
    transfer->max_body_bytes = options_.max_body_bytes;
    transfer->easy = TakeEasy();
    CURL* easy = transfer->easy;
    absl::Duration timeout = batch.options.timeout;
    if (batch.options.deadline - now < timeout) {
      timeout = batch.options.deadline - now;
      transfer->deadline_timeout = timeout;
    }
    // Options common to every transfer were set when the handle was made;
    // these are the ones that differ per request (all of them, every time,
    // since handles are reused without curl_easy_reset).
    curl_easy_setopt(easy, CURLOPT_PRIVATE, transfer);
    curl_easy_setopt(easy, CURLOPT_URL, spec.url.c_str());
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, transfer);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, transfer->error);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                     static_cast<long>(std::max<int64_t>(
                         1, absl::ToInt64Milliseconds(
                                absl::Ceil(timeout, absl::Milliseconds(1))))));
    // Back to a plain GET whatever the handle did before. (Setting
    // POSTFIELDS, even to null, selects POST; HTTPGET must come after it.)
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, nullptr);
    curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, nullptr);
    curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(easy, CURLOPT_POSTREDIR, 0L);
    if (method == "HEAD") {
      transfer->head = true;
      curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    } else if (method != "GET" || !spec.body.empty()) {
      if (method != "POST") {
        curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method.c_str());
      }
      if (!spec.body.empty() || method == "POST" || method == "PUT" ||
          method == "PATCH") {
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                         static_cast<curl_off_t>(spec.body.size()));
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, spec.body.data());
        if (method != "POST") {
          // A PUT/PATCH/DELETE keeps its method on 301-303 (custom request);
          // without this it would arrive there without its body.
          curl_easy_setopt(easy, CURLOPT_POSTREDIR,
                           static_cast<long>(CURL_REDIR_POST_ALL));
        }
      }
    }
    if (spec.headers.empty()) {
      curl_easy_setopt(easy, CURLOPT_HTTPHEADER, default_headers_);
    } else {
      bool has_accept = false;
      for (const auto& [name, value] : spec.headers) {
        has_accept = has_accept || absl::EqualsIgnoreCase(name, "accept");
        std::string line = value.empty() ? absl::StrCat(name, ";")
                                         : absl::StrCat(name, ": ", value);
        transfer->headers = curl_slist_append(transfer->headers, line.c_str());
      }
      if (!has_accept) {
        transfer->headers =
            curl_slist_append(transfer->headers, "Accept: application/json");
      }
      // No "Expect: 100-continue" round trip for request bodies.
      transfer->headers = curl_slist_append(transfer->headers, "Expect:");
      curl_easy_setopt(easy, CURLOPT_HTTPHEADER, transfer->headers);
    }

    if (state.attempts == 0) state.first_start = now;
    ++state.attempts;
    batch.transfers.insert(transfer);
    ++batch.in_flight;
    ++batch.hosts[state.host].in_flight;
    in_flight_.fetch_add(1);
    CURLMcode rc = curl_multi_add_handle(multi_, easy);
    if (rc != CURLM_OK) {
      FetchedResponse response;
      response.index = index;
      response.result = TransferResult::kTransportError;
      response.error =
          absl::StrCat("could not start transfer: ", curl_multi_strerror(rc));
      Complete(transfer, std::move(response), /*remove=*/false);
    }
  }

  void CollectCompleted() {
    int pending = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_, &pending)) {
      if (msg->msg != CURLMSG_DONE) continue;
      Transfer* transfer = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &transfer);
      const CURLcode code = msg->data.result;
      CURL* easy = transfer->easy;
      FetchedResponse response;
      response.index = transfer->index;
      long status = 0;
      curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
      response.http_status = static_cast<int>(status);
      response.timings.dns = TimeInfo(easy, CURLINFO_NAMELOOKUP_TIME_T);
      response.timings.connect = TimeInfo(easy, CURLINFO_CONNECT_TIME_T);
      response.timings.tls = TimeInfo(easy, CURLINFO_APPCONNECT_TIME_T);
      response.timings.first_byte =
          TimeInfo(easy, CURLINFO_STARTTRANSFER_TIME_T);
      response.timings.total = TimeInfo(easy, CURLINFO_TOTAL_TIME_T);
      char* content_type = nullptr;
      curl_easy_getinfo(easy, CURLINFO_CONTENT_TYPE, &content_type);
      if (content_type != nullptr) {
        // Upstream bytes end up in proto3 strings, which must be UTF-8.
        for (const char* c = content_type; *c != '\0'; ++c) {
          const bool printable = *c >= 0x20 && *c < 0x7f;
          response.content_type.push_back(printable ? *c : '?');
        }
      }
      char* final_url = nullptr;
      curl_easy_getinfo(easy, CURLINFO_EFFECTIVE_URL, &final_url);
      if (final_url != nullptr) {
        response.final_url = final_url;
        // Redirects can lengthen it past what we accept from callers.
        if (response.final_url.size() > kMaxUrlLength) {
          response.final_url.resize(kMaxUrlLength);
        }
      }
      long redirects = 0;
      curl_easy_getinfo(easy, CURLINFO_REDIRECT_COUNT, &redirects);
      transfer->redirected = redirects > 0;
      response.body_expected = !transfer->head;
      if (code == CURLE_WRITE_ERROR && transfer->too_large) {
        response.result = TransferResult::kTooLarge;
      } else {
        response.result = MapCurlCode(code);
      }
      if (response.result == TransferResult::kTooLarge) {
        response.error = absl::StrCat("response body exceeds ",
                                      options_.max_body_bytes, " bytes");
      } else if (response.result != TransferResult::kResponse) {
        response.error = transfer->error[0] != '\0'
                             ? std::string(transfer->error)
                             : std::string(curl_easy_strerror(code));
        if (response.result == TransferResult::kTimeout &&
            response.timings.total + absl::Milliseconds(5) >=
                transfer->deadline_timeout) {
          response.error =
              absl::StrCat("batch deadline reached: ", response.error);
        }
      } else {
        response.body = std::move(transfer->body);
      }
      std::optional<absl::Duration> retry_after;
      if (code == CURLE_OK && (status == 429 || status == 503)) {
        curl_header* header = nullptr;
        if (curl_easy_header(easy, "Retry-After", 0, CURLH_HEADER, -1,
                             &header) == CURLHE_OK) {
          retry_after = ParseRetryAfter(header->value, absl::Now());
        }
      }
      if (retry_after.has_value()) {
        // The host that answered: after redirects, the final URL's.
        std::string host_key =
            transfer->batch->hosts[transfer->batch->state[transfer->index].host]
                .key;
        if (transfer->redirected) HostKeyOf(response.final_url, &host_key);
        StartCooldown(host_key,
                      std::min(*retry_after, options_.max_retry_after));
      }
      Complete(transfer, std::move(response), /*remove=*/true, retry_after);
    }
  }

  // Holds back every queued request to `host_key`, from every batch.
  void StartCooldown(const std::string& host_key, absl::Duration length) {
    const absl::Time until = absl::Now() + length;
    absl::Time& current = cooldowns_[host_key];
    current = std::max(current, until);
    timers_.push({until, {}, 0, false});
    if (cooldowns_.size() > 4096) {
      const absl::Time now = absl::Now();
      for (auto it = cooldowns_.begin(); it != cooldowns_.end();) {
        it = it->second <= now ? cooldowns_.erase(it) : std::next(it);
      }
    }
  }

  bool ShouldRetry(const Batch& batch, uint32_t index,
                   const FetchedResponse& response) const {
    const RetryOptions& retry = batch.options.retry;
    if (batch.cancelled ||
        static_cast<int>(batch.state[index].attempts) >= retry.max_attempts) {
      return false;
    }
    if (!retry.non_idempotent && !IsIdempotent(batch.requests[index].method)) {
      return false;
    }
    switch (response.result) {
      case TransferResult::kConnectError:
      case TransferResult::kDnsError:
        return retry.on_connect_error;
      case TransferResult::kTimeout:
        return retry.on_timeout &&
               response.error.rfind("batch deadline", 0) != 0;
      case TransferResult::kTransportError:
        return retry.on_transport_error;
      case TransferResult::kResponse: {
        const int status = response.http_status;
        if (status == 429 && retry.on_429) return true;
        if (status >= 500 && status <= 599 && retry.on_5xx) return true;
        return std::find(retry.on_status.begin(), retry.on_status.end(),
                         status) != retry.on_status.end();
      }
      default:
        return false;
    }
  }

  // Ends one attempt: frees its transfer, then either schedules a retry or
  // delivers.
  void Complete(Transfer* transfer, FetchedResponse response, bool remove,
                std::optional<absl::Duration> retry_after = std::nullopt) {
    if (remove) curl_multi_remove_handle(multi_, transfer->easy);
    curl_slist_free_all(transfer->headers);
    ReturnEasy(transfer->easy);
    std::shared_ptr<Batch> batch = std::move(transfer->batch);
    batch->transfers.erase(transfer);
    --batch->in_flight;
    --batch->hosts[batch->state[transfer->index].host].in_flight;
    in_flight_.fetch_sub(1);
    const uint32_t index = transfer->index;
    delete transfer;

    if (ShouldRetry(*batch, index, response)) {
      const RetryOptions& retry = batch->options.retry;
      const int attempts = static_cast<int>(batch->state[index].attempts);
      absl::Duration cap = retry.initial_backoff;
      for (int i = 1; i < attempts && cap < retry.max_backoff; ++i) cap *= 2;
      cap = std::min(cap, retry.max_backoff);
      absl::Duration wait = absl::Nanoseconds(absl::Uniform<int64_t>(
          bitgen_, 0, std::max<int64_t>(1, absl::ToInt64Nanoseconds(cap))));
      if (retry_after.has_value()) {
        wait = std::max(wait, std::min(*retry_after, options_.max_retry_after));
      }
      const absl::Time at = absl::Now() + wait;
      if (at + kMinUsefulTime < batch->options.deadline) {
        timers_.push({at, batch, index, true});
        // Kept in case the deadline comes before the retry can start.
        batch->last_outcome[index] = std::move(response);
        return;
      }
      response.error = absl::StrCat(
          response.error.empty()
              ? absl::StrCat("upstream answered HTTP ", response.http_status)
              : response.error,
          "; not retried: the batch deadline leaves no time for attempt ",
          attempts + 1, " (due in ", absl::FormatDuration(wait), ")");
    }
    Deliver(*batch, std::move(response));
  }

  // The batch deadline came first. A request with an earlier attempt
  // reports that attempt's outcome, saying why no retry followed; one never
  // tried is cancelled.
  void DeliverOutOfTime(Batch& batch, uint32_t index, const char* why) {
    auto last = batch.last_outcome.find(index);
    if (last == batch.last_outcome.end()) {
      DeliverCancelled(batch, index, why);
      return;
    }
    FetchedResponse response = std::move(last->second);
    batch.last_outcome.erase(last);
    response.error = absl::StrCat(
        response.error.empty()
            ? absl::StrCat("upstream answered HTTP ", response.http_status)
            : response.error,
        "; not retried: the batch deadline came before attempt ",
        batch.state[index].attempts + 1, " could start");
    Deliver(batch, std::move(response));
  }

  void DeliverCancelled(Batch& batch, uint32_t index, const char* why) {
    FetchedResponse response;
    response.index = index;
    response.result = TransferResult::kCancelled;
    response.error = why;
    Deliver(batch, std::move(response));
  }

  void Deliver(Batch& batch, FetchedResponse response) {
    RequestState& state = batch.state[response.index];
    state.done = true;
    response.attempts = state.attempts;
    if (state.attempts > 0) response.elapsed = absl::Now() - state.first_start;
    batch.backlog.fetch_add(1);
    ++batch.delivered;
    const bool last = batch.delivered == batch.requests.size();
    // The request is done with: hand its URL over and free the rest.
    FetchSpec& spec = batch.requests[response.index];
    response.index = spec.index;  // positions are internal
    response.url = std::move(spec.url);
    spec = FetchSpec();
    std::shared_ptr<Batch> self = batch.shared_from_this();
    std::shared_ptr<FetchBatchHandle> handle = self;
    outbox_.push_back({batch.sink, std::move(handle), std::move(response)});
    if (last) {
      batch.sink.reset();
      batches_.erase(self);
    }
  }

  // Delivers every request that is neither done nor running as cancelled.
  void DrainQueued(Batch& batch, const char* why) {
    std::shared_ptr<Batch> keep = batch.shared_from_this();
    for (auto& host : batch.hosts) host.queued.clear();
    batch.ready_hosts.clear();
    batch.next = batch.requests.size();
    std::vector<bool> running(batch.requests.size());
    for (Transfer* t : batch.transfers) running[t->index] = true;
    for (uint32_t i = 0; i < batch.requests.size(); ++i) {
      if (batch.delivered == batch.requests.size()) break;
      if (batch.state[i].done || running[i]) continue;
      if (batch.cancelled) {
        DeliverCancelled(batch, i, why);
      } else {
        DeliverOutOfTime(batch, i, why);
      }
    }
  }

  void ExpireDeadline(Batch& batch) {
    if (batch.deadline_passed || batch.delivered == batch.requests.size()) {
      return;
    }
    batch.deadline_passed = true;
    // Running transfers end by their own (shortened) timeouts.
    DrainQueued(batch, kDeadlineText);
  }

  // The deadline as the caller saw it: running transfers end as if their
  // shortened timeout had fired, the rest as ExpireDeadline says.
  void CutAtDeadline(Batch& batch) {
    if (batch.cancelled || batch.delivered == batch.requests.size()) return;
    std::shared_ptr<Batch> keep = batch.shared_from_this();
    std::vector<Transfer*> running(batch.transfers.begin(),
                                   batch.transfers.end());
    batch.deadline_passed = true;
    DrainQueued(batch, kDeadlineText);
    for (Transfer* transfer : running) {
      FetchedResponse response;
      response.index = transfer->index;
      response.result = TransferResult::kTimeout;
      response.end_reason = EndReason::kDeadlineCut;
      response.error = "batch deadline reached: the transfer was cut off";
      batch.cancelled = true;  // no retry
      Complete(transfer, std::move(response), /*remove=*/true);
    }
  }

  void CancelBatch(Batch& batch, const char* why) {
    if (batch.cancelled || batch.delivered == batch.requests.size()) return;
    batch.cancelled = true;
    // Keeps `batch` alive while its last delivery drops the engine's refs.
    std::shared_ptr<Batch> keep = batch.shared_from_this();
    std::vector<Transfer*> running(batch.transfers.begin(),
                                   batch.transfers.end());
    for (Transfer* transfer : running) {
      FetchedResponse response;
      response.index = transfer->index;
      response.result = TransferResult::kCancelled;
      response.error = kCancelledText;
      Complete(transfer, std::move(response), /*remove=*/true);
    }
    DrainQueued(batch, why);
  }

  CURL* TakeEasy() {
    if (!idle_easy_.empty()) {
      CURL* easy = idle_easy_.back();
      idle_easy_.pop_back();
      return easy;
    }
    CURL* easy = curl_easy_init();
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(easy, CURLOPT_MAXREDIRS,
                     static_cast<long>(options_.max_redirects));
    curl_easy_setopt(
        easy, CURLOPT_CONNECTTIMEOUT_MS,
        static_cast<long>(absl::ToInt64Milliseconds(options_.connect_timeout)));
    if (options_.low_speed_bytes > 0) {
      curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT,
                       static_cast<long>(options_.low_speed_bytes));
      curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME,
                       static_cast<long>(std::max<int64_t>(
                           1, absl::ToInt64Seconds(options_.low_speed_time))));
    }
    // Decoded size is what the write callback counts, so the body cap also
    // holds against compression bombs.
    curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE,
                     static_cast<curl_off_t>(options_.max_body_bytes));
    curl_easy_setopt(easy, CURLOPT_USERAGENT, options_.user_agent.c_str());
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Impl::OnWrite);
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_2TLS);
    return easy;
  }

  void ReturnEasy(CURL* easy) {
    // Nothing may point into the finished Transfer.
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, nullptr);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, nullptr);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, nullptr);
    idle_easy_.push_back(easy);
  }

  static constexpr const char* kCancelledText =
      "batch cancelled before the request finished";
  static constexpr const char* kDeadlineText =
      "batch deadline reached before the request started";

  // Constant after construction.
  const Options options_;
  const std::shared_ptr<EngineLink> link_;
  CURLM* multi_ = nullptr;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::thread thread_;

  absl::Mutex mu_;
  std::vector<std::shared_ptr<Batch>> submitted_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Batch>> cancel_requests_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Batch>> deadline_requests_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  // A response on its way to its sink.
  struct Delivery {
    std::shared_ptr<FetchSink> sink;
    std::shared_ptr<FetchBatchHandle> handle;
    FetchedResponse response;
  };
  std::thread delivery_thread_;
  absl::Mutex delivery_mu_;
  std::vector<Delivery> deliveries_ ABSL_GUARDED_BY(delivery_mu_);
  bool delivery_stopping_ ABSL_GUARDED_BY(delivery_mu_) = false;

  // Engine thread only.
  std::vector<Delivery> outbox_;  // this loop turn's responses
  std::unordered_set<std::shared_ptr<Batch>> batches_;  // not fully delivered
  // Batches with queued requests, in round-robin order.
  std::vector<std::shared_ptr<Batch>> active_;
  size_t cursor_ = 0;  // round-robin position in active_
  std::priority_queue<TimerEvent, std::vector<TimerEvent>,
                      std::greater<TimerEvent>>
      timers_;
  // Host key -> end of its Retry-After cooldown.
  std::unordered_map<std::string, absl::Time> cooldowns_;
  std::vector<CURL*> idle_easy_;  // reusable, common options already set
  // Request headers for requests that bring none of their own.
  curl_slist* default_headers_ = nullptr;
  SteadyTime curl_deadline_ = SteadyTime::max();  // curl's timer
  absl::BitGen bitgen_;

  std::atomic<int> in_flight_{0};  // read from any thread
};

FetchEngine::FetchEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FetchEngine::~FetchEngine() = default;

absl::StatusOr<std::unique_ptr<FetchEngine>> FetchEngine::Create(
    const Options& options) {
  if (options.max_in_flight < 1) {
    return absl::InvalidArgumentError("max_in_flight must be at least 1");
  }
  static const CURLcode global_init = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (global_init != CURLE_OK) {
    return absl::InternalError(absl::StrCat("curl_global_init failed: ",
                                            curl_easy_strerror(global_init)));
  }
  auto impl = std::make_unique<Impl>(options);
  if (absl::Status status = impl->Init(); !status.ok()) return status;
  return std::unique_ptr<FetchEngine>(new FetchEngine(std::move(impl)));
}

std::shared_ptr<FetchBatchHandle> FetchEngine::Submit(
    std::vector<FetchSpec> requests, const BatchOptions& options,
    std::shared_ptr<FetchSink> sink) {
  return impl_->Submit(std::move(requests), options, std::move(sink));
}

int FetchEngine::in_flight() const { return impl_->in_flight(); }

}  // namespace batchfetch

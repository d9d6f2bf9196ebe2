#include "service/fetch_engine.h"

#include <curl/curl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <thread>
#include <unordered_set>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace batchfetch {
namespace {

constexpr size_t kMaxUrlLength = 8192;
constexpr size_t kMaxHeaders = 100;
constexpr size_t kMaxHeaderLength = 8192;
constexpr int kMaxEpollEvents = 256;

bool IsTokenChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

// Returns an empty string when `spec` may be sent, else why not. Parses the
// URL with libcurl's own parser so that what we accept is what it sends.
std::string ValidateSpec(const FetchSpec& spec, std::string* method) {
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
  }
  curl_free(scheme);
  curl_free(host);
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

}  // namespace

const char* TransferResultName(TransferResult result) {
  switch (result) {
    case TransferResult::kResponse:
      return "response";
    case TransferResult::kTimeout:
      return "timeout";
    case TransferResult::kDnsError:
      return "dns_error";
    case TransferResult::kConnectError:
      return "connect_error";
    case TransferResult::kTlsError:
      return "tls_error";
    case TransferResult::kTransportError:
      return "transport_error";
    case TransferResult::kTooLarge:
      return "too_large";
    case TransferResult::kBlocked:
      return "blocked";
    case TransferResult::kCancelled:
      return "cancelled";
    case TransferResult::kInvalidRequest:
      return "invalid_request";
  }
  return "unknown";
}

class FetchEngine::Impl {
 public:
  struct Batch;

  // One running HTTP transfer. Owned by the engine thread.
  struct Transfer {
    std::shared_ptr<Batch> batch;
    uint32_t index = 0;
    CURL* easy = nullptr;
    curl_slist* headers = nullptr;
    std::string body;
    int64_t max_body_bytes = 0;
    bool too_large = false;
    bool head = false;  // a HEAD request: no body comes back
    char error[CURL_ERROR_SIZE] = {0};
  };

  // A submitted batch. Fields without a comment belong to the engine thread.
  struct Batch : FetchBatchHandle, std::enable_shared_from_this<Batch> {
    Batch(Impl* engine, std::vector<FetchSpec> requests,
          const BatchOptions& options, std::shared_ptr<FetchSink> sink)
        : engine(engine),
          requests(std::move(requests)),
          options(options),
          sink(std::move(sink)) {}

    void Cancel() override { engine->PostCancel(this); }
    void Release(int n) override {
      backlog.fetch_sub(n);
      if (stalled.exchange(false)) engine->Wake();
    }

    // Constant after construction.
    Impl* const engine;
    std::vector<FetchSpec> requests;
    const BatchOptions options;

    std::shared_ptr<FetchSink> sink;  // reset after the last delivery
    size_t next = 0;                  // first request not yet started
    size_t delivered = 0;
    int in_flight = 0;
    bool cancelled = false;
    std::unordered_set<Transfer*> transfers;
    // Shared with the sink's threads (Release).
    std::atomic<int> backlog{0};       // delivered, not yet released
    std::atomic<bool> stalled{false};  // waiting for Release to make room
  };

  explicit Impl(const Options& options) : options_(options) {}

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
    // Keep every connection our concurrency may use alive for reuse.
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS,
                      static_cast<long>(options_.max_in_flight));
    curl_multi_setopt(multi_, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    thread_ = std::thread([this] { Run(); });
    return absl::OkStatus();
  }

  ~Impl() {
    if (thread_.joinable()) {
      {
        absl::MutexLock lock(&mu_);
        stopping_ = true;
      }
      Wake();
      thread_.join();
    }
    for (CURL* easy : idle_easy_) curl_easy_cleanup(easy);
    if (multi_ != nullptr) curl_multi_cleanup(multi_);
    if (epoll_fd_ >= 0) close(epoll_fd_);
    if (wake_fd_ >= 0) close(wake_fd_);
  }

  std::shared_ptr<FetchBatchHandle> Submit(std::vector<FetchSpec> requests,
                                           const BatchOptions& options,
                                           std::shared_ptr<FetchSink> sink) {
    auto batch = std::make_shared<Batch>(this, std::move(requests), options,
                                         std::move(sink));
    {
      absl::MutexLock lock(&mu_);
      submitted_.push_back(batch);
    }
    Wake();
    return batch;
  }

  void PostCancel(Batch* batch) {
    {
      absl::MutexLock lock(&mu_);
      cancel_requests_.push_back(batch->shared_from_this());
    }
    Wake();
  }

  void Wake() {
    uint64_t one = 1;
    // EAGAIN means the counter is already non-zero: a wake is pending.
    [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof(one));
  }

  int in_flight() const { return in_flight_.load(); }
  const Options& options() const { return options_; }

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
    self->timer_deadline_ = timeout_ms < 0
                                ? absl::InfiniteFuture()
                                : absl::Now() + absl::Milliseconds(timeout_ms);
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
      int wait_ms = -1;
      if (timer_deadline_ != absl::InfiniteFuture()) {
        const absl::Duration left = timer_deadline_ - absl::Now();
        wait_ms =
            left <= absl::ZeroDuration()
                ? 0
                : static_cast<int>(absl::ToInt64Milliseconds(
                      left + absl::Milliseconds(1) - absl::Nanoseconds(1)));
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
      if (timer_deadline_ <= absl::Now()) {
        timer_deadline_ = absl::InfiniteFuture();
        curl_multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &running);
      }
      CollectCompleted();
      if (TakeCommands()) break;
      Admit();
    }
    // Shutting down: everything not yet delivered ends as cancelled.
    std::vector<std::shared_ptr<Batch>> all(batches_.begin(), batches_.end());
    for (const auto& batch : all) CancelBatch(*batch);
  }

  // Moves posted submissions and cancellations onto the engine thread.
  // Returns true when the engine is stopping.
  bool TakeCommands() {
    std::vector<std::shared_ptr<Batch>> submitted, cancels;
    bool stopping;
    {
      absl::MutexLock lock(&mu_);
      submitted.swap(submitted_);
      cancels.swap(cancel_requests_);
      stopping = stopping_;
    }
    for (auto& batch : submitted) {
      batches_.insert(batch);
      active_.push_back(batch);
    }
    for (auto& batch : cancels) CancelBatch(*batch);
    return stopping;
  }

  // Starts transfers while there is room, one per batch per round so that
  // batches share the engine-wide cap fairly.
  void Admit() {
    bool progressed = true;
    while (progressed && !active_.empty() &&
           in_flight_.load() < options_.max_in_flight) {
      progressed = false;
      for (size_t turns = active_.size(); turns > 0 && !active_.empty();
           --turns) {
        if (in_flight_.load() >= options_.max_in_flight) return;
        if (cursor_ >= active_.size()) cursor_ = 0;
        Batch* batch = active_[cursor_].get();
        if (batch->next >= batch->requests.size() || batch->cancelled) {
          active_.erase(active_.begin() + static_cast<ptrdiff_t>(cursor_));
          continue;
        }
        ++cursor_;
        if (!HasRoom(*batch)) continue;
        StartNext(*batch);
        progressed = true;
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

  void StartNext(Batch& batch) {
    const uint32_t index = static_cast<uint32_t>(batch.next++);
    FetchSpec& spec = batch.requests[index];
    std::string method;
    std::string invalid = ValidateSpec(spec, &method);
    if (!invalid.empty()) {
      FetchedResponse response;
      response.index = index;
      response.result = TransferResult::kInvalidRequest;
      response.error = std::move(invalid);
      Deliver(batch, std::move(response));
      return;
    }
    auto* transfer = new Transfer;
    transfer->batch = batch.shared_from_this();
    transfer->index = index;
    transfer->max_body_bytes = options_.max_body_bytes;
    transfer->easy = TakeEasy();
    CURL* easy = transfer->easy;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, transfer);
    curl_easy_setopt(easy, CURLOPT_URL, spec.url.c_str());
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(easy, CURLOPT_MAXREDIRS,
                     static_cast<long>(options_.max_redirects));
    curl_easy_setopt(
        easy, CURLOPT_TIMEOUT_MS,
        static_cast<long>(absl::ToInt64Milliseconds(batch.options.timeout)));
    curl_easy_setopt(
        easy, CURLOPT_CONNECTTIMEOUT_MS,
        static_cast<long>(absl::ToInt64Milliseconds(options_.connect_timeout)));
    // Decoded size is what the write callback counts, so the body cap also
    // holds against compression bombs.
    curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE,
                     static_cast<curl_off_t>(options_.max_body_bytes));
    curl_easy_setopt(easy, CURLOPT_USERAGENT, options_.user_agent.c_str());
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Impl::OnWrite);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, transfer);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, transfer->error);
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_2TLS);
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
      }
    }
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

    batch.transfers.insert(transfer);
    ++batch.in_flight;
    in_flight_.fetch_add(1);
    CURLMcode rc = curl_multi_add_handle(multi_, easy);
    if (rc != CURLM_OK) {
      FetchedResponse response;
      response.index = index;
      response.result = TransferResult::kTransportError;
      response.error =
          absl::StrCat("could not start transfer: ", curl_multi_strerror(rc));
      Finish(transfer, std::move(response), /*remove=*/false);
    }
  }

  void CollectCompleted() {
    int pending = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_, &pending)) {
      if (msg->msg != CURLMSG_DONE) continue;
      Transfer* transfer = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &transfer);
      const CURLcode code = msg->data.result;
      FetchedResponse response;
      response.index = transfer->index;
      response.attempts = 1;
      long status = 0;
      curl_easy_getinfo(transfer->easy, CURLINFO_RESPONSE_CODE, &status);
      response.http_status = static_cast<int>(status);
      curl_off_t total_us = 0;
      curl_easy_getinfo(transfer->easy, CURLINFO_TOTAL_TIME_T, &total_us);
      response.elapsed = absl::Microseconds(total_us);
      char* content_type = nullptr;
      curl_easy_getinfo(transfer->easy, CURLINFO_CONTENT_TYPE, &content_type);
      if (content_type != nullptr) {
        // Upstream bytes end up in proto3 strings, which must be UTF-8.
        for (const char* c = content_type; *c != '\0'; ++c) {
          const bool printable = *c >= 0x20 && *c < 0x7f;
          response.content_type.push_back(printable ? *c : '?');
        }
      }
      response.body_expected = !transfer->head;
      char* effective_url = nullptr;
      curl_easy_getinfo(transfer->easy, CURLINFO_EFFECTIVE_URL, &effective_url);
      if (effective_url != nullptr) response.effective_url = effective_url;
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
      } else {
        response.body = std::move(transfer->body);
      }
      Finish(transfer, std::move(response), /*remove=*/true);
    }
  }

  // Ends `transfer`, returns its easy handle to the pool and delivers.
  void Finish(Transfer* transfer, FetchedResponse response, bool remove) {
    if (remove) curl_multi_remove_handle(multi_, transfer->easy);
    curl_slist_free_all(transfer->headers);
    ReturnEasy(transfer->easy);
    std::shared_ptr<Batch> batch = std::move(transfer->batch);
    batch->transfers.erase(transfer);
    --batch->in_flight;
    in_flight_.fetch_sub(1);
    delete transfer;
    Deliver(*batch, std::move(response));
  }

  void Deliver(Batch& batch, FetchedResponse response) {
    batch.backlog.fetch_add(1);
    ++batch.delivered;
    const bool last = batch.delivered == batch.requests.size();
    // The request is done with: hand its URL over and free the rest.
    FetchSpec& spec = batch.requests[response.index];
    response.url = std::move(spec.url);
    spec = FetchSpec();
    std::shared_ptr<Batch> self = batch.shared_from_this();
    std::shared_ptr<FetchBatchHandle> handle = self;
    batch.sink->OnFetched(std::move(response), handle);
    if (last) {
      batch.sink.reset();
      batches_.erase(self);
    }
  }

  void CancelBatch(Batch& batch) {
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
      response.error = "batch cancelled before the request finished";
      response.attempts = 1;
      Finish(transfer, std::move(response), /*remove=*/true);
    }
    while (batch.next < batch.requests.size()) {
      FetchedResponse response;
      response.index = static_cast<uint32_t>(batch.next++);
      response.result = TransferResult::kCancelled;
      response.error = "batch cancelled before the request started";
      Deliver(batch, std::move(response));
    }
  }

  CURL* TakeEasy() {
    if (idle_easy_.empty()) return curl_easy_init();
    CURL* easy = idle_easy_.back();
    idle_easy_.pop_back();
    return easy;
  }

  void ReturnEasy(CURL* easy) {
    curl_easy_reset(easy);
    idle_easy_.push_back(easy);
  }

  // Constant after construction.
  const Options options_;
  CURLM* multi_ = nullptr;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::thread thread_;

  absl::Mutex mu_;
  std::vector<std::shared_ptr<Batch>> submitted_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Batch>> cancel_requests_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  // Engine thread only.
  std::unordered_set<std::shared_ptr<Batch>> batches_;  // not fully delivered
  // Batches with requests not yet started, in round-robin order.
  std::vector<std::shared_ptr<Batch>> active_;
  size_t cursor_ = 0;  // round-robin position in active_
  std::vector<CURL*> idle_easy_;
  absl::Time timer_deadline_ = absl::InfiniteFuture();

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

const FetchEngine::Options& FetchEngine::options() const {
  return impl_->options();
}

}  // namespace batchfetch

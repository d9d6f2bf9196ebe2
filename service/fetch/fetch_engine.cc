#include "service/fetch/fetch_engine.h"

#include <algorithm>
#include <thread>
#include <unordered_map>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "service/fetch/curl_driver.h"
#include "service/fetch/delivery_queue.h"
#include "service/fetch/host_governor.h"
#include "service/fetch/scheduler.h"

namespace batchfetch {
namespace {

constexpr const char* kCancelledText =
    "batch cancelled before the request finished";
constexpr const char* kDeadlineText =
    "batch deadline reached before the request started";

}  // namespace

// The coordinator: one event-loop thread that polls the CurlDriver, turns
// completed attempts into retries (RetryPolicy) or deliveries, runs the
// Scheduler's timers and admissions, and hands each loop turn's responses
// to the DeliveryQueue. Other threads only post commands (under mu_) and
// wake the loop.
class FetchEngine::Impl {
 public:
  // How a handle reaches the engine. Handles may outlive the engine; ~Impl
  // clears `impl` under `mu`, after which they are no-ops.
  struct EngineLink {
    absl::Mutex mu;
    Impl* impl ABSL_GUARDED_BY(mu) = nullptr;
  };

  class Handle final : public FetchBatchHandle {
   public:
    Handle(std::shared_ptr<EngineLink> link, Scheduler::BatchKey key,
           std::shared_ptr<BatchWindow> window)
        : link_(std::move(link)), key_(key), window_(std::move(window)) {}

    void Cancel() override { Post(Command::kCancel); }
    void EndAtDeadline() override { Post(Command::kDeadline); }
    void Release(int n) override {
      window_->backlog.fetch_sub(n);
      if (!window_->stalled.exchange(false)) return;
      absl::MutexLock lock(&link_->mu);
      if (link_->impl != nullptr) link_->impl->driver_->Wake();
    }

   private:
    enum class Command { kCancel, kDeadline };
    void Post(Command command) {
      absl::MutexLock lock(&link_->mu);
      if (link_->impl == nullptr) return;
      link_->impl->PostCommand(key_, command == Command::kDeadline);
    }

    // Constant after construction.
    const std::shared_ptr<EngineLink> link_;
    const Scheduler::BatchKey key_;
    const std::shared_ptr<BatchWindow> window_;
  };

  explicit Impl(const Options& options)
      : options_(options),
        clock_(options.clock != nullptr ? options.clock : Clock::Real()),
        link_(std::make_shared<EngineLink>()),
        scheduler_(&hosts_) {}

  absl::Status Init() {
    CurlDriver::Options driver;
    driver.max_connections = options_.max_in_flight;
    driver.max_body_bytes = options_.max_body_bytes;
    driver.max_redirects = options_.max_redirects;
    driver.connect_timeout = options_.connect_timeout;
    driver.low_speed_bytes = options_.low_speed_bytes;
    driver.low_speed_time = options_.low_speed_time;
    driver.user_agent = options_.user_agent;
    driver.proxy = options_.proxy;
    driver.egress = options_.egress;
    driver.ca_bundle = options_.ca_bundle;
    driver.resolve = options_.resolve;
    driver.multi_handles = options_.curl_multi_handles;
    auto created = CurlDriver::Create(driver, &stats_);
    if (!created.ok()) return created.status();
    driver_ = *std::move(created);
    {
      absl::MutexLock lock(&link_->mu);
      link_->impl = this;
    }
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
      driver_->Wake();
      thread_.join();
    }
    // Every batch was cancelled and handed over: run the last sinks.
    delivery_.Stop();
  }

  std::shared_ptr<FetchBatchHandle> Submit(std::vector<FetchSpec> requests,
                                           const BatchOptions& options,
                                           std::shared_ptr<FetchSink> sink) {
    Submission s;
    s.key = next_key_.fetch_add(1);
    s.requests = std::move(requests);
    s.limits.concurrency = std::max(options.concurrency, 1);
    s.limits.per_host_concurrency = std::max(options.per_host_concurrency, 0);
    s.limits.window = std::max(options.window, s.limits.concurrency);
    s.limits.timeout = options.timeout;
    s.limits.deadline = MonoDeadline(*clock_, options.deadline);
    s.limits.retry = options.retry;
    s.limits.max_body_bytes = std::max<int64_t>(options.max_body_bytes, 0);
    s.window = std::make_shared<BatchWindow>();
    s.sink = std::move(sink);
    s.handle = std::make_shared<Handle>(link_, s.key, s.window);
    std::shared_ptr<FetchBatchHandle> handle = s.handle;
    {
      absl::MutexLock lock(&mu_);
      submitted_.push_back(std::move(s));
    }
    driver_->Wake();
    return handle;
  }

  int in_flight() const {
    return static_cast<int>(
        stats_.transfers_in_flight.load(std::memory_order_relaxed));
  }
  FetchStatsSnapshot stats() const { return stats_.Snapshot(); }
  uint64_t loop_turns() const {
    return loop_turns_.load(std::memory_order_relaxed);
  }
  void WakeLoop() { driver_->Wake(); }

 private:
  // A batch on its way to the engine thread.
  struct Submission {
    Scheduler::BatchKey key = 0;
    std::vector<FetchSpec> requests;
    BatchLimits limits;
    std::shared_ptr<BatchWindow> window;
    std::shared_ptr<FetchSink> sink;
    std::shared_ptr<FetchBatchHandle> handle;
  };
  // Who receives a registered batch's responses (engine thread).
  struct Consumer {
    std::shared_ptr<FetchSink> sink;
    std::shared_ptr<FetchBatchHandle> handle;
  };

  void PostCommand(Scheduler::BatchKey key, bool at_deadline) {
    {
      absl::MutexLock lock(&mu_);
      (at_deadline ? deadline_requests_ : cancel_requests_).push_back(key);
    }
    driver_->Wake();
  }

  // --- the event loop (engine thread) -----------------------------------
  void Run() {
    std::vector<CompletedTransfer> completed;
    std::vector<Scheduler::Decision> decisions;
    // The last turn answered requests without starting I/O (invalid ones, a
    // start that failed): nothing would wake us for the rest, so look again
    // at once.
    bool admit_again = false;
    while (true) {
      absl::Duration wait = absl::InfiniteDuration();
      const MonoTime next = scheduler_.NextTimer();
      if (next != MonoTime::max()) {
        wait = std::max(Since(next, clock_->MonoNow()), absl::ZeroDuration());
      }
      if (admit_again) wait = absl::ZeroDuration();
      driver_->Poll(wait, &completed);
      for (CompletedTransfer& c : completed) OnCompleted(c);
      completed.clear();
      scheduler_.RunTimers(clock_->MonoNow(), &decisions);
      const bool stopping = TakeCommands(&decisions);
      Execute(decisions);
      admit_again = false;
      if (!stopping) {
        const int free_slots = options_.max_in_flight - driver_->running();
        if (free_slots > 0) {
          scheduler_.Admit(clock_->MonoNow(), free_slots, &decisions);
          const size_t decided = decisions.size();
          const int running_before = driver_->running();
          Execute(decisions);
          admit_again = decided > 0 && driver_->running() - running_before <
                                           static_cast<int>(decided);
        }
      }
      stats_.requests_queued.store(scheduler_.queued(),
                                   std::memory_order_relaxed);
      delivery_.Push(outbox_);
      loop_turns_.fetch_add(1, std::memory_order_relaxed);
      if (stopping) break;
    }
    // Shutting down: everything not yet delivered ends as cancelled.
    for (Scheduler::Batch* batch : scheduler_.AllBatches()) {
      scheduler_.Cancel(batch, &decisions);
    }
    Execute(decisions);
    delivery_.Push(outbox_);
  }

  // Registers submissions and applies posted cancels and deadlines.
  // Returns true when the engine is stopping.
  bool TakeCommands(std::vector<Scheduler::Decision>* out) {
    std::vector<Submission> submitted;
    std::vector<Scheduler::BatchKey> cancels, deadlines;
    bool stopping;
    {
      absl::MutexLock lock(&mu_);
      submitted.swap(submitted_);
      cancels.swap(cancel_requests_);
      deadlines.swap(deadline_requests_);
      stopping = stopping_;
    }
    const MonoTime now = clock_->MonoNow();
    for (Submission& s : submitted) {
      consumers_[s.key] = Consumer{std::move(s.sink), std::move(s.handle)};
      scheduler_.Add(s.key, std::move(s.requests), s.limits,
                     std::move(s.window), now);
      stats_.batches_active.fetch_add(1, std::memory_order_relaxed);
    }
    for (Scheduler::BatchKey key : deadlines) {
      if (Scheduler::Batch* b = scheduler_.Find(key)) {
        scheduler_.ExpireDeadline(b, /*cut_running=*/true, out);
      }
    }
    for (Scheduler::BatchKey key : cancels) {
      if (Scheduler::Batch* b = scheduler_.Find(key)) scheduler_.Cancel(b, out);
    }
    return stopping;
  }

  // Carries out the scheduler's decisions (and empties `decisions`).
  void Execute(std::vector<Scheduler::Decision>& decisions) {
    for (Scheduler::Decision& d : decisions) {
      using Kind = Scheduler::Decision::Kind;
      switch (d.kind) {
        case Kind::kStart:
          StartAttempt(d.batch, d.pos);
          break;
        case Kind::kInvalid: {
          FetchedResponse r;
          r.result = TransferResult::kInvalidRequest;
          r.end_reason = EndReason::kInvalidRequest;
          r.error = std::move(d.why);
          Deliver(d.batch, d.pos, std::move(r));
          break;
        }
        case Kind::kOutOfTime:
          DeliverOutOfTime(d.batch, d.pos);
          break;
        case Kind::kCancelled:
          Deliver(d.batch, d.pos, Cancelled());
          break;
        case Kind::kAbortCancelled:
        case Kind::kAbortAtDeadline: {
          driver_->Abort(d.transfer);
          scheduler_.AttemptEnded(d.batch, d.pos);
          FetchedResponse r = Cancelled();
          if (d.kind == Kind::kAbortAtDeadline) {
            r.result = TransferResult::kTimeout;
            r.end_reason = EndReason::kDeadlineCut;
            r.error = "batch deadline reached: the transfer was cut off";
          }
          Deliver(d.batch, d.pos, std::move(r));
          break;
        }
      }
    }
    decisions.clear();
  }

  static FetchedResponse Cancelled() {
    FetchedResponse r;
    r.result = TransferResult::kCancelled;
    r.end_reason = EndReason::kCancelled;
    r.error = kCancelledText;
    return r;
  }

  void StartAttempt(Scheduler::Batch* batch, uint32_t pos) {
    const MonoTime now = clock_->MonoNow();
    const BatchLimits& limits = scheduler_.limits(batch);
    TransferSpec spec;
    spec.token = TransferToken{batch, pos};
    spec.request = &scheduler_.spec(batch, pos);
    spec.method = scheduler_.method(batch, pos);
    spec.timeout = limits.timeout;
    spec.max_body_bytes = limits.max_body_bytes;
    if (limits.deadline != MonoTime::max() &&
        Since(limits.deadline, now) < spec.timeout) {
      spec.timeout = Since(limits.deadline, now);
      spec.timeout_is_deadline = true;
    }
    absl::StatusOr<CurlDriver::TransferId> id = driver_->Start(spec);
    if (id.ok()) {
      scheduler_.SetTransfer(batch, pos, *id);
      return;
    }
    // An attempt that failed to start ends like any other: the retry policy
    // decides (RETRY_ON_TRANSPORT_ERROR).
    CompletedTransfer failed;
    failed.token = spec.token;
    failed.response.result = TransferResult::kTransportError;
    failed.response.error = std::string(id.status().message());
    OnCompleted(failed);
  }

  void OnCompleted(CompletedTransfer& c) {
    auto* batch = static_cast<Scheduler::Batch*>(c.token.owner);
    const uint32_t pos = c.token.index;
    scheduler_.AttemptEnded(batch, pos);
    FetchedResponse& response = c.response;
    const MonoTime now = clock_->MonoNow();
    std::optional<absl::Duration> retry_after;
    if (c.retry_after.has_value()) {
      retry_after = ParseRetryAfter(*c.retry_after, clock_->WallNow());
    }
    if (retry_after.has_value()) {
      // The host that answered: after redirects, the final URL's.
      std::string host_key = scheduler_.host_key(batch, pos);
      if (c.redirected) {
        if (auto final_host = HostKeyOf(response.final_url); final_host.ok()) {
          host_key = *std::move(final_host);
        }
      }
      const MonoTime until =
          now + std::min(*retry_after, options_.max_retry_after);
      hosts_.StartCooldown(host_key, until, now);
      scheduler_.WakeAt(until);
    }
    const BatchLimits& limits = scheduler_.limits(batch);
    RetryInput input;
    input.options = &limits.retry;
    input.method = scheduler_.method(batch, pos);
    input.attempts_made = scheduler_.attempts(batch, pos);
    input.cancelled = scheduler_.cancelled(batch);
    input.retry_after = retry_after;
    input.max_retry_after = options_.max_retry_after;
    input.now = now;
    input.deadline = limits.deadline;
    const RetryPlan plan = PlanRetry(input, response, bitgen_);
    if (plan.kind == RetryPlan::Kind::kRetry) {
      stats_.retries.fetch_add(1, std::memory_order_relaxed);
      // A waiting retry keeps status, headers and error, not the body: memory
      // then grows with the window, not with the retries waiting.
      std::string().swap(response.body);
      scheduler_.ScheduleRetry(batch, pos, plan.at, std::move(response));
      return;
    }
    ExplainNoRetry(plan, input.attempts_made, clock_->WallNow(), response);
    Deliver(batch, pos, std::move(response));
  }

  // The batch deadline came first. A request with an earlier attempt
  // reports that attempt's outcome, saying why no retry followed; one never
  // tried is cancelled.
  void DeliverOutOfTime(Scheduler::Batch* batch, uint32_t pos) {
    std::optional<FetchedResponse> last =
        scheduler_.TakeLastOutcome(batch, pos);
    if (!last.has_value()) {
      FetchedResponse r = Cancelled();
      r.end_reason = EndReason::kDeadlineBeforeStart;
      r.error = kDeadlineText;
      Deliver(batch, pos, std::move(r));
      return;
    }
    ExplainRetryOvertaken(scheduler_.attempts(batch, pos), *last);
    Deliver(batch, pos, *std::move(last));
  }

  void Deliver(Scheduler::Batch* batch, uint32_t pos,
               FetchedResponse response) {
    FetchSpec& spec = scheduler_.spec(batch, pos);
    response.index = spec.index;
    response.url = std::move(spec.url);
    response.attempts = static_cast<uint32_t>(scheduler_.attempts(batch, pos));
    if (response.attempts > 0) {
      response.elapsed =
          Since(clock_->MonoNow(), scheduler_.first_start(batch, pos));
    }
    stats_.CountDelivered(response.result);
    const Scheduler::BatchKey key = scheduler_.key(batch);
    auto consumer = consumers_.find(key);
    Delivery& d = outbox_.emplace_back();
    d.sink = consumer->second.sink;
    d.handle = consumer->second.handle;
    d.response = std::move(response);
    if (scheduler_.Delivered(batch, pos)) {  // the batch's last
      consumers_.erase(consumer);
      stats_.batches_active.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  // Constant after construction.
  const Options options_;
  Clock* const clock_;
  const std::shared_ptr<EngineLink> link_;
  std::unique_ptr<CurlDriver> driver_;  // set by Init, before the thread
  std::thread thread_;
  FetchStats stats_;
  std::atomic<Scheduler::BatchKey> next_key_{1};
  // Turns of Run() completed (the liveness heartbeat).
  std::atomic<uint64_t> loop_turns_{0};

  absl::Mutex mu_;
  std::vector<Submission> submitted_ ABSL_GUARDED_BY(mu_);
  std::vector<Scheduler::BatchKey> cancel_requests_ ABSL_GUARDED_BY(mu_);
  std::vector<Scheduler::BatchKey> deadline_requests_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  // Engine thread only.
  HostGovernor hosts_;
  Scheduler scheduler_;  // after hosts_: unreferences them when destroyed
  std::unordered_map<Scheduler::BatchKey, Consumer> consumers_;
  std::vector<Delivery> outbox_;  // this loop turn's responses
  absl::BitGen bitgen_;

  // Declared last: stopped first in ~Impl's body, destroyed first.
  DeliveryQueue delivery_;
};

FetchEngine::FetchEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FetchEngine::~FetchEngine() = default;

absl::StatusOr<std::unique_ptr<FetchEngine>> FetchEngine::Create(
    const Options& options) {
  if (options.max_in_flight < 1) {
    return absl::InvalidArgumentError("max_in_flight must be at least 1");
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

FetchStatsSnapshot FetchEngine::stats() const { return impl_->stats(); }

uint64_t FetchEngine::loop_turns() const { return impl_->loop_turns(); }

void FetchEngine::WakeLoop() { impl_->WakeLoop(); }

}  // namespace batchfetch

#ifndef BATCHFETCH_SERVICE_FETCH_SCHEDULER_H_
#define BATCHFETCH_SERVICE_FETCH_SCHEDULER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/time/time.h"
#include "service/base/clock.h"
#include "service/fetch/fetch_types.h"
#include "service/fetch/host_governor.h"
#include "service/fetch/request_validation.h"
#include "service/fetch/retry_policy.h"
#include "service/fetch/timer_queue.h"

namespace batchfetch {

// Delivered responses a batch's consumer has not yet released. Shared
// between the engine thread and the consumer's threads.
struct BatchWindow {
  std::atomic<int> backlog{0};       // delivered, not yet released
  std::atomic<bool> stalled{false};  // the scheduler waits for a release
};

// What a batch may use, resolved against the engine's clock.
struct BatchLimits {
  int concurrency = 16;          // transfers at once, >= 1
  int per_host_concurrency = 0;  // per scheme+host+port; 0 = no cap
  // In-flight plus unreleased responses at most this many (>= concurrency).
  int window = 32;
  absl::Duration timeout = absl::Seconds(30);  // per attempt
  MonoTime deadline = MonoTime::max();
  RetryOptions retry;
  int64_t max_body_bytes = 0;  // 0 = the engine's (BatchOptions)
};

// Decides which request of which batch goes next. It keeps the batch
// registry (every request's state), per-batch per-host queues, the window,
// deadlines, retry timers and cancellation, and returns its decisions as
// values: it never calls curl or a sink. Batches take turns for free slots
// (round-robin), and so do hosts within a batch; a retry goes to the front
// of its host's queue when its timer fires.
//
// Thread-safety: none; the engine thread owns it. (BatchWindow is the one
// part shared with other threads.)
class Scheduler {
 public:
  class Batch;  // opaque; valid until its last request is Delivered()
  using BatchKey = uint64_t;

  struct Decision {
    enum class Kind {
      kStart,           // start an attempt (slots are already taken)
      kInvalid,         // deliver kInvalidRequest with `why`
      kOutOfTime,       // the deadline came first: deliver the last outcome
                        // (TakeLastOutcome) or kDeadlineBeforeStart
      kCancelled,       // deliver kCancelled
      kAbortCancelled,  // stop running attempt `transfer`; deliver kCancelled
      kAbortAtDeadline  // stop running attempt `transfer`; deliver a
                        // kTimeout cut by the deadline
    };
    Kind kind = Kind::kStart;
    Batch* batch = nullptr;
    uint32_t pos = 0;       // the request's position in its submission
    uint32_t transfer = 0;  // kAbort*: what SetTransfer recorded
    std::string why;        // kInvalid
  };

  explicit Scheduler(HostGovernor* hosts);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Registers a batch. REQUIRES: !requests.empty(); `key` unused.
  Batch* Add(BatchKey key, std::vector<FetchSpec> requests,
             const BatchLimits& limits, std::shared_ptr<BatchWindow> window,
             MonoTime now);
  // Null once the batch is fully delivered (or never existed).
  Batch* Find(BatchKey key) const;

  // Appends what to do now: at most `free_slots` kStart decisions (the
  // engine-wide cap), one per batch per round, plus answers that need no
  // slot (invalid requests, requests out of time).
  void Admit(MonoTime now, int free_slots, std::vector<Decision>* out);

  // Fires due timers: retries re-enter their host's queue (front); a
  // deadline yields kOutOfTime for every request neither running nor done.
  void RunTimers(MonoTime now, std::vector<Decision>* out);
  // When RunTimers next has something to do; MonoTime::max() if never.
  MonoTime NextTimer() const;
  // Makes sure Admit is tried again at `at` (e.g. a host cooldown ends).
  void WakeAt(MonoTime at) { timers_.Push(at, Timer{0, 0, Timer::kWake}); }

  // Cancels `batch`: kAbortCancelled for running attempts, kCancelled for
  // every other request not yet delivered. Idempotent.
  void Cancel(Batch* batch, std::vector<Decision>* out);
  // The batch's deadline has passed now. Requests not running get
  // kOutOfTime; running ones kAbortAtDeadline when `cut_running`, else they
  // end by their own timeouts (shortened to the deadline). Idempotent.
  void ExpireDeadline(Batch* batch, bool cut_running,
                      std::vector<Decision>* out);

  // The engine's record of a started attempt (for kAbort* decisions).
  void SetTransfer(Batch* batch, uint32_t pos, uint32_t transfer);
  // An attempt ended (completed, failed to start or aborted): frees its
  // slots. REQUIRES: it was started by a kStart decision.
  void AttemptEnded(Batch* batch, uint32_t pos);
  // Waits for a retry at `at`, keeping `last` (whose body the caller has
  // dropped) in case the deadline or a cancel comes first.
  void ScheduleRetry(Batch* batch, uint32_t pos, MonoTime at,
                     FetchedResponse last);
  // The kept outcome of a request that waited for a retry, if any.
  std::optional<FetchedResponse> TakeLastOutcome(Batch* batch, uint32_t pos);

  // Marks the request delivered: counts it in the batch's window backlog,
  // frees its spec (after the caller took what it needs) and, after the
  // batch's last request, forgets the batch (`batch` is then invalid).
  // Returns true when that happened.
  bool Delivered(Batch* batch, uint32_t pos);

  // Accessors. REQUIRES: `batch` valid, `pos` < its size.
  BatchKey key(const Batch* batch) const;
  FetchSpec& spec(Batch* batch, uint32_t pos);
  HttpMethod method(const Batch* batch, uint32_t pos) const;
  const std::string& host_key(const Batch* batch, uint32_t pos) const;
  int attempts(const Batch* batch, uint32_t pos) const;
  MonoTime first_start(const Batch* batch, uint32_t pos) const;
  const BatchLimits& limits(const Batch* batch) const;
  bool cancelled(const Batch* batch) const;

  size_t batch_count() const { return batches_.size(); }
  // Requests accepted and neither started nor delivered, over all batches.
  int64_t queued() const { return queued_; }
  std::vector<Batch*> AllBatches() const;

 private:
  struct Timer {
    enum Kind : uint8_t { kRetry, kDeadline, kWake };
    BatchKey batch;
    uint32_t pos;
    Kind kind;
  };

  bool HasRoom(Batch& batch);
  bool HostOpen(const Batch& batch, uint32_t host, MonoTime now) const;
  // Decides for one request of `batch`; false when everything queued waits
  // for a closed host.
  bool DecideOne(Batch& batch, MonoTime now, std::vector<Decision>* out,
                 bool* started);
  void Start(Batch& batch, uint32_t pos, MonoTime now,
             std::vector<Decision>* out, bool* started);
  void Enqueue(Batch& batch, uint32_t host, uint32_t pos, bool front);
  void List(Batch& batch);
  // Every request neither running nor done gets `kind`.
  void DrainQueued(Batch& batch, Decision::Kind kind,
                   std::vector<Decision>* out);

  HostGovernor* const hosts_;
  std::unordered_map<BatchKey, std::unique_ptr<Batch>> batches_;
  std::vector<Batch*> active_;  // batches with queued requests, in turn
  size_t cursor_ = 0;           // round-robin position in active_
  TimerQueue<Timer> timers_;
  int64_t queued_ = 0;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_FETCH_SCHEDULER_H_

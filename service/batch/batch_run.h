#ifndef BATCHFETCH_SERVICE_BATCH_BATCH_RUN_H_
#define BATCHFETCH_SERVICE_BATCH_BATCH_RUN_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "batchfetch/v1/batchfetch.pb.h"
#include "service/base/clock.h"
#include "service/batch/batch_observer.h"
#include "service/batch/batch_stats.h"
#include "service/fetch/fetch_engine.h"
#include "service/json/json_cleaner.h"
#include "service/store/result_store.h"

namespace batchfetch {

// The life of one batch, apart from whoever asked for it: it is the engine's
// FetchSink, turns each response into a result (FillResult), queues it for
// the store, counts, and once every result and then the final batch row are
// acknowledged by the store, reports the end. What happens is reported to a
// BatchObserver (the caller's gRPC stream, or nobody).
//
// With a store, a result is reported to the observer only once the store
// has answered for it (committed, spooled, or given up): whatever a caller
// has seen survives a crash of the process. Results therefore reach the
// observer in the order the store acknowledges them.
//
// Phases: kFetching (results arriving, store acks pending) -> kRecording
// (the final BatchRecord is queued in the store; skipped without a store)
// -> kFinished (OnFinished queued for the observer).
//
// Window: each result holds one slot of the batch's engine window until both
// the observer and the store have dropped it (the last owner's destructor
// calls FetchBatchHandle::Release(1)). This is what bounds a batch's memory
// when the reader or the database is slow.
//
// Thread-safety: all public methods may be called from any thread. The run
// never calls out (observer, store, engine handle) while holding its lock:
// it decides under the lock and acts after releasing it. Observer calls are
// serialized and ordered (see BatchObserver): whoever queues a notice while
// no other thread is delivering delivers the queue.
//
// Ownership: always held by shared_ptr (use std::make_shared). The engine
// (as sink), the store's callbacks and the observer's owner keep it alive.
class BatchRun final : public FetchSink,
                       public std::enable_shared_from_this<BatchRun> {
 public:
  struct Params {
    std::string batch_id;
    uint32_t total = 0;  // requests in the batch, >= 1
    // When the batch was accepted (the time CreateBatch recorded).
    absl::Time created_at;
    // Null: nothing is stored, `stored` stays 0 and the end is reported as
    // soon as the last result has been.
    ResultStore* store = nullptr;
    // Stamps fetched_at and finished_at. Must outlive the run.
    const Clock* clock = Clock::Real();
    // Where the run counts its results, its end and itself while active
    // (metrics). Not owned; must outlive the run. Null: nothing is counted.
    BatchStats* stats = nullptr;
    // A resumed batch (FetchBatchRequest.resume): its results already
    // stored OK, one `result` event each, distinct indices. They are
    // reported right after `accepted` and before anything fetched, and
    // count as received, succeeded and stored from the start: `total` is
    // still the whole batch, and the submitted requests are the other
    // total - size() (when there are none, Start submits nothing and the
    // batch finishes at once). They hold no engine window slot.
    std::vector<std::shared_ptr<const v1::FetchBatchEvent>> resumed_results;
    // Only for the batch_accepted log line: the caller's identity (empty
    // without auth), the batch's effective concurrency, and whether it is
    // a resume (FetchBatchRequest.resume).
    std::string owner;
    uint32_t concurrency = 0;
    bool resume = false;
  };

  enum class Phase { kFetching, kRecording, kFinished };

  // How Cancel ends the requests that have not finished yet.
  enum class CancelMode {
    // Every one ends CANCELLED (FetchBatchHandle::Cancel).
    kCancel,
    // The caller's deadline has passed: they end as the engine's own batch
    // deadline ends them (FetchBatchHandle::EndAtDeadline): running
    // transfers TIMEOUT, never-started requests CANCELLED.
    kAtDeadline,
  };

  // Hands the run to the engine: must call FetchEngine::Submit (or a fake's)
  // with the given sink and return its handle.
  using Submit = absl::FunctionRef<std::shared_ptr<FetchBatchHandle>(
      std::shared_ptr<FetchSink> sink)>;

  BatchRun(Params params, JsonCleaner cleaner);
  ~BatchRun() override;

  BatchRun(const BatchRun&) = delete;
  BatchRun& operator=(const BatchRun&) = delete;

  // Logs `batch_accepted` (info: batch_id, owner, total, concurrency,
  // resume, resumed_ok) and reports `accepted` to `observer` (null: nobody
  // is told anything), then
  // the resumed results (Params::resumed_results), then submits the batch
  // (unless nothing is left to fetch). A Cancel that came earlier is applied to
  // the handle at once. REQUIRES: called exactly once; `observer`, when not
  // null, stays valid until its OnFinished.
  void Start(BatchObserver* observer, Submit submit);

  // Ends the batch early; it is recorded CANCELLED. The first call wins;
  // later ones, and any call once every result has been received and the
  // final row queued, do nothing. May come before Start.
  void Cancel(CancelMode mode = CancelMode::kCancel);

  // The end is logged once, as `batch_finished` (info: batch_id, state as
  // "done", "cancelled", ..., total, succeeded, failed, stored, spooled,
  // duration_ms from Start, and store_error when results could not be
  // stored). Never a line per result at info level.
  //
  // FetchSink: called on the engine's delivery thread. A result that ends
  // OUTCOME_BLOCKED also writes one "request_blocked" warning (LogEvent)
  // with the batch id, index, host and error.
  void OnFetched(FetchedResponse response,
                 const std::shared_ptr<FetchBatchHandle>& batch) override;

  struct Snapshot {
    Phase phase = Phase::kFetching;
    uint32_t received = 0;
    uint32_t succeeded = 0;
    uint32_t store_acks = 0;
    uint32_t stored = 0;
    uint32_t spooled = 0;
    bool cancelled = false;
  };
  Snapshot snapshot() const;

  const std::string& batch_id() const { return batch_id_; }

  // True when some thread holds the run's lock. Tests call it from inside
  // fakes (single-threaded) to assert the run never calls out under it.
  bool IsLockedForTesting() const;

 private:
  // Something to tell the observer, in order.
  struct Notice {
    enum class Kind { kAccepted, kResult, kFinished };
    Kind kind = Kind::kResult;
    std::shared_ptr<const v1::FetchBatchEvent> event;  // kAccepted, kResult
    v1::BatchSummary summary;                          // kFinished
    absl::Status status;                               // kFinished
  };
  // What to do once the lock is released.
  struct Actions {
    std::optional<BatchRecord> finish_batch;  // store_->FinishBatch
  };

  // The store's answer for one result; `event` is then streamed.
  void OnStored(std::shared_ptr<const v1::FetchBatchEvent> event,
                const ResultStore::WriteOutcome& outcome)
      ABSL_LOCKS_EXCLUDED(mu_);
  void OnBatchRecorded(const ResultStore::WriteOutcome& outcome)
      ABSL_LOCKS_EXCLUDED(mu_);
  Actions MaybeComplete() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void QueueFinished() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Act(Actions actions) ABSL_LOCKS_EXCLUDED(mu_);
  // Delivers queued notices unless another thread already is.
  void DrainNotices() ABSL_LOCKS_EXCLUDED(mu_);
  static void Deliver(BatchObserver* observer, Notice notice);
  static void Apply(FetchBatchHandle& handle, CancelMode mode);

  // Constant after construction.
  const std::string batch_id_;
  const uint32_t total_;
  const absl::Time created_at_;
  const std::string owner_;
  const uint32_t concurrency_;
  const bool resume_;
  ResultStore* const store_;
  const Clock* const clock_;
  const JsonCleaner cleaner_;
  BatchStats* const stats_;
  // Params::resumed_results, until Start has queued them.
  std::vector<std::shared_ptr<const v1::FetchBatchEvent>> resumed_
      ABSL_GUARDED_BY(mu_);

  mutable absl::Mutex mu_;
  BatchObserver* observer_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::shared_ptr<FetchBatchHandle> handle_ ABSL_GUARDED_BY(mu_);
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kFetching;
  MonoTime started_ ABSL_GUARDED_BY(mu_);  // Start, for duration_ms
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  CancelMode cancel_mode_ ABSL_GUARDED_BY(mu_) = CancelMode::kCancel;
  uint32_t received_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t succeeded_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t store_acks_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t stored_ ABSL_GUARDED_BY(mu_) = 0;      // committed
  uint32_t spooled_ ABSL_GUARDED_BY(mu_) = 0;     // in the local spool
  std::string store_error_ ABSL_GUARDED_BY(mu_);  // the first one
  BatchRecord record_ ABSL_GUARDED_BY(mu_);       // final, from kRecording on
  std::deque<Notice> notices_ ABSL_GUARDED_BY(mu_);
  bool notifying_ ABSL_GUARDED_BY(mu_) = false;  // a thread is delivering
  // Counted in stats_->batches_active: from Start until it finishes (or is
  // destroyed unfinished).
  bool counted_active_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_BATCH_BATCH_RUN_H_

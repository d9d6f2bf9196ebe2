#ifndef BATCHFETCH_SERVICE_API_FETCH_BATCH_REACTOR_H_
#define BATCHFETCH_SERVICE_API_FETCH_BATCH_REACTOR_H_

#include <deque>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "batchfetch/v1/batchfetch.grpc.pb.h"
#include "service/api/active_batch_limiter.h"
#include "service/base/clock.h"
#include "service/batch/batch_observer.h"
#include "service/batch/batch_run.h"

namespace batchfetch {

// A call cancelled no earlier than this before its deadline counts as
// cancelled by the deadline. The client's own deadline timer and ours fire
// at about the same moment; whichever is seen first, the batch ends the same.
inline constexpr absl::Duration kDeadlineSlack = absl::Milliseconds(100);

// Whether a call with deadline `call_deadline` that is cancelled at `now`
// was cancelled because its deadline passed. InfiniteFuture: no deadline.
bool CancelledByDeadline(absl::Time call_deadline, absl::Time now);

// The server side of one FetchBatch call: the gRPC stream as a BatchObserver.
//
// It writes `accepted`, each result and then the summary, one StartWrite in
// flight at a time (the buffer hint set when more events wait behind it),
// and finishes the call with the status the run reports. When the caller
// goes away (OnCancel) or a write fails, it cancels the run and writes
// nothing more, but the call is finished only once the run has finished (so
// every result is stored first): with CANCELLED. A cancel that comes
// because the call's deadline passed (CancelledByDeadline) ends the run with
// BatchRun::CancelMode::kAtDeadline: running transfers end TIMEOUT, never
// started ones CANCELLED, whichever of the engine's deadline timer and
// gRPC's is first.
//
// Lifetime: created by the handler, deletes itself in OnDone, which gRPC
// calls only after Finish. Finish is called exactly once: by Reject, or
// after the run's OnFinished (the run's last call to its observer). The
// reactor owns the run (shared).
//
// Thread-safety: gRPC reactions, the run's observer calls and Reject/Run
// may come on different threads at once. State is under `mu_`; StartWrite,
// Finish and calls into the run are made after releasing it, Finish always
// last.
class FetchBatchReactor final
    : public grpc::ServerWriteReactor<v1::FetchBatchEvent>,
      public BatchObserver {
 public:
  // `context` is the call's (valid until OnDone); `clock` must outlive the
  // reactor.
  FetchBatchReactor(const grpc::CallbackServerContext* context,
                    const Clock* clock);

  // Keeps `lease` (the batch's place under the active-batch limits) until
  // the run has finished (OnFinished, released before the summary is
  // written) or the call is rejected; so a batch counts as active until its
  // results are stored, even when its caller has gone. REQUIRES: called
  // before Run or Reject.
  void HoldUntilFinished(ActiveBatchLimiter::Lease lease);

  // Ends the call before a batch exists (bad request, CreateBatch failed, a
  // full executor). REQUIRES: Run was not called.
  void Reject(const absl::Status& status);

  // FetchBatchRequest.detach: the caller going away (or a failed write)
  // stops the stream but not the run; the call still finishes only once the
  // run has (so the batch keeps its active-batch lease until then).
  // REQUIRES: called before Run.
  void SetDetached() ABSL_LOCKS_EXCLUDED(mu_);

  // Binds `run` and starts it (BatchRun::Start with `observer`, which must
  // pass every call on to this reactor, e.g. a BatchBroadcaster; null: this
  // reactor itself). If the call was cancelled already (and is not
  // detached), the run is cancelled before it starts: every request is
  // still recorded. REQUIRES: called at most once, not after Reject.
  void Run(std::shared_ptr<BatchRun> run, BatchRun::Submit submit,
           BatchObserver* observer = nullptr);

  // BatchObserver (called by the run, never concurrently with each other).
  void OnAccepted(std::shared_ptr<const v1::FetchBatchEvent> event) override;
  void OnResult(std::shared_ptr<const v1::FetchBatchEvent> event) override;
  void OnFinished(const v1::BatchSummary& summary,
                  const absl::Status& status) override;

  // grpc::ServerWriteReactor
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  using Event = std::shared_ptr<const v1::FetchBatchEvent>;

  void Enqueue(Event event) ABSL_LOCKS_EXCLUDED(mu_);
  // The event to StartWrite now (and its options), if one should start.
  Event NextWrite(grpc::WriteOptions* options)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The status to Finish with now, if the call should end now.
  std::optional<grpc::Status> FinishNow() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  BatchRun::CancelMode CancelModeNow() const;

  // Constant after construction.
  const grpc::CallbackServerContext* const context_;
  const Clock* const clock_;

  absl::Mutex mu_;
  std::shared_ptr<BatchRun> run_ ABSL_GUARDED_BY(mu_);
  // Events to write; the front one is being written while `writing_`.
  std::deque<Event> outbox_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  // Cancelled or a write failed: nothing more is written.
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  // SetDetached: a broken stream does not cancel the run.
  bool detached_ ABSL_GUARDED_BY(mu_) = false;
  BatchRun::CancelMode cancel_mode_ ABSL_GUARDED_BY(mu_) =
      BatchRun::CancelMode::kCancel;
  bool summary_written_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::Status> final_status_ ABSL_GUARDED_BY(mu_);
  // Released (outside `mu_`) when the run finishes or the call is rejected.
  ActiveBatchLimiter::Lease lease_ ABSL_GUARDED_BY(mu_);
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_API_FETCH_BATCH_REACTOR_H_

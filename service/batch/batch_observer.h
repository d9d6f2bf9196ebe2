#ifndef BATCHFETCH_SERVICE_BATCH_BATCH_OBSERVER_H_
#define BATCHFETCH_SERVICE_BATCH_BATCH_OBSERVER_H_

#include <memory>

#include "absl/status/status.h"
#include "batchfetch/v1/batchfetch.pb.h"

namespace batchfetch {

// What a BatchRun reports about its batch: to the caller's stream today; to
// nobody (a detached batch) or to a caller that re-attaches later.
//
// Contract, as BatchRun keeps it:
//   * calls are never concurrent and come in this order: OnAccepted once,
//     then OnResult once per request (completion order), then OnFinished
//     exactly once; after OnFinished the run never touches the observer
//     again, so an observer may destroy itself once it is done with that
//     call (a gRPC reactor does, in OnDone);
//   * they may come on any thread (the caller of BatchRun::Start, the
//     engine's delivery thread, the store's thread) and never while the run
//     holds its own lock, so an observer may call back into the run (e.g.
//     BatchRun::Cancel) from inside them;
//   * they must not block: they run on threads every batch shares.
class BatchObserver {
 public:
  virtual ~BatchObserver() = default;

  // The batch was accepted; `event` holds `accepted {batch_id, total}`.
  virtual void OnAccepted(std::shared_ptr<const v1::FetchBatchEvent> event) = 0;

  // One result; `event` holds `result`. While the observer keeps `event`
  // alive it holds one slot of the batch's engine window (the batch stalls
  // once all slots are held), so drop it once it is written or not wanted.
  virtual void OnResult(std::shared_ptr<const v1::FetchBatchEvent> event) = 0;

  // The batch has ended and, with a store, every result and the final batch
  // row were acknowledged by it. `summary` is the final row as recorded.
  // `status`: OK; UNAVAILABLE "N of M results could not be stored: ..." when
  // the store gave up on some write; CANCELLED when the batch was cancelled
  // (BatchRun::Cancel).
  virtual void OnFinished(const v1::BatchSummary& summary,
                          const absl::Status& status) = 0;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_BATCH_BATCH_OBSERVER_H_

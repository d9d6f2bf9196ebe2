#ifndef BATCHFETCH_SERVICE_API_WATCH_BATCH_REACTOR_H_
#define BATCHFETCH_SERVICE_API_WATCH_BATCH_REACTOR_H_

#include <grpcpp/alarm.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "batchfetch/v1/batchfetch.grpc.pb.h"
#include "service/api/batch_broadcaster.h"
#include "service/api/executor.h"
#include "service/store/result_store.h"

namespace batchfetch {

// The server side of one WatchBatch call.
//
// It sends `accepted`, then the stored results from `from_index` on (index
// order, read page by page with ListResults), then live results, then the
// summary, and finishes OK. Each index is sent at most once (a bitmap of
// the indices sent), whichever way it arrives. Two ways to learn of new
// results:
//  * live: the batch runs in this process (its BatchBroadcaster was found
//    and took our subscription before it finished). A live result is
//    queued as a copy of our own, cut to MysqlReader::kMaxRowBytes like a
//    stored row (FitResult), so the run's event, which holds a slot of the
//    batch's engine window, is released as soon as OnLiveResult returns: a
//    watcher that stops reading never stalls the batch. Results reported
//    while a store scan is under way, or while kMaxLiveBacklog events or
//    kMaxLiveBacklogBytes wait to be written, are not kept; their indices
//    go to `missed_`, and a rescan reads only the range from the lowest
//    missed index to the last one within a page of it (a result is
//    reported only after the store acknowledged it). Rescans back to back
//    wait min_poll between them. The run's end sends the summary once
//    nothing is missed.
//  * following the store: otherwise (another replica runs it, or it has
//    finished). Each poll reads GetBatch, then scans from the lowest unsent
//    index; when the state read before the scan was not RUNNING, that
//    summary is sent and the call ends. Between polls it waits on a
//    grpc::Alarm (no thread held): min_poll, doubling to max_poll while
//    nothing new is found. A database error that is UNAVAILABLE waits
//    max_poll and tries again; any other ends the call with it.
// Results that only reached a local spool (the database was away) show up
// once replayed into the database.
//
// Lifetime: created by the handler, deleted in OnDone. Finish is called
// exactly once, and only when no store task is queued or running and no
// alarm is pending (they use `this`), after the subscription is detached.
// The alarm is never cancelled (cancelling races with its callback ending
// the call and deleting `this`): a call that ends while it is pending
// finishes once it fired, at most max_poll later.
// Thread-safety: gRPC reactions, executor tasks, the alarm and the live
// calls may come concurrently; state is under `mu_`, and StartWrite,
// Submit, alarm calls and Finish happen after releasing it. Live calls never
// finish the call (Detach would wait for themselves; see Act).
class WatchBatchReactor final
    : public grpc::ServerWriteReactor<v1::FetchBatchEvent>,
      public LiveWatcher {
 public:
  struct Deps {
    ResultStore* store = nullptr;  // not null
    Executor* executor = nullptr;  // every store call runs there
    // The broadcaster of `batch_id` if it runs in this process, else null.
    std::function<std::shared_ptr<BatchBroadcaster>(const std::string&)>
        find_live;
    absl::Duration min_poll = absl::Milliseconds(100);
    absl::Duration max_poll = absl::Seconds(2);
    uint32_t page_size = 500;
  };
  // Events (count and serialized bytes) that may wait to be written
  // before live results are dropped (and read from the store instead).
  static constexpr size_t kMaxLiveBacklog = 64;
  static constexpr size_t kMaxLiveBacklogBytes = 8 << 20;

  WatchBatchReactor(Deps deps, std::string batch_id, uint32_t from_index,
                    ReadScope scope);

  // Queues the first step (GetBatch) on the executor.
  void Start() ABSL_LOCKS_EXCLUDED(mu_);
  // Ends the call before it started (bad id, no store, unauthenticated).
  void Reject(const absl::Status& status);

  // LiveWatcher
  void OnLiveResult(std::shared_ptr<const v1::FetchBatchEvent> event) override;
  void OnLiveFinished(const v1::BatchSummary& summary) override;

  // grpc::ServerWriteReactor
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  using Event = std::shared_ptr<const v1::FetchBatchEvent>;
  // What to do once `mu_` is released.
  struct Actions {
    Event write;
    grpc::WriteOptions write_options;
    bool scan = false;                  // Submit a Scan task
    std::optional<absl::Duration> arm;  // Set the alarm
    std::optional<grpc::Status> finish;
  };

  // Decides the next steps from the state (under `mu_`).
  Actions Advance() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Carries `actions` out (without `mu_`). On a live call it never
  // finishes: a live call returns early once broken or failed, and
  // otherwise the only finish due (after the summary's write) comes from
  // OnWriteDone.
  void Act(Actions actions) ABSL_LOCKS_EXCLUDED(mu_);
  // Executor tasks.
  void Begin() ABSL_LOCKS_EXCLUDED(mu_);
  void Poll() ABSL_LOCKS_EXCLUDED(mu_);
  void ScanPage() ABSL_LOCKS_EXCLUDED(mu_);
  // A store task could not run or failed: what to do about `status`.
  void TaskFailed(const absl::Status& status) ABSL_LOCKS_EXCLUDED(mu_);
  void SubmitOrFail(void (WatchBatchReactor::*task)()) ABSL_LOCKS_EXCLUDED(mu_);
  void OnAlarm(bool fired) ABSL_LOCKS_EXCLUDED(mu_);
  // Queues `result` unless sent already (marks it sent).
  void QueueResult(Event event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Appends to outbox_, counting its bytes.
  void Enqueue(Event event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops every queued event but the one being written.
  void DropUnwritten() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether a live result for `index` is to be queued; when the backlog is
  // full or a scan is under way, marks it missed instead.
  bool KeepLive(uint32_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t LowestUnsent() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The next gap range of a poll: the lowest unsent index in
  // [gap_next_, tail_from_) and the rows up to the last unsent one within
  // a page of it. False when none is left.
  bool NextGap(uint32_t* from, uint32_t* rows)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const Deps deps_;
  const std::string batch_id_;
  const uint32_t from_index_;
  const ReadScope scope_;
  const std::shared_ptr<LiveSubscription> subscription_;
  // A fresh alarm per wait (never re-Set, never cancelled). Touched only
  // by Act when arming (after the previous one fired) and by the
  // destructor (after the last one fired: Finish waits for it), so no lock.
  std::unique_ptr<grpc::Alarm> alarm_;

  absl::Mutex mu_;
  uint32_t total_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<bool> sent_ ABSL_GUARDED_BY(mu_);
  uint32_t lowest_unsent_ ABSL_GUARDED_BY(mu_) = 0;
  // Our own events (never the run's: see OnLiveResult); the front is
  // being written when writing_.
  std::deque<Event> outbox_ ABSL_GUARDED_BY(mu_);
  size_t outbox_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // serialized, summed
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  // The client went away or a write failed.
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  // An error to end the call with once nothing is in flight.
  std::optional<grpc::Status> error_ ABSL_GUARDED_BY(mu_);
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  // A store task is queued or running, or the alarm is set.
  bool task_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool alarm_set_ ABSL_GUARDED_BY(mu_) = false;
  bool begun_ ABSL_GUARDED_BY(mu_) = false;  // accepted queued
  // The scan under way continues from this index; -1: no scan under way.
  int64_t scan_from_ ABSL_GUARDED_BY(mu_) = -1;
  bool found_new_ ABSL_GUARDED_BY(mu_) = false;  // this poll found results
  // Every row from here on is still to be read (a scan read the rows
  // below it that were stored then): a poll reads the unsent gaps below
  // it by range, then the tail from it, not every row from the lowest gap.
  uint32_t tail_from_ ABSL_GUARDED_BY(mu_) = 0;
  bool in_gaps_ ABSL_GUARDED_BY(mu_) = false;   // the poll reads gaps first
  uint32_t gap_next_ ABSL_GUARDED_BY(mu_) = 0;  // the next gap from here
  absl::Duration backoff_ ABSL_GUARDED_BY(mu_);
  // Live mode (subscribed to the run in this process).
  bool live_ ABSL_GUARDED_BY(mu_) = false;
  bool live_ready_ ABSL_GUARDED_BY(mu_) = false;  // live events are queued
  // Live results dropped (backlog full or a scan under way) and not sent
  // since: a rescan reads them from the store.
  std::set<uint32_t> missed_ ABSL_GUARDED_BY(mu_);
  // >0: the scan under way is a rescan of missed indices, this many rows
  // from scan_from_ (one ListResults call).
  uint32_t rescan_rows_ ABSL_GUARDED_BY(mu_) = 0;
  // A rescan just ran: the next one waits min_poll (rescan_alarm_: the
  // alarm pending is that wait, not a poll).
  bool rescan_wait_ ABSL_GUARDED_BY(mu_) = false;
  bool rescan_alarm_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<v1::BatchSummary> live_summary_ ABSL_GUARDED_BY(mu_);
  // Following the store: the batch as read before the current scan.
  std::optional<v1::BatchSummary> db_summary_ ABSL_GUARDED_BY(mu_);
  bool summary_queued_ ABSL_GUARDED_BY(mu_) = false;
  bool summary_written_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_API_WATCH_BATCH_REACTOR_H_

#ifndef BATCHFETCH_SERVICE_API_BATCH_TAKEOVER_H_
#define BATCHFETCH_SERVICE_API_BATCH_TAKEOVER_H_

// Takeover of detached batches whose replica died (issue 11, "When a
// replica dies"): the pure decisions, the backlog of batches waiting for
// room, and the observer a taken-over run reports to. The service
// (BatchFetcherService::TakeOverInterrupted) wires them to the store, the
// limiter and the engine.

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "batchfetch/v1/batchfetch.pb.h"
#include "service/api/active_batch_limiter.h"
#include "service/batch/batch_observer.h"
#include "service/batch/batch_run.h"

namespace batchfetch {

// What became of one attempt to take over an interrupted batch.
enum class TakeoverOutcome {
  kTakenOver,        // resumed here as a detached batch
  kDraining,         // this replica is shutting down: it takes nothing over
  kNotInterrupted,   // no longer INTERRUPTED (resumed by hand, or deleted)
  kNotDetached,      // its caller went with the replica: left INTERRUPTED
  kCancelRequested,  // a CancelBatch reached it before the replica died
  // Some URL had credentials (user:pw@), which are never stored: fetching
  // it again here would send "***". Left INTERRUPTED for its caller to
  // resume with the full request.
  kCredentialsNotStored,
  kNoRoom,       // --max_active_batches (or per caller) is reached
  kUnavailable,  // the database did not answer
  kFailed,       // any other error (e.g. another replica resumed it)
};

// The outcome's name in log lines ("taken_over", "not_detached", ...).
const char* TakeoverOutcomeName(TakeoverOutcome outcome);

// Whether a batch this replica's lease sweep interrupted is to be taken
// over, from what the store holds of it: kTakenOver (go ahead), or why not.
// In this order: a draining replica takes nothing; a batch no longer
// INTERRUPTED is someone else's business; only a detached batch is taken
// over (a caller that was streaming it went with the dead replica, and can
// resume it by hand); a batch whose cancel was requested stays as it is; a
// batch whose stored request lost URL credentials cannot be fetched as
// asked. Pure.
TakeoverOutcome DecideTakeover(bool draining, v1::BatchState state,
                               bool cancel_requested,
                               const v1::FetchBatchRequest& request);

// The interrupted batches this replica still means to take over: the ones
// each sweep reports, and those put back because there was no room or the
// database did not answer. Only the replica whose sweep interrupted a batch
// ever sees it (the sweep reports each batch once), so the backlog lives in
// its memory; if that replica stops too, the batch stays INTERRUPTED and
// can be resumed by hand.
//
// Policy (Settle): kNoRoom keeps the batch for the next round however
// often it comes back (room frees as batches finish; nothing is tried
// meanwhile); kUnavailable keeps it for at most kMaxUnavailableAttempts
// rounds in all; every other outcome is final. Rounds follow the sweeps
// (every half lease), so nothing is retried in a tight loop.
//
// Bounded: at most kMaxPending batches wait; Add drops the rest (they stay
// INTERRUPTED). Thread-compatible (the service guards it).
class TakeoverBacklog {
 public:
  static constexpr size_t kMaxPending = 1000;
  static constexpr int kMaxUnavailableAttempts = 3;

  struct Entry {
    std::string batch_id;
    int unavailable_attempts = 0;  // kUnavailable outcomes so far
    // Put back for kNoRoom before (its deferral was logged already).
    bool deferred = false;
  };

  // Adds newly interrupted batches (ids already waiting are not added
  // twice); returns how many were dropped because the backlog is full.
  size_t Add(const std::vector<std::string>& batch_ids);
  // Every waiting batch, oldest first; they leave the backlog until
  // Settle puts them back.
  std::vector<Entry> TakeAll();
  // Records the outcome of one try of `entry` (from TakeAll); true when it
  // goes back to wait for the next round.
  bool Settle(Entry entry, TakeoverOutcome outcome);
  void Clear() { pending_.clear(); }
  size_t size() const { return pending_.size(); }

 private:
  bool Waiting(const std::string& batch_id) const;

  std::vector<Entry> pending_;
};

// The observer of a run no caller is connected to (a batch taken over):
// drops every event at once (so no engine window slot is held), and on
// OnFinished releases the batch's active-batch lease and the run, then
// deletes itself.
//
// Ownership: made with `new`; owns itself until OnFinished, which is the
// run's last call (BatchRun keeps itself alive through it). It owns the
// run (Hold) so that the run lives as long as it runs.
// Thread-safety: Hold before the run starts; the observer calls as
// BatchObserver says.
class DetachedRunObserver final : public BatchObserver {
 public:
  explicit DetachedRunObserver(ActiveBatchLimiter::Lease lease)
      : lease_(std::move(lease)) {}

  // REQUIRES: called once, before `run` is started with this observer (or
  // a broadcaster passing calls on to it).
  void Hold(std::shared_ptr<BatchRun> run) ABSL_LOCKS_EXCLUDED(mu_);

  void OnAccepted(std::shared_ptr<const v1::FetchBatchEvent> event) override;
  void OnResult(std::shared_ptr<const v1::FetchBatchEvent> event) override;
  void OnFinished(const v1::BatchSummary& summary,
                  const absl::Status& status) override;

 private:
  ~DetachedRunObserver() override = default;

  absl::Mutex mu_;
  ActiveBatchLimiter::Lease lease_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<BatchRun> run_ ABSL_GUARDED_BY(mu_);
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_API_BATCH_TAKEOVER_H_

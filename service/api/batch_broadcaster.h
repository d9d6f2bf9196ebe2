#ifndef BATCHFETCH_SERVICE_API_BATCH_BROADCASTER_H_
#define BATCHFETCH_SERVICE_API_BATCH_BROADCASTER_H_

#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "batchfetch/v1/batchfetch.pb.h"
#include "service/batch/batch_observer.h"

namespace batchfetch {

// What a WatchBatch stream hears from a batch running in this process.
// Calls are serialized (they follow the run's observer calls) and must not
// block; OnLiveFinished comes last.
class LiveWatcher {
 public:
  virtual ~LiveWatcher() = default;
  // One result, already acknowledged by the store. Holding `event` holds
  // one slot of the batch's engine window: drop it once written.
  virtual void OnLiveResult(
      std::shared_ptr<const v1::FetchBatchEvent> event) = 0;
  // The batch ended; `summary` is its final row.
  virtual void OnLiveFinished(const v1::BatchSummary& summary) = 0;
};

// A watcher's place on a broadcaster. The watcher calls Detach() before it
// goes away: once Detach returns no call reaches it any more (a call in
// progress is waited for, so Detach must not be called from inside one, nor
// while holding a lock such a call takes).
class LiveSubscription {
 public:
  explicit LiveSubscription(LiveWatcher* watcher) : watcher_(watcher) {}
  void Detach() ABSL_LOCKS_EXCLUDED(mu_);
  bool detached() const ABSL_LOCKS_EXCLUDED(mu_);
  void Result(const std::shared_ptr<const v1::FetchBatchEvent>& event)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Finished(const v1::BatchSummary& summary) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  LiveWatcher* watcher_ ABSL_GUARDED_BY(mu_);
};

// Fans one BatchRun's observer calls out: to the primary observer (the
// FetchBatch caller's stream) exactly as the run makes them, and, for
// results and the end, to every LiveSubscription (WatchBatch streams).
// Watchers are told before the primary, for results and for the end (the
// primary may destroy itself in OnFinished).
//
// Lifetime: made by Create(), it keeps itself alive until its OnFinished
// has returned (the run holds only a raw observer pointer), so it must be
// passed to BatchRun::Start; the service keeps a weak_ptr to find it.
// Thread-safety: Subscribe from any thread; the observer calls as
// BatchObserver says (serialized, never under the run's lock).
class BatchBroadcaster final : public BatchObserver {
 public:
  // `primary` must stay valid until its OnFinished.
  static std::shared_ptr<BatchBroadcaster> Create(BatchObserver* primary);

  // Adds a watcher. False when the batch has finished already: the
  // watcher then reads everything from the store.
  bool Subscribe(std::shared_ptr<LiveSubscription> subscription)
      ABSL_LOCKS_EXCLUDED(mu_);

  void OnAccepted(std::shared_ptr<const v1::FetchBatchEvent> event) override;
  void OnResult(std::shared_ptr<const v1::FetchBatchEvent> event) override;
  void OnFinished(const v1::BatchSummary& summary,
                  const absl::Status& status) override;

 private:
  explicit BatchBroadcaster(BatchObserver* primary) : primary_(primary) {}
  // The live watchers, with detached ones pruned.
  std::vector<std::shared_ptr<LiveSubscription>> Watchers()
      ABSL_LOCKS_EXCLUDED(mu_);

  BatchObserver* const primary_;
  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::shared_ptr<LiveSubscription>> watchers_ ABSL_GUARDED_BY(mu_);
  // Keeps this alive until OnFinished (see Create).
  std::shared_ptr<BatchBroadcaster> self_ ABSL_GUARDED_BY(mu_);
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_API_BATCH_BROADCASTER_H_

#ifndef BATCHFETCH_SERVICE_SERVER_CANCEL_POLLER_H_
#define BATCHFETCH_SERVICE_SERVER_CANCEL_POLLER_H_

#include <functional>
#include <set>
#include <string>

#include "absl/time/time.h"
#include "service/base/clock.h"
#include "service/base/outage_log.h"
#include "service/server/periodic_worker.h"
#include "service/store/result_store.h"

namespace batchfetch {

// The background thread that carries CancelBatch from other replicas to
// this one (issue 11): every `interval` it asks the store which RUNNING
// batches leased to this replica have a cancel requested
// (ResultStore::CancelRequestedBatches) and calls `cancel` with each id (the
// service's CancelLocalBatch: the run ends CANCELLED, its unfinished
// requests OUTCOME_CANCELLED). A batch stays in the answer until its final
// row is written, so `cancel` may be called for it more than once (a run's
// Cancel is idempotent); `batch_cancelled_remotely` (info) is logged when
// a batch id first appears. A failing query is logged once when it starts
// failing
// (`cancel_poll_failed`, warning) and once when it works again
// (`cancel_poll_recovered`), never per round, and never stops the thread.
//
// Timing: `clock`'s monotonic time; the thread waits in real time between
// rounds, so unit tests drive RunDue() with a FakeClock instead.
// Ownership: `store` is not owned and must outlive Stop(); `cancel` must
// stay callable until Stop() returns.
// Threading: Start() starts the thread; Stop() (or the destructor) wakes and
// joins it (PeriodicWorker). Tests may call RunDue() while the thread is not
// started.
class CancelPoller {
 public:
  struct Options {
    // Between rounds: a remote cancel lands within about this (plus a
    // round trip).
    absl::Duration interval = absl::Milliseconds(500);
    // Run on the thread before its first round and after its last
    // (MysqlSession::ThreadInit/ThreadEnd). Empty: nothing.
    std::function<void()> thread_init;
    std::function<void()> thread_end;
  };
  using Cancel = std::function<void(const std::string& batch_id)>;

  CancelPoller(ResultStore* store, Cancel cancel, Options options,
               const Clock* clock = Clock::Real());
  ~CancelPoller();
  CancelPoller(const CancelPoller&) = delete;
  CancelPoller& operator=(const CancelPoller&) = delete;

  void Start();
  void Stop();

  // Runs a round if one is due at the clock's now (the first call always
  // does) and returns when the next one is due.
  MonoTime RunDue();

 private:
  ResultStore* const store_;
  const Cancel cancel_;
  const Options options_;
  const Clock* const clock_;

  // Touched by RunDue only (one thread).
  bool started_rounds_ = false;
  MonoTime next_round_;
  OutageLog outage_{"cancel_poll_failed", "cancel_poll_recovered"};
  // The previous round's answer: an id already in it is not logged again.
  std::set<std::string> previous_;

  // Last: stopped (joined) before the members its rounds use go.
  PeriodicWorker worker_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_SERVER_CANCEL_POLLER_H_

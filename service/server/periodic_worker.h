#ifndef BATCHFETCH_SERVICE_SERVER_PERIODIC_WORKER_H_
#define BATCHFETCH_SERVICE_SERVER_PERIODIC_WORKER_H_

#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "service/base/clock.h"

namespace batchfetch {

// The thread of a background keeper that works in rounds on a Clock
// (CancelPoller, RetentionKeeper): runs `run_due`, which does what is due
// at the clock's now and returns when it is next due, then waits until
// that time (or Stop()), and again. The keeper keeps its schedule in
// `run_due`, so unit tests call that directly on a FakeClock instead of
// starting the thread.
//
// Timing: the wait is in real time, measured against `clock`'s monotonic
// time; a time already past runs the next round at once.
// Ownership: `run_due` and the hooks must stay callable until Stop()
// returns; `clock` must outlive the worker.
// Threading: Start() at most once; Stop() (or the destructor) from any
// thread other than the worker's wakes and joins it, after the round in
// progress returns. Stop() before Start(): the thread never starts rounds.
class PeriodicWorker {
 public:
  struct Hooks {
    // Run on the thread before its first round and after its last (e.g.
    // MysqlSession::ThreadInit/ThreadEnd). Empty: nothing.
    std::function<void()> thread_init;
    std::function<void()> thread_end;
    // true: Start() returns only after the first round (e.g. so that a
    // keeper's first sweep is done before the server serves).
    bool start_waits_for_first_round = false;
  };

  PeriodicWorker(std::function<MonoTime()> run_due, const Clock* clock);
  ~PeriodicWorker();
  PeriodicWorker(const PeriodicWorker&) = delete;
  PeriodicWorker& operator=(const PeriodicWorker&) = delete;

  void Start(Hooks hooks) ABSL_LOCKS_EXCLUDED(mu_);
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const std::function<MonoTime()> run_due_;
  const Clock* const clock_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_SERVER_PERIODIC_WORKER_H_

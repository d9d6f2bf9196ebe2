#ifndef BATCHFETCH_SERVICE_API_EXECUTOR_H_
#define BATCHFETCH_SERVICE_API_EXECUTOR_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace batchfetch {

// A fixed pool of threads with a bounded queue, for blocking work (database
// round trips) that must not run on gRPC's callback threads.
//
// Tasks run in submission order (FIFO start order; with several threads they
// overlap). At most `max_queued` tasks wait for a thread; Submit refuses more
// rather than letting the queue grow without bound.
//
// Thread-safety: Submit and Shutdown may be called from any thread,
// including from a task. Shutdown/the destructor must not be called from a
// task (they join the threads).
class Executor {
 public:
  // Run on each pool thread: `on_start` before its first task, `on_end`
  // after its last (e.g. a database client's per-thread setup, which the
  // server passes in so this folder needs no database dependency). Empty:
  // nothing.
  struct ThreadHooks {
    std::function<void()> on_start;
    std::function<void()> on_end;
  };

  // REQUIRES: threads >= 1.
  Executor(int threads, size_t max_queued, ThreadHooks hooks = {});
  // Shutdown().
  ~Executor();

  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Queues `task`. RESOURCE_EXHAUSTED when `max_queued` tasks already wait
  // (running ones do not count), UNAVAILABLE after Shutdown; the task is
  // then dropped without running.
  absl::Status Submit(absl::AnyInvocable<void() &&> task);

  // Refuses new tasks, runs every task already queued, then joins the
  // threads. Idempotent.
  void Shutdown();

  // Tasks waiting for a thread.
  size_t queued() const;

 private:
  void Loop();
  bool HasWorkOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t max_queued_;
  const ThreadHooks hooks_;
  mutable absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void() &&>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;  // joined by the first Shutdown
  absl::Mutex join_mu_;               // serializes Shutdown's join
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_API_EXECUTOR_H_

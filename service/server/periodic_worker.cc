#include "service/server/periodic_worker.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace batchfetch {

PeriodicWorker::PeriodicWorker(std::function<MonoTime()> run_due,
                               const Clock* clock)
    : run_due_(std::move(run_due)), clock_(clock) {}

PeriodicWorker::~PeriodicWorker() { Stop(); }

void PeriodicWorker::Start(Hooks hooks) {
  // Shared: Start() may return (and, waiting, be woken) before the thread
  // is done with it.
  auto first_round_done = std::make_shared<absl::Notification>();
  thread_ = std::thread([this, hooks, first_round_done] {
    if (hooks.thread_init) hooks.thread_init();
    while (true) {
      const MonoTime next = run_due_();
      if (!first_round_done->HasBeenNotified()) first_round_done->Notify();
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(
          absl::Condition(&stopping_),
          std::max(absl::ZeroDuration(), Since(next, clock_->MonoNow())));
      if (stopping_) break;
    }
    if (hooks.thread_end) hooks.thread_end();
  });
  if (hooks.start_waits_for_first_round) {
    first_round_done->WaitForNotification();
  }
}

void PeriodicWorker::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

}  // namespace batchfetch

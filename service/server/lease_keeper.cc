#include "service/server/lease_keeper.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/notification.h"
#include "service/base/log.h"

namespace batchfetch {

LeaseKeeper::LeaseKeeper(ResultStore* store, StoreStats* stats, Options options,
                         const Clock* clock)
    : store_(store),
      stats_(stats),
      options_(std::move(options)),
      clock_(clock) {}

LeaseKeeper::~LeaseKeeper() { Stop(); }

void LeaseKeeper::Start() {
  absl::Notification first_round_done;
  thread_ = std::thread([this, &first_round_done] {
    if (options_.thread_init) options_.thread_init();
    MonoTime next = RunDue();
    first_round_done.Notify();
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithTimeout(
            absl::Condition(&stopping_),
            std::max(absl::ZeroDuration(), Since(next, clock_->MonoNow())));
        if (stopping_) break;
      }
      next = RunDue();
    }
    if (options_.thread_end) options_.thread_end();
  });
  first_round_done.WaitForNotification();
}

void LeaseKeeper::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

MonoTime LeaseKeeper::RunDue() {
  const MonoTime now = clock_->MonoNow();
  if (!started_rounds_ || now >= next_sweep_) {
    Sweep();
    next_sweep_ = now + options_.lease_duration / 2;
  }
  if (!started_rounds_ || now >= next_renewal_) {
    Renew();
    next_renewal_ = now + options_.lease_duration / 4;
  }
  started_rounds_ = true;
  return std::min(next_sweep_, next_renewal_);
}

void LeaseKeeper::SetSweepListener(SweepListener listener) {
  absl::MutexLock lock(&listener_mu_);
  listener_ = std::move(listener);
}

void LeaseKeeper::Renew() {
  absl::Status renewed = store_->RenewLeases();
  if (!renewed.ok() && !renewal_failing_) {
    LogEvent(LogLevel::kWarning, "lease_renewal_failed")
        .Add("error", std::string(renewed.message()));
  } else if (renewed.ok() && renewal_failing_) {
    LogEvent(LogLevel::kInfo, "lease_renewal_recovered");
  }
  renewal_failing_ = !renewed.ok();
}

void LeaseKeeper::Sweep() {
  absl::StatusOr<std::vector<std::string>> interrupted =
      store_->InterruptExpiredLeases();
  if (!interrupted.ok()) {
    if (!sweep_failing_) {
      LogEvent(LogLevel::kWarning, "lease_sweep_failed")
          .Add("error", std::string(interrupted.status().message()));
    }
    sweep_failing_ = true;
    return;
  }
  if (sweep_failing_) LogEvent(LogLevel::kInfo, "lease_sweep_recovered");
  sweep_failing_ = false;
  for (const std::string& batch_id : *interrupted) {
    if (stats_ != nullptr) stats_->batches_interrupted.Increment();
    // The reason the store wrote (one more round trip; rare).
    absl::StatusOr<v1::BatchSummary> batch =
        store_->GetBatch(batch_id, ReadScope::AnyOwner());
    LogEvent(LogLevel::kWarning, "batch_interrupted")
        .Add("batch_id", batch_id)
        .Add("reason",
             batch.ok() ? batch->state_reason() : std::string("lease expired"));
  }
  absl::MutexLock lock(&listener_mu_);
  if (!listener_) {
    for (const std::string& batch_id : *interrupted) {
      if (unheard_.size() < kMaxUnheard) unheard_.push_back(batch_id);
    }
    return;
  }
  std::vector<std::string> heard;
  heard.swap(unheard_);
  heard.insert(heard.end(), interrupted->begin(), interrupted->end());
  listener_(std::move(heard));
}

}  // namespace batchfetch

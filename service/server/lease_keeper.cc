#include "service/server/lease_keeper.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "service/base/log.h"

namespace batchfetch {

LeaseKeeper::LeaseKeeper(ResultStore* store, StoreStats* stats, Options options,
                         const Clock* clock)
    : store_(store),
      stats_(stats),
      options_(std::move(options)),
      clock_(clock),
      worker_([this] { return RunDue(); }, clock) {}

LeaseKeeper::~LeaseKeeper() { Stop(); }

void LeaseKeeper::Start() {
  worker_.Start({options_.thread_init, options_.thread_end,
                 /*start_waits_for_first_round=*/true});
}

void LeaseKeeper::Stop() { worker_.Stop(); }

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

void LeaseKeeper::Renew() { renewal_outage_.Record(store_->RenewLeases()); }

void LeaseKeeper::Sweep() {
  absl::StatusOr<std::vector<std::string>> interrupted =
      store_->InterruptExpiredLeases();
  if (!sweep_outage_.Record(interrupted.status())) return;
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

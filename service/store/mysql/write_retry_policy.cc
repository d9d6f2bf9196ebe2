#include "service/store/mysql/write_retry_policy.h"

#include <algorithm>

namespace batchfetch {

WriteRetryPolicy::WriteRetryPolicy(const Options& options, const Clock* clock)
    : options_(options), clock_(clock) {}

WriteRetryPolicy::Group WriteRetryPolicy::StartGroup() {
  const MonoTime now = clock_->MonoNow();
  MonoTime deadline =
      options_.budget >= absl::Hours(24 * 365)
          ? MonoTime::max()
          : now + std::max(options_.budget, absl::ZeroDuration());
  return Group(this, std::min(deadline, drain_deadline_));
}

bool WriteRetryPolicy::GiveUpWithoutTrying() const {
  return draining_ && unreachable_ && clock_->MonoNow() >= drain_deadline_;
}

void WriteRetryPolicy::StartDraining(MonoTime since) {
  if (draining_) return;
  draining_ = true;
  const absl::Duration budget = options_.drain_budget < absl::ZeroDuration()
                                    ? options_.budget
                                    : options_.drain_budget;
  if (budget < absl::Hours(24 * 365)) {
    drain_deadline_ = since + budget;
  }
}

WriteRetryPolicy::Group::Group(WriteRetryPolicy* policy, MonoTime deadline)
    : policy_(policy),
      deadline_(deadline),
      backoff_(policy->options_.initial_backoff) {}

std::optional<absl::Duration> WriteRetryPolicy::Group::NextDelay(
    MysqlErrorKind kind) {
  if (!IsTransient(kind)) {
    policy_->unreachable_ = false;  // it answered
    return std::nullopt;
  }
  const absl::Duration delay = backoff_;
  const MonoTime now = policy_->clock_->MonoNow();
  // A group that started before the drain is also cut at the drain's end.
  const MonoTime deadline = std::min(deadline_, policy_->drain_deadline_);
  if (now >= deadline || Since(deadline, now) < delay) {
    policy_->unreachable_ = true;
    return std::nullopt;
  }
  backoff_ = std::min(backoff_ * 2, policy_->options_.max_backoff);
  return delay;
}

void WriteRetryPolicy::Group::Succeeded() { policy_->unreachable_ = false; }

}  // namespace batchfetch

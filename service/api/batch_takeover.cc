#include "service/api/batch_takeover.h"

#include <algorithm>
#include <utility>

#include "service/api/request_translation.h"

namespace batchfetch {

const char* TakeoverOutcomeName(TakeoverOutcome outcome) {
  switch (outcome) {
    case TakeoverOutcome::kTakenOver:
      return "taken_over";
    case TakeoverOutcome::kDraining:
      return "draining";
    case TakeoverOutcome::kNotInterrupted:
      return "not_interrupted";
    case TakeoverOutcome::kNotDetached:
      return "not_detached";
    case TakeoverOutcome::kCancelRequested:
      return "cancel_requested";
    case TakeoverOutcome::kCredentialsNotStored:
      return "credentials_not_stored";
    case TakeoverOutcome::kNoRoom:
      return "no_room";
    case TakeoverOutcome::kUnavailable:
      return "unavailable";
    case TakeoverOutcome::kFailed:
      return "failed";
  }
  return "unknown";
}

TakeoverOutcome DecideTakeover(bool draining, v1::BatchState state,
                               bool cancel_requested,
                               const v1::FetchBatchRequest& request) {
  if (draining) return TakeoverOutcome::kDraining;
  if (state != v1::BATCH_STATE_INTERRUPTED) {
    return TakeoverOutcome::kNotInterrupted;
  }
  if (!request.detach()) return TakeoverOutcome::kNotDetached;
  if (cancel_requested) return TakeoverOutcome::kCancelRequested;
  if (HasStoredCredentialsRedacted(request)) {
    return TakeoverOutcome::kCredentialsNotStored;
  }
  return TakeoverOutcome::kTakenOver;
}

bool TakeoverBacklog::Waiting(const std::string& batch_id) const {
  return std::any_of(pending_.begin(), pending_.end(),
                     [&](const Entry& e) { return e.batch_id == batch_id; });
}

size_t TakeoverBacklog::Add(const std::vector<std::string>& batch_ids) {
  size_t dropped = 0;
  for (const std::string& id : batch_ids) {
    if (Waiting(id)) continue;
    if (pending_.size() >= kMaxPending) {
      ++dropped;
      continue;
    }
    pending_.push_back(Entry{id, 0});
  }
  return dropped;
}

std::vector<TakeoverBacklog::Entry> TakeoverBacklog::TakeAll() {
  std::vector<Entry> all;
  all.swap(pending_);
  return all;
}

bool TakeoverBacklog::Settle(Entry entry, TakeoverOutcome outcome) {
  bool keep = false;
  if (outcome == TakeoverOutcome::kNoRoom) {
    keep = true;
    entry.deferred = true;
  } else if (outcome == TakeoverOutcome::kUnavailable) {
    keep = ++entry.unavailable_attempts < kMaxUnavailableAttempts;
  }
  // A batch a later sweep reported meanwhile is not put back twice.
  if (!keep || Waiting(entry.batch_id) || pending_.size() >= kMaxPending) {
    return false;
  }
  pending_.push_back(std::move(entry));
  return true;
}

void DetachedRunObserver::Hold(std::shared_ptr<BatchRun> run) {
  absl::MutexLock lock(&mu_);
  run_ = std::move(run);
}

void DetachedRunObserver::OnAccepted(
    std::shared_ptr<const v1::FetchBatchEvent> /*event*/) {}

void DetachedRunObserver::OnResult(
    std::shared_ptr<const v1::FetchBatchEvent> /*event*/) {}

void DetachedRunObserver::OnFinished(const v1::BatchSummary& /*summary*/,
                                     const absl::Status& /*status*/) {
  ActiveBatchLimiter::Lease lease;
  std::shared_ptr<BatchRun> run;
  {
    absl::MutexLock lock(&mu_);
    lease = std::move(lease_);
    run = std::move(run_);
  }
  // The run has logged batch_finished; it stays alive until its own call
  // returns (BatchRun holds itself while delivering).
  lease.Release();
  run.reset();
  delete this;  // the run's last call: nothing touches `this` after it
}

}  // namespace batchfetch

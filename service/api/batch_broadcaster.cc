#include "service/api/batch_broadcaster.h"

#include <algorithm>
#include <utility>

namespace batchfetch {

void LiveSubscription::Detach() {
  absl::MutexLock lock(&mu_);
  watcher_ = nullptr;
}

bool LiveSubscription::detached() const {
  absl::MutexLock lock(&mu_);
  return watcher_ == nullptr;
}

void LiveSubscription::Result(
    const std::shared_ptr<const v1::FetchBatchEvent>& event) {
  // Held across the call: Detach waits for it (see the class comment).
  absl::MutexLock lock(&mu_);
  if (watcher_ != nullptr) watcher_->OnLiveResult(event);
}

void LiveSubscription::Finished(const v1::BatchSummary& summary) {
  absl::MutexLock lock(&mu_);
  if (watcher_ != nullptr) watcher_->OnLiveFinished(summary);
}

std::shared_ptr<BatchBroadcaster> BatchBroadcaster::Create(
    BatchObserver* primary) {
  std::shared_ptr<BatchBroadcaster> broadcaster(new BatchBroadcaster(primary));
  absl::MutexLock lock(&broadcaster->mu_);
  broadcaster->self_ = broadcaster;
  return broadcaster;
}

bool BatchBroadcaster::Subscribe(
    std::shared_ptr<LiveSubscription> subscription) {
  absl::MutexLock lock(&mu_);
  if (finished_) return false;
  watchers_.push_back(std::move(subscription));
  return true;
}

std::vector<std::shared_ptr<LiveSubscription>> BatchBroadcaster::Watchers() {
  absl::MutexLock lock(&mu_);
  watchers_.erase(
      std::remove_if(watchers_.begin(), watchers_.end(),
                     [](const std::shared_ptr<LiveSubscription>& s) {
                       return s->detached();
                     }),
      watchers_.end());
  return watchers_;
}

void BatchBroadcaster::OnAccepted(
    std::shared_ptr<const v1::FetchBatchEvent> event) {
  primary_->OnAccepted(std::move(event));
}

void BatchBroadcaster::OnResult(
    std::shared_ptr<const v1::FetchBatchEvent> event) {
  for (const auto& watcher : Watchers()) watcher->Result(event);
  primary_->OnResult(std::move(event));
}

void BatchBroadcaster::OnFinished(const v1::BatchSummary& summary,
                                  const absl::Status& status) {
  std::shared_ptr<BatchBroadcaster> self;  // released last
  std::vector<std::shared_ptr<LiveSubscription>> watchers;
  {
    absl::MutexLock lock(&mu_);
    finished_ = true;
    watchers.swap(watchers_);
    self = std::move(self_);
  }
  for (const auto& watcher : watchers) watcher->Finished(summary);
  watchers.clear();
  primary_->OnFinished(summary, status);  // `primary_` may be gone after
}

}  // namespace batchfetch

#include "service/fetch/delivery_queue.h"

#include <utility>

namespace batchfetch {

DeliveryQueue::DeliveryQueue() {
  thread_ = std::thread([this] { Run(); });
}

DeliveryQueue::~DeliveryQueue() { Stop(); }

void DeliveryQueue::Push(std::vector<Delivery>& batch) {
  if (batch.empty()) return;
  absl::MutexLock lock(&mu_);
  if (queue_.empty()) {
    queue_.swap(batch);
  } else {
    for (Delivery& d : batch) queue_.push_back(std::move(d));
    batch.clear();
  }
}

void DeliveryQueue::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void DeliveryQueue::Run() {
  std::vector<Delivery> batch;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](DeliveryQueue* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
            return !self->queue_.empty() || self->stopping_;
          },
          this));
      if (queue_.empty()) return;  // stopping, everything delivered
      batch.swap(queue_);
    }
    for (Delivery& d : batch) {
      d.sink->OnFetched(std::move(d.response), d.handle);
    }
    batch.clear();
  }
}

}  // namespace batchfetch

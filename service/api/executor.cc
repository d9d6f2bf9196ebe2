#include "service/api/executor.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace batchfetch {

Executor::Executor(int threads, size_t max_queued, ThreadHooks hooks)
    : max_queued_(max_queued), hooks_(std::move(hooks)) {
  threads_.reserve(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
}

Executor::~Executor() { Shutdown(); }

absl::Status Executor::Submit(absl::AnyInvocable<void() &&> task) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  if (queue_.size() >= max_queued_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("server busy: ", queue_.size(),
                     " database calls are already waiting; try again later"));
  }
  queue_.push_back(std::move(task));
  return absl::OkStatus();
}

void Executor::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  absl::MutexLock join(&join_mu_);
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

size_t Executor::queued() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

bool Executor::HasWorkOrStopping() const {
  return stopping_ || !queue_.empty();
}

void Executor::Loop() {
  if (hooks_.on_start) hooks_.on_start();
  for (;;) {
    absl::AnyInvocable<void() &&> task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &Executor::HasWorkOrStopping));
      if (queue_.empty()) break;  // stopping, and nothing left to run
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    std::move(task)();
  }
  if (hooks_.on_end) hooks_.on_end();
}

}  // namespace batchfetch

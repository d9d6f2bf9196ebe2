#include "service/server/cancel_poller.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "service/base/log.h"

namespace batchfetch {

CancelPoller::CancelPoller(ResultStore* store, Cancel cancel, Options options,
                           const Clock* clock)
    : store_(store),
      cancel_(std::move(cancel)),
      options_(std::move(options)),
      clock_(clock) {}

CancelPoller::~CancelPoller() { Stop(); }

void CancelPoller::Start() {
  thread_ = std::thread([this] {
    if (options_.thread_init) options_.thread_init();
    while (true) {
      const MonoTime next = RunDue();
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(
          absl::Condition(&stopping_),
          std::max(absl::ZeroDuration(), Since(next, clock_->MonoNow())));
      if (stopping_) break;
    }
    if (options_.thread_end) options_.thread_end();
  });
}

void CancelPoller::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

MonoTime CancelPoller::RunDue() {
  const MonoTime now = clock_->MonoNow();
  if (started_rounds_ && now < next_round_) return next_round_;
  started_rounds_ = true;
  next_round_ = now + options_.interval;
  absl::StatusOr<std::vector<std::string>> ids =
      store_->CancelRequestedBatches();
  if (!ids.ok()) {
    if (!failing_) {
      LogEvent(LogLevel::kWarning, "cancel_poll_failed")
          .Add("error", std::string(ids.status().message()));
    }
    failing_ = true;
    return next_round_;
  }
  if (failing_) LogEvent(LogLevel::kInfo, "cancel_poll_recovered");
  failing_ = false;
  std::set<std::string> current(ids->begin(), ids->end());
  for (const std::string& batch_id : current) {
    if (previous_.count(batch_id) == 0) {
      LogEvent(LogLevel::kInfo, "batch_cancelled_remotely")
          .Add("batch_id", batch_id);
    }
    cancel_(batch_id);
  }
  previous_ = std::move(current);
  return next_round_;
}

}  // namespace batchfetch

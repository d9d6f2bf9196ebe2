#include "service/server/cancel_poller.h"

#include <utility>
#include <vector>

#include "service/base/log.h"

namespace batchfetch {

CancelPoller::CancelPoller(ResultStore* store, Cancel cancel, Options options,
                           const Clock* clock)
    : store_(store),
      cancel_(std::move(cancel)),
      options_(std::move(options)),
      clock_(clock),
      worker_([this] { return RunDue(); }, clock) {}

CancelPoller::~CancelPoller() { Stop(); }

void CancelPoller::Start() {
  worker_.Start({options_.thread_init, options_.thread_end});
}

void CancelPoller::Stop() { worker_.Stop(); }

MonoTime CancelPoller::RunDue() {
  const MonoTime now = clock_->MonoNow();
  if (started_rounds_ && now < next_round_) return next_round_;
  started_rounds_ = true;
  next_round_ = now + options_.interval;
  absl::StatusOr<std::vector<std::string>> ids =
      store_->CancelRequestedBatches();
  if (!outage_.Record(ids.status())) return next_round_;
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

#include "service/server/retention_keeper.h"

#include <algorithm>
#include <string>
#include <utility>

#include "service/base/log.h"

namespace batchfetch {

RetentionKeeper::RetentionKeeper(ResultStore* store, Options options,
                                 const Clock* clock)
    : store_(store), options_(std::move(options)), clock_(clock) {}

RetentionKeeper::~RetentionKeeper() { Stop(); }

void RetentionKeeper::Start() {
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

void RetentionKeeper::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

MonoTime RetentionKeeper::RunDue() {
  const MonoTime now = clock_->MonoNow();
  if (!started_passes_ || now >= next_pass_) {
    started_passes_ = true;
    next_pass_ = RunPass(now);
  }
  return next_pass_;
}

MonoTime RetentionKeeper::RunPass(MonoTime now) {
  const absl::Time ended_before = clock_->WallNow() - options_.retention;
  absl::StatusOr<RetentionPass> pass =
      store_->DeleteExpiredBatches(ended_before, options_.max_batches_per_pass);
  if (!pass.ok()) {
    if (!failing_) {
      LogEvent(LogLevel::kWarning, "retention_failed")
          .Add("error", std::string(pass.status().message()));
    }
    failing_ = true;
    return now + options_.interval;
  }
  if (failing_) LogEvent(LogLevel::kInfo, "retention_recovered");
  failing_ = false;
  if (pass->batches > 0 || pass->rows > 0) {
    LogEvent(LogLevel::kInfo, "retention_deleted")
        .Add("batches", pass->batches)
        .Add("rows", pass->rows)
        .Add("ended_before",
             absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", ended_before,
                              absl::UTCTimeZone()));
  }
  return now + (pass->more ? options_.pause_between_passes : options_.interval);
}

}  // namespace batchfetch

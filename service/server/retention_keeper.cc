#include "service/server/retention_keeper.h"

#include <utility>

#include "service/base/log.h"

namespace batchfetch {

RetentionKeeper::RetentionKeeper(ResultStore* store, Options options,
                                 const Clock* clock)
    : store_(store),
      options_(std::move(options)),
      clock_(clock),
      worker_([this] { return RunDue(); }, clock) {}

RetentionKeeper::~RetentionKeeper() { Stop(); }

void RetentionKeeper::Start() {
  worker_.Start({options_.thread_init, options_.thread_end});
}

void RetentionKeeper::Stop() { worker_.Stop(); }

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
  if (!outage_.Record(pass.status())) return now + options_.interval;
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

#include "service/server/health_checker.h"

#include <utility>

#include "absl/synchronization/notification.h"
#include "service/base/log.h"

namespace batchfetch {

void HealthDecider::Observe(MonoTime now, const Probe& probe,
                            std::vector<Change>* changes) {
  if (probe.database.has_value()) {
    const bool reachable = probe.database->ok();
    if (reachable != database_reachable_) {
      database_reachable_ = reachable;
      changes->push_back(reachable ? Change::kDatabaseReachable
                                   : Change::kDatabaseUnreachable);
    }
  }
  if (!last_turns_.has_value() || *last_turns_ != probe.loop_turns) {
    last_turns_ = probe.loop_turns;
    last_progress_ = now;
  }
  const bool alive = Since(now, last_progress_) < loop_stall_limit_;
  if (alive != loop_alive_) {
    loop_alive_ = alive;
    changes->push_back(alive ? Change::kLoopAlive : Change::kLoopStalled);
  }
}

HealthChecker::HealthChecker(Probes probes,
                             std::function<void(bool serving)> publish,
                             Options options, const Clock* clock)
    : probes_(std::move(probes)),
      publish_(std::move(publish)),
      options_(options),
      clock_(clock),
      decider_(options.loop_stall_limit) {}

HealthChecker::~HealthChecker() { Stop(); }

void HealthChecker::Start() {
  absl::Notification first_check_done;
  thread_ = std::thread([this, &first_check_done] {
    if (probes_.thread_init) probes_.thread_init();
    CheckOnce();
    first_check_done.Notify();
    Loop();
    if (probes_.thread_end) probes_.thread_end();
  });
  first_check_done.WaitForNotification();
}

bool HealthChecker::CheckOnce() {
  // The probes run outside the lock: a slow ping must not delay
  // SetDraining.
  HealthDecider::Probe probe;
  if (probes_.ping_database) probe.database = probes_.ping_database();
  probe.loop_turns = probes_.loop_turns();
  // Makes an idle loop turn once before the next check reads the count.
  probes_.wake_loop();
  std::vector<HealthDecider::Change> changes;
  bool serving;
  {
    absl::MutexLock lock(&mu_);
    decider_.Observe(clock_->MonoNow(), probe, &changes);
    serving = decider_.serving();
    // Published under the lock, so a SetDraining that comes meanwhile is
    // never overwritten by this (older) verdict.
    publish_(serving);
  }
  for (HealthDecider::Change change : changes) {
    switch (change) {
      case HealthDecider::Change::kDatabaseUnreachable:
        LogEvent(LogLevel::kError, "database_unreachable")
            .Add("error", std::string(probe.database->message()))
            .Add("serving", serving);
        break;
      case HealthDecider::Change::kDatabaseReachable:
        LogEvent(LogLevel::kInfo, "database_reachable").Add("serving", serving);
        break;
      case HealthDecider::Change::kLoopStalled:
        LogEvent(LogLevel::kError, "engine_loop_stalled")
            .Add("serving", serving);
        break;
      case HealthDecider::Change::kLoopAlive:
        LogEvent(LogLevel::kInfo, "engine_loop_alive").Add("serving", serving);
        break;
    }
  }
  return serving;
}

void HealthChecker::SetDraining() {
  absl::MutexLock lock(&mu_);
  decider_.SetDraining();
  publish_(false);
}

void HealthChecker::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      // Real time: the interval is a pacing, not a decision input.
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.interval);
      if (stopping_) return;
    }
    CheckOnce();
  }
}

void HealthChecker::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

}  // namespace batchfetch

#ifndef BATCHFETCH_SERVICE_SERVER_HEALTH_CHECKER_H_
#define BATCHFETCH_SERVICE_SERVER_HEALTH_CHECKER_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "service/base/clock.h"

namespace batchfetch {

// Decides from probe results whether the server is SERVING. Pure: no I/O, no
// threads, time only from the `now` it is given (so tests drive it with a
// FakeClock).
//
// SERVING exactly while: not draining, the last database probe succeeded
// (when there is a database), and the engine loop is alive, i.e. its turn
// count has moved within `loop_stall_limit` (the checker wakes the loop after
// each probe, so a live loop always moves it by the next one). Before the
// first probe the database counts as reachable (start-up just reached it)
// and the loop as alive.
//
// Thread-compatible.
class HealthDecider {
 public:
  struct Probe {
    // Unset when the server stores nothing (--store=none).
    std::optional<absl::Status> database;
    uint64_t loop_turns = 0;
  };
  // A change worth a log line.
  enum class Change {
    kDatabaseUnreachable,
    kDatabaseReachable,
    kLoopStalled,
    kLoopAlive,
  };

  explicit HealthDecider(absl::Duration loop_stall_limit)
      : loop_stall_limit_(loop_stall_limit) {}

  // Takes one probe made at `now`; appends what changed to `changes`.
  void Observe(MonoTime now, const Probe& probe, std::vector<Change>* changes);
  // For good: serving() is false from now on.
  void SetDraining() { draining_ = true; }

  bool serving() const {
    return !draining_ && database_reachable_ && loop_alive_;
  }
  bool draining() const { return draining_; }
  bool database_reachable() const { return database_reachable_; }
  bool loop_alive() const { return loop_alive_; }

 private:
  const absl::Duration loop_stall_limit_;
  bool draining_ = false;
  bool database_reachable_ = true;
  bool loop_alive_ = true;
  std::optional<uint64_t> last_turns_;
  MonoTime last_progress_;
};

// The background health checker: every `interval` it pings the database
// (when there is one) and reads the engine loop's heartbeat, feeds a
// HealthDecider and publishes the verdict (SERVING or not) through
// `publish`. Health RPCs only read what was published, so no call does I/O.
// Each transition is logged as a LogEvent: database_unreachable (with the
// error) / database_reachable, engine_loop_stalled / engine_loop_alive.
//
// Threading: Start() starts the checker's own thread and returns once that
// thread has made its first check (so the server is SERVING from its first
// call); Stop() (or the destructor) joins it. SetDraining may be called from
// any thread and publishes NOT_SERVING at once. The probes run on the
// checker's thread only (tests may call CheckOnce on theirs), between its
// thread_init and thread_end; they and `publish` must stay valid until
// Stop() returns.
class HealthChecker {
 public:
  struct Probes {
    // Empty: no database (--store=none). Must be bounded by a short timeout.
    std::function<absl::Status()> ping_database;
    // The engine loop's turn count, and a wake-up for an idle loop.
    std::function<uint64_t()> loop_turns;
    std::function<void()> wake_loop;
    // Run on the checker's thread before its first probe and after its
    // last: the database client's per-thread setup and teardown
    // (MysqlSession::ThreadInit/ThreadEnd). Empty: nothing.
    std::function<void()> thread_init;
    std::function<void()> thread_end;
  };
  struct Options {
    absl::Duration interval = absl::Seconds(1);
    absl::Duration loop_stall_limit = absl::Seconds(3);
  };

  HealthChecker(Probes probes, std::function<void(bool serving)> publish,
                Options options, const Clock* clock = Clock::Real());
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  void Start() ABSL_LOCKS_EXCLUDED(mu_);
  // Probes once, decides and publishes (what the thread does each interval;
  // tests call it directly). Returns whether the server is SERVING now.
  bool CheckOnce() ABSL_LOCKS_EXCLUDED(mu_);
  // NOT_SERVING from now on (the drain has begun).
  void SetDraining() ABSL_LOCKS_EXCLUDED(mu_);
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  const Probes probes_;
  const std::function<void(bool)> publish_;
  const Options options_;
  const Clock* const clock_;

  absl::Mutex mu_;
  HealthDecider decider_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_SERVER_HEALTH_CHECKER_H_

#ifndef BATCHFETCH_SERVICE_BASE_CLOCK_H_
#define BATCHFETCH_SERVICE_BASE_CLOCK_H_

#include <chrono>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace batchfetch {

// A point on the monotonic clock. Timers, backoffs and deadlines inside the
// process use it, so a wall-clock step cannot stretch or shrink them.
using MonoTime = std::chrono::steady_clock::time_point;

inline MonoTime operator+(MonoTime t, absl::Duration d) {
  return t + std::chrono::duration_cast<MonoTime::duration>(
                 absl::ToChronoNanoseconds(d));
}
// a - b as an absl::Duration.
inline absl::Duration Since(MonoTime a, MonoTime b) {
  return absl::FromChrono(a - b);
}

// Where time comes from (the way leveldb's Env::NowMicros is): real code gets
// SystemClock, unit tests a FakeClock they move by hand, so no test sleeps.
//
// Thread-safety: implementations are safe to call from any thread.
class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic time, for everything measured within the process.
  virtual MonoTime MonoNow() const = 0;
  // Wall-clock time, only for timestamps that are stored or shown, and to
  // turn a caller's absolute deadline into a monotonic one.
  virtual absl::Time WallNow() const = 0;

  // The process-wide real clock.
  static Clock* Real();
};

class SystemClock final : public Clock {
 public:
  MonoTime MonoNow() const override { return std::chrono::steady_clock::now(); }
  absl::Time WallNow() const override { return absl::Now(); }
};

inline Clock* Clock::Real() {
  static SystemClock* clock = new SystemClock;
  return clock;
}

// The monotonic time at which wall-clock `deadline` falls, as seen now.
// InfiniteFuture maps to MonoTime::max().
inline MonoTime MonoDeadline(const Clock& clock, absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) return MonoTime::max();
  const absl::Duration left = deadline - clock.WallNow();
  // Far deadlines saturate instead of overflowing the chrono representation.
  if (left > absl::Hours(24 * 365 * 100)) return MonoTime::max();
  return clock.MonoNow() + left;
}

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_BASE_CLOCK_H_

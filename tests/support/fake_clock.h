#ifndef BATCHFETCH_TESTS_SUPPORT_FAKE_CLOCK_H_
#define BATCHFETCH_TESTS_SUPPORT_FAKE_CLOCK_H_

#include "absl/synchronization/mutex.h"
#include "service/base/clock.h"

namespace batchfetch::testing {

// A clock that moves only when told to. Both readings advance together.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time wall = absl::FromUnixSeconds(1'700'000'000))
      : wall_(wall) {}

  MonoTime MonoNow() const override {
    absl::MutexLock lock(&mu_);
    return mono_;
  }
  absl::Time WallNow() const override {
    absl::MutexLock lock(&mu_);
    return wall_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    mono_ = mono_ + d;
    wall_ += d;
  }

 private:
  mutable absl::Mutex mu_;
  // Not zero, so that "time_point{}" stays distinguishable from now.
  MonoTime mono_ ABSL_GUARDED_BY(mu_) = MonoTime() + absl::Hours(1);
  absl::Time wall_ ABSL_GUARDED_BY(mu_);
};

}  // namespace batchfetch::testing

#endif  // BATCHFETCH_TESTS_SUPPORT_FAKE_CLOCK_H_

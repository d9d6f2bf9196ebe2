// Fuzzes ParseRetryAfter. Input: the clock's "now" as Unix seconds on the
// first line (garbage reads as 0), then the header value.
//
// Invariants: no crash or UB; a parsed wait is finite and not negative;
// delta-seconds parse to exactly that many seconds (capped at a year), and
// a negative number is refused.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/time/time.h"
#include "service/fetch/retry_policy.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  batchfetch::fuzz::Input input(data, size);
  int64_t now_seconds = 0;
  if (!absl::SimpleAtoi(input.TakeString(24), &now_seconds)) now_seconds = 0;
  const absl::Time now = absl::FromUnixSeconds(now_seconds);
  const std::string value = input.TakeRest();

  const std::optional<absl::Duration> wait =
      batchfetch::ParseRetryAfter(value, now);
  if (wait.has_value()) {
    FUZZ_CHECK(*wait >= absl::ZeroDuration(), "a negative wait");
    FUZZ_CHECK(*wait < absl::InfiniteDuration(), "an infinite wait");
  }
  int64_t delta = 0;
  if (absl::SimpleAtoi(absl::StripAsciiWhitespace(value), &delta)) {
    if (delta < 0) {
      FUZZ_CHECK(!wait.has_value(), "a negative delta-seconds was accepted");
    } else {
      constexpr int64_t kYear = int64_t{86400} * 365;
      FUZZ_CHECK(wait.has_value() &&
                     *wait == absl::Seconds(delta < kYear ? delta : kYear),
                 "delta-seconds parsed to another wait");
    }
  }
  return 0;
}

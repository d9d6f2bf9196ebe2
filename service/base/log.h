#ifndef BATCHFETCH_SERVICE_BASE_LOG_H_
#define BATCHFETCH_SERVICE_BASE_LOG_H_

// Structured logs: one JSON object per line on stderr, for events worth
// keeping (start, batch accepted/finished, blocked requests, outages,
// drain). Why our own small LogEvent and not Debian's spdlog: every line
// here is already one JSON object with escaped fields, so spdlog's
// formatting would go unused, and a container's stderr goes to the
// platform's collector, so rotating or multi-sink output is not needed.
// The volume is bounded by design (never a line per successful URL at
// info; outages logged once when they start and once when they end), so
// there is nothing to rate-limit. One write(2) per line keeps lines whole
// across threads without a logging thread or a lock.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace batchfetch {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// "debug", "info", "warning" (or "warn"), "error".
absl::StatusOr<LogLevel> ParseLogLevel(std::string_view name);
std::string_view LogLevelName(LogLevel level);

// Events below `level` are dropped. Default: kInfo. Thread-safe.
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);

// Where finished lines go (each without its newline). Default: stderr, one
// write(2) per line so lines from different threads never interleave.
// Null restores the default. For tests; not thread-safe against logging.
void SetLogSinkForTest(std::function<void(std::string_view line)> sink);

// One structured event, written as one JSON object on one line when it goes
// out of scope:
//   {"ts":"2026-11-26T03:00:00.123Z","level":"info","event":"batch_accepted",
//    "batch_id":"...","total":3}
// Field values are escaped as JSON strings, so a caller-controlled value
// (a URL, an error text) can never break the line or forge a field.
// Never put a secret in a field: nothing here redacts.
//
//   LogEvent(LogLevel::kWarning, "request_blocked")
//       .Add("batch_id", id).Add("index", 3).Add("address", "10.0.0.5");
//
// Thread-compatible: one LogEvent per thread; any number at once.
class LogEvent {
 public:
  LogEvent(LogLevel level, std::string_view event);
  ~LogEvent();
  LogEvent(const LogEvent&) = delete;
  LogEvent& operator=(const LogEvent&) = delete;

  LogEvent& Add(std::string_view key, std::string_view value);
  LogEvent& Add(std::string_view key, const char* value) {
    return Add(key, std::string_view(value));
  }
  LogEvent& Add(std::string_view key, const std::string& value) {
    return Add(key, std::string_view(value));
  }
  LogEvent& Add(std::string_view key, int64_t value);
  LogEvent& Add(std::string_view key, int value) {
    return Add(key, static_cast<int64_t>(value));
  }
  LogEvent& Add(std::string_view key, uint32_t value) {
    return Add(key, static_cast<int64_t>(value));
  }
  LogEvent& Add(std::string_view key, uint64_t value);
  LogEvent& Add(std::string_view key, double value);
  LogEvent& Add(std::string_view key, bool value);

 private:
  void Key(std::string_view key);

  // Empty when the level is disabled: every Add is then a no-op.
  bool enabled_;
  std::string line_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_BASE_LOG_H_

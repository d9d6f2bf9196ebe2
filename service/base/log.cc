#include "service/base/log.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace batchfetch {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

std::function<void(std::string_view)>& Sink() {
  static auto* sink = new std::function<void(std::string_view)>();
  return *sink;
}

void WriteToStderr(std::string_view line) {
  std::string out(line);
  out.push_back('\n');
  const char* p = out.data();
  size_t left = out.size();
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nowhere to report a failed log write
    p += n;
    left -= static_cast<size_t>(n);
  }
}

// Length of the valid UTF-8 sequence at s[i], or 0 if there is none.
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  size_t n = 0;
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  if (c >= 0xE0 && c <= 0xEF) n = 3;
  if (c >= 0xF0 && c <= 0xF4) n = 4;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  }
  // Overlong forms, surrogates and code points above U+10FFFF.
  if (c == 0xE0 && byte(i + 1) < 0xA0) return 0;
  if (c == 0xED && byte(i + 1) >= 0xA0) return 0;
  if (c == 0xF0 && byte(i + 1) < 0x90) return 0;
  if (c == 0xF4 && byte(i + 1) >= 0x90) return 0;
  return n;
}

// Appends `value` as a JSON string: quotes, escapes, and U+FFFD for bytes
// that are not UTF-8, so every line is valid JSON whatever the input.
void AppendJsonString(std::string* out, std::string_view value) {
  out->push_back('"');
  for (size_t i = 0; i < value.size();) {
    unsigned char c = static_cast<unsigned char>(value[i]);
    if (c >= 0x80) {
      size_t n = Utf8SequenceLength(value, i);
      if (n == 0) {
        out->append("\\ufffd");
        ++i;
      } else {
        out->append(value.substr(i, n));
        i += n;
      }
      continue;
    }
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", c);
          out->append(escaped);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
  out->push_back('"');
}

}  // namespace

absl::StatusOr<LogLevel> ParseLogLevel(std::string_view name) {
  std::string lower = absl::AsciiStrToLower(std::string(name));
  if (lower == "debug") return LogLevel::kDebug;
  if (lower == "info") return LogLevel::kInfo;
  if (lower == "warning" || lower == "warn") return LogLevel::kWarning;
  if (lower == "error") return LogLevel::kError;
  return absl::InvalidArgumentError(
      absl::StrCat("log level \"", std::string(name),
                   "\" is not one of debug, info, warning, error"));
}

std::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

void SetLogLevel(LogLevel level) {
  g_level.store(static_cast<int>(level), std::memory_order_relaxed);
}

bool LogEnabled(LogLevel level) {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

void SetLogSinkForTest(std::function<void(std::string_view)> sink) {
  Sink() = std::move(sink);
}

LogEvent::LogEvent(LogLevel level, std::string_view event)
    : enabled_(LogEnabled(level)) {
  if (!enabled_) return;
  line_.reserve(256);
  line_.append("{\"ts\":");
  AppendJsonString(&line_, absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(),
                                            absl::UTCTimeZone()));
  line_.append(",\"level\":");
  AppendJsonString(&line_, LogLevelName(level));
  line_.append(",\"event\":");
  AppendJsonString(&line_, event);
}

LogEvent::~LogEvent() {
  if (!enabled_) return;
  line_.push_back('}');
  if (Sink()) {
    Sink()(line_);
  } else {
    WriteToStderr(line_);
  }
}

void LogEvent::Key(std::string_view key) {
  line_.push_back(',');
  AppendJsonString(&line_, key);
  line_.push_back(':');
}

LogEvent& LogEvent::Add(std::string_view key, std::string_view value) {
  if (!enabled_) return *this;
  Key(key);
  AppendJsonString(&line_, value);
  return *this;
}

LogEvent& LogEvent::Add(std::string_view key, int64_t value) {
  if (!enabled_) return *this;
  Key(key);
  absl::StrAppend(&line_, value);
  return *this;
}

LogEvent& LogEvent::Add(std::string_view key, uint64_t value) {
  if (!enabled_) return *this;
  Key(key);
  absl::StrAppend(&line_, value);
  return *this;
}

LogEvent& LogEvent::Add(std::string_view key, double value) {
  if (!enabled_) return *this;
  Key(key);
  if (std::isfinite(value)) {
    char buffer[32];
    std::snprintf(buffer, sizeof(buffer), "%.17g", value);
    line_.append(buffer);
  } else {
    line_.append("null");  // JSON has no NaN or infinity
  }
  return *this;
}

LogEvent& LogEvent::Add(std::string_view key, bool value) {
  if (!enabled_) return *this;
  Key(key);
  line_.append(value ? "true" : "false");
  return *this;
}

}  // namespace batchfetch

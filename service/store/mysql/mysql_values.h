#ifndef BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_VALUES_H_
#define BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_VALUES_H_

// Conversions between service values and MySQL column values. Pure functions:
// no I/O, no state, safe from any thread, never throw.

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/timestamp.pb.h"

namespace batchfetch {

// Column limits the writer enforces before binding.
inline constexpr size_t kMaxStoredErrorBytes = 4096;
inline constexpr size_t kMaxStoredContentTypeBytes = 255;

// `t` as a DATETIME(6) literal in UTC ("2024-01-02 03:04:05.123456").
// Sessions run with time_zone '+00:00', so this is the stored instant.
std::string FormatDateTime(absl::Time t);

// Parses a DATETIME as Connector/C++ returns it ("YYYY-MM-DD hh:mm:ss" with
// an optional fraction), in UTC. INVALID_ARGUMENT for anything else,
// including MySQL's zero date "0000-00-00 00:00:00".
absl::StatusOr<absl::Time> ParseDateTime(absl::string_view text);

// `t` as a protobuf Timestamp. OUT_OF_RANGE when `t` is outside the range a
// Timestamp may hold (years 1 to 9999); `out` is then left untouched.
absl::Status ToTimestamp(absl::Time t, google::protobuf::Timestamp* out);

// A DATETIME as a Timestamp: ParseDateTime, then ToTimestamp. Never an
// out-of-range Timestamp: any failure is an error (the caller then leaves
// its field unset).
absl::StatusOr<google::protobuf::Timestamp> TimestampFromDateTime(
    absl::string_view text);

// The longest prefix of `s` of at most `max` bytes that does not split a
// UTF-8 sequence (so a text column stays valid text). `s` itself if short
// enough.
std::string Truncated(const std::string& s, size_t max);

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_VALUES_H_

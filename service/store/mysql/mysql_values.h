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

// Column limits, in bytes, that the writer enforces before binding (with
// FitColumn), so that no value a caller or an upstream sends can make MySQL
// refuse a row (error 1406 under strict SQL mode, the default of MariaDB
// 10.11 and MySQL 8). `url` and `final_url` are TEXT (65535 bytes); `error`
// is TEXT but kept short on purpose; `content_type` is VARCHAR(255), whose
// 255 utf8mb4 characters hold at least 255 bytes. `json` (LONGTEXT) and
// `body` (LONGBLOB) hold 4 GiB, far above --max_body_bytes, and are not cut.
inline constexpr size_t kMaxStoredUrlBytes = 65535;
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

// What FitColumn appends to a value it cut: "…[truncated: N bytes]", where N
// is the size of the whole value (the ellipsis is U+2026, 3 bytes).
std::string TruncationMarker(size_t original_bytes);

// `s` itself if it fits in `max` bytes. Otherwise the longest prefix that
// does not split a UTF-8 sequence, followed by TruncationMarker(s.size()),
// together at most `max` bytes, so a reader sees that and how much was cut.
// If `max` cannot even hold the marker, just Truncated(s, max).
std::string FitColumn(const std::string& s, size_t max);

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_VALUES_H_

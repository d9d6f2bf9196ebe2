#include "service/store/mysql/mysql_values.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"

namespace batchfetch {

using google::protobuf::util::TimeUtil;

std::string FormatDateTime(absl::Time t) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%E6S", t, absl::UTCTimeZone());
}

absl::StatusOr<absl::Time> ParseDateTime(absl::string_view text) {
  absl::Time t;
  std::string err;
  if (!absl::ParseTime("%Y-%m-%d %H:%M:%E*S", text, absl::UTCTimeZone(), &t,
                       &err)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad DATETIME '", text, "': ", err));
  }
  return t;
}

absl::Status ToTimestamp(absl::Time t, google::protobuf::Timestamp* out) {
  if (t < absl::FromUnixSeconds(TimeUtil::kTimestampMinSeconds) ||
      t >= absl::FromUnixSeconds(TimeUtil::kTimestampMaxSeconds + 1)) {
    return absl::OutOfRangeError(
        absl::StrCat("time ", absl::FormatTime(t, absl::UTCTimeZone()),
                     " does not fit a protobuf Timestamp"));
  }
  const int64_t micros = absl::ToUnixMicros(t);
  *out = TimeUtil::MicrosecondsToTimestamp(micros);
  return absl::OkStatus();
}

absl::StatusOr<google::protobuf::Timestamp> TimestampFromDateTime(
    absl::string_view text) {
  absl::StatusOr<absl::Time> t = ParseDateTime(text);
  if (!t.ok()) return t.status();
  google::protobuf::Timestamp out;
  absl::Status status = ToTimestamp(*t, &out);
  if (!status.ok()) return status;
  return out;
}

std::string Truncated(const std::string& s, size_t max) {
  if (s.size() <= max) return s;
  // s[n] is the first byte cut off; while it continues a sequence, the
  // sequence started before n and must go too.
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

std::string TruncationMarker(size_t original_bytes) {
  return absl::StrCat("\xE2\x80\xA6[truncated: ", original_bytes, " bytes]");
}

std::string FitColumn(const std::string& s, size_t max) {
  if (s.size() <= max) return s;
  const std::string marker = TruncationMarker(s.size());
  if (marker.size() > max) return Truncated(s, max);
  return absl::StrCat(Truncated(s, max - marker.size()), marker);
}

}  // namespace batchfetch

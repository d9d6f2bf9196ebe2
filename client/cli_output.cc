// Output of the batchfetch CLI.

#include "client/cli_output.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace batchfetch::cli {

namespace pb = ::batchfetch::v1;

namespace {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

// Length of the well-formed UTF-8 sequence starting at s[i] (Unicode 15,
// table 3-7: no overlongs, surrogates or code points above U+10FFFF), or 0.
size_t Utf8SequenceLength(absl::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t length;
  unsigned char lo = 0x80, hi = 0xBF;  // Range of the second byte.
  if (c >= 0xC2 && c <= 0xDF) {
    length = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    length = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    length = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + length > s.size() || byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < length; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return length;
}

// RapidJSON's default Writer copies bytes through unchecked, so anything not
// known to be UTF-8 goes through here to keep every output line valid JSON.
void WriteString(JsonWriter& writer, absl::string_view s) {
  if (IsValidUtf8(s)) {
    writer.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
    return;
  }
  std::string repaired;
  repaired.reserve(s.size() + 8);
  for (size_t i = 0; i < s.size();) {
    size_t length = Utf8SequenceLength(s, i);
    if (length == 0) {
      repaired += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER.
      ++i;
    } else {
      repaired.append(s.data() + i, length);
      i += length;
    }
  }
  writer.String(repaired.data(),
                static_cast<rapidjson::SizeType>(repaired.size()));
}

void WriteKey(JsonWriter& writer, absl::string_view key) {
  writer.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
}

// "OUTCOME_HTTP_ERROR" -> "http_error". Values this build does not know
// (a newer server) become e.g. "outcome_13" rather than an empty string.
std::string ShortEnumName(const std::string& full_name,
                          absl::string_view prefix, int value) {
  if (full_name.empty()) {
    return absl::StrCat(absl::AsciiStrToLower(prefix), value);
  }
  absl::string_view name = full_name;
  absl::ConsumePrefix(&name, prefix);
  return absl::AsciiStrToLower(name);
}

// RFC 3339 in UTC with as many fractional digits as needed.
std::string FormatTimestamp(const google::protobuf::Timestamp& ts) {
  absl::Time t =
      absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E*SZ", t, absl::UTCTimeZone());
}

void WriteSummaryObject(JsonWriter& writer, const pb::BatchSummary& summary) {
  writer.StartObject();
  WriteKey(writer, "batch_id");
  WriteString(writer, summary.batch_id());
  WriteKey(writer, "state");
  WriteString(writer, StateName(summary.state()));
  WriteKey(writer, "total");
  writer.Uint(summary.total());
  WriteKey(writer, "succeeded");
  writer.Uint(summary.succeeded());
  WriteKey(writer, "failed");
  writer.Uint(summary.failed());
  WriteKey(writer, "stored");
  writer.Uint(summary.stored());
  // Always present so consumers can rely on the keys; null while unset
  // (e.g. finished_at of a running batch).
  WriteKey(writer, "created_at");
  if (summary.has_created_at()) {
    WriteString(writer, FormatTimestamp(summary.created_at()));
  } else {
    writer.Null();
  }
  WriteKey(writer, "finished_at");
  if (summary.has_finished_at()) {
    WriteString(writer, FormatTimestamp(summary.finished_at()));
  } else {
    writer.Null();
  }
  writer.EndObject();
}

}  // namespace

bool IsValidUtf8(absl::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t length = Utf8SequenceLength(s, i);
    if (length == 0) return false;
    i += length;
  }
  return true;
}

std::string OutcomeName(pb::Outcome outcome) {
  return ShortEnumName(pb::Outcome_Name(outcome), "OUTCOME_", outcome);
}

std::string StateName(pb::BatchState state) {
  return ShortEnumName(pb::BatchState_Name(state), "BATCH_STATE_", state);
}

std::string ResultToJson(const pb::FetchResult& result) {
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  writer.SetMaxDecimalPlaces(3);
  writer.StartObject();
  WriteKey(writer, "index");
  writer.Uint(result.index());
  WriteKey(writer, "url");
  WriteString(writer, result.url());
  WriteKey(writer, "outcome");
  WriteString(writer, OutcomeName(result.outcome()));
  WriteKey(writer, "http_status");
  writer.Int(result.http_status());
  WriteKey(writer, "attempts");
  writer.Uint(result.attempts());
  WriteKey(writer, "elapsed_ms");
  writer.Double(static_cast<double>(result.elapsed().seconds()) * 1e3 +
                result.elapsed().nanos() / 1e6);
  if (!result.content_type().empty()) {
    WriteKey(writer, "content_type");
    WriteString(writer, result.content_type());
  }
  if (!result.error().empty()) {
    WriteKey(writer, "error");
    WriteString(writer, result.error());
  }
  if (!result.json().empty()) {
    // The server contract: `json` is compact, valid JSON. Re-parsing it on
    // every line would double the cost for nothing.
    WriteKey(writer, "json");
    writer.RawValue(result.json().data(), result.json().size(),
                    rapidjson::kObjectType);
  }
  if (!result.body().empty()) {
    // Bodies are bytes; only valid UTF-8 can be a JSON string without loss.
    if (IsValidUtf8(result.body())) {
      WriteKey(writer, "body");
      WriteString(writer, result.body());
    } else {
      WriteKey(writer, "body_base64");
      WriteString(writer, absl::Base64Escape(result.body()));
    }
  }
  writer.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

namespace {

// One CSV field (RFC 4180), valid UTF-8.
std::string CsvField(absl::string_view raw) {
  std::string text;
  if (IsValidUtf8(raw)) {
    text = std::string(raw);
  } else {
    // Replace each byte of an invalid sequence; keep valid runs.
    for (size_t i = 0; i < raw.size();) {
      size_t len = 1;
      const unsigned char c = static_cast<unsigned char>(raw[i]);
      if (c >= 0xF0) {
        len = 4;
      } else if (c >= 0xE0) {
        len = 3;
      } else if (c >= 0xC0) {
        len = 2;
      }
      if (i + len <= raw.size() && IsValidUtf8(raw.substr(i, len))) {
        text.append(raw.data() + i, len);
        i += len;
      } else {
        text += "\xEF\xBF\xBD";
        ++i;
      }
    }
  }
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  quoted += '"';
  return quoted;
}

}  // namespace

std::string ResultToCsv(const pb::FetchResult& result) {
  const double elapsed_ms =
      static_cast<double>(result.elapsed().seconds()) * 1e3 +
      result.elapsed().nanos() / 1e6;
  return absl::StrCat(
      result.index(), ",", CsvField(result.url()), ",",
      OutcomeName(result.outcome()), ",", result.http_status(), ",",
      result.attempts(), ",", absl::StrFormat("%.3f", elapsed_ms), ",",
      CsvField(result.content_type()), ",", CsvField(result.error()));
}

std::string FormatProgress(uint32_t done, uint32_t total, uint32_t failed,
                           absl::Duration elapsed) {
  constexpr int kBarWidth = 30;
  total = std::max(total, done);
  const int filled =
      total == 0 ? 0 : static_cast<int>(uint64_t{done} * kBarWidth / total);
  const double seconds = absl::ToDoubleSeconds(elapsed);
  const double rate = seconds > 0 ? done / seconds : 0;
  std::string line = absl::StrFormat(
      "[%s%s] %u/%u  %.1f/s  %u failed", std::string(filled, '#'),
      std::string(kBarWidth - filled, '.'), done, total, rate, failed);
  if (done > 0 && done < total && rate > 0) {
    const absl::Duration eta = absl::Seconds(std::ceil((total - done) / rate));
    absl::StrAppend(&line, "  ETA ", absl::FormatDuration(eta));
  }
  return line;
}

std::string SummaryToJson(const pb::BatchSummary& summary, bool wrap) {
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  if (wrap) {
    writer.StartObject();
    WriteKey(writer, "summary");
  }
  WriteSummaryObject(writer, summary);
  if (wrap) writer.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

bool WriteStdoutLine(absl::string_view line) {
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  return std::fflush(stdout) == 0 && !std::ferror(stdout);
}

}  // namespace batchfetch::cli

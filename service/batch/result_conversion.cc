#include "service/batch/result_conversion.h"

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "service/fetch/url_redaction.h"

namespace batchfetch {
namespace {

// The ranges google/protobuf/{duration,timestamp}.proto define.
constexpr int64_t kMaxDurationSeconds = 315'576'000'000;
constexpr int64_t kMinTimestampSeconds = -62'135'596'800;  // 0001-01-01
constexpr int64_t kMaxTimestampSeconds = 253'402'300'799;  // 9999-12-31
constexpr int32_t kMaxNanos = 999'999'999;

// `error` with the userinfo of any URL in it redacted, and the literal
// userinfo of the request's own URLs too when it holds a password ("u:pw"),
// in case a message quotes it without "://". (A user name alone is not
// replaced literally: a short one would mangle unrelated words.)
std::string RedactError(absl::string_view error, absl::string_view url,
                        absl::string_view final_url) {
  std::string out = RedactUserinfoInText(error);
  for (absl::string_view userinfo : {UserinfoOf(url), UserinfoOf(final_url)}) {
    if (userinfo.find(':') != absl::string_view::npos) {
      absl::StrReplaceAll({{userinfo, kRedactedUserinfo}}, &out);
    }
  }
  return out;
}

// Length of the well-formed UTF-8 sequence starting at s[i] (1 to 4), or 0
// if none does (RFC 3629: no overlong forms, no UTF-16 surrogates, nothing
// past U+10FFFF; the ranges of its table 3-7).
size_t Utf8SequenceAt(absl::string_view s, size_t i) {
  const auto byte = [&](size_t k) -> unsigned {
    return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0x100;
  };
  const auto in = [](unsigned b, unsigned lo, unsigned hi) {
    return b >= lo && b <= hi;
  };
  const unsigned b0 = byte(0);
  if (b0 < 0x80) return 1;
  if (in(b0, 0xC2, 0xDF)) return in(byte(1), 0x80, 0xBF) ? 2 : 0;
  if (in(b0, 0xE0, 0xEF)) {
    const unsigned lo = b0 == 0xE0 ? 0xA0 : 0x80;
    const unsigned hi = b0 == 0xED ? 0x9F : 0xBF;  // ED A0..BF: surrogates
    return in(byte(1), lo, hi) && in(byte(2), 0x80, 0xBF) ? 3 : 0;
  }
  if (in(b0, 0xF0, 0xF4)) {
    const unsigned lo = b0 == 0xF0 ? 0x90 : 0x80;
    const unsigned hi = b0 == 0xF4 ? 0x8F : 0xBF;
    return in(byte(1), lo, hi) && in(byte(2), 0x80, 0xBF) &&
                   in(byte(3), 0x80, 0xBF)
               ? 4
               : 0;
  }
  return 0;
}

bool IsValidUtf8(absl::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8SequenceAt(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// `s` with each byte that is not part of well-formed UTF-8 replaced: by
// U+FFFD (`percent_encode` false) or by "%XX" (true, for URLs, where it
// means the same byte). Proto3 strings must be UTF-8 (else the caller
// cannot parse the stream) and so must utf8mb4 columns (else strict SQL
// mode refuses the row); upstream bytes are neither.
std::string ValidUtf8(absl::string_view s, bool percent_encode) {
  if (IsValidUtf8(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 16);
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8SequenceAt(s, i);
    if (n > 0) {
      out.append(s.data() + i, n);
      i += n;
      continue;
    }
    if (percent_encode) {
      constexpr char kHex[] = "0123456789ABCDEF";
      const unsigned char c = static_cast<unsigned char>(s[i]);
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    } else {
      out += "\xEF\xBF\xBD";
    }
    ++i;
  }
  return out;
}

}  // namespace

v1::Outcome OutcomeOf(TransferResult result) {
  switch (result) {
    case TransferResult::kResponse:
      return v1::OUTCOME_OK;  // refined by FillResult from status and body
    case TransferResult::kTimeout:
      return v1::OUTCOME_TIMEOUT;
    case TransferResult::kDnsError:
      return v1::OUTCOME_DNS_ERROR;
    case TransferResult::kConnectError:
      return v1::OUTCOME_CONNECT_ERROR;
    case TransferResult::kTlsError:
      return v1::OUTCOME_TLS_ERROR;
    case TransferResult::kTransportError:
      return v1::OUTCOME_TRANSPORT_ERROR;
    case TransferResult::kTooLarge:
      return v1::OUTCOME_TOO_LARGE;
    case TransferResult::kBlocked:
      return v1::OUTCOME_BLOCKED;
    case TransferResult::kCancelled:
      return v1::OUTCOME_CANCELLED;
    case TransferResult::kInvalidRequest:
      return v1::OUTCOME_INVALID_REQUEST;
  }
  return v1::OUTCOME_TRANSPORT_ERROR;
}

void FillResult(FetchedResponse& response, const JsonCleaner& cleaner,
                v1::FetchResult* result) {
  result->set_index(response.index);
  // Credentials in a URL were sent, but are never echoed (streamed, stored,
  // logged): this is the one place results are built.
  result->set_url(RedactUserinfo(response.url));
  result->set_http_status(response.http_status);
  result->set_content_type(std::move(response.content_type));
  result->set_attempts(response.attempts);
  *result->mutable_elapsed() = ToProtoDuration(response.elapsed);
  // A redirect's Location may hold raw bytes that are not UTF-8.
  result->set_final_url(
      ValidUtf8(RedactUserinfo(response.final_url), /*percent_encode=*/true));
  if (response.attempts > 0) {
    v1::Timings* t = result->mutable_timings();
    *t->mutable_dns() = ToProtoDuration(response.timings.dns);
    *t->mutable_connect() = ToProtoDuration(response.timings.connect);
    *t->mutable_tls() = ToProtoDuration(response.timings.tls);
    *t->mutable_first_byte() = ToProtoDuration(response.timings.first_byte);
    *t->mutable_total() = ToProtoDuration(response.timings.total);
  }
  if (response.result != TransferResult::kResponse) {
    result->set_outcome(OutcomeOf(response.result));
    result->set_error(
        ValidUtf8(RedactError(response.error, response.url, response.final_url),
                  /*percent_encode=*/false));
    return;
  }
  const int status = response.http_status;
  if (status < 200 || status > 299) {
    result->set_outcome(v1::OUTCOME_HTTP_ERROR);
    // The engine's text, when it has one, says more (e.g. why no retry).
    result->set_error(ValidUtf8(RedactError(DescribeFailure(response),
                                            response.url, response.final_url),
                                /*percent_encode=*/false));
    result->set_body(std::move(response.body));
    return;
  }
  if (response.body.empty() &&
      (status == 204 || status == 205 || !response.body_expected)) {
    result->set_outcome(v1::OUTCOME_OK);  // no content by design
    return;
  }
  // The cleaner refuses what is not Unicode (unpaired surrogate escapes).
  const absl::Status cleaned =
      cleaner.Clean(response.body, result->mutable_json());
  if (cleaned.ok()) {
    result->set_outcome(v1::OUTCOME_OK);
  } else if (absl::IsResourceExhausted(cleaned)) {
    // The projection, not the body, is too large: nothing is kept.
    result->clear_json();
    result->set_outcome(v1::OUTCOME_TOO_LARGE);
    result->set_error(std::string(cleaned.message()));
  } else {
    result->clear_json();
    result->set_outcome(v1::OUTCOME_INVALID_JSON);
    result->set_error(std::string(cleaned.message()));
    result->set_body(std::move(response.body));
  }
}

google::protobuf::Duration ToProtoDuration(absl::Duration d) {
  google::protobuf::Duration out;
  const absl::Duration max =
      absl::Seconds(kMaxDurationSeconds) + absl::Nanoseconds(kMaxNanos - 999);
  if (d >= max) d = max;
  if (d <= -max) d = -max;
  // Whole microseconds, truncated toward zero; then split so that seconds
  // and nanos share the sign, as the proto requires.
  const int64_t micros = absl::ToInt64Microseconds(d);
  out.set_seconds(micros / 1'000'000);
  out.set_nanos(static_cast<int32_t>((micros % 1'000'000) * 1000));
  return out;
}

absl::StatusOr<absl::Duration> FromProtoDuration(
    const google::protobuf::Duration& d) {
  if (d.seconds() < -kMaxDurationSeconds || d.seconds() > kMaxDurationSeconds) {
    return absl::InvalidArgumentError(
        absl::StrCat("seconds ", d.seconds(), " is out of range"));
  }
  if (d.nanos() < -kMaxNanos || d.nanos() > kMaxNanos) {
    return absl::InvalidArgumentError(
        absl::StrCat("nanos ", d.nanos(), " is out of range"));
  }
  if ((d.seconds() > 0 && d.nanos() < 0) ||
      (d.seconds() < 0 && d.nanos() > 0)) {
    return absl::InvalidArgumentError(
        "seconds and nanos must have the same sign");
  }
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

absl::Time TruncateToMicros(absl::Time t) {
  // ToUnixMicros rounds toward negative infinity.
  return absl::FromUnixMicros(absl::ToUnixMicros(t));
}

google::protobuf::Timestamp ToProtoTimestamp(absl::Time t) {
  google::protobuf::Timestamp out;
  const absl::Time min = absl::FromUnixSeconds(kMinTimestampSeconds);
  const absl::Time max = absl::FromUnixSeconds(kMaxTimestampSeconds) +
                         absl::Nanoseconds(kMaxNanos - 999);
  if (t < min) t = min;
  if (t > max) t = max;
  const int64_t micros = absl::ToUnixMicros(t);  // floor
  int64_t seconds = micros / 1'000'000;
  int64_t rest = micros % 1'000'000;
  if (rest < 0) {  // nanos of a Timestamp are never negative
    rest += 1'000'000;
    --seconds;
  }
  out.set_seconds(seconds);
  out.set_nanos(static_cast<int32_t>(rest * 1000));
  return out;
}

absl::StatusOr<absl::Time> FromProtoTimestamp(
    const google::protobuf::Timestamp& t) {
  if (t.seconds() < kMinTimestampSeconds ||
      t.seconds() > kMaxTimestampSeconds) {
    return absl::InvalidArgumentError(
        absl::StrCat("seconds ", t.seconds(), " is out of range"));
  }
  if (t.nanos() < 0 || t.nanos() > kMaxNanos) {
    return absl::InvalidArgumentError(
        absl::StrCat("nanos ", t.nanos(), " is out of range"));
  }
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

}  // namespace batchfetch

#include "service/store/spool/spool_record.h"

#include <cstring>
#include <limits>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"

namespace batchfetch {
namespace {

constexpr uint8_t kVersion = 1;

// Field tags of version 1. Never reuse a number.
enum Tag : uint8_t {
  kBatchId = 1,
  kOwner = 2,
  kState = 3,
  kTotal = 4,
  kSucceeded = 5,
  kFailed = 6,
  kStored = 7,
  kCreatedAt = 8,
  kFinishedAt = 9,
  kFetchedAt = 10,
  kResultBytes = 11,
  // Optional (a writer may leave them out; older records have none).
  kSpooled = 12,
  kRequest = 13,
  kRequestsSha256 = 14,
  kMaxTag = 14,
};

const char* TagName(uint8_t tag) {
  switch (tag) {
    case kBatchId:
      return "batch_id";
    case kOwner:
      return "owner";
    case kState:
      return "state";
    case kTotal:
      return "total";
    case kSucceeded:
      return "succeeded";
    case kFailed:
      return "failed";
    case kStored:
      return "stored";
    case kCreatedAt:
      return "created_at";
    case kFinishedAt:
      return "finished_at";
    case kFetchedAt:
      return "fetched_at";
    case kResultBytes:
      return "result";
    case kSpooled:
      return "spooled";
    case kRequest:
      return "request";
    case kRequestsSha256:
      return "requests_sha256";
    default:
      return "unknown";
  }
}

// The fields each kind must carry (and the only known ones it may carry).
constexpr uint32_t Bit(uint8_t tag) { return 1u << tag; }
constexpr uint32_t kBatchFields =
    Bit(kBatchId) | Bit(kOwner) | Bit(kState) | Bit(kTotal) | Bit(kSucceeded) |
    Bit(kFailed) | Bit(kStored) | Bit(kCreatedAt) | Bit(kFinishedAt);
constexpr uint32_t kOptionalBatchFields =
    Bit(kSpooled) | Bit(kRequest) | Bit(kRequestsSha256);
constexpr uint32_t kResultFields =
    Bit(kBatchId) | Bit(kFetchedAt) | Bit(kResultBytes);

void PutFixed32(uint32_t v, std::string* out) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xffu);
  out->append(b, 4);
}

void PutFixed64(uint64_t v, std::string* out) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xffu);
  out->append(b, 8);
}

uint64_t GetFixed(absl::string_view b) {
  uint64_t v = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    v |= static_cast<uint64_t>(static_cast<unsigned char>(b[i])) << (8 * i);
  }
  return v;
}

int64_t TimeToMicros(absl::Time t) {
  if (t == absl::InfinitePast()) return std::numeric_limits<int64_t>::min();
  if (t == absl::InfiniteFuture()) return std::numeric_limits<int64_t>::max();
  return absl::ToUnixMicros(t);  // saturates outside int64 microseconds
}

absl::Time MicrosToTime(int64_t micros) {
  if (micros == std::numeric_limits<int64_t>::min())
    return absl::InfinitePast();
  if (micros == std::numeric_limits<int64_t>::max()) {
    return absl::InfiniteFuture();
  }
  return absl::FromUnixMicros(micros);
}

void PutString(uint8_t tag, absl::string_view value, std::string* out) {
  out->push_back(static_cast<char>(tag));
  PutFixed32(static_cast<uint32_t>(value.size()), out);
  out->append(value.data(), value.size());
}

void PutU32(uint8_t tag, uint32_t value, std::string* out) {
  out->push_back(static_cast<char>(tag));
  PutFixed32(4, out);
  PutFixed32(value, out);
}

void PutTime(uint8_t tag, absl::Time t, std::string* out) {
  out->push_back(static_cast<char>(tag));
  PutFixed32(8, out);
  PutFixed64(static_cast<uint64_t>(TimeToMicros(t)), out);
}

absl::Status Malformed(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("malformed spool record: ", what));
}

}  // namespace

SpoolRecord SpoolRecord::BatchCreated(BatchRecord batch) {
  SpoolRecord r;
  r.kind = Kind::kBatchCreated;
  r.batch = std::move(batch);
  return r;
}

SpoolRecord SpoolRecord::Result(std::string batch_id, absl::Time fetched_at,
                                std::string result_bytes) {
  SpoolRecord r;
  r.kind = Kind::kResult;
  r.batch_id = std::move(batch_id);
  r.fetched_at = fetched_at;
  r.result_bytes = std::move(result_bytes);
  return r;
}

SpoolRecord SpoolRecord::BatchFinished(BatchRecord batch) {
  SpoolRecord r;
  r.kind = Kind::kBatchFinished;
  r.batch = std::move(batch);
  return r;
}

std::string EncodeSpoolRecord(const SpoolRecord& record) {
  std::string out;
  out.push_back(static_cast<char>(kVersion));
  out.push_back(static_cast<char>(record.kind));
  if (record.kind == SpoolRecord::Kind::kResult) {
    out.reserve(64 + record.batch_id.size() + record.result_bytes.size());
    PutString(kBatchId, record.batch_id, &out);
    PutTime(kFetchedAt, record.fetched_at, &out);
    PutString(kResultBytes, record.result_bytes, &out);
    return out;
  }
  const BatchRecord& b = record.batch;
  PutString(kBatchId, b.batch_id, &out);
  PutString(kOwner, b.owner, &out);
  PutU32(kState, static_cast<uint32_t>(b.state), &out);
  PutU32(kTotal, b.total, &out);
  PutU32(kSucceeded, b.succeeded, &out);
  PutU32(kFailed, b.failed, &out);
  PutU32(kStored, b.stored, &out);
  PutTime(kCreatedAt, b.created_at, &out);
  PutTime(kFinishedAt, b.finished_at, &out);
  if (b.spooled != 0) PutU32(kSpooled, b.spooled, &out);
  if (b.request != nullptr) PutString(kRequest, *b.request, &out);
  if (!b.requests_sha256.empty()) {
    PutString(kRequestsSha256, b.requests_sha256, &out);
  }
  return out;
}

absl::StatusOr<SpoolRecord> DecodeSpoolRecord(absl::string_view bytes) {
  if (bytes.size() < 2) return Malformed("shorter than its version and kind");
  const uint8_t version = static_cast<uint8_t>(bytes[0]);
  if (version != kVersion) {
    return Malformed(absl::StrCat("unsupported version ", version));
  }
  SpoolRecord record;
  const uint8_t kind = static_cast<uint8_t>(bytes[1]);
  uint32_t required = 0;
  uint32_t allowed = 0;
  switch (kind) {
    case static_cast<uint8_t>(SpoolRecord::Kind::kBatchCreated):
    case static_cast<uint8_t>(SpoolRecord::Kind::kBatchFinished):
      required = kBatchFields;
      allowed = kBatchFields | kOptionalBatchFields;
      break;
    case static_cast<uint8_t>(SpoolRecord::Kind::kResult):
      required = allowed = kResultFields;
      break;
    default:
      return Malformed(absl::StrCat("unknown kind ", kind));
  }
  record.kind = static_cast<SpoolRecord::Kind>(kind);
  bytes.remove_prefix(2);

  uint32_t seen = 0;
  while (!bytes.empty()) {
    if (bytes.size() < 5) return Malformed("truncated field header");
    const uint8_t tag = static_cast<uint8_t>(bytes[0]);
    const uint64_t length = GetFixed(bytes.substr(1, 4));
    bytes.remove_prefix(5);
    if (length > bytes.size()) {
      return Malformed(absl::StrCat("field ", TagName(tag), " (tag ", tag,
                                    ") is longer than the record"));
    }
    const absl::string_view value = bytes.substr(0, length);
    bytes.remove_prefix(length);
    if (tag == 0 || tag > kMaxTag) continue;  // a later version's field
    const char* name = TagName(tag);
    if ((allowed & Bit(tag)) == 0) {
      return Malformed(
          absl::StrCat("field ", name, " in a record of kind ", kind));
    }
    if ((seen & Bit(tag)) != 0) {
      return Malformed(absl::StrCat("field ", name, " repeated"));
    }
    seen |= Bit(tag);
    switch (tag) {
      case kBatchId:
        (allowed == kResultFields ? record.batch_id : record.batch.batch_id) =
            std::string(value);
        continue;
      case kRequest:
        record.batch.request = std::make_shared<const std::string>(value);
        continue;
      case kRequestsSha256:
        record.batch.requests_sha256 = std::string(value);
        continue;
      case kOwner:
        record.batch.owner = std::string(value);
        continue;
      case kResultBytes:
        record.result_bytes = std::string(value);
        continue;
      case kCreatedAt:
      case kFinishedAt:
      case kFetchedAt: {
        if (value.size() != 8) {
          return Malformed(absl::StrCat("field ", name, " is ", value.size(),
                                        " bytes, not 8"));
        }
        const absl::Time t =
            MicrosToTime(static_cast<int64_t>(GetFixed(value)));
        if (tag == kCreatedAt) record.batch.created_at = t;
        if (tag == kFinishedAt) record.batch.finished_at = t;
        if (tag == kFetchedAt) record.fetched_at = t;
        continue;
      }
      default:
        break;
    }
    // The 4-byte fields.
    if (value.size() != 4) {
      return Malformed(
          absl::StrCat("field ", name, " is ", value.size(), " bytes, not 4"));
    }
    const uint32_t v = static_cast<uint32_t>(GetFixed(value));
    switch (tag) {
      case kState:
        if (v > static_cast<uint32_t>(std::numeric_limits<int>::max()) ||
            !v1::BatchState_IsValid(static_cast<int>(v))) {
          return Malformed(absl::StrCat("field state has invalid value ", v));
        }
        record.batch.state = static_cast<v1::BatchState>(v);
        break;
      case kTotal:
        record.batch.total = v;
        break;
      case kSucceeded:
        record.batch.succeeded = v;
        break;
      case kFailed:
        record.batch.failed = v;
        break;
      case kStored:
        record.batch.stored = v;
        break;
      case kSpooled:
        record.batch.spooled = v;
        break;
      default:
        break;
    }
  }
  const uint32_t missing = required & ~seen;
  if (missing != 0) {
    for (uint8_t tag = 1; tag <= kMaxTag; ++tag) {
      if ((missing & Bit(tag)) != 0) {
        return Malformed(absl::StrCat("missing field ", TagName(tag)));
      }
    }
  }
  return record;
}

}  // namespace batchfetch

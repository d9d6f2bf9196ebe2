#include "service/batch/batch_id.h"

#include <cstdint>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace batchfetch {

std::string NewBatchId(absl::Time now) {
  // absl::BitGen is not thread-safe; one generator per thread avoids a lock.
  thread_local absl::BitGen gen;
  const uint64_t ms = static_cast<uint64_t>(absl::ToUnixMillis(now));
  const uint64_t rand_a = absl::Uniform<uint64_t>(gen) & 0xfff;
  const uint64_t rand_b = absl::Uniform<uint64_t>(gen) & 0x3fffffffffffffffULL;
  // 48-bit ms timestamp | version 7 | 12 random bits | variant 10 | 62 random.
  const uint64_t hi = (ms << 16) | (uint64_t{7} << 12) | rand_a;
  const uint64_t lo = (uint64_t{2} << 62) | rand_b;
  return absl::StrFormat("%08x-%04x-%04x-%04x-%012x", hi >> 32,
                         (hi >> 16) & 0xffff, hi & 0xffff, lo >> 48,
                         lo & 0xffffffffffffULL);
}

absl::Status ValidateBatchId(absl::string_view id) {
  if (id.empty() || id.size() > kMaxBatchIdLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_id: must be 1 to ", kMaxBatchIdLength,
                     " characters long, got ", id.size()));
  }
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                    c == '-' || c == ':';
    if (!ok) {
      return absl::InvalidArgumentError(
          "batch_id: may only contain letters, digits and . _ - :");
    }
  }
  return absl::OkStatus();
}

}  // namespace batchfetch

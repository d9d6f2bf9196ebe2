#ifndef BATCHFETCH_SERVICE_STORE_SPOOL_CRC32C_H_
#define BATCHFETCH_SERVICE_STORE_SPOOL_CRC32C_H_

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of the
// spool's log format, and leveldb's masking of stored checksums. Pure
// functions: no state, safe from any thread.

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace batchfetch::crc32c {

// The CRC-32C of `prefix_crc`'s data followed by `data`: Extend(Value(a), b)
// == Value(a + b). Extend(0, data) == Value(data).
uint32_t Extend(uint32_t prefix_crc, const char* data, size_t n);

inline uint32_t Value(const char* data, size_t n) { return Extend(0, data, n); }
inline uint32_t Value(absl::string_view data) {
  return Extend(0, data.data(), data.size());
}

// Why a stored CRC is masked (leveldb's reasoning): the CRC of a string that
// itself contains embedded CRCs is weak, so what is stored is rotated and
// offset. Unmask(Mask(crc)) == crc.
inline constexpr uint32_t kMaskDelta = 0xa282ead8u;

inline uint32_t Mask(uint32_t crc) {
  return ((crc >> 15) | (crc << 17)) + kMaskDelta;
}

inline uint32_t Unmask(uint32_t masked_crc) {
  const uint32_t rot = masked_crc - kMaskDelta;
  return (rot >> 17) | (rot << 15);
}

}  // namespace batchfetch::crc32c

#endif  // BATCHFETCH_SERVICE_STORE_SPOOL_CRC32C_H_

#ifndef BATCHFETCH_SERVICE_STORE_SPOOL_SPOOL_LOG_FORMAT_H_
#define BATCHFETCH_SERVICE_STORE_SPOOL_SPOOL_LOG_FORMAT_H_

// The spool's on-disk log format, modelled on leveldb's log (db/log_format.h):
//
// A log is a sequence of 32 KiB blocks; the last one may be short. A block
// holds physical records ("fragments"), each a 7-byte header and a payload:
//
//   masked CRC-32C of type byte + payload  (4 bytes, little-endian)
//   payload length                          (2 bytes, little-endian)
//   type: FULL, FIRST, MIDDLE or LAST       (1 byte)
//
// A fragment never crosses a block boundary: a logical record that does not
// fit in what is left of a block is split into FIRST, MIDDLE…, LAST
// fragments. When fewer than 7 bytes are left in a block, they are zero
// padding (the trailer) and the next fragment starts the next block.
//
// So a damaged block costs only the records that touch it: the reader
// resynchronises at the next block boundary.

#include <cstddef>
#include <cstdint>

namespace batchfetch {

enum class SpoolFragmentType : uint8_t {
  // Never written: a zero header marks zero-filled (never written) space.
  kZero = 0,
  kFull = 1,
  kFirst = 2,
  kMiddle = 3,
  kLast = 4,
};
inline constexpr uint8_t kMaxSpoolFragmentType = 4;

inline constexpr size_t kSpoolBlockSize = 32768;
inline constexpr size_t kSpoolHeaderSize = 4 + 2 + 1;

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_SPOOL_SPOOL_LOG_FORMAT_H_

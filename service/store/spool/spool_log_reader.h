#ifndef BATCHFETCH_SERVICE_STORE_SPOOL_SPOOL_LOG_READER_H_
#define BATCHFETCH_SERVICE_STORE_SPOOL_SPOOL_LOG_READER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace batchfetch {

// What reading a log found besides its records. Byte counts are physical
// bytes of the log (headers included).
struct SpoolReadStats {
  uint64_t records = 0;
  // Damage: checksum mismatches, impossible lengths inside a full block,
  // unknown fragment types, fragments out of order, zero-filled space. Each
  // damaged region (at most the rest of one block, or one broken logical
  // record) counts once in `corruptions`.
  uint64_t corrupt_bytes = 0;
  uint64_t corruptions = 0;
  // An incomplete last record (the writer died mid-append): not damage, the
  // end of the log. Its bytes, and a short last block's leftover bytes.
  uint64_t torn_tail_bytes = 0;
};

// Reads the logical records of a spool log (spool_log_format.h).
//
// Never trusts the input: every length is checked against what was read,
// every fragment's checksum is verified, and a damaged block is skipped to
// the next block boundary (counted in stats()). An incomplete record at the
// end of the log is the end of the log (torn tail), not an error.
// Memory: one block, plus the record being assembled.
//
// Thread-compatible.
class SpoolLogReader {
 public:
  // Fills `buf` with the next up to `n` bytes of the log and returns how
  // many it wrote: fewer than `n` only at the end of the log (0 once there).
  using Source =
      absl::AnyInvocable<absl::StatusOr<size_t>(char* buf, size_t n)>;

  explicit SpoolLogReader(Source source);
  // Reads the file open at `fd` from its current offset. Does not own `fd`.
  static SpoolLogReader ForFileDescriptor(int fd);

  SpoolLogReader(SpoolLogReader&&) = default;

  // The next complete record in `*record`, valid until the next call. False
  // at the end of the log, or when the source failed (then status()).
  bool ReadRecord(absl::string_view* record);

  const SpoolReadStats& stats() const { return stats_; }
  // The source's error, if reading stopped on one.
  const absl::Status& status() const { return status_; }

 private:
  // What ReadFragment found.
  enum class Next { kFragment, kDamaged, kEnd };
  Next ReadFragment(uint8_t* type, absl::string_view* fragment);
  // Skips the `left` unread bytes of the current block: a torn tail (kEnd)
  // in the log's last block, damage (kDamaged, counted) anywhere else.
  Next DropRestOfBlock(size_t left);
  void DropPartialRecord();

  Source source_;
  std::unique_ptr<char[]> block_;
  size_t block_length_ = 0;  // bytes of the current block read
  size_t position_ = 0;      // next unread byte of the current block
  bool at_last_block_ =
      false;                // the current block is short: the log ends in it
  bool in_record_ = false;  // `record_` holds a FIRST (+ MIDDLE…) so far
  std::string record_;
  uint64_t record_physical_bytes_ = 0;
  SpoolReadStats stats_;
  absl::Status status_;
};

// Every record of `log`, in order, to `on_record`; then what else was found.
// Pure (the entry point for fuzzing): never reads outside `log`.
SpoolReadStats ReadSpoolRecords(
    absl::string_view log,
    absl::FunctionRef<void(absl::string_view record)> on_record);

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_SPOOL_SPOOL_LOG_READER_H_

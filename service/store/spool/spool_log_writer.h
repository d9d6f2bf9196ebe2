#ifndef BATCHFETCH_SERVICE_STORE_SPOOL_SPOOL_LOG_WRITER_H_
#define BATCHFETCH_SERVICE_STORE_SPOOL_SPOOL_LOG_WRITER_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace batchfetch {

// Pure framing (spool_log_format.h): appends `payload` as one logical record
// to `out`, for a log that is `*log_length` bytes long before the call, and
// advances `*log_length` by what was appended. An empty payload is one empty
// FULL fragment.
void AppendSpoolFramedRecord(absl::string_view payload, uint64_t* log_length,
                             std::string* out);

// How many bytes AppendSpoolFramedRecord adds for a payload of
// `payload_size` bytes at log length `log_length` (headers and any trailer
// padding included).
uint64_t SpoolFramedRecordSize(uint64_t log_length, size_t payload_size);

// Appends framed records to an open file.
//
// Each AddRecord is one positioned write of the whole framed record, at the
// file's logical end. If that write fails part-way, the file is truncated
// back to where the record started, so a later record never follows a torn
// one; if even that fails, the writer refuses every later record (the caller
// then starts a new file). Durability is the caller's business (fdatasync on
// the descriptor).
//
// Thread-compatible: one caller at a time. Does not own `fd`.
class SpoolLogWriter {
 public:
  // `fd` is open for writing and `file_length` bytes long.
  SpoolLogWriter(int fd, uint64_t file_length);

  SpoolLogWriter(const SpoolLogWriter&) = delete;
  SpoolLogWriter& operator=(const SpoolLogWriter&) = delete;

  // Errors carry the errno (RESOURCE_EXHAUSTED for ENOSPC, …);
  // FAILED_PRECONDITION once the writer is broken.
  absl::Status AddRecord(absl::string_view payload);

  // The file length after the last successful AddRecord.
  uint64_t file_length() const { return file_length_; }
  bool broken() const { return broken_; }

 private:
  const int fd_;
  uint64_t file_length_;
  bool broken_ = false;
  std::string buffer_;  // reused across records
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_SPOOL_SPOOL_LOG_WRITER_H_

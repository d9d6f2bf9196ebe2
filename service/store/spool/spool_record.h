#ifndef BATCHFETCH_SERVICE_STORE_SPOOL_SPOOL_RECORD_H_
#define BATCHFETCH_SERVICE_STORE_SPOOL_SPOOL_RECORD_H_

// What the spool holds: the writes the store could not commit to MySQL, as
// typed records, and their byte encoding (the payload of one log record).
// Pure functions: no I/O, no state, safe from any thread, never throw.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "service/store/result_store.h"

namespace batchfetch {

// One write the store owes MySQL. Replaying the records of a spool in order
// redoes those writes; each is idempotent under its key (the batch id; the
// batch id and the result's index).
struct SpoolRecord {
  enum class Kind : uint8_t {
    // ResultStore::CreateBatch: `batch` as created (owner included).
    kBatchCreated = 1,
    // ResultStore::AppendResult: `batch_id`, `fetched_at`, `result_bytes`.
    kResult = 2,
    // ResultStore::FinishBatch: `batch`, the final row.
    kBatchFinished = 3,
  };

  Kind kind = Kind::kResult;
  // kBatchCreated and kBatchFinished.
  BatchRecord batch;
  // kResult.
  std::string batch_id;
  absl::Time fetched_at;
  // A serialized v1::FetchResult (the replayer parses it: bytes here keep
  // the spool's codec free of protobuf and the append cheap to size).
  std::string result_bytes;

  static SpoolRecord BatchCreated(BatchRecord batch);
  static SpoolRecord Result(std::string batch_id, absl::Time fetched_at,
                            std::string result_bytes);
  static SpoolRecord BatchFinished(BatchRecord batch);
};

// Encoding, version 1:
//
//   version (1 byte, = 1), kind (1 byte),
//   then fields, each: tag (1 byte), length (4 bytes LE), value.
//
// Strings are their bytes; counters and the state are 4 bytes LE; times are
// 8 bytes LE, signed microseconds since the Unix epoch, with INT64_MIN for
// InfinitePast and INT64_MAX for InfiniteFuture (DATETIME(6) keeps
// microseconds, so nothing stored is lost). Each kind has a fixed set of
// required fields; an unknown tag is skipped (a later writer may add a field
// older readers can ignore), so an incompatible change must bump the
// version.
//
// Sub-microsecond parts of times are dropped (rounded toward the past).
std::string EncodeSpoolRecord(const SpoolRecord& record);

// The inverse of EncodeSpoolRecord. Any input that is not a well-formed
// version-1 record (truncated, unknown version or kind, a field too short or
// long, a repeated field, a field of another kind, a missing required field,
// an invalid batch state) is DATA_LOSS naming what is wrong. Never reads
// outside `bytes`.
absl::StatusOr<SpoolRecord> DecodeSpoolRecord(absl::string_view bytes);

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_SPOOL_SPOOL_RECORD_H_

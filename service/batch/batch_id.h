#ifndef BATCHFETCH_SERVICE_BATCH_BATCH_ID_H_
#define BATCHFETCH_SERVICE_BATCH_BATCH_ID_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace batchfetch {

// Longest batch id a caller may choose; ids are stored in a VARCHAR(64).
inline constexpr size_t kMaxBatchIdLength = 64;

// Returns a new UUIDv7 (RFC 9562) in canonical lower-case form. UUIDv7 ids
// sort by creation time and are unique across replicas without coordination,
// since 74 of their bits are random. Thread-safe.
std::string NewBatchId(absl::Time now = absl::Now());

// OK when `id` is acceptable as a caller-chosen batch id: 1-64 characters of
// [A-Za-z0-9._:-]. Otherwise INVALID_ARGUMENT saying why.
absl::Status ValidateBatchId(absl::string_view id);

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_BATCH_BATCH_ID_H_

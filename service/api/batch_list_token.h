#ifndef BATCHFETCH_SERVICE_API_BATCH_LIST_TOKEN_H_
#define BATCHFETCH_SERVICE_API_BATCH_LIST_TOKEN_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "batchfetch/v1/batchfetch.pb.h"
#include "service/store/result_store.h"

namespace batchfetch {

// Where a ListBatches page ended: the last batch sent (the keyset cursor).
struct BatchListCursor {
  absl::Time created_at;
  std::string batch_id;
};

// ListBatches page tokens: opaque to callers, unforgeable, and valid only
// for the query that issued them.
//
// A token is base64url (no padding) of: version byte 1, created_at as
// big-endian int64 Unix microseconds, the batch id, then the first 16
// bytes of HMAC-SHA256(key, "batchfetch.ListBatches\0" binding "\0"
// payload). `binding` (BatchListBinding) names the caller's scope, the
// state filter and created_after, so a token replayed with another filter or
// by another owner is refused like a tampered one.
//
// The key: the store's shared secret (ResultStore::PageTokenKey), the same
// on every replica sharing the database, so a token from one replica works
// on any; a store without one gets a per-process random key (tokens then
// survive neither a restart nor a hop to another replica: INVALID_ARGUMENT,
// and the caller lists again from the start).
//
// Pure; thread-safe.
std::string EncodeBatchListToken(const BatchListCursor& cursor,
                                 absl::string_view binding,
                                 absl::string_view key);
// INVALID_ARGUMENT naming page_token when `token` is malformed, altered, or
// issued for another binding or key. A well-formed token whose tag does not
// match gets one message for all of those ("issued for another query or
// another caller"), saying neither which nor whose.
absl::StatusOr<BatchListCursor> DecodeBatchListToken(absl::string_view token,
                                                     absl::string_view binding,
                                                     absl::string_view key);
// What a token is tied to: the scope's owner (or none), the state filter
// and created_after.
std::string BatchListBinding(const ReadScope& scope, v1::BatchState state,
                             absl::Time created_after);

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_API_BATCH_LIST_TOKEN_H_

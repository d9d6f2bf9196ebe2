#ifndef BATCHFETCH_SERVICE_API_PAGE_TOKEN_H_
#define BATCHFETCH_SERVICE_API_PAGE_TOKEN_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace batchfetch {

// ListResults page tokens: opaque to callers, tied to one batch, and
// tamper-evident.
//
// A token is base64url (no padding) of 29 bytes: a version byte (1), the
// first 8 bytes of SHA-256(batch_id), the next index (4 bytes, big-endian),
// then the first 16 bytes of HMAC-SHA256 over those 13 bytes.
//
// The HMAC key is fixed and built in, so every replica (of any version that
// knows format 1) accepts every replica's tokens with nothing shared at run
// time. That makes tokens tamper-*evident*, not unforgeable: someone who
// reads this source can mint one. That is enough because a token grants
// nothing: reads are scoped to the caller's batches before a token is
// looked at, and any index a forged token could name is reachable by
// paging anyway. The MAC only turns an altered, truncated or mixed-up
// token into a clear INVALID_ARGUMENT instead of a silently wrong page.
std::string EncodePageToken(absl::string_view batch_id, uint32_t next_index);

// The next index `token` carries. INVALID_ARGUMENT naming page_token when it
// is not valid base64url, has the wrong length or version, fails its MAC,
// or was issued for a batch other than `batch_id`. Pure.
absl::StatusOr<uint32_t> DecodePageToken(absl::string_view token,
                                         absl::string_view batch_id);

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_API_PAGE_TOKEN_H_

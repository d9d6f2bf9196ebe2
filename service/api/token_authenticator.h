#ifndef BATCHFETCH_SERVICE_API_TOKEN_AUTHENTICATOR_H_
#define BATCHFETCH_SERVICE_API_TOKEN_AUTHENTICATOR_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace batchfetch {

// Tokens shorter than this are refused when the file is read: a short token
// can be guessed.
inline constexpr size_t kMinTokenLength = 16;
// Longest identity name (it is stored as the owner of each batch).
inline constexpr size_t kMaxIdentityNameLength = 64;

// One caller as the token file names it. Only the token's SHA-256 digest is
// kept: the token itself is never held after parsing, so it cannot end up
// in a log line or an error message.
struct TokenEntry {
  std::string name;
  std::array<uint8_t, 32> digest;
};

// Parses a token file: one `<name> <token>` per line, separated by spaces
// or tabs; blank lines and lines starting with '#' are skipped. A name is
// 1-64 of [A-Za-z0-9._@-]; a token is at least kMinTokenLength printable
// ASCII characters without whitespace. INVALID_ARGUMENT naming the line
// number (and, for a duplicate name, the name) for a malformed line, a
// short or non-printable token, or a name or token given twice, and for a
// file without any token. An error never quotes a token or a whole line.
absl::StatusOr<std::vector<TokenEntry>> ParseTokenFile(
    std::string_view contents);

// The bearer tokens the server accepts (--auth_token_file) and the
// identity each one stands for.
//
// Authenticate hashes the presented token with SHA-256 and compares that
// digest with every known digest using CRYPTO_memcmp, never stopping early:
// the time taken does not depend on which token (if any) matched, nor on
// how much of one did. Nothing here logs or returns a token.
//
// Thread-safety: Authenticate may run on any number of threads while
// Reload runs on another; a call sees either the old or the new set whole.
class TokenAuthenticator {
 public:
  // Reads and parses `path` (see ParseTokenFile); errors are prefixed with
  // "--auth_token_file <path>".
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> FromFile(
      std::string path);
  // From entries already parsed (for tests).
  explicit TokenAuthenticator(std::vector<TokenEntry> entries,
                              std::string path = "");

  // Re-reads the file. On success the new tokens replace the old ones for
  // every later call; on error the old ones stay and the error is returned.
  absl::Status Reload() ABSL_LOCKS_EXCLUDED(mu_);

  // The identity name for the values of the call's `authorization`
  // metadata, or UNAUTHENTICATED saying what is missing or wrong (never
  // quoting the token): no value, more than one, not "Bearer <token>"
  // (scheme case-insensitive), or a token not in the file.
  absl::StatusOr<std::string> Authenticate(
      const std::vector<std::string_view>& authorization) const
      ABSL_LOCKS_EXCLUDED(mu_);

  size_t token_count() const ABSL_LOCKS_EXCLUDED(mu_);
  const std::string& path() const { return path_; }

 private:
  using Entries = std::vector<TokenEntry>;

  const std::string path_;
  mutable absl::Mutex mu_;
  // Replaced whole by Reload; readers copy the pointer and compare outside
  // the lock.
  std::shared_ptr<const Entries> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_API_TOKEN_AUTHENTICATOR_H_

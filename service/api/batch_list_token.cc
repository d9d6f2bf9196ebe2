#include "service/api/batch_list_token.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdint>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace batchfetch {
namespace {

constexpr char kVersion = 1;
constexpr size_t kTimeBytes = 8;
constexpr size_t kMacBytes = 16;
constexpr size_t kMaxBatchIdBytes = 64;

std::string Mac(absl::string_view key, absl::string_view binding,
                absl::string_view payload) {
  const std::string message =
      absl::StrCat(absl::string_view("batchfetch.ListBatches\0", 23), binding,
                   absl::string_view("\0", 1), payload);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(),
       out, &length);
  return std::string(reinterpret_cast<const char*>(out), kMacBytes);
}

// Not a ListBatches page token at all (wrong encoding, size or version).
absl::Status Malformed() {
  return absl::InvalidArgumentError(
      "page_token: malformed (not a ListBatches page token this service "
      "issued); use next_page_token from the previous page, or none for the "
      "first");
}

// The tag does not match. One message for every cause the tag cannot tell
// apart (altered, another caller's, another state or created_after, another
// key), so the answer never says whose token it was or what query issued it.
absl::Status NotForThisQuery() {
  return absl::InvalidArgumentError(
      "page_token: not valid for this call: it was altered, or issued for "
      "another query or another caller (a token is valid only for the caller "
      "it was issued to, with the same state and created_after); list again "
      "without page_token");
}

}  // namespace

std::string EncodeBatchListToken(const BatchListCursor& cursor,
                                 absl::string_view binding,
                                 absl::string_view key) {
  std::string payload(1, kVersion);
  const uint64_t micros =
      static_cast<uint64_t>(absl::ToUnixMicros(cursor.created_at));
  for (int shift = 56; shift >= 0; shift -= 8) {
    payload.push_back(static_cast<char>((micros >> shift) & 0xff));
  }
  payload += cursor.batch_id;
  return absl::WebSafeBase64Escape(
      absl::StrCat(payload, Mac(key, binding, payload)));
}

absl::StatusOr<BatchListCursor> DecodeBatchListToken(absl::string_view token,
                                                     absl::string_view binding,
                                                     absl::string_view key) {
  std::string raw;
  if (!absl::WebSafeBase64Unescape(token, &raw) ||
      raw.size() < 1 + kTimeBytes + 1 + kMacBytes ||
      raw.size() > 1 + kTimeBytes + kMaxBatchIdBytes + kMacBytes ||
      raw[0] != kVersion) {
    return Malformed();
  }
  const absl::string_view payload(raw.data(), raw.size() - kMacBytes);
  const std::string expected = Mac(key, binding, payload);
  if (CRYPTO_memcmp(expected.data(), raw.data() + payload.size(), kMacBytes) !=
      0) {
    return NotForThisQuery();
  }
  uint64_t micros = 0;
  for (size_t i = 0; i < kTimeBytes; ++i) {
    micros = (micros << 8) | static_cast<unsigned char>(payload[1 + i]);
  }
  BatchListCursor cursor;
  cursor.created_at = absl::FromUnixMicros(static_cast<int64_t>(micros));
  cursor.batch_id = std::string(payload.substr(1 + kTimeBytes));
  return cursor;
}

std::string BatchListBinding(const ReadScope& scope, v1::BatchState state,
                             absl::Time created_after) {
  return absl::StrCat(scope.owner.has_value()
                          ? absl::StrCat("owner=", *scope.owner)
                          : std::string("any-owner"),
                      ";state=", static_cast<int>(state), ";created_after=",
                      created_after == absl::InfinitePast()
                          ? std::string("-")
                          : absl::StrCat(absl::ToUnixMicros(created_after)));
}

}  // namespace batchfetch

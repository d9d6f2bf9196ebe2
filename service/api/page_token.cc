#include "service/api/page_token.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"

namespace batchfetch {
namespace {

constexpr unsigned char kVersion = 1;
constexpr size_t kBatchHashBytes = 8;
constexpr size_t kPayloadBytes = 1 + kBatchHashBytes + 4;
constexpr size_t kMacBytes = 16;
constexpr size_t kTokenBytes = kPayloadBytes + kMacBytes;
// Fixed on purpose (see page_token.h): tamper-evidence, not secrecy.
constexpr char kMacKey[] = "batchfetch.v1 ListResults page token";

void BatchHash(absl::string_view batch_id, unsigned char* out) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(batch_id.data(), batch_id.size(), digest, &length, EVP_sha256(),
             nullptr);
  std::memcpy(out, digest, kBatchHashBytes);
}

void Mac(const unsigned char* payload, unsigned char* out) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), kMacKey, static_cast<int>(sizeof(kMacKey) - 1), payload,
       kPayloadBytes, mac, &length);
  std::memcpy(out, mac, kMacBytes);
}

absl::Status NotOurs() {
  return absl::InvalidArgumentError(
      "page_token: not a token this service issued (malformed or altered); "
      "use next_page_token from the previous page, or none for the first");
}

}  // namespace

std::string EncodePageToken(absl::string_view batch_id, uint32_t next_index) {
  unsigned char bytes[kTokenBytes];
  bytes[0] = kVersion;
  BatchHash(batch_id, bytes + 1);
  for (int i = 0; i < 4; ++i) {
    bytes[1 + kBatchHashBytes + i] =
        static_cast<unsigned char>(next_index >> (24 - 8 * i));
  }
  Mac(bytes, bytes + kPayloadBytes);
  return absl::WebSafeBase64Escape(
      absl::string_view(reinterpret_cast<const char*>(bytes), kTokenBytes));
}

absl::StatusOr<uint32_t> DecodePageToken(absl::string_view token,
                                         absl::string_view batch_id) {
  std::string raw;
  if (token.size() > 64 || !absl::WebSafeBase64Unescape(token, &raw) ||
      raw.size() != kTokenBytes) {
    return NotOurs();
  }
  const auto* bytes = reinterpret_cast<const unsigned char*>(raw.data());
  unsigned char mac[kMacBytes];
  Mac(bytes, mac);
  if (bytes[0] != kVersion ||
      CRYPTO_memcmp(mac, bytes + kPayloadBytes, kMacBytes) != 0) {
    return NotOurs();
  }
  unsigned char hash[kBatchHashBytes];
  BatchHash(batch_id, hash);
  if (std::memcmp(hash, bytes + 1, kBatchHashBytes) != 0) {
    return absl::InvalidArgumentError(
        "page_token: was issued for another batch_id");
  }
  uint32_t index = 0;
  for (int i = 0; i < 4; ++i) {
    index = (index << 8) | bytes[1 + kBatchHashBytes + i];
  }
  return index;
}

}  // namespace batchfetch

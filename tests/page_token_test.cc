// ListResults page tokens: round trip, and every way a token can be wrong.
#include "service/api/page_token.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace batchfetch {
namespace {

void ExpectRejected(const absl::StatusOr<uint32_t>& decoded) {
  ASSERT_FALSE(decoded.ok()) << "accepted as index " << *decoded;
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(decoded.status().message(), "page_token: "))
      << decoded.status().message();
}

TEST(PageToken, RoundTripsTheIndexForTheSameBatch) {
  for (uint32_t index : {0u, 1u, 100u, 65536u, 0xFFFFFFFFu}) {
    const std::string token = EncodePageToken("batch-a", index);
    absl::StatusOr<uint32_t> decoded = DecodePageToken(token, "batch-a");
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, index);
  }
}

TEST(PageToken, IsOpaqueUrlSafeAndDeterministic) {
  const std::string token = EncodePageToken("batch-a", 100);
  EXPECT_FALSE(absl::StrContains(token, "100"));
  for (char c : token) {
    EXPECT_TRUE(absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
                c == '-' || c == '_')
        << token;
  }
  EXPECT_EQ(token, EncodePageToken("batch-a", 100));
  EXPECT_NE(token, EncodePageToken("batch-a", 101));
}

TEST(PageToken, IsRejectedForAnotherBatch) {
  absl::StatusOr<uint32_t> decoded =
      DecodePageToken(EncodePageToken("batch-a", 5), "batch-b");
  ExpectRejected(decoded);
  EXPECT_EQ(decoded.status().message(),
            "page_token: was issued for another batch_id");
}

TEST(PageToken, AnyAlteredByteIsRejected) {
  const std::string token = EncodePageToken("batch-a", 7);
  std::string raw;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(token, &raw));
  for (size_t i = 0; i < raw.size(); ++i) {
    for (unsigned char flip : {0x01, 0x80}) {
      std::string altered = raw;
      altered[i] = static_cast<char>(altered[i] ^ flip);
      ExpectRejected(
          DecodePageToken(absl::WebSafeBase64Escape(altered), "batch-a"));
    }
  }
}

TEST(PageToken, GarbageAndOldNumericTokensAreRejected) {
  for (const char* garbage :
       {"100", "0", "not a token!", "AAAA", "%%%", "====", ""}) {
    if (std::string(garbage).empty()) continue;  // empty means "first page"
    ExpectRejected(DecodePageToken(garbage, "batch-a"));
  }
  const std::string token = EncodePageToken("batch-a", 7);
  ExpectRejected(DecodePageToken(token.substr(0, token.size() - 2), "batch-a"));
  ExpectRejected(DecodePageToken(token + "AA", "batch-a"));
  ExpectRejected(DecodePageToken(std::string(10000, 'A'), "batch-a"));
}

}  // namespace
}  // namespace batchfetch

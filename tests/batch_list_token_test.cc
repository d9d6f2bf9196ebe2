// ListBatches page tokens: round trip, and every way a token can be wrong
// is INVALID_ARGUMENT naming page_token. Pure; no server.
#include "service/api/batch_list_token.h"

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace batchfetch {
namespace {

const std::string kKey(32, 'k');

BatchListCursor Cursor() {
  return BatchListCursor{absl::FromUnixMicros(1'700'000'000'123'456),
                         "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"};
}

std::string Binding() {
  return BatchListBinding(ReadScope::OwnedBy("alice"), v1::BATCH_STATE_DONE,
                          absl::InfinitePast());
}

void ExpectRefused(const absl::StatusOr<BatchListCursor>& decoded) {
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(decoded.status().message(), "page_token"))
      << decoded.status();
}

// A well-formed token whose tag does not match: the message says it may be
// another query's or another caller's, and never names an owner.
void ExpectRefusedAsAnotherQueryOrCaller(
    const absl::StatusOr<BatchListCursor>& decoded) {
  ExpectRefused(decoded);
  if (decoded.ok()) return;
  const absl::string_view message = decoded.status().message();
  EXPECT_TRUE(absl::StrContains(message, "another query or another caller"))
      << message;
  EXPECT_FALSE(absl::StrContains(message, "malformed")) << message;
  EXPECT_FALSE(absl::StrContains(message, "alice")) << message;
  EXPECT_FALSE(absl::StrContains(message, "bob")) << message;
}

void ExpectRefusedAsMalformed(const absl::StatusOr<BatchListCursor>& decoded) {
  ExpectRefused(decoded);
  if (decoded.ok()) return;
  EXPECT_TRUE(absl::StrContains(decoded.status().message(), "malformed"))
      << decoded.status();
}

TEST(BatchListTokenTest, DecodesWhatItEncoded) {
  const std::string token = EncodeBatchListToken(Cursor(), Binding(), kKey);
  absl::StatusOr<BatchListCursor> decoded =
      DecodeBatchListToken(token, Binding(), kKey);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->created_at, Cursor().created_at);
  EXPECT_EQ(decoded->batch_id, Cursor().batch_id);
}

TEST(BatchListTokenTest, TokenIsUrlSafeAndShowsNoBatchIdInClear) {
  const std::string token = EncodeBatchListToken(Cursor(), Binding(), kKey);
  EXPECT_EQ(token.find_first_of("+/="), std::string::npos) << token;
  EXPECT_EQ(token.find(Cursor().batch_id), std::string::npos);
}

TEST(BatchListTokenTest, EveryAlteredByteIsRefused) {
  const std::string token = EncodeBatchListToken(Cursor(), Binding(), kKey);
  std::string raw;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(token, &raw));
  for (size_t i = 0; i < raw.size(); ++i) {
    std::string altered = raw;
    altered[i] = static_cast<char>(altered[i] ^ 0x01);
    ExpectRefused(DecodeBatchListToken(absl::WebSafeBase64Escape(altered),
                                       Binding(), kKey));
  }
}

TEST(BatchListTokenTest, TokenOfAnotherQueryOrOwnerIsRefusedSayingSo) {
  const std::string token = EncodeBatchListToken(Cursor(), Binding(), kKey);
  const absl::StatusOr<BatchListCursor> other_owner = DecodeBatchListToken(
      token,
      BatchListBinding(ReadScope::OwnedBy("bob"), v1::BATCH_STATE_DONE,
                       absl::InfinitePast()),
      kKey);
  ExpectRefusedAsAnotherQueryOrCaller(other_owner);
  const absl::StatusOr<BatchListCursor> other_state = DecodeBatchListToken(
      token,
      BatchListBinding(ReadScope::OwnedBy("alice"), v1::BATCH_STATE_UNSPECIFIED,
                       absl::InfinitePast()),
      kKey);
  ExpectRefusedAsAnotherQueryOrCaller(other_state);
  const absl::StatusOr<BatchListCursor> other_after = DecodeBatchListToken(
      token,
      BatchListBinding(ReadScope::OwnedBy("alice"), v1::BATCH_STATE_DONE,
                       absl::FromUnixSeconds(1)),
      kKey);
  ExpectRefusedAsAnotherQueryOrCaller(other_after);
  ExpectRefusedAsAnotherQueryOrCaller(DecodeBatchListToken(
      token,
      BatchListBinding(ReadScope::AnyOwner(), v1::BATCH_STATE_DONE,
                       absl::InfinitePast()),
      kKey));
  // Whose token it was, or which filter differed, cannot be told apart.
  ASSERT_FALSE(other_owner.ok());
  ASSERT_FALSE(other_state.ok());
  ASSERT_FALSE(other_after.ok());
  EXPECT_EQ(other_owner.status(), other_state.status());
  EXPECT_EQ(other_owner.status(), other_after.status());
}

TEST(BatchListTokenTest, TokenUnderAnotherKeyIsRefused) {
  const std::string token = EncodeBatchListToken(Cursor(), Binding(), kKey);
  ExpectRefusedAsAnotherQueryOrCaller(
      DecodeBatchListToken(token, Binding(), std::string(32, 'x')));
}

TEST(BatchListTokenTest, GarbageIsRefusedAsMalformed) {
  ExpectRefusedAsMalformed(
      DecodeBatchListToken("not base64!", Binding(), kKey));
  ExpectRefusedAsMalformed(DecodeBatchListToken("", Binding(), kKey));
  ExpectRefusedAsMalformed(DecodeBatchListToken("42", Binding(), kKey));
}

TEST(BatchListTokenTest, TruncatedTokenIsRefused) {
  const std::string token = EncodeBatchListToken(Cursor(), Binding(), kKey);
  ExpectRefused(
      DecodeBatchListToken(token.substr(0, token.size() - 4), Binding(), kKey));
}

}  // namespace
}  // namespace batchfetch

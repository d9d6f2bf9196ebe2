#include "service/json/json_cleaner.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace batchfetch {
namespace {

std::string Clean(const JsonCleaner& cleaner, absl::string_view body) {
  std::string out;
  absl::Status status = cleaner.Clean(body, &out);
  return status.ok() ? out : "ERROR: " + std::string(status.message());
}

TEST(JsonCleaner, ReserializesCompactlyKeepingNumbersExact) {
  auto cleaner = JsonCleaner::Create({});
  ASSERT_TRUE(cleaner.ok());
  EXPECT_EQ(
      Clean(*cleaner,
            " { \"a\" : [1, 2.50, 1e300, 123456789012345678901234567890] ,\n"
            "\"b\": \"\\u00e9\" } "),
      "{\"a\":[1,2.50,1e300,123456789012345678901234567890],\"b\":"
      "\"\xc3\xa9\"}");
}

TEST(JsonCleaner, RejectsInvalidJsonWithPosition) {
  auto cleaner = JsonCleaner::Create({});
  ASSERT_TRUE(cleaner.ok());
  EXPECT_EQ(Clean(*cleaner, "<html>"),
            "ERROR: body is not valid JSON: Invalid value. (at byte 0)");
  EXPECT_NE(Clean(*cleaner, "{} trailing").find("ERROR"), std::string::npos);
  EXPECT_NE(Clean(*cleaner, std::string("{}\0x", 4)).find("ERROR"),
            std::string::npos);
  EXPECT_NE(Clean(*cleaner, "").find("ERROR"), std::string::npos);
  EXPECT_NE(Clean(*cleaner, "\"\xff\"").find("ERROR"), std::string::npos);
}

TEST(JsonCleaner, RefusesAnUnpairedSurrogateEscapeInAStringOrKey) {
  // RapidJSON 1.1 would write a lone low surrogate as the bytes ED B7 A9,
  // which are not UTF-8 (found by tests/fuzz/json_cleaner_fuzzer.cc).
  auto plain = JsonCleaner::Create({});
  ASSERT_TRUE(plain.ok());
  auto projecting = JsonCleaner::Create({{"c", "/b/c"}});
  ASSERT_TRUE(projecting.ok());
  for (const char* body : {R"({"b":{"c":"x\udde9y"}})", R"({"\udc00":1})",
                           R"(["\udfff"])", R"(["\ud83d"])"}) {
    for (const JsonCleaner* cleaner : {&*plain, &*projecting}) {
      EXPECT_NE(Clean(*cleaner, body).find("ERROR: body is not valid JSON"),
                std::string::npos)
          << body;
    }
  }
  EXPECT_NE(Clean(*plain, R"(["\udc00"])").find("unpaired UTF-16 surrogate"),
            std::string::npos);
  // A proper pair and U+D7FF / U+E000 (the neighbours) are kept.
  EXPECT_EQ(Clean(*plain, R"(["\ud83d\ude00","\ud7ff","\ue000"])"),
            "[\"\xF0\x9F\x98\x80\",\"\xED\x9F\xBF\",\"\xEE\x80\x80\"]");
}

TEST(JsonCleaner, RefusesDeepNestingWithoutCrashing) {
  auto cleaner = JsonCleaner::Create({});
  ASSERT_TRUE(cleaner.ok());
  const std::string deep(1 << 20, '[');
  EXPECT_NE(Clean(*cleaner, deep).find("nested deeper"), std::string::npos);
  auto projecting = JsonCleaner::Create({{"x", "/0"}});
  ASSERT_TRUE(projecting.ok());
  EXPECT_NE(Clean(*projecting, deep).find("nested deeper"), std::string::npos);
}

TEST(JsonCleaner, ExtractsJsonPointers) {
  auto cleaner = JsonCleaner::Create({{"present", "/user/name"},
                                      {"missing", "/user/age"},
                                      {"second", "/items/1"},
                                      {"escaped", "/a~1b/c~0d"},
                                      {"whole", ""}});
  ASSERT_TRUE(cleaner.ok());
  EXPECT_EQ(
      Clean(
          *cleaner,
          R"({"user":{"name":"ann"},"items":[10,{"k":true}],"a/b":{"c~d":3}})"),
      R"({"present":"ann","missing":null,"second":{"k":true},"escaped":3,)"
      R"("whole":{"user":{"name":"ann"},"items":[10,{"k":true}],"a/b":{"c~d":3}}})");
  EXPECT_NE(Clean(*cleaner, "nope").find("ERROR"), std::string::npos);
}

// 64 pointers at "" would write the whole document 64 times: a body the
// body cap bounded must not become a row 64 times that size.
TEST(JsonCleaner, OverlappingProjectionsAreCappedByTheBodySize) {
  JsonCleaner::Extract whole;
  for (int i = 0; i < 64; ++i) whole.emplace_back(absl::StrCat("f", i), "");
  auto cleaner = JsonCleaner::Create(whole);
  ASSERT_TRUE(cleaner.ok());
  const std::string body =
      absl::StrCat("{\"pad\":\"", std::string(200 * 1024, 'x'), "\"}");
  std::string out;
  absl::Status status = cleaner->Clean(body, &out);
  EXPECT_TRUE(absl::IsResourceExhausted(status)) << status;
  EXPECT_NE(status.message().find("extract output exceeds"),
            absl::string_view::npos)
      << status;
  // Small documents may overlap freely within kProjectionSlack.
  EXPECT_TRUE(cleaner->Clean(R"({"a":1})", &out).ok());
  // Two copies of a large body are over its size, one is not.
  auto twice = JsonCleaner::Create({{"a", ""}, {"b", ""}});
  auto once = JsonCleaner::Create({{"a", ""}});
  EXPECT_TRUE(absl::IsResourceExhausted(twice->Clean(body, &out)));
  EXPECT_TRUE(once->Clean(body, &out).ok());
}

TEST(JsonCleaner, ExtractedNumbersKeepTheirValueAndType) {
  auto cleaner = JsonCleaner::Create({{"v", "/v"}});
  ASSERT_TRUE(cleaner.ok());
  const auto extract = [&](absl::string_view number) {
    return Clean(*cleaner, absl::StrCat(R"({"v":)", number, "}"));
  };
  // RapidJSON 1.1's own full-precision parse gives 1.596672247627776e293.
  EXPECT_EQ(extract("0e110"), R"({"v":0.0})");
  EXPECT_EQ(extract("-0e110"), R"({"v":-0.0})");
  EXPECT_EQ(extract("-0"), R"({"v":0})");
  EXPECT_EQ(extract("9223372036854775807"), R"({"v":9223372036854775807})");
  EXPECT_EQ(extract("18446744073709551615"), R"({"v":18446744073709551615})");
  EXPECT_EQ(extract("18446744073709551616"), R"({"v":18446744073709553000.0})");
  EXPECT_EQ(extract("0.1"), R"({"v":0.1})");
  EXPECT_EQ(extract("1e2"), R"({"v":100.0})");
  EXPECT_EQ(extract("1e-400"), R"({"v":0.0})");
  EXPECT_EQ(extract("1e400"),
            "ERROR: body is not valid JSON: Number too big to be stored in "
            "double. (at byte 5)");
}

TEST(JsonCleaner, RejectsInvalidPointersUpFront) {
  EXPECT_EQ(JsonCleaner::Create({{"x", "no-slash"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto bad_escape = JsonCleaner::Create({{"x", "/a~2"}});
  EXPECT_EQ(bad_escape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_escape.status().message().find("extract[\"x\"]"),
            std::string::npos);
  JsonCleaner::Extract too_many;
  for (size_t i = 0; i <= kMaxExtractFields; ++i) {
    too_many.emplace_back("f" + std::to_string(i), "/a");
  }
  EXPECT_EQ(JsonCleaner::Create(too_many).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace batchfetch

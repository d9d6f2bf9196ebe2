#include "service/json/json_cleaner.h"

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

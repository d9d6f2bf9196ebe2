// Fuzzes JsonCleaner with and without extract pointers. Input: a count (0-4),
// that many (name, pointer) lines, then the body (tests/fuzz/fuzz_input.h).
//
// Invariants: no crash, leak or UB; whatever Clean accepts comes out as one
// valid UTF-8 JSON document, which is compact (cleaning it again without
// projections changes nothing); with projections it is an object with one
// member per extract entry, in order.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "rapidjson/document.h"
#include "rapidjson/encodings.h"
#include "rapidjson/memorystream.h"
#include "service/json/json_cleaner.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using batchfetch::JsonCleaner;

// Extract names reach the server as protobuf strings, which are valid UTF-8.
bool IsValidUtf8(const std::string& text) {
  rapidjson::MemoryStream in(text.data(), text.size());
  while (in.Tell() < text.size()) {
    unsigned code_point = 0;
    if (!rapidjson::UTF8<>::Decode(in, &code_point)) return false;
  }
  return true;
}

constexpr unsigned kStrictParse = rapidjson::kParseValidateEncodingFlag |
                                  rapidjson::kParseIterativeFlag |
                                  rapidjson::kParseNumbersAsStringsFlag;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  batchfetch::fuzz::Input input(data, size);
  JsonCleaner::Extract extract;
  const int fields = input.TakeCount(4);
  for (int i = 0; i < fields; ++i) {
    std::string name = input.TakeString(32);
    std::string pointer = input.TakeString(64);
    if (!IsValidUtf8(name)) return 0;
    extract.emplace_back(std::move(name), std::move(pointer));
  }
  const std::string body = input.TakeRest();

  absl::StatusOr<JsonCleaner> cleaner = JsonCleaner::Create(extract);
  if (!cleaner.ok()) return 0;
  std::string cleaned;
  if (!cleaner->Clean(body, &cleaned).ok()) return 0;

  rapidjson::Document reparsed;
  reparsed.Parse<kStrictParse>(cleaned.data(), cleaned.size());
  FUZZ_CHECK(!reparsed.HasParseError(), "cleaned JSON does not re-parse");

  absl::StatusOr<JsonCleaner> plain = JsonCleaner::Create({});
  FUZZ_CHECK(plain.ok(), "the plain cleaner must always build");
  std::string twice;
  FUZZ_CHECK(plain->Clean(cleaned, &twice).ok(),
             "the cleaner refuses its own output");
  FUZZ_CHECK(twice == cleaned, "cleaned JSON is not a fixed point");

  if (!extract.empty()) {
    FUZZ_CHECK(reparsed.IsObject(), "a projection is not an object");
    FUZZ_CHECK(reparsed.MemberCount() == extract.size(),
               "a projection has one member per extract entry");
    size_t i = 0;
    for (auto member = reparsed.MemberBegin(); member != reparsed.MemberEnd();
         ++member, ++i) {
      const std::string key(member->name.GetString(),
                            member->name.GetStringLength());
      FUZZ_CHECK(key == extract[i].first,
                 "projection members are the extract names, in order");
    }
  }
  return 0;
}

#include "service/json/json_cleaner.h"

#include <type_traits>

#include "absl/strings/str_cat.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"
#include "rapidjson/pointer.h"
#include "rapidjson/reader.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace batchfetch {
namespace {

// Iterative parsing keeps deeply nested bodies ([[[[...) from exhausting the
// stack; encoding validation guarantees the stored JSON is valid UTF-8.
constexpr unsigned kStreamFlags = rapidjson::kParseIterativeFlag |
                                  rapidjson::kParseValidateEncodingFlag |
                                  rapidjson::kParseNumbersAsStringsFlag;
constexpr unsigned kDomFlags = rapidjson::kParseIterativeFlag |
                               rapidjson::kParseValidateEncodingFlag |
                               rapidjson::kParseFullPrecisionFlag;

// Documents nested deeper than this are refused: writing (and projecting) a
// DOM recurses once per level, so depth must stay small whatever the body.
constexpr int kMaxJsonDepth = 256;

// Forwards SAX events to `Inner`, failing the parse past kMaxJsonDepth.
template <typename Inner>
class DepthLimitedHandler {
 public:
  explicit DepthLimitedHandler(Inner& inner) : inner_(inner) {}

  bool Null() { return inner_.Null(); }
  bool Bool(bool b) { return inner_.Bool(b); }
  bool Int(int i) { return inner_.Int(i); }
  bool Uint(unsigned u) { return inner_.Uint(u); }
  bool Int64(int64_t i) { return inner_.Int64(i); }
  bool Uint64(uint64_t u) { return inner_.Uint64(u); }
  bool Double(double d) { return inner_.Double(d); }
  bool RawNumber(const char* s, rapidjson::SizeType n, bool copy) {
    // RapidJSON 1.1's Writer::RawNumber quotes the number; RawValue keeps
    // the exact text unquoted, which is what the streaming path wants.
    if constexpr (std::is_same_v<Inner, rapidjson::Document>) {
      return inner_.RawNumber(s, n, copy);
    } else {
      return inner_.RawValue(s, n, rapidjson::kNumberType);
    }
  }
  bool String(const char* s, rapidjson::SizeType n, bool copy) {
    return inner_.String(s, n, copy);
  }
  bool Key(const char* s, rapidjson::SizeType n, bool copy) {
    return inner_.Key(s, n, copy);
  }
  bool StartObject() {
    return ++depth_ <= kMaxJsonDepth && inner_.StartObject();
  }
  bool EndObject(rapidjson::SizeType n) {
    --depth_;
    return inner_.EndObject(n);
  }
  bool StartArray() { return ++depth_ <= kMaxJsonDepth && inner_.StartArray(); }
  bool EndArray(rapidjson::SizeType n) {
    --depth_;
    return inner_.EndArray(n);
  }
  bool too_deep() const { return depth_ > kMaxJsonDepth; }

 private:
  Inner& inner_;
  int depth_ = 0;
};

absl::Status ParseError(rapidjson::ParseErrorCode code, size_t offset) {
  return absl::InvalidArgumentError(absl::StrCat(
      "body is not valid JSON: ", rapidjson::GetParseError_En(code),
      " (at byte ", offset, ")"));
}

}  // namespace

struct JsonCleaner::Compiled {
  std::vector<std::pair<std::string, rapidjson::Pointer>> fields;
};

absl::StatusOr<JsonCleaner> JsonCleaner::Create(const Extract& extract) {
  if (extract.empty()) return JsonCleaner(nullptr);
  if (extract.size() > kMaxExtractFields) {
    return absl::InvalidArgumentError(
        absl::StrCat("extract has ", extract.size(), " fields; at most ",
                     kMaxExtractFields, " are allowed"));
  }
  auto compiled = std::make_shared<Compiled>();
  compiled->fields.reserve(extract.size());
  for (const auto& [name, pointer] : extract) {
    if (name.empty() || name.size() > kMaxExtractNameLength) {
      return absl::InvalidArgumentError(
          absl::StrCat("extract names must be 1 to ", kMaxExtractNameLength,
                       " characters long"));
    }
    if (pointer.size() > kMaxJsonPointerLength) {
      return absl::InvalidArgumentError(
          absl::StrCat("extract[\"", name, "\"]: pointer longer than ",
                       kMaxJsonPointerLength, " characters"));
    }
    rapidjson::Pointer compiled_pointer(pointer.data(), pointer.size());
    if (!compiled_pointer.IsValid()) {
      const char* why = "invalid JSON Pointer";
      switch (compiled_pointer.GetParseErrorCode()) {
        case rapidjson::kPointerParseErrorTokenMustBeginWithSolidus:
          why = "a JSON Pointer must be empty or start with '/'";
          break;
        case rapidjson::kPointerParseErrorInvalidEscape:
          why = "'~' must be followed by 0 or 1";
          break;
        case rapidjson::kPointerParseErrorInvalidPercentEncoding:
        case rapidjson::kPointerParseErrorCharacterMustPercentEncode:
          why = "invalid percent-encoding";
          break;
        default:
          break;
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "extract[\"", name, "\"] = \"", pointer, "\": ", why, " (at offset ",
          compiled_pointer.GetParseErrorOffset(), ")"));
    }
    compiled->fields.emplace_back(name, std::move(compiled_pointer));
  }
  return JsonCleaner(std::move(compiled));
}

absl::Status JsonCleaner::Clean(absl::string_view body,
                                std::string* out) const {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  rapidjson::MemoryStream stream(body.data(), body.size());
  rapidjson::Reader reader;
  rapidjson::Document doc;
  bool too_deep = false;
  rapidjson::ParseResult ok;
  if (compiled_ == nullptr) {
    DepthLimitedHandler<decltype(writer)> handler(writer);
    ok = reader.Parse<kStreamFlags>(stream, handler);
    too_deep = handler.too_deep();
  } else {
    auto generate = [&](rapidjson::Document& target) {
      DepthLimitedHandler<rapidjson::Document> handler(target);
      ok = reader.Parse<kDomFlags>(stream, handler);
      too_deep = handler.too_deep();
      return static_cast<bool>(ok);
    };
    doc.Populate(generate);
  }
  if (too_deep) {
    return absl::InvalidArgumentError(
        absl::StrCat("body is not accepted: JSON nested deeper than ",
                     kMaxJsonDepth, " levels"));
  }
  if (!ok) return ParseError(ok.Code(), ok.Offset());
  // A NUL byte reads as end of input to RapidJSON; anything after it is junk.
  if (stream.Tell() != body.size()) {
    return ParseError(rapidjson::kParseErrorDocumentRootNotSingular,
                      stream.Tell());
  }
  if (compiled_ != nullptr) {
    writer.StartObject();
    for (const auto& [name, pointer] : compiled_->fields) {
      writer.Key(name.data(), static_cast<rapidjson::SizeType>(name.size()));
      const rapidjson::Value* value = pointer.Get(doc);
      if (value == nullptr) {
        writer.Null();
      } else {
        value->Accept(writer);
      }
    }
    writer.EndObject();
  }
  out->assign(buffer.GetString(), buffer.GetSize());
  return absl::OkStatus();
}

}  // namespace batchfetch

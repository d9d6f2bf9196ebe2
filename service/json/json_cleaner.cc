#include "service/json/json_cleaner.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "absl/strings/numbers.h"
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
// Both paths get numbers as text: the streaming one copies it, the DOM one
// converts it itself (DepthLimitedHandler::NumberToDom).
constexpr unsigned kStreamFlags = rapidjson::kParseIterativeFlag |
                                  rapidjson::kParseValidateEncodingFlag |
                                  rapidjson::kParseNumbersAsStringsFlag;
constexpr unsigned kDomFlags = kStreamFlags;

// Documents nested deeper than this are refused: writing (and projecting) a
// DOM recurses once per level, so depth must stay small whatever the body.
constexpr int kMaxJsonDepth = 256;

// RapidJSON 1.1 decodes a lone low-surrogate escape ("\udc00".."\udfff")
// into the three bytes ED B0..BF xx, which are not UTF-8 (a lone high
// surrogate is refused by the parser itself). Such a string is no Unicode
// text: it could not go into a proto3 string or a utf8mb4 column, so the
// body is refused as invalid JSON (the raw body is still kept by the
// caller). Raw surrogate bytes in the body never get here: encoding
// validation refuses them.
bool HasSurrogate(const char* s, size_t n) {
  for (const char* p = static_cast<const char*>(std::memchr(s, '\xED', n));
       p != nullptr && p + 1 < s + n;
       p = static_cast<const char*>(
           std::memchr(p + 1, '\xED', static_cast<size_t>(s + n - p - 1)))) {
    if (static_cast<unsigned char>(p[1]) >= 0xA0) return true;
  }
  return false;
}

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
  bool RawNumber(const char* s, rapidjson::SizeType n, bool /*copy*/) {
    // RapidJSON 1.1's Writer::RawNumber quotes the number; RawValue keeps
    // the exact text unquoted, which is what the streaming path wants.
    if constexpr (std::is_same_v<Inner, rapidjson::Document>) {
      return NumberToDom(absl::string_view(s, n));
    } else {
      return inner_.RawValue(s, n, rapidjson::kNumberType);
    }
  }
  bool String(const char* s, rapidjson::SizeType n, bool copy) {
    return !LoneSurrogate(s, n) && inner_.String(s, n, copy);
  }
  bool Key(const char* s, rapidjson::SizeType n, bool copy) {
    return !LoneSurrogate(s, n) && inner_.Key(s, n, copy);
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
  bool lone_surrogate() const { return lone_surrogate_; }
  bool number_too_big() const { return number_too_big_; }

 private:
  // `text` (a valid JSON number) as a DOM value, typed as RapidJSON's
  // full-precision parse types it: an integer that fits int64 or uint64 as
  // such, anything else as a correctly rounded double; past the double
  // range the parse fails. Not RapidJSON's own conversion: its 1.1
  // full-precision strtod reads a zero with a large exponent ("0e110") as
  // 1.6e293 (found by tests/fuzz/json_cleaner_fuzzer.cc under UBSan).
  bool NumberToDom(absl::string_view text) {
    if (text.find_first_of(".eE") == absl::string_view::npos) {
      int64_t i = 0;
      if (absl::SimpleAtoi(text, &i)) return inner_.Int64(i);
      uint64_t u = 0;
      if (absl::SimpleAtoi(text, &u)) return inner_.Uint64(u);
    }
    double d = 0;
    if (!absl::SimpleAtod(text, &d) || !std::isfinite(d)) {
      number_too_big_ = true;
      return false;
    }
    return inner_.Double(d);
  }

  bool LoneSurrogate(const char* s, size_t n) {
    lone_surrogate_ = HasSurrogate(s, n);
    return lone_surrogate_;
  }

  Inner& inner_;
  int depth_ = 0;
  bool number_too_big_ = false;
  bool lone_surrogate_ = false;
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
        absl::StrCat("extract: ", extract.size(), " fields; at most ",
                     kMaxExtractFields, " are allowed"));
  }
  auto compiled = std::make_shared<Compiled>();
  compiled->fields.reserve(extract.size());
  for (const auto& [name, pointer] : extract) {
    if (name.empty() || name.size() > kMaxExtractNameLength) {
      return absl::InvalidArgumentError(
          absl::StrCat("extract: names must be 1 to ", kMaxExtractNameLength,
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
  bool number_too_big = false;
  bool lone_surrogate = false;
  rapidjson::ParseResult ok;
  if (compiled_ == nullptr) {
    DepthLimitedHandler<decltype(writer)> handler(writer);
    ok = reader.Parse<kStreamFlags>(stream, handler);
    too_deep = handler.too_deep();
    lone_surrogate = handler.lone_surrogate();
  } else {
    auto generate = [&](rapidjson::Document& target) {
      DepthLimitedHandler<rapidjson::Document> handler(target);
      ok = reader.Parse<kDomFlags>(stream, handler);
      too_deep = handler.too_deep();
      number_too_big = handler.number_too_big();
      lone_surrogate = handler.lone_surrogate();
      return static_cast<bool>(ok);
    };
    doc.Populate(generate);
  }
  if (too_deep) {
    return absl::InvalidArgumentError(
        absl::StrCat("body is not accepted: JSON nested deeper than ",
                     kMaxJsonDepth, " levels"));
  }
  if (lone_surrogate) {
    return absl::InvalidArgumentError(absl::StrCat(
        "body is not valid JSON: a string holds an unpaired UTF-16 surrogate "
        "escape, which is no Unicode character (before byte ",
        ok.Offset(), ")"));
  }
  if (number_too_big) {
    return ParseError(rapidjson::kParseErrorNumberTooBig, ok.Offset());
  }
  if (!ok) return ParseError(ok.Code(), ok.Offset());
  // A NUL byte reads as end of input to RapidJSON; anything after it is junk.
  if (stream.Tell() != body.size()) {
    return ParseError(rapidjson::kParseErrorDocumentRootNotSingular,
                      stream.Tell());
  }
  if (compiled_ != nullptr) {
    // Each value written is at most the body's size, so checking after
    // each field keeps the buffer within budget + one body.
    const size_t budget = body.size() + kProjectionSlack;
    writer.StartObject();
    for (const auto& [name, pointer] : compiled_->fields) {
      writer.Key(name.data(), static_cast<rapidjson::SizeType>(name.size()));
      const rapidjson::Value* value = pointer.Get(doc);
      if (value == nullptr) {
        writer.Null();
      } else {
        value->Accept(writer);
      }
      if (buffer.GetSize() > budget) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "extract output exceeds ", budget, " bytes (the body's size + ",
            kProjectionSlack, "): the pointers overlap too much"));
      }
    }
    writer.EndObject();
  }
  out->assign(buffer.GetString(), buffer.GetSize());
  return absl::OkStatus();
}

}  // namespace batchfetch

#ifndef BATCHFETCH_SERVICE_JSON_JSON_CLEANER_H_
#define BATCHFETCH_SERVICE_JSON_JSON_CLEANER_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace batchfetch {

// Bounds on the `extract` map a caller may send.
inline constexpr size_t kMaxExtractFields = 64;
inline constexpr size_t kMaxExtractNameLength = 256;
inline constexpr size_t kMaxJsonPointerLength = 1024;
// An `extract` projection may write at most the body's own size plus this
// (names, nulls, small overlaps): overlapping pointers (64 times "", the
// whole document) must not multiply a body the body cap already bounded.
inline constexpr size_t kProjectionSlack = 64 * 1024;

// Validates JSON bodies and re-serializes them compactly, optionally keeping
// only named JSON Pointer (RFC 6901) projections.
//
// Without projections the body is streamed through a SAX reader straight into
// a writer: no DOM is built and numbers keep their exact text. With
// projections a DOM is built and `{"name": value-or-null, ...}` is written.
//
// Immutable after Create(); copies share the compiled pointers and are safe to
// use from any number of threads at once.
class JsonCleaner {
 public:
  using Extract = std::vector<std::pair<std::string, std::string>>;

  // INVALID_ARGUMENT naming the field when a pointer does not parse or the
  // map exceeds the bounds above.
  static absl::StatusOr<JsonCleaner> Create(const Extract& extract);

  JsonCleaner(const JsonCleaner&) = default;
  JsonCleaner& operator=(const JsonCleaner&) = default;

  // Parses `body` (which must be one complete, valid UTF-8 JSON document) and
  // stores the cleaned JSON in `*out`. On failure returns INVALID_ARGUMENT
  // with the parser's message and byte offset, or RESOURCE_EXHAUSTED when a
  // projection would exceed the body's size + kProjectionSlack; `*out` is
  // then unspecified.
  absl::Status Clean(absl::string_view body, std::string* out) const;

 private:
  struct Compiled;
  explicit JsonCleaner(std::shared_ptr<const Compiled> compiled)
      : compiled_(std::move(compiled)) {}

  std::shared_ptr<const Compiled> compiled_;  // null: no projections
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_JSON_JSON_CLEANER_H_

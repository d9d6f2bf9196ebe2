#ifndef BATCHFETCH_TESTS_FUZZ_FUZZ_INPUT_H_
#define BATCHFETCH_TESTS_FUZZ_FUZZ_INPUT_H_

// Splits a fuzz input into fields in a way a person can write by hand, so
// seed corpora stay readable text files: TakeString reads up to the next
// newline (the newline is consumed, not returned), TakeRest the remainder.
// A field cut at `max_length` bytes ends there and the next field starts
// right after it, so the fuzzer can still reach any byte in any field.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

namespace batchfetch::fuzz {

class Input {
 public:
  Input(const uint8_t* data, size_t size)
      : data_(reinterpret_cast<const char*>(data)), size_(size) {}

  bool empty() const { return at_ == size_; }

  // A count in [0, max] from one byte (a digit reads as itself: "2\n" is
  // 2) and the newline after it; 0 at the end of the input.
  int TakeCount(int max) {
    const std::string field = TakeString(1);
    if (field.empty()) return 0;
    const int byte = static_cast<unsigned char>(field[0]);
    return ((byte - '0') % (max + 1) + (max + 1)) % (max + 1);
  }

  // Bytes up to the next '\n' (consumed) or `max_length` bytes.
  std::string TakeString(size_t max_length) {
    const size_t limit = std::min(size_, at_ + max_length);
    size_t end = at_;
    while (end < limit && data_[end] != '\n') ++end;
    std::string field(data_ + at_, end - at_);
    at_ = end < size_ && data_[end] == '\n' ? end + 1 : end;
    return field;
  }

  std::string TakeRest() {
    std::string rest(data_ + at_, size_ - at_);
    at_ = size_;
    return rest;
  }

 private:
  const char* data_;
  size_t size_;
  size_t at_ = 0;
};

}  // namespace batchfetch::fuzz

#endif  // BATCHFETCH_TESTS_FUZZ_FUZZ_INPUT_H_

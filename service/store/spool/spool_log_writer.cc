#include "service/store/spool/spool_log_writer.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "service/store/spool/crc32c.h"
#include "service/store/spool/spool_log_format.h"

namespace batchfetch {
namespace {

void AppendFragment(SpoolFragmentType type, absl::string_view payload,
                    std::string* out) {
  const char type_byte = static_cast<char>(type);
  const uint32_t crc = crc32c::Mask(crc32c::Extend(
      crc32c::Value(&type_byte, 1), payload.data(), payload.size()));
  const size_t length = payload.size();
  const char header[kSpoolHeaderSize] = {
      static_cast<char>(crc & 0xffu),
      static_cast<char>((crc >> 8) & 0xffu),
      static_cast<char>((crc >> 16) & 0xffu),
      static_cast<char>((crc >> 24) & 0xffu),
      static_cast<char>(length & 0xffu),
      static_cast<char>((length >> 8) & 0xffu),
      type_byte,
  };
  out->append(header, kSpoolHeaderSize);
  out->append(payload.data(), payload.size());
}

}  // namespace

void AppendSpoolFramedRecord(absl::string_view payload, uint64_t* log_length,
                             std::string* out) {
  bool first = true;
  do {
    size_t block_left = kSpoolBlockSize - (*log_length % kSpoolBlockSize);
    if (block_left < kSpoolHeaderSize) {
      out->append(block_left, '\0');  // the trailer
      *log_length += block_left;
      block_left = kSpoolBlockSize;
    }
    const size_t room = block_left - kSpoolHeaderSize;
    const size_t take = std::min(room, payload.size());
    const bool last = take == payload.size();
    const SpoolFragmentType type =
        first ? (last ? SpoolFragmentType::kFull : SpoolFragmentType::kFirst)
              : (last ? SpoolFragmentType::kLast : SpoolFragmentType::kMiddle);
    AppendFragment(type, payload.substr(0, take), out);
    *log_length += kSpoolHeaderSize + take;
    payload.remove_prefix(take);
    first = false;
  } while (!payload.empty());
}

uint64_t SpoolFramedRecordSize(uint64_t log_length, size_t payload_size) {
  const uint64_t start = log_length;
  size_t left = payload_size;
  bool first = true;
  while (first || left > 0) {
    uint64_t block_left = kSpoolBlockSize - (log_length % kSpoolBlockSize);
    if (block_left < kSpoolHeaderSize) {
      log_length += block_left;
      block_left = kSpoolBlockSize;
    }
    const uint64_t take =
        std::min<uint64_t>(block_left - kSpoolHeaderSize, left);
    log_length += kSpoolHeaderSize + take;
    left -= take;
    first = false;
  }
  return log_length - start;
}

SpoolLogWriter::SpoolLogWriter(int fd, uint64_t file_length)
    : fd_(fd), file_length_(file_length) {}

absl::Status SpoolLogWriter::AddRecord(absl::string_view payload) {
  if (broken_) {
    return absl::FailedPreconditionError(
        "spool segment unusable: an earlier failed write could not be "
        "truncated away");
  }
  buffer_.clear();
  uint64_t end = file_length_;
  AppendSpoolFramedRecord(payload, &end, &buffer_);
  size_t written = 0;
  while (written < buffer_.size()) {
    const ssize_t n =
        ::pwrite(fd_, buffer_.data() + written, buffer_.size() - written,
                 static_cast<off_t>(file_length_ + written));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = n < 0 ? errno : ENOSPC;
      if (written > 0 &&
          ::ftruncate(fd_, static_cast<off_t>(file_length_)) != 0) {
        broken_ = true;
      }
      return absl::ErrnoToStatus(
          error, absl::StrCat("spool write of ", buffer_.size(), " bytes"));
    }
    written += static_cast<size_t>(n);
  }
  file_length_ = end;
  // Do not keep a large record's buffer for the small ones that follow.
  if (buffer_.capacity() > (size_t{1} << 20)) std::string().swap(buffer_);
  return absl::OkStatus();
}

}  // namespace batchfetch

#include "service/store/spool/spool_log_reader.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "service/store/spool/crc32c.h"
#include "service/store/spool/spool_log_format.h"

namespace batchfetch {

SpoolLogReader::SpoolLogReader(Source source)
    : source_(std::move(source)), block_(new char[kSpoolBlockSize]) {}

SpoolLogReader SpoolLogReader::ForFileDescriptor(int fd) {
  return SpoolLogReader([fd](char* buf, size_t n) -> absl::StatusOr<size_t> {
    size_t filled = 0;
    while (filled < n) {
      const ssize_t got = ::read(fd, buf + filled, n - filled);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return absl::ErrnoToStatus(errno, "reading a spool segment");
      if (got == 0) break;
      filled += static_cast<size_t>(got);
    }
    return filled;
  });
}

SpoolLogReader::Next SpoolLogReader::DropRestOfBlock(size_t left) {
  position_ = block_length_;
  if (at_last_block_) {
    stats_.torn_tail_bytes += left;
    return Next::kEnd;
  }
  stats_.corrupt_bytes += left;
  ++stats_.corruptions;
  return Next::kDamaged;
}

SpoolLogReader::Next SpoolLogReader::ReadFragment(uint8_t* type,
                                                  absl::string_view* fragment) {
  while (true) {
    const size_t left = block_length_ - position_;
    if (left < kSpoolHeaderSize) {
      if (at_last_block_) {
        // A short last block: its leftover is a header the writer did not
        // finish (or nothing).
        stats_.torn_tail_bytes += left;
        position_ = block_length_;
        return Next::kEnd;
      }
      // The trailer of a full block (or the start): read the next block.
      absl::StatusOr<size_t> got = source_(block_.get(), kSpoolBlockSize);
      if (!got.ok()) {
        status_ = got.status();
        at_last_block_ = true;
        block_length_ = position_ = 0;
        return Next::kEnd;
      }
      block_length_ = std::min(*got, kSpoolBlockSize);
      position_ = 0;
      at_last_block_ = block_length_ < kSpoolBlockSize;
      continue;
    }
    const auto* header =
        reinterpret_cast<const unsigned char*>(block_.get() + position_);
    const uint32_t stored_crc = static_cast<uint32_t>(header[0]) |
                                (static_cast<uint32_t>(header[1]) << 8) |
                                (static_cast<uint32_t>(header[2]) << 16) |
                                (static_cast<uint32_t>(header[3]) << 24);
    const size_t length =
        static_cast<size_t>(header[4]) | (static_cast<size_t>(header[5]) << 8);
    const uint8_t fragment_type = header[6];
    // A fragment running past its block (a full block always holds whole
    // fragments, so only the last one may: the writer died while appending
    // it), or zero-filled space (never written by the writer, which does not
    // preallocate): the rest of this block holds nothing readable.
    if (kSpoolHeaderSize + length > left ||
        (fragment_type == 0 && length == 0)) {
      return DropRestOfBlock(left);
    }
    const uint32_t actual_crc = crc32c::Value(
        block_.get() + position_ + kSpoolHeaderSize - 1, 1 + length);
    if (crc32c::Unmask(stored_crc) != actual_crc) {
      // The length may be what is damaged, so nothing after this header in
      // the block can be trusted: drop the rest of the block.
      stats_.corrupt_bytes += left;
      ++stats_.corruptions;
      position_ = block_length_;
      return Next::kDamaged;
    }
    *type = fragment_type;
    *fragment =
        absl::string_view(block_.get() + position_ + kSpoolHeaderSize, length);
    position_ += kSpoolHeaderSize + length;
    return Next::kFragment;
  }
}

void SpoolLogReader::DropPartialRecord() {
  if (!in_record_) return;
  stats_.corrupt_bytes += record_physical_bytes_;
  ++stats_.corruptions;
  in_record_ = false;
  record_.clear();
  record_physical_bytes_ = 0;
}

bool SpoolLogReader::ReadRecord(absl::string_view* record) {
  while (true) {
    uint8_t type = 0;
    absl::string_view fragment;
    switch (ReadFragment(&type, &fragment)) {
      case Next::kEnd:
        if (in_record_) {
          // Its last fragment was never written: the torn tail.
          stats_.torn_tail_bytes += record_physical_bytes_;
          in_record_ = false;
          record_.clear();
          record_physical_bytes_ = 0;
        }
        return false;
      case Next::kDamaged:
        // The record being assembled lost a fragment.
        DropPartialRecord();
        continue;
      case Next::kFragment:
        break;
    }
    const uint64_t physical = kSpoolHeaderSize + fragment.size();
    switch (static_cast<SpoolFragmentType>(type)) {
      case SpoolFragmentType::kFull:
        DropPartialRecord();  // a FIRST that never got its LAST
        *record = fragment;
        ++stats_.records;
        return true;
      case SpoolFragmentType::kFirst:
        DropPartialRecord();
        in_record_ = true;
        record_.assign(fragment.data(), fragment.size());
        record_physical_bytes_ = physical;
        continue;
      case SpoolFragmentType::kMiddle:
      case SpoolFragmentType::kLast:
        if (!in_record_) {
          // The rest of a record whose start was damaged.
          stats_.corrupt_bytes += physical;
          ++stats_.corruptions;
          continue;
        }
        record_.append(fragment.data(), fragment.size());
        record_physical_bytes_ += physical;
        if (static_cast<SpoolFragmentType>(type) ==
            SpoolFragmentType::kMiddle) {
          continue;
        }
        in_record_ = false;
        record_physical_bytes_ = 0;
        *record = record_;
        ++stats_.records;
        return true;
      default:
        // A checksummed fragment of a type this reader does not know.
        DropPartialRecord();
        stats_.corrupt_bytes += physical;
        ++stats_.corruptions;
        continue;
    }
  }
}

SpoolReadStats ReadSpoolRecords(
    absl::string_view log,
    absl::FunctionRef<void(absl::string_view record)> on_record) {
  SpoolLogReader reader([&log](char* buf, size_t n) -> absl::StatusOr<size_t> {
    const size_t take = std::min(n, log.size());
    if (take > 0) std::memcpy(buf, log.data(), take);
    log.remove_prefix(take);
    return take;
  });
  absl::string_view record;
  while (reader.ReadRecord(&record)) on_record(record);
  return reader.stats();
}

}  // namespace batchfetch

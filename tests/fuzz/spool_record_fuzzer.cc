// Fuzzes the spool's readers: the log framing (ReadSpoolRecords) and the
// record decoder (DecodeSpoolRecord). Input: the bytes of a spool log.
//
// Invariants: no crash, leak or UB, whatever the bytes; every byte the
// reader skips is counted once at most (records, damage and torn tail never
// exceed the log); every record that decodes re-encodes canonically
// (decode(encode(r)) encodes the same); and the input framed as one record
// by AppendSpoolFramedRecord reads back as exactly that record, undamaged.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "service/store/spool/spool_log_reader.h"
#include "service/store/spool/spool_log_writer.h"
#include "service/store/spool/spool_record.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using batchfetch::DecodeSpoolRecord;
using batchfetch::EncodeSpoolRecord;
using batchfetch::SpoolReadStats;
using batchfetch::SpoolRecord;

void CheckRecord(absl::string_view payload) {
  const absl::StatusOr<SpoolRecord> record = DecodeSpoolRecord(payload);
  if (!record.ok()) {
    FUZZ_CHECK(absl::IsDataLoss(record.status()),
               "a bad record is not DATA_LOSS");
    return;
  }
  const std::string encoded = EncodeSpoolRecord(*record);
  const absl::StatusOr<SpoolRecord> again = DecodeSpoolRecord(encoded);
  FUZZ_CHECK(again.ok(), "an encoded record does not decode");
  FUZZ_CHECK(EncodeSpoolRecord(*again) == encoded,
             "a record does not re-encode canonically");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);

  uint64_t records = 0;
  const SpoolReadStats stats =
      batchfetch::ReadSpoolRecords(bytes, [&](absl::string_view record) {
        ++records;
        CheckRecord(record);
      });
  FUZZ_CHECK(stats.records == records, "stats.records miscounts");
  FUZZ_CHECK(stats.corrupt_bytes + stats.torn_tail_bytes <= size,
             "more bytes skipped than the log has");

  CheckRecord(bytes);

  std::string log;
  uint64_t log_length = 0;
  batchfetch::AppendSpoolFramedRecord(bytes, &log_length, &log);
  FUZZ_CHECK(log_length == log.size(), "log_length is not the log's size");
  uint64_t read_back = 0;
  const SpoolReadStats framed =
      batchfetch::ReadSpoolRecords(log, [&](absl::string_view record) {
        ++read_back;
        FUZZ_CHECK(record == bytes, "a framed record reads back changed");
      });
  FUZZ_CHECK(read_back == 1 && framed.corruptions == 0,
             "a framed record does not read back exactly once, undamaged");
  return 0;
}

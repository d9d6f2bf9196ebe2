// Output of the batchfetch CLI: JSON rendering of results and summaries, and
// writing lines to stdout. Every *ToJson function returns one compact JSON
// value without a trailing newline, always valid UTF-8 whatever bytes the
// server sent.

#ifndef BATCHFETCH_CLIENT_CLI_OUTPUT_H_
#define BATCHFETCH_CLIENT_CLI_OUTPUT_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "batchfetch/v1/batchfetch.pb.h"

namespace batchfetch::cli {

// A result line, shared by `fetch` and `get --results`:
//   {"index":0,"url":"...","outcome":"ok","http_status":200,"attempts":1,
//    "elapsed_ms":12.345,"content_type":"...","error":"...","json":{...},
//    "body":"..."}
// content_type, error, json and body appear only when non-empty. `json` is
// embedded verbatim (the server guarantees compact valid JSON). A body that
// is not valid UTF-8 is emitted as "body_base64" instead of "body".
std::string ResultToJson(const ::batchfetch::v1::FetchResult& result);

// `--output csv`: the header line, then one row per result with the same
// flat fields as ResultToJson (no json or body). RFC 4180: a field holding
// a comma, a double quote, CR or LF is quoted, quotes doubled. elapsed_ms
// has 3 decimals. Bytes that are not UTF-8 are replaced with U+FFFD.
inline constexpr char kCsvColumns[] =
    "index,url,outcome,http_status,attempts,elapsed_ms,content_type,error";
std::string ResultToCsv(const ::batchfetch::v1::FetchResult& result);

// The progress line `fetch` keeps on stderr when stderr is a terminal
// (no "\r" or escape codes; the caller draws it):
//   "[#####.........................] 12/80  4.0/s  2 failed  ETA 17s"
// The rate is results per second since the start; the ETA (the rest at that
// rate) is left out until a result has arrived, and once all have.
std::string FormatProgress(uint32_t done, uint32_t total, uint32_t failed,
                           absl::Duration elapsed);

// {"batch_id":...,"state":"done","total":N,"succeeded":N,"failed":N,
//  "stored":N,"created_at":"RFC3339","finished_at":"RFC3339"|null}
// With `wrap`, the object is nested as {"summary":{...}} so that a summary
// line in a stream of result lines cannot be mistaken for a result.
std::string SummaryToJson(const ::batchfetch::v1::BatchSummary& summary,
                          bool wrap);

// Enum names without their prefix, lower-cased: OUTCOME_HTTP_ERROR ->
// "http_error", BATCH_STATE_DONE -> "done". Values unknown to this build (a
// newer server) become "outcome_13" / "batch_state_7".
std::string OutcomeName(::batchfetch::v1::Outcome outcome);
std::string StateName(::batchfetch::v1::BatchState state);

// Strict UTF-8 (no overlongs, surrogates or code points above U+10FFFF).
bool IsValidUtf8(absl::string_view s);

// Writes `line` and a newline to stdout and flushes, so a consumer of a pipe
// sees each result as it arrives. Returns false, with errno set, when stdout
// can no longer be written (EPIPE once the reader has gone, given that
// SIGPIPE is ignored).
bool WriteStdoutLine(absl::string_view line);

}  // namespace batchfetch::cli

#endif  // BATCHFETCH_CLIENT_CLI_OUTPUT_H_

#ifndef BATCHFETCH_SERVICE_API_SERVICE_OPTIONS_H_
#define BATCHFETCH_SERVICE_API_SERVICE_OPTIONS_H_

#include <cstddef>
#include <cstdint>
#include <functional>

#include "absl/time/time.h"

namespace batchfetch {

struct BatchStats;

// The default per-request body cap (FetchBatchRequest.max_body_bytes = 0):
// 3.5 MiB keeps one streamed FetchBatchEvent under the 4 MiB a default gRPC
// client accepts. The bound: a result carries the body or the cleaned
// `json`, never both; `json` is at most the body + 64 KiB (JsonCleaner's
// kProjectionSlack; without `extract` it is never longer than the body);
// `url` is at most 8 KiB (kMaxUrlLength); `final_url` and `content_type`
// come from one header line each, at most 100 KiB (libcurl's
// CURL_MAX_HTTP_HEADER); `error` may quote both URLs (~210 KiB); timings
// and framing < 1 KiB. 3584 + 64 + 8 + 200 + 210 + 1 KiB < 4096 KiB.
inline constexpr int64_t kStreamSafeMaxBodyBytes = 3584 * 1024;

// What the BatchFetcher service allows and assumes when a request says 0.
struct ServiceOptions {
  uint32_t max_batch_size = 100000;
  uint32_t default_concurrency = 32;
  // Per-batch cap; requests above it are clamped. The engine's
  // max_in_flight is the server-wide cap across batches.
  uint32_t max_concurrency = 1000;
  absl::Duration default_timeout = absl::Seconds(30);
  absl::Duration max_timeout = absl::Minutes(5);
  // Per-batch, per-host concurrency when the request says 0; 0 = no cap.
  uint32_t default_per_host_concurrency = 0;
  // Cap on RetryPolicy.max_attempts.
  uint32_t max_attempts = 10;
  // The server's body cap (--max_body_bytes, the engine's): the most a
  // request's max_body_bytes may ask for.
  int64_t max_body_bytes = 8 << 20;
  // The cap of a request whose max_body_bytes is 0 (at most max_body_bytes).
  int64_t default_max_body_bytes = kStreamSafeMaxBodyBytes;
  uint32_t default_page_size = 100;
  uint32_t max_page_size = 1000;
  // The executor that runs database round trips (CreateBatch, GetBatch,
  // ListResults) off the gRPC threads: its threads, and how many calls may
  // wait for one before further calls get RESOURCE_EXHAUSTED.
  int store_threads = 8;
  size_t store_queue = 1024;
  // Run on each of those threads at its start and before it exits: the
  // server passes the database client's per-thread setup and teardown
  // (MysqlSession::ThreadInit/ThreadEnd). Empty: nothing.
  std::function<void()> store_thread_init;
  std::function<void()> store_thread_end;
  // Batches running at once (accepted and not yet finished, results
  // stored): server-wide, and per caller (per identity with auth, per peer
  // address without). 0 = no limit. Over either, FetchBatch gets
  // RESOURCE_EXHAUSTED. Each active batch may hold up to 2 x concurrency
  // responses in memory, so these bound the server's memory too.
  int max_active_batches = 256;
  int max_active_batches_per_caller = 64;
  // Where every BatchRun counts its results and its end (metrics). Not
  // owned; must outlive the service and its runs. Null: nothing counted.
  BatchStats* batch_stats = nullptr;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_API_SERVICE_OPTIONS_H_

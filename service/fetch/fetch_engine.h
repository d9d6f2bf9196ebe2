#ifndef BATCHFETCH_SERVICE_FETCH_FETCH_ENGINE_H_
#define BATCHFETCH_SERVICE_FETCH_FETCH_ENGINE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "service/base/clock.h"
#include "service/fetch/egress_policy.h"
#include "service/fetch/fetch_types.h"
#include "service/fetch/retry_policy.h"
#include "service/fetch/stats.h"

namespace batchfetch {

class FetchBatchHandle;

// Receives a batch's responses.
//
// Thread-safety: called on the engine's delivery thread, one response at a
// time in the order the event loop produced them (never on the event loop
// itself, so a sink may take time to clean a body without stalling
// transfers). It should not block for long: every batch's responses share
// that thread. FetchBatchHandle::Release/Cancel may be called from it.
class FetchSink {
 public:
  virtual ~FetchSink() = default;
  // Called exactly once per request index. After the call for the batch's
  // last outstanding index the engine drops its reference to the sink.
  // `batch` is the handle Submit returns (passed here because the first
  // responses may arrive before Submit has returned it).
  virtual void OnFetched(FetchedResponse response,
                         const std::shared_ptr<FetchBatchHandle>& batch) = 0;
};

struct BatchOptions {
  int concurrency = 16;  // simultaneous transfers of this batch, >= 1
  // Simultaneous transfers of this batch to one scheme+host+port; 0 = no cap.
  int per_host_concurrency = 0;
  absl::Duration timeout = absl::Seconds(30);  // per transfer, from its start
  // Requests not started by then are delivered kCancelled, running transfers
  // are cut off (kTimeout, EndReason::kDeadlineCut) and no retry starts
  // after it.
  absl::Time deadline = absl::InfiniteFuture();
  RetryOptions retry;
  // Largest decoded body kept for one request of this batch (else
  // kTooLarge); 0 or anything above the engine's max_body_bytes means the
  // engine's.
  int64_t max_body_bytes = 0;
  // Delivered responses the sink has not yet released (see
  // FetchBatchHandle::Release). While in-flight plus unreleased reaches
  // `window`, the batch starts no new transfers: this is what keeps memory
  // bounded when the consumer (a slow gRPC reader, the database) falls behind.
  int window = 32;
};

// The caller's view of a submitted batch. Thread-safe. A handle may
// outlive the engine (results still queued for the database at shutdown
// hold one): once the engine is gone, its methods do nothing.
class FetchBatchHandle {
 public:
  virtual ~FetchBatchHandle() = default;
  // Stops the batch promptly: running transfers are removed from the pool,
  // and every request not yet delivered is delivered as kCancelled.
  // Idempotent; a no-op once all responses were delivered.
  virtual void Cancel() = 0;
  // The batch's deadline has passed as the caller sees it (for example the
  // gRPC deadline fired a moment before the engine's own timer). Ends the
  // batch exactly as the engine's deadline would, never as a cancel: running
  // transfers end kTimeout with EndReason::kDeadlineCut, requests waiting
  // for a retry keep their last outcome, requests never started end
  // kCancelled with EndReason::kDeadlineBeforeStart. Idempotent.
  virtual void EndAtDeadline() = 0;
  // Tells the engine the sink is done with `n` delivered responses, freeing
  // room in the batch's window.
  virtual void Release(int n) = 0;
};

// Runs HTTP transfers for many batches on one libcurl multi handle driven by
// its own event-loop thread (epoll + curl_multi_socket_action).
//
// Bounds: at most `max_in_flight` transfers across all batches, at most
// `BatchOptions::concurrency` per batch and `per_host_concurrency` per batch
// and host. Requests wait in the engine's own per-batch, per-host queues;
// batches take turns for free slots (round-robin), so a large batch cannot
// starve a small one. Retries wait on a timer, holding no slot. A 429 or 503
// with Retry-After puts the host in a cooldown that holds back every queued
// request to it, from every batch.
//
// Thread-safety: all public methods may be called from any thread.
class FetchEngine {
 public:
  struct Options {
    int max_in_flight = 1000;
    int64_t max_body_bytes = 8 << 20;
    int max_redirects = 5;
    absl::Duration connect_timeout = absl::Seconds(10);
    // Longest Retry-After honoured. A request whose server asks for a longer
    // wait is not retried (it keeps its 429/503 and says when the server
    // allows the next try); the host's cooldown is capped to this.
    absl::Duration max_retry_after = absl::Seconds(60);
    // A transfer slower than low_speed_bytes per second for low_speed_time
    // ends as kTimeout (slow-drip upstreams). 0 bytes disables it.
    int low_speed_bytes = 64;
    absl::Duration low_speed_time = absl::Seconds(10);
    std::string user_agent = "batchfetch/1.0";
    // Proxy for every transfer (curl syntax, e.g. "http://proxy:3128").
    // Empty: none, whatever http_proxy/https_proxy/ALL_PROXY say.
    std::string proxy;
    // Asked before every new connection and again before every request
    // (reused connections, redirect hops); null allows everything. With
    // `proxy` set it sees the proxy's address, not the target's.
    std::shared_ptr<const EgressPolicy> egress;
    // PEM CA bundle for upstream HTTPS (CurlDriver::Options::ca_bundle);
    // empty: libcurl's default. Certificate verification is always on.
    std::string ca_bundle;
    // curl --resolve style "name:port:address" pins
    // (CurlDriver::Options::resolve). Create fails on a malformed entry.
    std::vector<std::string> resolve;
    // libcurl multi handles the event loop drives (CurlDriver::Options).
    int curl_multi_handles = 4;
    // Where time comes from; null means Clock::Real(). Must outlive the
    // engine.
    Clock* clock = nullptr;
  };

  static absl::StatusOr<std::unique_ptr<FetchEngine>> Create(
      const Options& options);

  // Cancels every batch still running (their sinks receive kCancelled
  // results) and joins the event loop.
  ~FetchEngine();

  // Queues `requests` as one batch. Responses arrive at `sink`, one per
  // request, each carrying its FetchSpec::index. REQUIRES: !requests.empty();
  // indices distinct. The handle may outlive the engine.
  std::shared_ptr<FetchBatchHandle> Submit(std::vector<FetchSpec> requests,
                                           const BatchOptions& options,
                                           std::shared_ptr<FetchSink> sink);

  // Transfers currently running, across all batches.
  int in_flight() const;

  // The engine's counters (pull model, for metrics). Any thread.
  FetchStatsSnapshot stats() const;

  // Liveness heartbeat (for the server's health checker): the number of
  // turns the event loop has completed, and a wake-up that makes an idle
  // loop complete one more. A loop that is alive has moved the count soon
  // after any WakeLoop; one that is stuck (or gone) never does. Any thread.
  uint64_t loop_turns() const;
  void WakeLoop();

 private:
  class Impl;
  explicit FetchEngine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_FETCH_FETCH_ENGINE_H_

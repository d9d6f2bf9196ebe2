#ifndef BATCHFETCH_SERVICE_FETCH_CURL_DRIVER_H_
#define BATCHFETCH_SERVICE_FETCH_CURL_DRIVER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "service/fetch/egress_policy.h"
#include "service/fetch/fetch_types.h"
#include "service/fetch/request_validation.h"
#include "service/fetch/stats.h"

namespace batchfetch {

// Identifies a transfer to its owner. Opaque to the driver, which only
// hands it back on completion.
struct TransferToken {
  void* owner = nullptr;
  uint32_t index = 0;
};

// One attempt to send.
struct TransferSpec {
  TransferToken token;
  // REQUIRES: outlives the transfer (until its completion or Abort). Its
  // URL, method, headers and body are sent; `method` is the validated one.
  const FetchSpec* request = nullptr;
  HttpMethod method = HttpMethod::kGet;
  absl::Duration timeout = absl::Seconds(30);
  // The timeout was shortened to end at the batch deadline: a timeout then
  // ends the transfer with EndReason::kDeadlineCut.
  bool timeout_is_deadline = false;
  // The batch's body cap; 0 or above the driver's max_body_bytes means the
  // driver's.
  int64_t max_body_bytes = 0;
};

// A finished attempt, as libcurl reported it.
struct CompletedTransfer {
  TransferToken token;
  // result, end_reason, http_status, error, body, content_type, final_url,
  // body_expected and timings are filled in; index, url, attempts and
  // elapsed are the owner's to set.
  FetchedResponse response;
  bool redirected = false;  // the response came from a redirect target
  // The raw Retry-After header of a 429 or 503, if it had one.
  std::optional<std::string> retry_after;
};

// Maps a CURLcode (given as int: no curl types in this header) to how the
// transfer ended. CURLE_UNSUPPORTED_PROTOCOL maps to kBlocked, which the
// driver refines: a non-HTTP reply becomes kTransportError.
TransferResult MapCurlCode(int curl_code);

// Runs HTTP transfers on one libcurl multi handle driven by epoll and an
// eventfd: the only place that touches curl. It knows no batches, only
// opaque tokens; the egress hooks (socket open, before each request) live
// here. A transfer ends kBlocked only when the egress policy refused its
// request, or denied every address its hop tried (a denied address that
// curl passes over for an allowed one is no block), or a redirect went to
// a scheme other than http(s). A connection that carried a request body is
// closed after it, never reused (curl_driver.cc says why).
// Easy handles are pooled and reused without curl_easy_reset: options
// common to all transfers are set once, per-request ones on every start.
//
// Thread-safety: everything but Wake() must be called on one thread (the
// engine's). Wake() may be called from any thread.
class CurlDriver {
 public:
  struct Options {
    int max_connections = 1000;  // kept open for reuse, over all handles
    int64_t max_body_bytes = 8 << 20;
    int max_redirects = 5;
    absl::Duration connect_timeout = absl::Seconds(10);
    int low_speed_bytes = 64;  // 0: off
    absl::Duration low_speed_time = absl::Seconds(10);
    std::string user_agent = "batchfetch/1.0";
    std::string proxy;  // empty: no proxy, whatever the environment says
    // Asked for every new socket and again before every request (reused
    // connections and redirect hops included); null allows everything.
    std::shared_ptr<const EgressPolicy> egress;
    // PEM file of CA certificates that upstream HTTPS certificates are
    // verified against (CURLOPT_CAINFO, in place of libcurl's default
    // bundle file); empty: the default. Verification is always on.
    std::string ca_bundle;
    // Names pinned to addresses, as curl --resolve: "name:port:address"
    // (several addresses comma-separated; IPv6 in brackets). The egress
    // policy still judges the address connected to. Create rejects a
    // malformed entry with INVALID_ARGUMENT naming it.
    std::vector<std::string> resolve;
    // libcurl multi handles, all driven by the one thread; a transfer goes
    // to the least busy. libcurl 7.88 walks a host's whole connection list
    // on every transfer start and removal, so several smaller connection
    // caches cost less per request than one large one (see
    // docs/BENCHMARKS.md). Each has its own DNS and connection cache.
    int multi_handles = 4;
    // Leaves an idle keep-alive connection in the epoll set when curl stops
    // watching it, so that reusing it costs no epoll_ctl; one that speaks
    // while idle (the server closed it) is dropped then.
    bool lazy_epoll = true;
  };

  // `stats` (may be null) receives the driver's counters; it must outlive
  // the driver.
  static absl::StatusOr<std::unique_ptr<CurlDriver>> Create(
      const Options& options, FetchStats* stats);
  // Drops running transfers without reporting them.
  ~CurlDriver();

  using TransferId = uint32_t;

  // Starts one transfer. An error (nothing started) names what failed.
  absl::StatusOr<TransferId> Start(const TransferSpec& spec);

  // Stops a running transfer at once. It is not reported as completed.
  void Abort(TransferId id);

  // Waits up to `max_wait` (less when curl's own timer is due sooner) for
  // socket activity or a Wake(), lets curl act on it, and appends the
  // transfers that finished.
  void Poll(absl::Duration max_wait, std::vector<CompletedTransfer>* done);

  // Makes a Poll in progress (or the next one) return promptly.
  void Wake();

  // Transfers started and not yet completed or aborted.
  int running() const;

 private:
  class Impl;
  explicit CurlDriver(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_FETCH_CURL_DRIVER_H_

#ifndef BATCHFETCH_SERVICE_SERVER_SERVER_METRICS_H_
#define BATCHFETCH_SERVICE_SERVER_SERVER_METRICS_H_

#include <vector>

#include "service/batch/batch_stats.h"
#include "service/fetch/stats.h"
#include "service/metrics/exposition.h"
#include "service/store/store_stats.h"

namespace batchfetch {

// Every metric the server exposes on --metrics_listen, read now from the
// parts' counters (pull model: nothing is computed between scrapes):
//   batchfetch_results_total{outcome}        counter  (BatchStats)
//   batchfetch_batches_total{state}          counter  (BatchStats; final
//                                                      states only)
//   batchfetch_batches_active                gauge    (BatchStats)
//   batchfetch_transfers_in_flight           gauge    (engine)
//   batchfetch_transfers_queued              gauge    (engine)
//   batchfetch_retries_total                 counter  (engine)
//   batchfetch_upstream_seconds{outcome}     histogram (BatchStats)
//   batchfetch_response_bytes_total          counter  (engine)
//   batchfetch_blocked_total                 counter  (results BLOCKED)
// and, when `store` is not null (a store is in use):
//   batchfetch_store_queue_depth             gauge
//   batchfetch_store_commit_seconds          histogram
//   batchfetch_store_rows_total              counter
//   batchfetch_store_errors_total            counter
// Label values are the lower-case proto enum names without their prefix
// ("ok", "http_error"; "done", "cancelled", "failed"); every one is always
// present, so a rate over a series that has not moved yet is 0, not absent.
// No label takes a value from a request (no URL or host): the series are a
// fixed set.
std::vector<MetricFamily> CollectServerMetrics(const FetchStatsSnapshot& fetch,
                                               const BatchStats& batches,
                                               const StoreStats* store);

// "OUTCOME_HTTP_ERROR" -> "http_error".
std::string OutcomeLabel(v1::Outcome outcome);
// "BATCH_STATE_DONE" -> "done".
std::string BatchStateLabel(v1::BatchState state);

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_SERVER_SERVER_METRICS_H_

#ifndef BATCHFETCH_SERVICE_BATCH_BATCH_STATS_H_
#define BATCHFETCH_SERVICE_BATCH_BATCH_STATS_H_

#include <array>
#include <memory>

#include "batchfetch/v1/batchfetch.pb.h"
#include "service/metrics/metric_types.h"

namespace batchfetch {

// What BatchRuns count, for the metrics endpoint (pull model: BatchRun
// moves these cells, a scrape reads them). One per server, shared by every
// run; not owned by the runs, and must outlive them. Thread-safe.
struct BatchStats {
  BatchStats() {
    for (auto& histogram : upstream_seconds) {
      histogram = std::make_unique<Histogram>(UpstreamSecondsBuckets());
    }
  }

  // Results by outcome, indexed by v1::Outcome.
  std::array<Counter, v1::Outcome_ARRAYSIZE> results;
  // Batches by the state they finished in (DONE, CANCELLED, FAILED), indexed
  // by v1::BatchState, counted when the run reports its end.
  std::array<Counter, v1::BatchState_ARRAYSIZE> batches_finished;
  // Runs started and not yet finished (nor destroyed unfinished).
  Gauge batches_active;
  // The last attempt's total time (TransferTimings::total) of each result
  // that had an attempt, by outcome (indexed by v1::Outcome).
  std::array<std::unique_ptr<Histogram>, v1::Outcome_ARRAYSIZE>
      upstream_seconds;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_BATCH_BATCH_STATS_H_

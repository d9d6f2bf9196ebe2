#ifndef BATCHFETCH_SERVICE_STORE_STORE_STATS_H_
#define BATCHFETCH_SERVICE_STORE_STORE_STATS_H_

#include "service/metrics/metric_types.h"

namespace batchfetch {

// What the store's writer counts, for the metrics endpoint (pull model: the
// writer thread moves these cells, a scrape reads them). Owned by whoever
// opens the store (the server); must outlive it. Thread-safe.
struct StoreStats {
  // Writes (result rows and batch updates) queued for the writer and not
  // yet taken into a group.
  Gauge queue_depth;
  // Result rows committed.
  Counter rows;
  // Failed write attempts: a (re)connect or a transaction that failed, each
  // retry counted (so an outage shows as a steady rate).
  Counter errors;
  // Seconds from a group's first INSERT to its acknowledged COMMIT, for
  // every group written successfully.
  Histogram commit_seconds{DatabaseSecondsBuckets()};
  // The local spool (SpoolingResultStore): bytes of its files, writes
  // appended (each fsynced) and writes replayed into MySQL, and writes
  // waiting in memory because it was full.
  Gauge spool_bytes;
  Counter spooled_writes;
  Counter replayed_writes;
  Gauge parked_writes;
  // Batches this replica marked INTERRUPTED because their owner's lease
  // expired (moved by the LeaseKeeper's sweeps).
  Counter batches_interrupted;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_STORE_STATS_H_

#ifndef BATCHFETCH_SERVICE_FETCH_STATS_H_
#define BATCHFETCH_SERVICE_FETCH_STATS_H_

#include <array>
#include <atomic>
#include <cstdint>

#include "service/fetch/fetch_types.h"

namespace batchfetch {

inline constexpr int kTransferResultCount =
    static_cast<int>(TransferResult::kInvalidRequest) + 1;

// A consistent-enough reading of FetchStats (each field read atomically).
struct FetchStatsSnapshot {
  int64_t batches_active = 0;
  int64_t transfers_in_flight = 0;
  int64_t requests_queued = 0;  // accepted, not yet started or delivered
  int64_t transfers_started = 0;
  int64_t retries = 0;
  int64_t response_bytes = 0;
  // Delivered responses by how they ended, indexed by TransferResult.
  std::array<int64_t, kTransferResultCount> delivered{};
};

// The engine's counters. Written by the engine thread, read by anyone
// (pull model: a metrics endpoint calls Snapshot when scraped).
class FetchStats {
 public:
  std::atomic<int64_t> batches_active{0};
  std::atomic<int64_t> transfers_in_flight{0};
  std::atomic<int64_t> requests_queued{0};
  std::atomic<int64_t> transfers_started{0};
  std::atomic<int64_t> retries{0};
  std::atomic<int64_t> response_bytes{0};
  std::array<std::atomic<int64_t>, kTransferResultCount> delivered{};

  void CountDelivered(TransferResult result) {
    delivered[static_cast<size_t>(result)].fetch_add(1,
                                                     std::memory_order_relaxed);
  }

  FetchStatsSnapshot Snapshot() const {
    FetchStatsSnapshot s;
    s.batches_active = batches_active.load(std::memory_order_relaxed);
    s.transfers_in_flight = transfers_in_flight.load(std::memory_order_relaxed);
    s.requests_queued = requests_queued.load(std::memory_order_relaxed);
    s.transfers_started = transfers_started.load(std::memory_order_relaxed);
    s.retries = retries.load(std::memory_order_relaxed);
    s.response_bytes = response_bytes.load(std::memory_order_relaxed);
    for (size_t i = 0; i < delivered.size(); ++i) {
      s.delivered[i] = delivered[i].load(std::memory_order_relaxed);
    }
    return s;
  }
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_FETCH_STATS_H_

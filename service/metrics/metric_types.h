#ifndef BATCHFETCH_SERVICE_METRICS_METRIC_TYPES_H_
#define BATCHFETCH_SERVICE_METRICS_METRIC_TYPES_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace batchfetch {

// The cells the service's parts move when something happens; the metrics
// endpoint reads them when scraped (pull model). Each is a few relaxed
// atomics: no lock, no allocation, safe from any thread. A reading is
// "consistent enough": each value is read atomically, not all at once.

// A count that only goes up.
class Counter {
 public:
  void Increment(uint64_t n = 1) {
    value_.fetch_add(n, std::memory_order_relaxed);
  }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A level that goes up and down (things in progress).
class Gauge {
 public:
  void Add(int64_t n) { value_.fetch_add(n, std::memory_order_relaxed); }
  void Set(int64_t n) { value_.store(n, std::memory_order_relaxed); }
  int64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

// Observations counted into fixed buckets, as Prometheus histograms are: a
// bucket counts the observations <= its upper bound ("le"); one more bucket
// (+Inf) takes everything above the last bound.
class Histogram {
 public:
  // REQUIRES: `upper_bounds` finite and strictly increasing (may be empty:
  // then only +Inf).
  explicit Histogram(std::vector<double> upper_bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // NaN is ignored (it belongs to no bucket).
  void Observe(double value);

  struct Snapshot {
    std::vector<double> upper_bounds;  // without +Inf
    // Cumulative: cumulative_counts[i] observations were <= upper_bounds[i];
    // one entry more than upper_bounds, the last being +Inf (== count).
    std::vector<uint64_t> cumulative_counts;
    uint64_t count = 0;
    double sum = 0;
  };
  // `count` is derived from the buckets, so it always equals the +Inf
  // bucket; `sum` may lag an observation being made concurrently.
  Snapshot snapshot() const;

  const std::vector<double>& upper_bounds() const { return bounds_; }

 private:
  const std::vector<double> bounds_;
  // Not cumulative: buckets_[i] counts (bounds_[i-1], bounds_[i]].
  const std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<double> sum_{0};
};

// Bucket bounds in seconds for an upstream HTTP exchange: 5 ms to 60 s.
const std::vector<double>& UpstreamSecondsBuckets();
// Bucket bounds in seconds for one database transaction: 1 ms to 10 s.
const std::vector<double>& DatabaseSecondsBuckets();

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_METRICS_METRIC_TYPES_H_

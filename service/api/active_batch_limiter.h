#ifndef BATCHFETCH_SERVICE_API_ACTIVE_BATCH_LIMITER_H_
#define BATCHFETCH_SERVICE_API_ACTIVE_BATCH_LIMITER_H_

#include <map>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace batchfetch {

// The key a caller without an identity is counted under: gRPC's peer string
// without its port ("ipv4:127.0.0.1:5555" -> "ipv4:127.0.0.1",
// "ipv6:[::1]:5555" -> "ipv6:[::1]", also with %5B/%5D), so one client's
// connections share a count. Any other form is returned as it is.
std::string PeerAddressKey(std::string_view peer);

// Counts active batches, server-wide and per caller, and refuses a new one
// over either limit (--max_active_batches, --max_active_batches_per_caller).
//
// A batch is active from the moment it is admitted (TryAcquire) until its
// Lease is released or destroyed; the FetchBatch handler ties the lease to
// the run, so a batch whose caller went away stays counted until its results
// are stored.
//
// Thread-safety: every method may be called from any thread. Ownership: the
// limiter must outlive every Lease it hands out.
class ActiveBatchLimiter {
 public:
  struct Limits {
    int max_active = 0;      // server-wide; 0 = no limit
    int max_per_caller = 0;  // per caller key; 0 = no limit
  };

  // One admitted batch. Move-only; releasing it (Release or destruction)
  // ends the batch's count. An empty Lease (default or moved-from) holds
  // nothing.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { Release(); }

    void Release();
    bool held() const { return limiter_ != nullptr; }

   private:
    friend class ActiveBatchLimiter;
    Lease(ActiveBatchLimiter* limiter, std::string caller)
        : limiter_(limiter), caller_(std::move(caller)) {}

    ActiveBatchLimiter* limiter_ = nullptr;
    std::string caller_;
  };

  explicit ActiveBatchLimiter(Limits limits) : limits_(limits) {}

  // Admits one more batch for `caller`, or RESOURCE_EXHAUSTED naming the
  // limit flag that is reached (--max_active_batches first), or UNAVAILABLE
  // once Close() was called.
  absl::StatusOr<Lease> TryAcquire(const std::string& caller)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Refuses every later TryAcquire (the server is draining). Atomic with
  // TryAcquire: a lease is either handed out before Close returns, and so
  // counted by active() right after, or refused. Leases already held keep
  // counting until released. Idempotent.
  void Close() ABSL_LOCKS_EXCLUDED(mu_);

  int active() const ABSL_LOCKS_EXCLUDED(mu_);
  int active_for(const std::string& caller) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Release(const std::string& caller) ABSL_LOCKS_EXCLUDED(mu_);

  const Limits limits_;
  mutable absl::Mutex mu_;
  int active_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  // Only callers with at least one active batch have an entry.
  std::map<std::string, int> per_caller_ ABSL_GUARDED_BY(mu_);
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_API_ACTIVE_BATCH_LIMITER_H_

#ifndef BATCHFETCH_SERVICE_API_HEALTH_SERVICE_H_
#define BATCHFETCH_SERVICE_API_HEALTH_SERVICE_H_

#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace batchfetch {

// The standard grpc.health.v1.Health service (callback API), served from our
// own generated health.proto so that server reflection describes it (gRPC's
// built-in health service has no descriptor in the pool, and grpcurl with
// reflection only cannot resolve it).
//
// It knows two services, "" (the whole server) and
// "batchfetch.v1.BatchFetcher", which always share one status, NOT_SERVING
// until the first SetServing(true). Check answers the current status
// (NOT_FOUND for any other service name). Watch sends the current status,
// then each change (intermediate ones may be coalesced: the latest is always
// sent), until the caller cancels or Shutdown(); an unknown service is
// answered SERVICE_UNKNOWN and the stream stays open, as the protocol says.
// Nothing here decides the status: the server's HealthChecker does, in the
// background, so no call does I/O. No auth: probes carry no token
// (docs/SECURITY.md).
//
// Thread-safety: every method may be called from any thread. The service
// must outlive the grpc::Server hosting it; Shutdown() must be called
// before that server's Shutdown, or open Watch streams hold it to its
// deadline.
class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;
  static constexpr char kBatchFetcherService[] = "batchfetch.v1.BatchFetcher";

  HealthService() = default;

  // Sets the status of every known service (SERVING or NOT_SERVING) and
  // tells the watchers that see a change. Ignored after Shutdown().
  void SetServing(bool serving) ABSL_LOCKS_EXCLUDED(mu_);
  bool serving() const ABSL_LOCKS_EXCLUDED(mu_);

  // NOT_SERVING from now on, for good; every Watch stream gets it and then
  // ends with UNAVAILABLE.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  grpc::ServerUnaryReactor* Check(
      grpc::CallbackServerContext* context,
      const grpc::health::v1::HealthCheckRequest* request,
      grpc::health::v1::HealthCheckResponse* response) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* context,
      const grpc::health::v1::HealthCheckRequest* request) override;

 private:
  class Watcher;

  static bool IsKnown(const std::string& service);
  ServingStatus StatusLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Called by a watcher from OnDone: forgets it; true when the watcher may
  // delete itself now (no StepAndUnpin holds it; else the last one deletes
  // it).
  bool Forget(Watcher* watcher) ABSL_LOCKS_EXCLUDED(mu_);
  // Keeps `watcher` alive while it is stepped outside `mu_`.
  Watcher* PinLocked(Watcher* watcher) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Steps each watcher (its gRPC calls, with no lock held), then unpins it.
  void StepAndUnpin(const std::vector<Watcher*>& pinned)
      ABSL_LOCKS_EXCLUDED(mu_);

  mutable absl::Mutex mu_;
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  // Open Watch streams (not owned: each deletes itself in OnDone after
  // calling Forget).
  std::set<Watcher*> watchers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_API_HEALTH_SERVICE_H_

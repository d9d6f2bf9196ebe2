#include "service/api/health_service.h"

#include <optional>
#include <vector>

namespace batchfetch {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch stream: at most one write in flight; a status that changes while
// one is being written replaces any status still waiting (the caller always
// gets the latest). Deletes itself in OnDone.
//
// Thread-safety: Queue (under the service's lock), Step and gRPC's
// reactions may run on different threads; state is under `mu_`, and
// StartWrite/Finish are called with no lock held (neither this one nor the
// service's: gRPC may run a reaction inline, and OnDone takes the service's
// lock). Lifetime: the service pins a watcher (pins_, under the service's
// lock) while it steps it outside that lock; OnDone deletes it only when
// unpinned, else the last Unpin does.
class HealthService::Watcher final
    : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  // `known`: the watched service is one this server knows (else it only
  // ever gets SERVICE_UNKNOWN).
  Watcher(HealthService* service, bool known)
      : service_(service), known_(known) {}

  bool known() const { return known_; }

  // Queues `status` unless it is the one last queued; `end`: then finish
  // the stream with UNAVAILABLE (the server is shutting down). Makes no
  // gRPC call: Step does, once the caller has released its locks.
  void Queue(ServingStatus status, bool end) {
    absl::MutexLock lock(&mu_);
    if (!last_.has_value() || *last_ != status) {
      last_ = status;
      pending_ = status;
    }
    if (end) end_ = true;
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) cancelled_ = true;  // the caller is gone
    }
    Step();
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
    }
    Step();
  }

  void OnDone() override {
    if (service_->Forget(this)) delete this;
  }

  // Starts the next write, or finishes the stream, if either is due. Call
  // with no lock held.
  void Step() {
    std::optional<grpc::Status> finish;
    bool write = false;
    {
      absl::MutexLock lock(&mu_);
      if (finished_ || writing_) return;
      if (cancelled_) {
        finish = grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled");
      } else if (pending_.has_value()) {
        message_.set_status(*pending_);
        pending_.reset();
        writing_ = true;
        write = true;
      } else if (end_) {
        finish = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              "the server is shutting down");
      }
      if (finish.has_value()) finished_ = true;
    }
    if (write) StartWrite(&message_);
    if (finish.has_value()) Finish(*finish);
  }

  // Both under the service's mu_: the service's pins (Step calls in
  // progress outside its lock) and whether OnDone has run.
  int pins_ = 0;
  bool done_ = false;

 private:
  HealthService* const service_;
  const bool known_;

  absl::Mutex mu_;
  // The message being written; valid until OnWriteDone.
  HealthCheckResponse message_ ABSL_GUARDED_BY(mu_);
  std::optional<ServingStatus> pending_ ABSL_GUARDED_BY(mu_);
  std::optional<ServingStatus> last_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool end_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

bool HealthService::IsKnown(const std::string& service) {
  return service.empty() || service == kBatchFetcherService;
}

HealthService::ServingStatus HealthService::StatusLocked() const {
  return serving_ ? HealthCheckResponse::SERVING
                  : HealthCheckResponse::NOT_SERVING;
}

void HealthService::SetServing(bool serving) {
  std::vector<Watcher*> pinned;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_ || serving_ == serving) return;
    serving_ = serving;
    // Queued under `mu_`, so every watcher sees the changes in order (and
    // always ends with the latest); written after releasing it.
    for (Watcher* watcher : watchers_) {
      if (!watcher->known()) continue;
      watcher->Queue(StatusLocked(), /*end=*/false);
      pinned.push_back(PinLocked(watcher));
    }
  }
  StepAndUnpin(pinned);
}

bool HealthService::serving() const {
  absl::MutexLock lock(&mu_);
  return serving_;
}

void HealthService::Shutdown() {
  std::vector<Watcher*> pinned;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    serving_ = false;
    for (Watcher* watcher : watchers_) {
      watcher->Queue(watcher->known() ? StatusLocked()
                                      : HealthCheckResponse::SERVICE_UNKNOWN,
                     /*end=*/true);
      pinned.push_back(PinLocked(watcher));
    }
  }
  StepAndUnpin(pinned);
}

HealthService::Watcher* HealthService::PinLocked(Watcher* watcher) {
  ++watcher->pins_;
  return watcher;
}

void HealthService::StepAndUnpin(const std::vector<Watcher*>& pinned) {
  for (Watcher* watcher : pinned) {
    watcher->Step();
    bool last;
    {
      absl::MutexLock lock(&mu_);
      last = --watcher->pins_ == 0 && watcher->done_;
    }
    if (last) delete watcher;  // OnDone ran while we held it
  }
}

bool HealthService::Forget(Watcher* watcher) {
  absl::MutexLock lock(&mu_);
  watchers_.erase(watcher);
  watcher->done_ = true;
  return watcher->pins_ == 0;
}

grpc::ServerUnaryReactor* HealthService::Check(
    grpc::CallbackServerContext* context, const HealthCheckRequest* request,
    HealthCheckResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!IsKnown(request->service())) {
    reactor->Finish(
        grpc::Status(grpc::StatusCode::NOT_FOUND,
                     "unknown service: this server knows \"\" and " +
                         std::string(kBatchFetcherService)));
    return reactor;
  }
  {
    absl::MutexLock lock(&mu_);
    response->set_status(StatusLocked());
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(
    grpc::CallbackServerContext* /*context*/,
    const HealthCheckRequest* request) {
  auto* watcher = new Watcher(this, IsKnown(request->service()));
  {
    absl::MutexLock lock(&mu_);
    watchers_.insert(watcher);
    watcher->Queue(watcher->known() ? StatusLocked()
                                    : HealthCheckResponse::SERVICE_UNKNOWN,
                   /*end=*/shut_down_);
    PinLocked(watcher);
  }
  StepAndUnpin({watcher});
  return watcher;
}

}  // namespace batchfetch

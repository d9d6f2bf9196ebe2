#ifndef BATCHFETCH_SERVICE_FETCH_DELIVERY_QUEUE_H_
#define BATCHFETCH_SERVICE_FETCH_DELIVERY_QUEUE_H_

#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "service/fetch/fetch_engine.h"

namespace batchfetch {

// A response on its way to its sink.
struct Delivery {
  std::shared_ptr<FetchSink> sink;
  std::shared_ptr<FetchBatchHandle> handle;
  FetchedResponse response;
};

// Runs sinks on a thread of its own, so that classifying and cleaning
// bodies (milliseconds for a large JSON document) never stalls the event
// loop. Deliveries run one at a time, in the order they were pushed.
//
// Thread-safety: Push and Stop may be called from any thread.
class DeliveryQueue {
 public:
  DeliveryQueue();
  // Stops (see Stop) if not yet stopped.
  ~DeliveryQueue();

  // Appends `batch` (emptied) to the queue in one step.
  void Push(std::vector<Delivery>& batch);

  // Runs what is queued, then joins the thread. Idempotent. REQUIRES: not
  // called from a sink.
  void Stop();

 private:
  void Run();

  absl::Mutex mu_;
  std::vector<Delivery> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Last: started once the members above exist.
  std::thread thread_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_FETCH_DELIVERY_QUEUE_H_

#ifndef BATCHFETCH_SERVICE_API_BATCH_FETCHER_SERVICE_H_
#define BATCHFETCH_SERVICE_API_BATCH_FETCHER_SERVICE_H_

#include "batchfetch/v1/batchfetch.grpc.pb.h"
#include "service/api/executor.h"
#include "service/api/request_translation.h"
#include "service/api/service_options.h"
#include "service/base/clock.h"
#include "service/fetch/fetch_engine.h"
#include "service/store/result_store.h"

namespace batchfetch {

class FetchBatchReactor;

// The BatchFetcher gRPC service (callback API): the handlers only.
//
// FetchBatch: TranslateRequest (on the gRPC thread: no I/O), then, on the
// executor, CreateBatch (one database round trip) and a BatchRun observed by
// a FetchBatchReactor that streams results as they complete; every result
// also goes to the ResultStore, and the summary is sent once all are
// committed. GetBatch/ListResults read the store back, on the executor.
// No database round trip runs on a gRPC callback thread; when the executor's
// queue is full those calls get RESOURCE_EXHAUSTED.
//
// Thread-safety: handlers run on gRPC threads. The engine, the store and the
// clock must outlive this service, and the service must outlive the server
// that hosts it (its destructor joins the executor, whose tasks finish the
// calls they serve).
class BatchFetcherService final : public v1::BatchFetcher::CallbackService {
 public:
  // `store` may be null: nothing is stored and reads are UNIMPLEMENTED.
  BatchFetcherService(const ServiceOptions& options, FetchEngine* engine,
                      ResultStore* store, const Clock* clock = Clock::Real());
  ~BatchFetcherService() override;

  grpc::ServerWriteReactor<v1::FetchBatchEvent>* FetchBatch(
      grpc::CallbackServerContext* context,
      const v1::FetchBatchRequest* request) override;
  grpc::ServerUnaryReactor* GetBatch(grpc::CallbackServerContext* context,
                                     const v1::GetBatchRequest* request,
                                     v1::BatchSummary* response) override;
  grpc::ServerUnaryReactor* ListResults(
      grpc::CallbackServerContext* context,
      const v1::ListResultsRequest* request,
      v1::ListResultsResponse* response) override;

 private:
  // Records the batch (with a store), then runs it on `reactor`. Runs on an
  // executor thread, or inline without a store.
  void CreateAndRun(FetchBatchReactor* reactor, BatchPlan plan);

  // Constant after construction.
  const ServiceOptions options_;
  FetchEngine* const engine_;
  ResultStore* const store_;
  const Clock* const clock_;
  // Database round trips; joined by the destructor.
  Executor executor_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_API_BATCH_FETCHER_SERVICE_H_

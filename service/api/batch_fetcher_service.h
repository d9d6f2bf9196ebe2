#ifndef BATCHFETCH_SERVICE_API_BATCH_FETCHER_SERVICE_H_
#define BATCHFETCH_SERVICE_API_BATCH_FETCHER_SERVICE_H_

#include <cstdint>

#include "absl/time/time.h"
#include "batchfetch/v1/batchfetch.grpc.pb.h"
#include "service/fetch/fetch_engine.h"
#include "service/store/result_store.h"

namespace batchfetch {

struct ServiceOptions {
  uint32_t max_batch_size = 100000;
  uint32_t default_concurrency = 32;
  // Per-batch cap; requests above it are clamped. The engine's
  // max_in_flight is the server-wide cap across batches.
  uint32_t max_concurrency = 1000;
  absl::Duration default_timeout = absl::Seconds(30);
  absl::Duration max_timeout = absl::Minutes(5);
  // Per-batch, per-host concurrency when the request says 0; 0 = no cap.
  uint32_t default_per_host_concurrency = 0;
  // Cap on RetryPolicy.max_attempts.
  uint32_t max_attempts = 10;
  uint32_t default_page_size = 100;
  uint32_t max_page_size = 1000;
};

// The BatchFetcher gRPC service (callback API).
//
// FetchBatch: validates the request, records the batch, hands the requests
// to the FetchEngine and streams results as they complete; every result also
// goes to the ResultStore, and the summary is sent once all are committed.
// GetBatch/ListResults read the store back.
//
// Thread-safety: handlers run on gRPC threads; the engine and store must
// outlive the server that hosts this service.
class BatchFetcherService final : public v1::BatchFetcher::CallbackService {
 public:
  // `store` may be null: nothing is stored and reads are UNIMPLEMENTED.
  BatchFetcherService(const ServiceOptions& options, FetchEngine* engine,
                      ResultStore* store);

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
  // Constant after construction.
  const ServiceOptions options_;
  FetchEngine* const engine_;
  ResultStore* const store_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_API_BATCH_FETCHER_SERVICE_H_

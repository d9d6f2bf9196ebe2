#include "service/api/batch_fetcher_service.h"

#include <algorithm>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "service/api/fetch_batch_reactor.h"
#include "service/api/grpc_status.h"
#include "service/batch/batch_id.h"
#include "service/batch/batch_run.h"

namespace batchfetch {
namespace {

const grpc::Status kNoStore(grpc::StatusCode::UNIMPLEMENTED,
                            "this server runs with --store=none");

// Whether a read of `batch_id` may go to the store; if not, finishes
// `reactor` with why (no store, or a malformed id).
bool CheckReadable(const ResultStore* store, const std::string& batch_id,
                   grpc::ServerUnaryReactor* reactor) {
  if (store == nullptr) {
    reactor->Finish(kNoStore);
    return false;
  }
  if (absl::Status valid = ValidateBatchId(batch_id); !valid.ok()) {
    reactor->Finish(ToGrpcStatus(valid));
    return false;
  }
  return true;
}

}  // namespace

BatchFetcherService::BatchFetcherService(const ServiceOptions& options,
                                         FetchEngine* engine,
                                         ResultStore* store, const Clock* clock)
    : options_(options),
      engine_(engine),
      store_(store),
      clock_(clock),
      executor_(std::max(options.store_threads, 1), options.store_queue) {}

BatchFetcherService::~BatchFetcherService() { executor_.Shutdown(); }

grpc::ServerWriteReactor<v1::FetchBatchEvent>* BatchFetcherService::FetchBatch(
    grpc::CallbackServerContext* context,
    const v1::FetchBatchRequest* request) {
  auto* reactor = new FetchBatchReactor(context, clock_);
  CallInfo call;
  call.now = clock_->WallNow();
  call.grpc_deadline = absl::FromChrono(context->deadline());
  absl::StatusOr<BatchPlan> plan = TranslateRequest(*request, options_, call);
  if (!plan.ok()) {
    reactor->Reject(plan.status());
    return reactor;
  }
  if (store_ == nullptr) {  // no round trip: start here
    CreateAndRun(reactor, *std::move(plan));
    return reactor;
  }
  absl::Status queued =
      executor_.Submit([this, reactor, plan = *std::move(plan)]() mutable {
        CreateAndRun(reactor, std::move(plan));
      });
  if (!queued.ok()) reactor->Reject(queued);
  return reactor;
}

void BatchFetcherService::CreateAndRun(FetchBatchReactor* reactor,
                                       BatchPlan plan) {
  if (store_ != nullptr) {
    BatchRecord record;
    record.batch_id = plan.batch_id;
    record.state = v1::BATCH_STATE_RUNNING;
    record.total = plan.total;
    record.created_at = plan.created_at;
    absl::Status created = store_->CreateBatch(record);
    if (absl::IsUnavailable(created)) {
      reactor->Reject(absl::UnavailableError(
          absl::StrCat("result database unavailable: ", created.message())));
      return;
    }
    if (!created.ok()) {
      reactor->Reject(created);
      return;
    }
  }
  BatchRun::Params params;
  params.batch_id = plan.batch_id;
  params.total = plan.total;
  params.created_at = plan.created_at;
  params.store = store_;
  params.clock = clock_;
  auto run =
      std::make_shared<BatchRun>(std::move(params), std::move(plan.cleaner));
  reactor->Run(std::move(run), [&](std::shared_ptr<FetchSink> sink) {
    return engine_->Submit(std::move(plan.specs), plan.options,
                           std::move(sink));
  });
}

grpc::ServerUnaryReactor* BatchFetcherService::GetBatch(
    grpc::CallbackServerContext* context, const v1::GetBatchRequest* request,
    v1::BatchSummary* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!CheckReadable(store_, request->batch_id(), reactor)) return reactor;
  // `request` and `response` stay valid until Finish.
  absl::Status queued = executor_.Submit([this, reactor, request, response]() {
    absl::StatusOr<v1::BatchSummary> summary =
        store_->GetBatch(request->batch_id());
    if (summary.ok()) *response = *std::move(summary);
    reactor->Finish(ToGrpcStatus(summary.status()));
  });
  if (!queued.ok()) reactor->Finish(ToGrpcStatus(queued));
  return reactor;
}

grpc::ServerUnaryReactor* BatchFetcherService::ListResults(
    grpc::CallbackServerContext* context, const v1::ListResultsRequest* request,
    v1::ListResultsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!CheckReadable(store_, request->batch_id(), reactor)) return reactor;
  uint32_t from = 0;
  if (!request->page_token().empty() &&
      !absl::SimpleAtoi(request->page_token(), &from)) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 "page_token is not one this server issued"));
    return reactor;
  }
  uint32_t page_size = request->page_size() == 0 ? options_.default_page_size
                                                 : request->page_size();
  page_size = std::min(page_size, options_.max_page_size);
  // `request` and `response` stay valid until Finish.
  absl::Status queued =
      executor_.Submit([this, reactor, request, response, from, page_size]() {
        absl::StatusOr<ResultPage> page =
            store_->ListResults(request->batch_id(), from, page_size);
        if (page.ok()) {
          for (v1::FetchResult& r : page->results) {
            *response->add_results() = std::move(r);
          }
          if (page->next_index >= 0) {
            response->set_next_page_token(absl::StrCat(page->next_index));
          }
        }
        reactor->Finish(ToGrpcStatus(page.status()));
      });
  if (!queued.ok()) reactor->Finish(ToGrpcStatus(queued));
  return reactor;
}

}  // namespace batchfetch

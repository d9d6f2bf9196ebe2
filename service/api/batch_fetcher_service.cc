#include "service/api/batch_fetcher_service.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/util/time_util.h"
#include "service/batch/batch_id.h"
#include "service/json/json_cleaner.h"

namespace batchfetch {
namespace {

using google::protobuf::util::TimeUtil;

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

google::protobuf::Duration ToProto(absl::Duration d) {
  return TimeUtil::MicrosecondsToDuration(absl::ToInt64Microseconds(d));
}

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

// Builds the engine's retry options from the request, applying defaults
// and the server's cap. INVALID_ARGUMENT for nonsense values.
absl::StatusOr<RetryOptions> RetryFromRequest(const v1::RetryPolicy& policy,
                                              uint32_t max_attempts_cap) {
  const int attempts = static_cast<int>(
      std::min(std::max(policy.max_attempts(), 1u), max_attempts_cap));
  RetryOptions retry;
  if (policy.retry_on().empty() && policy.retry_on_status().empty()) {
    retry = RetryOptions::Defaults(attempts);
  } else {
    retry.max_attempts = attempts;
    for (int condition : policy.retry_on()) {
      switch (condition) {
        case v1::RETRY_ON_CONNECT_ERROR:
          retry.on_connect_error = true;
          break;
        case v1::RETRY_ON_TIMEOUT:
          retry.on_timeout = true;
          break;
        case v1::RETRY_ON_TRANSPORT_ERROR:
          retry.on_transport_error = true;
          break;
        case v1::RETRY_ON_5XX:
          retry.on_5xx = true;
          break;
        case v1::RETRY_ON_429:
          retry.on_429 = true;
          break;
        default:
          return absl::InvalidArgumentError(
              absl::StrCat("retry.retry_on: unknown condition ", condition));
      }
    }
    for (int status : policy.retry_on_status()) {
      if (status < 100 || status > 599) {
        return absl::InvalidArgumentError(absl::StrCat(
            "retry.retry_on_status: ", status, " is not an HTTP status"));
      }
      retry.on_status.push_back(status);
    }
  }
  retry.non_idempotent = policy.retry_non_idempotent();
  for (const auto* d : {&policy.initial_backoff(), &policy.max_backoff()}) {
    if (d->seconds() < 0 || d->nanos() < 0 || d->seconds() > 3600) {
      return absl::InvalidArgumentError(
          "retry backoffs must be between 0 and 1h");
    }
  }
  if (FromProto(policy.initial_backoff()) > absl::ZeroDuration()) {
    retry.initial_backoff = FromProto(policy.initial_backoff());
  }
  if (FromProto(policy.max_backoff()) > absl::ZeroDuration()) {
    retry.max_backoff = FromProto(policy.max_backoff());
  }
  retry.max_backoff = std::max(retry.max_backoff, retry.initial_backoff);
  return retry;
}

v1::Outcome OutcomeOf(TransferResult result) {
  switch (result) {
    case TransferResult::kResponse:
      return v1::OUTCOME_OK;  // refined by the caller from status and body
    case TransferResult::kTimeout:
      return v1::OUTCOME_TIMEOUT;
    case TransferResult::kDnsError:
      return v1::OUTCOME_DNS_ERROR;
    case TransferResult::kConnectError:
      return v1::OUTCOME_CONNECT_ERROR;
    case TransferResult::kTlsError:
      return v1::OUTCOME_TLS_ERROR;
    case TransferResult::kTransportError:
      return v1::OUTCOME_TRANSPORT_ERROR;
    case TransferResult::kTooLarge:
      return v1::OUTCOME_TOO_LARGE;
    case TransferResult::kBlocked:
      return v1::OUTCOME_BLOCKED;
    case TransferResult::kCancelled:
      return v1::OUTCOME_CANCELLED;
    case TransferResult::kInvalidRequest:
      return v1::OUTCOME_INVALID_REQUEST;
  }
  return v1::OUTCOME_TRANSPORT_ERROR;
}

// Judges a completed transfer: status code, then body (see the proto).
void FillResult(FetchedResponse& response, const JsonCleaner& cleaner,
                v1::FetchResult* result) {
  result->set_index(response.index);
  result->set_url(std::move(response.url));
  result->set_http_status(response.http_status);
  result->set_content_type(std::move(response.content_type));
  result->set_attempts(response.attempts);
  *result->mutable_elapsed() = ToProto(response.elapsed);
  result->set_final_url(std::move(response.final_url));
  if (response.attempts > 0) {
    v1::Timings* t = result->mutable_timings();
    *t->mutable_dns() = ToProto(response.timings.dns);
    *t->mutable_connect() = ToProto(response.timings.connect);
    *t->mutable_tls() = ToProto(response.timings.tls);
    *t->mutable_first_byte() = ToProto(response.timings.first_byte);
    *t->mutable_total() = ToProto(response.timings.total);
  }
  if (response.result != TransferResult::kResponse) {
    result->set_outcome(OutcomeOf(response.result));
    result->set_error(std::move(response.error));
    return;
  }
  const int status = response.http_status;
  if (status < 200 || status > 299) {
    result->set_outcome(v1::OUTCOME_HTTP_ERROR);
    // The engine's text, when it has one, says more (e.g. why no retry).
    result->set_error(response.error.empty()
                          ? absl::StrCat("upstream answered HTTP ", status)
                          : std::move(response.error));
    result->set_body(std::move(response.body));
    return;
  }
  if (response.body.empty() &&
      (status == 204 || status == 205 || !response.body_expected)) {
    result->set_outcome(v1::OUTCOME_OK);  // no content by design
    return;
  }
  absl::Status cleaned = cleaner.Clean(response.body, result->mutable_json());
  if (cleaned.ok()) {
    result->set_outcome(v1::OUTCOME_OK);
  } else {
    result->clear_json();
    result->set_outcome(v1::OUTCOME_INVALID_JSON);
    result->set_error(std::string(cleaned.message()));
    result->set_body(std::move(response.body));
  }
}

class FetchBatchReactor;

// One streamed event. Holds a slot of the batch's engine window until both
// the stream and the store are done with it (the last owner's destructor
// gives the slot back), which is what bounds a batch's memory.
struct PendingEvent {
  v1::FetchBatchEvent event;
  std::shared_ptr<FetchBatchHandle> window;  // null: holds no slot
  ~PendingEvent() {
    if (window != nullptr) window->Release(1);
  }
};

// The state of one FetchBatch call. Shared by the reactor (until OnDone), the
// engine (as its sink, until the last response) and the store's callbacks.
class BatchRun : public FetchSink,
                 public std::enable_shared_from_this<BatchRun> {
 public:
  BatchRun(std::string batch_id, uint32_t total, JsonCleaner cleaner,
           ResultStore* store, absl::Time created_at)
      : batch_id_(std::move(batch_id)),
        total_(total),
        cleaner_(std::move(cleaner)),
        store_(store),
        created_at_(created_at) {}

  // REQUIRES: called once, before Start().
  void Attach(FetchBatchReactor* reactor) { reactor_ = reactor; }
  void Start(FetchEngine& engine, std::vector<FetchSpec> specs,
             const BatchOptions& options);

  void OnFetched(FetchedResponse response,
                 const std::shared_ptr<FetchBatchHandle>& batch) override;
  void OnWriteDone(bool ok);
  void OnCancel();

 private:
  void OnStored(const absl::Status& status);
  void OnBatchRecorded(const absl::Status& status);
  void Enqueue(std::shared_ptr<PendingEvent> event)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeWrite() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeComplete() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::BatchState FinalState() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const std::string batch_id_;
  const uint32_t total_;
  const JsonCleaner cleaner_;
  ResultStore* const store_;
  const absl::Time created_at_;
  FetchBatchReactor* reactor_ = nullptr;  // set before any callback

  absl::Mutex mu_;
  std::shared_ptr<FetchBatchHandle> handle_ ABSL_GUARDED_BY(mu_);
  std::deque<std::shared_ptr<PendingEvent>> outbox_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool stream_broken_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  uint32_t received_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t succeeded_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t store_acks_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t stored_ ABSL_GUARDED_BY(mu_) = 0;
  std::string store_error_ ABSL_GUARDED_BY(mu_);
  // kFetching: results arriving; kRecording: FinishBatch queued in the
  // store; kRecorded: the summary may go out; kFinished: Finish() called.
  enum class Phase { kFetching, kRecording, kRecorded, kFinished };
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kFetching;
  bool summary_queued_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time finished_at_ ABSL_GUARDED_BY(mu_);
};

class FetchBatchReactor : public grpc::ServerWriteReactor<v1::FetchBatchEvent> {
 public:
  explicit FetchBatchReactor(std::shared_ptr<BatchRun> run)
      : run_(std::move(run)) {}
  void OnWriteDone(bool ok) override { run_->OnWriteDone(ok); }
  void OnCancel() override { run_->OnCancel(); }
  void OnDone() override { delete this; }

 private:
  const std::shared_ptr<BatchRun> run_;
};

// Answers a FetchBatch that fails before it starts.
class RejectedFetchReactor
    : public grpc::ServerWriteReactor<v1::FetchBatchEvent> {
 public:
  explicit RejectedFetchReactor(const absl::Status& status) {
    Finish(ToGrpc(status));
  }
  void OnDone() override { delete this; }
};

void BatchRun::Start(FetchEngine& engine, std::vector<FetchSpec> specs,
                     const BatchOptions& options) {
  auto accepted = std::make_shared<PendingEvent>();
  accepted->event.mutable_accepted()->set_batch_id(batch_id_);
  accepted->event.mutable_accepted()->set_total(total_);
  {
    absl::MutexLock lock(&mu_);
    Enqueue(std::move(accepted));
  }
  std::shared_ptr<FetchBatchHandle> handle =
      engine.Submit(std::move(specs), options, shared_from_this());
  absl::MutexLock lock(&mu_);
  handle_ = std::move(handle);
  if (cancelled_) handle_->Cancel();
}

void BatchRun::OnFetched(FetchedResponse response,
                         const std::shared_ptr<FetchBatchHandle>& batch) {
  auto pending = std::make_shared<PendingEvent>();
  pending->window = batch;
  v1::FetchResult* result = pending->event.mutable_result();
  FillResult(response, cleaner_, result);
  const bool ok = result->outcome() == v1::OUTCOME_OK;
  if (store_ != nullptr) {
    std::shared_ptr<const v1::FetchResult> row(pending, result);
    store_->AppendResult(batch_id_, std::move(row), absl::Now(),
                         [self = shared_from_this()](absl::Status status) {
                           self->OnStored(status);
                         });
  }
  absl::MutexLock lock(&mu_);
  ++received_;
  if (ok) ++succeeded_;
  Enqueue(std::move(pending));
  MaybeComplete();
}

void BatchRun::OnStored(const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  ++store_acks_;
  if (status.ok()) {
    ++stored_;
  } else if (store_error_.empty()) {
    store_error_ = std::string(status.message());
  }
  MaybeComplete();
}

void BatchRun::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  writing_ = false;
  const bool was_summary = outbox_.front()->event.has_summary();
  outbox_.pop_front();
  if (!ok && !stream_broken_) {
    // The client is gone: stop fetching, keep storing what arrives.
    stream_broken_ = true;
    cancelled_ = true;
    outbox_.clear();
    if (handle_ != nullptr) handle_->Cancel();
  }
  if (was_summary && ok) {
    phase_ = Phase::kFinished;
    if (store_error_.empty()) {
      reactor_->Finish(grpc::Status::OK);
    } else {
      reactor_->Finish(grpc::Status(
          grpc::StatusCode::UNAVAILABLE,
          absl::StrCat(total_ - stored_, " of ", total_,
                       " results could not be stored: ", store_error_)));
    }
    return;
  }
  MaybeWrite();
  MaybeComplete();
}

void BatchRun::OnCancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  stream_broken_ = true;
  // Keep the event being written: its OnWriteDone still comes.
  while (outbox_.size() > (writing_ ? 1u : 0u)) outbox_.pop_back();
  if (handle_ != nullptr) handle_->Cancel();
  MaybeComplete();
}

void BatchRun::Enqueue(std::shared_ptr<PendingEvent> event) {
  if (stream_broken_) return;
  outbox_.push_back(std::move(event));
  MaybeWrite();
}

void BatchRun::MaybeWrite() {
  if (writing_ || outbox_.empty() || stream_broken_ ||
      phase_ == Phase::kFinished) {
    return;
  }
  writing_ = true;
  grpc::WriteOptions options;
  // More events are queued behind this one: let gRPC coalesce them.
  if (outbox_.size() > 1) options.set_buffer_hint();
  reactor_->StartWrite(&outbox_.front()->event, options);
}

v1::BatchState BatchRun::FinalState() const {
  if (cancelled_) return v1::BATCH_STATE_CANCELLED;
  if (store_ != nullptr && stored_ < total_) return v1::BATCH_STATE_FAILED;
  return v1::BATCH_STATE_DONE;
}

void BatchRun::MaybeComplete() {
  if (phase_ == Phase::kFetching) {
    if (received_ < total_) return;
    // Microsecond precision: what the database keeps, so that the streamed
    // summary and GetBatch agree exactly.
    finished_at_ = absl::FromUnixMicros(absl::ToUnixMicros(absl::Now()));
    if (store_ != nullptr) {
      if (store_acks_ < total_) return;
      phase_ = Phase::kRecording;
      BatchRecord record;
      record.batch_id = batch_id_;
      record.state = FinalState();
      record.total = total_;
      record.succeeded = succeeded_;
      record.failed = total_ - succeeded_;
      record.stored = stored_;
      record.created_at = created_at_;
      record.finished_at = finished_at_;
      // The store runs `done` on its own thread, never inline.
      store_->FinishBatch(record,
                          [self = shared_from_this()](absl::Status status) {
                            self->OnBatchRecorded(status);
                          });
      return;
    }
    phase_ = Phase::kRecorded;
  }
  if (phase_ != Phase::kRecorded) return;
  if (stream_broken_) {
    if (writing_) return;  // its OnWriteDone(false) is still to come
    phase_ = Phase::kFinished;
    reactor_->Finish(grpc::Status(grpc::StatusCode::CANCELLED,
                                  "batch cancelled; unfinished requests were "
                                  "recorded as OUTCOME_CANCELLED"));
    return;
  }
  if (summary_queued_) return;
  summary_queued_ = true;
  auto summary = std::make_shared<PendingEvent>();
  v1::BatchSummary* s = summary->event.mutable_summary();
  s->set_batch_id(batch_id_);
  s->set_state(FinalState());
  s->set_total(total_);
  s->set_succeeded(succeeded_);
  s->set_failed(total_ - succeeded_);
  s->set_stored(stored_);
  *s->mutable_created_at() =
      TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(created_at_));
  *s->mutable_finished_at() =
      TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(finished_at_));
  Enqueue(std::move(summary));
}

void BatchRun::OnBatchRecorded(const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  if (!status.ok() && store_error_.empty()) {
    store_error_ = std::string(status.message());
  }
  phase_ = Phase::kRecorded;
  MaybeComplete();
}

}  // namespace

BatchFetcherService::BatchFetcherService(const ServiceOptions& options,
                                         FetchEngine* engine,
                                         ResultStore* store)
    : options_(options), engine_(engine), store_(store) {}

grpc::ServerWriteReactor<v1::FetchBatchEvent>* BatchFetcherService::FetchBatch(
    grpc::CallbackServerContext* context,
    const v1::FetchBatchRequest* request) {
  const auto reject = [](absl::Status status) {
    return new RejectedFetchReactor(status);
  };
  const int n = request->requests_size();
  if (n == 0) {
    return reject(absl::InvalidArgumentError("the batch has no requests"));
  }
  if (static_cast<uint32_t>(n) > options_.max_batch_size) {
    return reject(absl::InvalidArgumentError(absl::StrCat(
        "the batch has ", n, " requests; at most ", options_.max_batch_size,
        " are allowed (--max_batch_size)")));
  }
  BatchOptions batch_options;
  uint32_t concurrency = request->concurrency() == 0
                             ? options_.default_concurrency
                             : request->concurrency();
  concurrency = std::min(concurrency, options_.max_concurrency);
  batch_options.concurrency = static_cast<int>(std::max(concurrency, 1u));
  // Twice the concurrency: transfers keep going while the previous round
  // of results is still being written and stored.
  batch_options.window = 2 * batch_options.concurrency;
  if (request->has_timeout()) {
    const auto& t = request->timeout();
    if (t.seconds() < 0 || t.nanos() < 0) {
      return reject(absl::InvalidArgumentError("timeout must not be negative"));
    }
    const absl::Duration timeout =
        absl::Seconds(t.seconds()) + absl::Nanoseconds(t.nanos());
    if (timeout > options_.max_timeout) {
      return reject(absl::InvalidArgumentError(absl::StrCat(
          "timeout ", absl::FormatDuration(timeout), " exceeds the maximum ",
          absl::FormatDuration(options_.max_timeout), " (--max_timeout)")));
    }
    batch_options.timeout = timeout == absl::ZeroDuration()
                                ? options_.default_timeout
                                : std::max(timeout, absl::Milliseconds(1));
  } else {
    batch_options.timeout = options_.default_timeout;
  }
  batch_options.per_host_concurrency =
      static_cast<int>(request->per_host_concurrency() == 0
                           ? options_.default_per_host_concurrency
                           : request->per_host_concurrency());
  absl::StatusOr<RetryOptions> retry =
      RetryFromRequest(request->retry(), options_.max_attempts);
  if (!retry.ok()) return reject(retry.status());
  batch_options.retry = *std::move(retry);
  if (request->has_deadline()) {
    const auto& d = request->deadline();
    if (d.seconds() < 0 || d.nanos() < 0) {
      return reject(
          absl::InvalidArgumentError("deadline must not be negative"));
    }
    if (FromProto(d) > absl::ZeroDuration()) {
      batch_options.deadline = absl::Now() + FromProto(d);
    }
  }
  // The caller's gRPC deadline bounds the batch too (the smaller wins); the
  // call itself is cancelled when it passes.
  const absl::Time grpc_deadline = absl::FromChrono(context->deadline());
  if (grpc_deadline < absl::Now() + absl::Hours(24 * 365)) {  // set at all
    batch_options.deadline = std::min(batch_options.deadline, grpc_deadline);
  }

  JsonCleaner::Extract extract(request->extract().begin(),
                               request->extract().end());
  // Map order is unspecified; a sorted projection is stable across calls.
  std::sort(extract.begin(), extract.end());
  absl::StatusOr<JsonCleaner> cleaner = JsonCleaner::Create(extract);
  if (!cleaner.ok()) return reject(cleaner.status());

  std::string batch_id = request->batch_id();
  if (batch_id.empty()) {
    batch_id = NewBatchId();
  } else if (absl::Status valid = ValidateBatchId(batch_id); !valid.ok()) {
    return reject(valid);
  }
  const absl::Time created_at =
      absl::FromUnixMicros(absl::ToUnixMicros(absl::Now()));
  if (store_ != nullptr) {
    BatchRecord record;
    record.batch_id = batch_id;
    record.state = v1::BATCH_STATE_RUNNING;
    record.total = static_cast<uint32_t>(n);
    record.created_at = created_at;
    absl::Status created = store_->CreateBatch(record);
    if (absl::IsUnavailable(created)) {
      return reject(absl::UnavailableError(
          absl::StrCat("result database unavailable: ", created.message())));
    }
    if (!created.ok()) return reject(created);
  }

  std::vector<FetchSpec> specs(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const v1::FetchRequest& in = request->requests(i);
    FetchSpec& spec = specs[static_cast<size_t>(i)];
    spec.index = static_cast<uint32_t>(i);
    spec.url = in.url();
    spec.method = in.method();
    spec.body = in.body();
    spec.headers.assign(in.headers().begin(), in.headers().end());
  }
  auto run =
      std::make_shared<BatchRun>(batch_id, static_cast<uint32_t>(n),
                                 *std::move(cleaner), store_, created_at);
  auto* reactor = new FetchBatchReactor(run);
  run->Attach(reactor);
  run->Start(*engine_, std::move(specs), batch_options);
  return reactor;
}

grpc::ServerUnaryReactor* BatchFetcherService::GetBatch(
    grpc::CallbackServerContext* context, const v1::GetBatchRequest* request,
    v1::BatchSummary* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (store_ == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                                 "this server runs with --store=none"));
    return reactor;
  }
  if (absl::Status valid = ValidateBatchId(request->batch_id()); !valid.ok()) {
    reactor->Finish(ToGrpc(valid));
    return reactor;
  }
  absl::StatusOr<v1::BatchSummary> summary =
      store_->GetBatch(request->batch_id());
  if (summary.ok()) *response = *std::move(summary);
  reactor->Finish(ToGrpc(summary.status()));
  return reactor;
}

grpc::ServerUnaryReactor* BatchFetcherService::ListResults(
    grpc::CallbackServerContext* context, const v1::ListResultsRequest* request,
    v1::ListResultsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (store_ == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                                 "this server runs with --store=none"));
    return reactor;
  }
  if (absl::Status valid = ValidateBatchId(request->batch_id()); !valid.ok()) {
    reactor->Finish(ToGrpc(valid));
    return reactor;
  }
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
  reactor->Finish(ToGrpc(page.status()));
  return reactor;
}

}  // namespace batchfetch

#include "service/api/batch_fetcher_service.h"

#include <openssl/rand.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "service/api/batch_list_token.h"
#include "service/api/fetch_batch_reactor.h"
#include "service/api/grpc_status.h"
#include "service/api/page_token.h"
#include "service/api/watch_batch_reactor.h"
#include "service/base/log.h"
#include "service/batch/batch_id.h"
#include "service/batch/batch_run.h"
#include "service/batch/result_conversion.h"

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

std::optional<BatchFetcherService::Caller> BatchFetcherService::AdmitRead(
    const grpc::CallbackServerContext& context, const std::string& batch_id,
    grpc::ServerUnaryReactor* reactor) const {
  absl::StatusOr<Caller> caller = Identify(context);
  if (!caller.ok()) {
    reactor->Finish(ToGrpcStatus(caller.status()));
    return std::nullopt;
  }
  if (!CheckReadable(store_, batch_id, reactor)) return std::nullopt;
  return *std::move(caller);
}

BatchFetcherService::BatchFetcherService(
    const ServiceOptions& options, FetchEngine* engine, ResultStore* store,
    const TokenAuthenticator* authenticator, const Clock* clock)
    : options_(options),
      engine_(engine),
      store_(store),
      authenticator_(authenticator),
      clock_(clock),
      limiter_(ActiveBatchLimiter::Limits{
          options.max_active_batches, options.max_active_batches_per_caller}),
      executor_(std::max(options.store_threads, 1), options.store_queue,
                Executor::ThreadHooks{options.store_thread_init,
                                      options.store_thread_end}) {}

BatchFetcherService::~BatchFetcherService() {
  // A takeover still queued runs as draining: it takes nothing over.
  draining_.store(true, std::memory_order_release);
  executor_.Shutdown();
}

absl::StatusOr<BatchFetcherService::Caller> BatchFetcherService::Identify(
    const grpc::CallbackServerContext& context) const {
  Caller caller;
  if (authenticator_ == nullptr) {
    caller.limit_key = absl::StrCat("peer ", PeerAddressKey(context.peer()));
    caller.scope = ReadScope::AnyOwner();
    return caller;
  }
  std::vector<std::string_view> authorization;
  auto [begin, end] = context.client_metadata().equal_range("authorization");
  for (auto it = begin; it != end; ++it) {
    authorization.emplace_back(it->second.data(), it->second.size());
  }
  absl::StatusOr<std::string> identity =
      authenticator_->Authenticate(authorization);
  if (!identity.ok()) return identity.status();
  caller.owner = *std::move(identity);
  caller.limit_key = absl::StrCat("identity ", caller.owner);
  caller.scope = ReadScope::OwnedBy(caller.owner);
  return caller;
}

grpc::ServerWriteReactor<v1::FetchBatchEvent>* BatchFetcherService::FetchBatch(
    grpc::CallbackServerContext* context,
    const v1::FetchBatchRequest* request) {
  auto* reactor = new FetchBatchReactor(context, clock_);
  absl::StatusOr<Caller> caller = Identify(*context);
  if (!caller.ok()) {
    reactor->Reject(caller.status());
    return reactor;
  }
  if (draining_.load(std::memory_order_acquire)) {
    reactor->Reject(absl::UnavailableError(
        "the server is draining (shutting down); retry on another instance"));
    return reactor;
  }
  if (request->detach() && store_ == nullptr) {
    reactor->Reject(absl::UnimplementedError(
        "detach: this server runs with --store=none (a detached batch's "
        "results would be lost)"));
    return reactor;
  }
  CallInfo call;
  call.now = clock_->WallNow();
  // Detached: the call's deadline ends the call, not the batch.
  call.grpc_deadline = request->detach()
                           ? absl::InfiniteFuture()
                           : absl::FromChrono(context->deadline());
  absl::StatusOr<BatchPlan> plan = TranslateRequest(*request, options_, call);
  if (!plan.ok()) {
    reactor->Reject(plan.status());
    return reactor;
  }
  absl::StatusOr<ActiveBatchLimiter::Lease> lease =
      limiter_.TryAcquire(caller->limit_key);
  if (!lease.ok()) {
    reactor->Reject(lease.status());
    return reactor;
  }
  reactor->HoldUntilFinished(*std::move(lease));
  if (request->detach()) reactor->SetDetached();
  if (store_ == nullptr) {  // no round trip: start here
    if (plan->resume) {
      reactor->Reject(absl::UnimplementedError(
          "resume: this server runs with --store=none (nothing is stored to "
          "resume from)"));
      return reactor;
    }
    CreateAndRun(reactor, *std::move(plan), request, *std::move(caller));
    return reactor;
  }
  // `request` stays valid until the reactor finishes, which is after
  // CreateAndRun has used it.
  absl::Status queued =
      executor_.Submit([this, reactor, plan = *std::move(plan), request,
                        caller = *std::move(caller)]() mutable {
        CreateAndRun(reactor, std::move(plan), request, std::move(caller));
      });
  if (!queued.ok()) reactor->Reject(queued);
  return reactor;
}

void BatchFetcherService::CreateAndRun(FetchBatchReactor* reactor,
                                       BatchPlan plan,
                                       const v1::FetchBatchRequest* request,
                                       Caller caller) {
  std::vector<std::shared_ptr<const v1::FetchBatchEvent>> resumed;
  if (store_ != nullptr && plan.resume) {
    absl::Status prepared =
        PrepareResume(*request, caller.scope, plan, &resumed);
    if (!prepared.ok()) {
      reactor->Reject(prepared);
      return;
    }
  } else if (store_ != nullptr) {
    // A batch_id taken by another owner answers ALREADY_EXISTS, as one of
    // the caller's own: batch ids are one namespace, and the answer says
    // only that the id is taken, never whose it is or what it holds.
    BatchRecord record;
    record.batch_id = plan.batch_id;
    record.owner = caller.owner;
    record.state = v1::BATCH_STATE_RUNNING;
    record.total = plan.total;
    record.created_at = plan.created_at;
    // What a resume needs (the hash of its request list) and, for a
    // detached batch, what a takeover needs (the request, without URL
    // credentials).
    record.request = StoredRequestForTakeover(*request, plan.batch_id);
    record.requests_sha256 = RequestsSha256(*request);
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
  } else if (RunningHere(plan.batch_id)) {
    // --store=none records no ids, but one running here is still taken.
    // (Two calls with the same new id at the same instant may both pass.)
    reactor->Reject(absl::AlreadyExistsError(absl::StrCat(
        "batch_id '", plan.batch_id, "' is running on this server")));
    return;
  }
  std::shared_ptr<BatchBroadcaster> broadcaster;
  std::shared_ptr<BatchRun> run = MakeRun(
      plan, std::move(resumed), std::move(caller.owner), reactor, &broadcaster);
  reactor->Run(
      std::move(run),
      [&](std::shared_ptr<FetchSink> sink) {
        return engine_->Submit(std::move(plan.specs), plan.options,
                               std::move(sink));
      },
      broadcaster.get());
}

std::shared_ptr<BatchRun> BatchFetcherService::MakeRun(
    BatchPlan& plan,
    std::vector<std::shared_ptr<const v1::FetchBatchEvent>> resumed,
    std::string owner, BatchObserver* primary,
    std::shared_ptr<BatchBroadcaster>* broadcaster) {
  BatchRun::Params params;
  params.batch_id = plan.batch_id;
  params.total = plan.total;
  params.created_at = plan.created_at;
  params.store = store_;
  params.clock = clock_;
  params.stats = options_.batch_stats;
  params.resumed_results = std::move(resumed);
  params.owner = std::move(owner);
  params.concurrency = static_cast<uint32_t>(plan.options.concurrency);
  params.resume = plan.resume;
  auto run =
      std::make_shared<BatchRun>(std::move(params), std::move(plan.cleaner));
  bool cancel_at_once = false;
  {
    absl::MutexLock lock(&runs_mu_);
    runs_.erase(std::remove_if(runs_.begin(), runs_.end(),
                               [](const std::weak_ptr<BatchRun>& r) {
                                 return r.expired();
                               }),
                runs_.end());
    runs_.push_back(run);
    cancel_at_once = cancel_runs_;
  }
  // The grace is over already: the run starts cancelled (every request is
  // still recorded).
  if (cancel_at_once) run->Cancel();
  // WatchBatch streams of this batch subscribe to its broadcaster, which
  // passes every call on to `primary` (the caller's reactor, or nobody's).
  *broadcaster = BatchBroadcaster::Create(primary);
  {
    absl::MutexLock lock(&runs_mu_);
    for (auto it = live_runs_.begin(); it != live_runs_.end();) {
      it = it->second.run.expired() ? live_runs_.erase(it) : std::next(it);
    }
    live_runs_[plan.batch_id] = LiveRun{run, *broadcaster};
  }
  return run;
}

bool BatchFetcherService::RunningHere(const std::string& batch_id) {
  absl::MutexLock lock(&runs_mu_);
  auto it = live_runs_.find(batch_id);
  return it != live_runs_.end() && !it->second.run.expired();
}

std::shared_ptr<BatchBroadcaster> BatchFetcherService::FindLive(
    const std::string& batch_id) {
  absl::MutexLock lock(&runs_mu_);
  auto it = live_runs_.find(batch_id);
  if (it == live_runs_.end()) return nullptr;
  return it->second.broadcaster.lock();
}

bool BatchFetcherService::CancelLocalBatch(const std::string& batch_id) {
  std::shared_ptr<BatchRun> run;
  {
    absl::MutexLock lock(&runs_mu_);
    auto it = live_runs_.find(batch_id);
    if (it != live_runs_.end()) run = it->second.run.lock();
  }
  if (run == nullptr) return false;
  run->Cancel();  // outside the lock: the run may call its observer
  return true;
}

void BatchFetcherService::TakeOverInterrupted(
    std::vector<std::string> batch_ids) {
  if (store_ == nullptr) return;
  {
    absl::MutexLock lock(&takeover_mu_);
    if (draining_.load(std::memory_order_acquire)) {
      takeover_backlog_.Clear();
      return;
    }
    const size_t dropped = takeover_backlog_.Add(batch_ids);
    if (dropped > 0) {
      LogEvent(LogLevel::kWarning, "batch_takeover_backlog_full")
          .Add("dropped", static_cast<int64_t>(dropped));
    }
    if (takeover_queued_ || takeover_backlog_.size() == 0) return;
    takeover_queued_ = true;
  }
  absl::Status queued = executor_.Submit([this] { RunTakeovers(); });
  if (!queued.ok()) {
    // The executor is full (or shutting down): the backlog waits for the
    // next sweep's call.
    absl::MutexLock lock(&takeover_mu_);
    takeover_queued_ = false;
  }
}

void BatchFetcherService::RunTakeovers() {
  std::vector<TakeoverBacklog::Entry> due;
  {
    absl::MutexLock lock(&takeover_mu_);
    due = takeover_backlog_.TakeAll();
  }
  for (TakeoverBacklog::Entry& entry : due) {
    const TakeoverOutcome outcome = TryTakeOver(entry.batch_id);
    if (outcome == TakeoverOutcome::kNoRoom && !entry.deferred) {
      LogEvent(LogLevel::kInfo, "batch_takeover_deferred")
          .Add("batch_id", entry.batch_id)
          .Add("reason",
               "the active-batch limit is reached; tried again at each "
               "lease sweep while this replica runs");
    }
    absl::MutexLock lock(&takeover_mu_);
    if (!draining_.load(std::memory_order_acquire)) {
      takeover_backlog_.Settle(std::move(entry), outcome);
    }
  }
  absl::MutexLock lock(&takeover_mu_);
  takeover_queued_ = false;
}

TakeoverOutcome BatchFetcherService::TryTakeOver(const std::string& batch_id) {
  const auto failed = [&batch_id](const absl::Status& error) {
    LogEvent(LogLevel::kWarning, "batch_takeover_failed")
        .Add("batch_id", batch_id)
        .Add("error", std::string(error.message()));
    return absl::IsUnavailable(error) ? TakeoverOutcome::kUnavailable
                                      : TakeoverOutcome::kFailed;
  };
  absl::StatusOr<StoredBatch> stored = store_->ReadStoredBatch(batch_id);
  if (!stored.ok()) return failed(stored.status());
  v1::FetchBatchRequest request;
  if (!request.ParseFromString(stored->request)) {
    return failed(absl::DataLossError("the stored request does not parse"));
  }
  const TakeoverOutcome decision =
      DecideTakeover(draining_.load(std::memory_order_acquire), stored->state,
                     stored->cancel_requested, request);
  if (decision != TakeoverOutcome::kTakenOver) {
    LogEvent(LogLevel::kInfo, "batch_takeover_skipped")
        .Add("batch_id", batch_id)
        .Add("reason", TakeoverOutcomeName(decision));
    return decision;
  }
  // The stored request, resumed: its hash is the stored one, so BeginResume
  // accepts it; a new run gets the request's own deadline from now, as a
  // resume by hand would.
  request.set_batch_id(batch_id);
  request.set_resume(true);
  CallInfo call;
  call.now = clock_->WallNow();
  call.grpc_deadline = absl::InfiniteFuture();
  absl::StatusOr<BatchPlan> plan = TranslateRequest(request, options_, call);
  if (!plan.ok()) return failed(plan.status());
  // Without identities the caller who detached the batch is not known (its
  // peer address is not stored): the takeover counts server-wide only, as
  // a caller of its own, rather than all takeovers sharing one bucket.
  const std::string limit_key = stored->owner.empty()
                                    ? absl::StrCat("takeover of ", batch_id)
                                    : absl::StrCat("identity ", stored->owner);
  absl::StatusOr<ActiveBatchLimiter::Lease> lease =
      limiter_.TryAcquire(limit_key);
  if (!lease.ok()) {
    // UNAVAILABLE: the limiter closed, the drain has begun.
    return absl::IsUnavailable(lease.status()) ? TakeoverOutcome::kDraining
                                               : TakeoverOutcome::kNoRoom;
  }
  std::vector<std::shared_ptr<const v1::FetchBatchEvent>> resumed;
  absl::Status prepared = PrepareResume(
      request, ReadScope::OwnedBy(stored->owner), *plan, &resumed);
  if (!prepared.ok()) return failed(prepared);
  const size_t to_fetch = plan->specs.size();
  auto* observer = new DetachedRunObserver(*std::move(lease));
  std::shared_ptr<BatchBroadcaster> broadcaster;
  std::shared_ptr<BatchRun> run =
      MakeRun(*plan, std::move(resumed), stored->owner, observer, &broadcaster);
  observer->Hold(run);
  LogEvent(LogLevel::kInfo, "batch_taken_over")
      .Add("batch_id", batch_id)
      .Add("previous_replica", stored->lease_owner)
      .Add("owner", stored->owner)
      .Add("total", static_cast<int64_t>(plan->total))
      .Add("to_fetch", static_cast<int64_t>(to_fetch));
  run->Start(broadcaster.get(), [&](std::shared_ptr<FetchSink> sink) {
    return engine_->Submit(std::move(plan->specs), plan->options,
                           std::move(sink));
  });
  return TakeoverOutcome::kTakenOver;
}

absl::Status BatchFetcherService::PrepareResume(
    const v1::FetchBatchRequest& request, const ReadScope& scope,
    BatchPlan& plan,
    std::vector<std::shared_ptr<const v1::FetchBatchEvent>>* resumed) {
  absl::StatusOr<ResumePlan> begun =
      store_->BeginResume(plan.batch_id, scope, RequestsSha256(request));
  if (absl::IsUnavailable(begun.status())) {
    return absl::UnavailableError(absl::StrCat("result database unavailable: ",
                                               begun.status().message()));
  }
  if (!begun.ok()) return begun.status();
  plan.created_at = begun->created_at;
  // The stored OK results, streamed first; BeginResume's list is the
  // authority (a row read here outside it is not counted), and an OK index
  // that cannot be read back is simply fetched again.
  std::vector<bool> ok(plan.total, false);
  for (uint32_t index : begun->ok_indices) {
    if (index < plan.total) ok[index] = true;
  }
  std::vector<bool> have(plan.total, false);
  constexpr uint32_t kPage = 1000;
  int64_t from = 0;
  while (from >= 0) {
    absl::StatusOr<ResultPage> page = store_->ListResults(
        plan.batch_id, scope, static_cast<uint32_t>(from), kPage);
    if (!page.ok()) {
      // The batch is RUNNING under our lease with nobody running it: record
      // it FAILED (resumable again), counting what is stored.
      BatchRecord failed;
      failed.batch_id = plan.batch_id;
      failed.state = v1::BATCH_STATE_FAILED;
      failed.total = plan.total;
      failed.succeeded = static_cast<uint32_t>(begun->ok_indices.size());
      failed.failed = plan.total - failed.succeeded;
      failed.stored = failed.succeeded;
      failed.created_at = begun->created_at;
      failed.finished_at = TruncateToMicros(clock_->WallNow());
      store_->FinishBatch(failed, [](ResultStore::WriteOutcome) {});
      return absl::IsUnavailable(page.status())
                 ? absl::UnavailableError(
                       absl::StrCat("result database unavailable: ",
                                    page.status().message()))
                 : page.status();
    }
    for (v1::FetchResult& r : page->results) {
      const uint32_t index = r.index();
      if (index >= plan.total || !ok[index] || have[index] ||
          r.outcome() != v1::OUTCOME_OK) {
        continue;
      }
      have[index] = true;
      auto event = std::make_shared<v1::FetchBatchEvent>();
      *event->mutable_result() = std::move(r);
      resumed->push_back(std::move(event));
    }
    from = page->next_index;
  }
  plan.specs.erase(
      std::remove_if(plan.specs.begin(), plan.specs.end(),
                     [&](const FetchSpec& spec) { return have[spec.index]; }),
      plan.specs.end());
  return absl::OkStatus();
}

void BatchFetcherService::StartDraining() {
  draining_.store(true, std::memory_order_release);
  // A FetchBatch that read draining_ == false just before may still be on
  // its way to TryAcquire: closing the limiter refuses it there, or, if it
  // got its lease first, active_batches() counts it once this returns.
  limiter_.Close();
}

void BatchFetcherService::CancelRunningBatches() {
  std::vector<std::shared_ptr<BatchRun>> running;
  {
    absl::MutexLock lock(&runs_mu_);
    cancel_runs_ = true;
    for (const std::weak_ptr<BatchRun>& weak : runs_) {
      if (std::shared_ptr<BatchRun> run = weak.lock()) {
        running.push_back(std::move(run));
      }
    }
  }
  // Outside the lock: a run may call its observer from Cancel.
  for (const std::shared_ptr<BatchRun>& run : running) run->Cancel();
}

grpc::ServerUnaryReactor* BatchFetcherService::GetBatch(
    grpc::CallbackServerContext* context, const v1::GetBatchRequest* request,
    v1::BatchSummary* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::optional<Caller> caller =
      AdmitRead(*context, request->batch_id(), reactor);
  if (!caller.has_value()) return reactor;
  // `request` and `response` stay valid until Finish.
  absl::Status queued = executor_.Submit(
      [this, reactor, request, response, scope = std::move(caller->scope)]() {
        absl::StatusOr<v1::BatchSummary> summary =
            store_->GetBatch(request->batch_id(), scope);
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
  std::optional<Caller> caller =
      AdmitRead(*context, request->batch_id(), reactor);
  if (!caller.has_value()) return reactor;
  uint32_t from = 0;
  if (!request->page_token().empty()) {
    absl::StatusOr<uint32_t> decoded =
        DecodePageToken(request->page_token(), request->batch_id());
    if (!decoded.ok()) {
      reactor->Finish(ToGrpcStatus(decoded.status()));
      return reactor;
    }
    from = *decoded;
  }
  uint32_t page_size = request->page_size() == 0 ? options_.default_page_size
                                                 : request->page_size();
  page_size = std::min(page_size, options_.max_page_size);
  // `request` and `response` stay valid until Finish.
  absl::Status queued =
      executor_.Submit([this, reactor, request, response, from, page_size,
                        scope = std::move(caller->scope)]() {
        absl::StatusOr<ResultPage> page =
            store_->ListResults(request->batch_id(), scope, from, page_size);
        if (page.ok()) {
          for (v1::FetchResult& r : page->results) {
            *response->add_results() = std::move(r);
          }
          if (page->next_index >= 0) {
            response->set_next_page_token(EncodePageToken(
                request->batch_id(), static_cast<uint32_t>(page->next_index)));
          } else if (page->batch_running) {
            response->set_more_may_come(true);
          }
        }
        reactor->Finish(ToGrpcStatus(page.status()));
      });
  if (!queued.ok()) reactor->Finish(ToGrpcStatus(queued));
  return reactor;
}

grpc::ServerWriteReactor<v1::FetchBatchEvent>* BatchFetcherService::WatchBatch(
    grpc::CallbackServerContext* context,
    const v1::WatchBatchRequest* request) {
  absl::StatusOr<Caller> caller = Identify(*context);
  WatchBatchReactor::Deps deps;
  deps.store = store_;
  deps.executor = &executor_;
  deps.find_live = [this](const std::string& batch_id) {
    return FindLive(batch_id);
  };
  auto* reactor = new WatchBatchReactor(
      std::move(deps), request->batch_id(), request->from_index(),
      caller.ok() ? caller->scope : ReadScope::OwnedBy(""));
  if (!caller.ok()) {
    reactor->Reject(caller.status());
    return reactor;
  }
  if (store_ == nullptr) {
    reactor->Reject(
        absl::UnimplementedError("this server runs with --store=none"));
    return reactor;
  }
  if (absl::Status valid = ValidateBatchId(request->batch_id()); !valid.ok()) {
    reactor->Reject(valid);
    return reactor;
  }
  reactor->Start();
  return reactor;
}

grpc::ServerUnaryReactor* BatchFetcherService::CancelBatch(
    grpc::CallbackServerContext* context, const v1::CancelBatchRequest* request,
    v1::BatchSummary* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::optional<Caller> caller =
      AdmitRead(*context, request->batch_id(), reactor);
  if (!caller.has_value()) return reactor;
  // `request` and `response` stay valid until Finish.
  absl::Status queued = executor_.Submit(
      [this, reactor, request, response, scope = std::move(caller->scope)]() {
        const std::string& batch_id = request->batch_id();
        absl::Status requested = store_->RequestCancel(batch_id, scope);
        if (!requested.ok()) {
          reactor->Finish(ToGrpcStatus(requested));
          return;
        }
        // Running here: cancel now rather than at the next poll (another
        // replica's CancelPoller finds the flag within about a second).
        const bool local = CancelLocalBatch(batch_id);
        LogEvent(LogLevel::kInfo, "batch_cancel_requested")
            .Add("batch_id", batch_id)
            .Add("running_here", local);
        absl::StatusOr<v1::BatchSummary> summary =
            store_->GetBatch(batch_id, scope);
        if (summary.ok()) *response = *std::move(summary);
        reactor->Finish(ToGrpcStatus(summary.status()));
      });
  if (!queued.ok()) reactor->Finish(ToGrpcStatus(queued));
  return reactor;
}

absl::StatusOr<std::string> BatchFetcherService::PageTokenKey() {
  {
    absl::MutexLock lock(&key_mu_);
    if (!page_token_key_.empty()) return page_token_key_;
  }
  // Read without key_mu_ (a database round trip must not hold up the other
  // callers); concurrent first readers may each read it, the first to
  // store its key wins and every caller returns that one.
  std::string key;
  absl::StatusOr<std::string> shared = store_->PageTokenKey();
  if (shared.ok()) {
    key = *std::move(shared);
  } else if (absl::IsUnimplemented(shared.status())) {
    // A store no replica shares: a key of this process's own.
    key.assign(32, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(key.data()),
                   static_cast<int>(key.size())) != 1) {
      return absl::InternalError("no random bytes for the page token key");
    }
  } else {
    return shared.status();  // not cached: asked again next time
  }
  absl::MutexLock lock(&key_mu_);
  if (page_token_key_.empty()) page_token_key_ = std::move(key);
  return page_token_key_;
}

grpc::ServerUnaryReactor* BatchFetcherService::ListBatches(
    grpc::CallbackServerContext* context, const v1::ListBatchesRequest* request,
    v1::ListBatchesResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<Caller> caller = Identify(*context);
  if (!caller.ok()) {
    reactor->Finish(ToGrpcStatus(caller.status()));
    return reactor;
  }
  if (store_ == nullptr) {
    reactor->Finish(kNoStore);
    return reactor;
  }
  constexpr uint32_t kDefaultBatchPage = 50;
  constexpr uint32_t kMaxBatchPage = 1000;
  if (request->page_size() > kMaxBatchPage) {
    reactor->Finish(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                     absl::StrCat("page_size: at most ", kMaxBatchPage,
                                  " (got ", request->page_size(), ")")));
    return reactor;
  }
  if (!v1::BatchState_IsValid(request->state())) {
    reactor->Finish(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("state: ", request->state(), " is not a BatchState")));
    return reactor;
  }
  BatchListQuery query;
  query.state = request->state();
  query.limit =
      request->page_size() == 0 ? kDefaultBatchPage : request->page_size();
  if (request->has_created_after()) {
    absl::StatusOr<absl::Time> after =
        FromProtoTimestamp(request->created_after());
    if (!after.ok()) {
      reactor->Finish(grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("created_after: ", after.status().message())));
      return reactor;
    }
    query.created_after = *after;
  }
  // `request` and `response` stay valid until Finish.
  absl::Status queued =
      executor_.Submit([this, reactor, request, response, query,
                        scope = std::move(caller->scope)]() mutable {
        absl::StatusOr<std::string> key = PageTokenKey();
        if (!key.ok()) {
          reactor->Finish(ToGrpcStatus(key.status()));
          return;
        }
        const std::string binding =
            BatchListBinding(scope, query.state, query.created_after);
        if (!request->page_token().empty()) {
          absl::StatusOr<BatchListCursor> cursor =
              DecodeBatchListToken(request->page_token(), binding, *key);
          if (!cursor.ok()) {
            reactor->Finish(ToGrpcStatus(cursor.status()));
            return;
          }
          query.has_cursor = true;
          query.cursor_created_at = cursor->created_at;
          query.cursor_batch_id = std::move(cursor->batch_id);
        }
        absl::StatusOr<BatchListPage> page = store_->ListBatches(scope, query);
        if (!page.ok()) {
          reactor->Finish(ToGrpcStatus(page.status()));
          return;
        }
        for (v1::BatchSummary& b : page->batches) {
          *response->add_batches() = std::move(b);
        }
        if (page->more && response->batches_size() > 0) {
          const v1::BatchSummary& last = *response->batches().rbegin();
          absl::StatusOr<absl::Time> created =
              FromProtoTimestamp(last.created_at());
          BatchListCursor cursor{created.ok() ? *created : absl::UnixEpoch(),
                                 last.batch_id()};
          response->set_next_page_token(
              EncodeBatchListToken(cursor, binding, *key));
        }
        reactor->Finish(grpc::Status::OK);
      });
  if (!queued.ok()) reactor->Finish(ToGrpcStatus(queued));
  return reactor;
}

}  // namespace batchfetch

#ifndef BATCHFETCH_SERVICE_API_BATCH_FETCHER_SERVICE_H_
#define BATCHFETCH_SERVICE_API_BATCH_FETCHER_SERVICE_H_

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "batchfetch/v1/batchfetch.grpc.pb.h"
#include "service/api/active_batch_limiter.h"
#include "service/api/batch_broadcaster.h"
#include "service/api/batch_takeover.h"
#include "service/api/executor.h"
#include "service/api/request_translation.h"
#include "service/api/service_options.h"
#include "service/api/token_authenticator.h"
#include "service/base/clock.h"
#include "service/batch/batch_run.h"
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
// Callers: with an authenticator, every handler first checks the call's
// `authorization: Bearer <token>` metadata (UNAUTHENTICATED without a valid
// one) and the token's name becomes the caller's identity: a batch is
// created with it as owner, and reads see only the caller's own batches
// (another's id answers NOT_FOUND, as an unknown id). The check is made
// here rather than in a server interceptor: gRPC's C++ interceptors cannot
// end a call with a status, and an AuthMetadataProcessor would cover the
// health and reflection services too (and needs TLS credentials); here it
// covers exactly this service's RPCs. Without an authenticator every caller
// is anonymous and sees every batch.
// FetchBatch is also admitted by an ActiveBatchLimiter (per identity, or
// per peer address without auth); the batch holds its place until its run
// has finished.
//
// Thread-safety: handlers run on gRPC threads. The engine, the store and the
// clock must outlive this service, and the service must outlive the server
// that hosts it (its destructor joins the executor, whose tasks finish the
// calls they serve).
class BatchFetcherService final : public v1::BatchFetcher::CallbackService {
 public:
  // `store` may be null: nothing is stored and reads are UNIMPLEMENTED.
  // `authenticator` may be null: auth is off. Both must outlive the service.
  BatchFetcherService(const ServiceOptions& options, FetchEngine* engine,
                      ResultStore* store,
                      const TokenAuthenticator* authenticator = nullptr,
                      const Clock* clock = Clock::Real());
  ~BatchFetcherService() override;

  // Drain, step 1 (SIGTERM): from now on FetchBatch answers UNAVAILABLE
  // ("draining"); running batches go on; reads are still served. Every
  // batch admitted before this returns is counted by active_batches().
  void StartDraining();
  // Drain, step 2 (the grace is over): cancels every batch still running,
  // and any that starts from now on, as a caller's cancel would (the
  // unfinished requests end CANCELLED and are stored; each caller gets its
  // results, the summary and CANCELLED). REQUIRES: StartDraining was called.
  void CancelRunningBatches();
  // Batches admitted and not yet finished (results stored), as the
  // ActiveBatchLimiter counts them: drain waits for 0.
  int active_batches() const { return limiter_.active(); }

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
  // Callers' batch control (issue 11). WatchBatch: a WatchBatchReactor
  // (live from this process's run when it runs here, else following the
  // store). CancelBatch: ResultStore::RequestCancel (carried to the
  // running replica by its CancelPoller), plus CancelLocalBatch at once
  // when the run is here. ListBatches: ResultStore::ListBatches with
  // HMAC-signed page tokens (batch_list_token.h) keyed by the store's
  // shared PageTokenKey. All need a store (UNIMPLEMENTED without).
  grpc::ServerWriteReactor<v1::FetchBatchEvent>* WatchBatch(
      grpc::CallbackServerContext* context,
      const v1::WatchBatchRequest* request) override;
  grpc::ServerUnaryReactor* CancelBatch(grpc::CallbackServerContext* context,
                                        const v1::CancelBatchRequest* request,
                                        v1::BatchSummary* response) override;
  grpc::ServerUnaryReactor* ListBatches(
      grpc::CallbackServerContext* context,
      const v1::ListBatchesRequest* request,
      v1::ListBatchesResponse* response) override;

  // Cancels the run of `batch_id` if it runs in this process (as a caller's
  // cancel would); false when it does not. For CancelBatch and the
  // CancelPoller (a cancel requested on another replica). Thread-safe;
  // never blocks on I/O.
  bool CancelLocalBatch(const std::string& batch_id)
      ABSL_LOCKS_EXCLUDED(runs_mu_);

  // Takeover (issue 11, "When a replica dies"): the LeaseKeeper hands over
  // the batches each of its sweeps marked INTERRUPTED (possibly none: each
  // call is also a round for the batches still waiting in the backlog).
  // Never blocks: the work is one executor task at a time. For each batch
  // (batch_takeover.h has the decisions and the backlog policy) it reads
  // the stored request (ResultStore::ReadStoredBatch) and, if the batch is
  // detached, still INTERRUPTED and not cancel-requested, admits it under
  // --max_active_batches (counted under the batch's owner, or under
  // "takeover" without auth) and resumes it as the resume path does
  // (PrepareResume: only the requests without a stored OK result are
  // fetched, under their original indices, in the original owner's
  // scope), running detached with no caller (DetachedRunObserver), so it
  // ends DONE as it would have. Logs `batch_taken_over` (batch_id,
  // previous_replica, owner, total, to_fetch), or `batch_takeover_skipped`
  // (info) / `batch_takeover_deferred` (info, no room, once per batch) /
  // `batch_takeover_failed` (warning, with the error; not retried, except
  // an unavailable database a few rounds). Draining: nothing is taken over
  // and the backlog is dropped. Thread-safe.
  void TakeOverInterrupted(std::vector<std::string> batch_ids)
      ABSL_LOCKS_EXCLUDED(takeover_mu_);

 private:
  // Who is calling.
  struct Caller {
    // The identity (token name) with auth; empty without.
    std::string owner;
    // The key ActiveBatchLimiter counts the caller under: the identity with
    // auth, the peer address (without its port) without.
    std::string limit_key;
    // The batches the caller's reads may see.
    ReadScope scope;
  };
  // Authenticates the call (UNAUTHENTICATED when auth is on and the call has
  // no valid bearer token).
  absl::StatusOr<Caller> Identify(
      const grpc::CallbackServerContext& context) const;
  // The start of a unary RPC about one stored batch: Identify, then the
  // store and `batch_id` checks. On failure `reactor` is finished with the
  // error and nullopt returned.
  std::optional<Caller> AdmitRead(const grpc::CallbackServerContext& context,
                                  const std::string& batch_id,
                                  grpc::ServerUnaryReactor* reactor) const;

  // Records the batch (with a store; or, with `plan.resume`, takes the
  // stored one up again: PrepareResume), then runs it on `reactor`. Runs on
  // an executor thread, or inline without a store. `request` is the call's
  // (valid until the reactor finishes).
  void CreateAndRun(FetchBatchReactor* reactor, BatchPlan plan,
                    const v1::FetchBatchRequest* request, Caller caller);
  // Resume, before the run: BeginResume (checks, deletes the stored non-OK
  // results, RUNNING under this replica's lease), then reads the stored OK
  // results into `resumed` (in index order) and leaves in `plan` only the
  // specs still to fetch, with the batch's original created_at. A read
  // that fails after BeginResume records the batch FAILED again (so it can
  // be resumed later) and returns the error.
  absl::Status PrepareResume(
      const v1::FetchBatchRequest& request, const ReadScope& scope,
      BatchPlan& plan,
      std::vector<std::shared_ptr<const v1::FetchBatchEvent>>* resumed);

  // Makes the run of `plan` (its specs still to fetch; `resumed`: the
  // stored results a resume streams first), registers it for the drain
  // (runs_) and by id (live_runs_, with a broadcaster that passes every
  // call on to `primary`), and cancels it at once if the drain's grace is
  // over. The caller starts it with `*broadcaster` as its observer.
  std::shared_ptr<BatchRun> MakeRun(
      BatchPlan& plan,
      std::vector<std::shared_ptr<const v1::FetchBatchEvent>> resumed,
      std::string owner, BatchObserver* primary,
      std::shared_ptr<BatchBroadcaster>* broadcaster)
      ABSL_LOCKS_EXCLUDED(runs_mu_);
  // Takeover: runs the backlog's batches once (an executor task; one at a
  // time, see takeover_queued_).
  void RunTakeovers() ABSL_LOCKS_EXCLUDED(takeover_mu_);
  // One batch's takeover attempt (blocks for a few round trips).
  TakeoverOutcome TryTakeOver(const std::string& batch_id);

  // The broadcaster of `batch_id`'s run in this process, if any.
  std::shared_ptr<BatchBroadcaster> FindLive(const std::string& batch_id)
      ABSL_LOCKS_EXCLUDED(runs_mu_);
  // Whether a run of `batch_id` is alive in this process.
  bool RunningHere(const std::string& batch_id) ABSL_LOCKS_EXCLUDED(runs_mu_);
  // The ListBatches token key: the store's shared one, or (a store without
  // one) a random key of this process; read once, then cached. Blocks for a
  // round trip the first time (executor only).
  absl::StatusOr<std::string> PageTokenKey() ABSL_LOCKS_EXCLUDED(key_mu_);

  // Constant after construction.
  const ServiceOptions options_;
  FetchEngine* const engine_;
  ResultStore* const store_;
  const TokenAuthenticator* const authenticator_;
  const Clock* const clock_;
  ActiveBatchLimiter limiter_;
  // Set by StartDraining; read by every FetchBatch.
  std::atomic<bool> draining_{false};
  absl::Mutex runs_mu_;
  // Set by CancelRunningBatches: a run created later is cancelled at once.
  bool cancel_runs_ ABSL_GUARDED_BY(runs_mu_) = false;
  // The runs started, for CancelRunningBatches; expired entries (finished
  // runs, their reactors gone) are pruned as new ones come.
  std::vector<std::weak_ptr<BatchRun>> runs_ ABSL_GUARDED_BY(runs_mu_);
  // The runs of this process by batch id, for WatchBatch (live results) and
  // cancels by id; entries whose run has gone are pruned as new ones come.
  // A resumed batch replaces its older entry.
  struct LiveRun {
    std::weak_ptr<BatchRun> run;
    std::weak_ptr<BatchBroadcaster> broadcaster;
  };
  std::map<std::string, LiveRun> live_runs_ ABSL_GUARDED_BY(runs_mu_);
  // Takeover: the interrupted batches waiting for a round, and whether a
  // RunTakeovers task is queued or running (so rounds never overlap).
  absl::Mutex takeover_mu_;
  TakeoverBacklog takeover_backlog_ ABSL_GUARDED_BY(takeover_mu_);
  bool takeover_queued_ ABSL_GUARDED_BY(takeover_mu_) = false;
  absl::Mutex key_mu_;
  std::string page_token_key_ ABSL_GUARDED_BY(key_mu_);  // empty: not read
  // Database round trips; joined by the destructor.
  Executor executor_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_API_BATCH_FETCHER_SERVICE_H_

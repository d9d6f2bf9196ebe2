#include "service/batch/batch_run.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "service/base/log.h"
#include "service/batch/result_conversion.h"
#include "service/fetch/request_validation.h"

namespace batchfetch {
namespace {

// One result and the engine-window slot it holds. The observer gets an
// aliasing pointer to `event`, the store one to the result inside it; when
// both are gone the slot goes back to the engine.
struct ResultSlot {
  v1::FetchBatchEvent event;
  std::shared_ptr<FetchBatchHandle> window;
  ~ResultSlot() {
    if (window != nullptr) window->Release(1);
  }
};

// One warning line per request the egress policy (or a forbidden redirect
// scheme) refused: who asked (batch, index), where to (host keys, not URLs:
// a path or query may hold tokens) and why (the error names the address and
// the rule). "final_host" is the redirect hop that was refused, when it is
// not the requested host. `result` is already redacted.
void LogBlocked(const std::string& batch_id, const v1::FetchResult& result) {
  const absl::StatusOr<std::string> host = HostKeyOf(result.url());
  LogEvent event(LogLevel::kWarning, "request_blocked");
  event.Add("batch_id", batch_id)
      .Add("index", result.index())
      .Add("host", host.ok() ? *host : std::string());
  if (!result.final_url().empty()) {
    const absl::StatusOr<std::string> final_host =
        HostKeyOf(result.final_url());
    if (final_host.ok() && (!host.ok() || *final_host != *host)) {
      event.Add("final_host", *final_host);
    }
  }
  event.Add("error", result.error());
}

}  // namespace

BatchRun::BatchRun(Params params, JsonCleaner cleaner)
    : batch_id_(std::move(params.batch_id)),
      total_(params.total),
      created_at_(params.created_at),
      owner_(std::move(params.owner)),
      concurrency_(params.concurrency),
      resume_(params.resume),
      store_(params.store),
      clock_(params.clock),
      cleaner_(std::move(cleaner)),
      stats_(params.stats) {
  absl::MutexLock lock(&mu_);
  resumed_ = std::move(params.resumed_results);
  // Already stored OK: received, succeeded, acknowledged and stored.
  const auto resumed = static_cast<uint32_t>(resumed_.size());
  received_ = succeeded_ = store_acks_ = resumed;
  if (store_ != nullptr) stored_ = resumed;
}

BatchRun::~BatchRun() {
  absl::MutexLock lock(&mu_);
  if (counted_active_) stats_->batches_active.Add(-1);
}

void BatchRun::Start(BatchObserver* observer, Submit submit) {
  auto accepted = std::make_shared<v1::FetchBatchEvent>();
  accepted->mutable_accepted()->set_batch_id(batch_id_);
  accepted->mutable_accepted()->set_total(total_);
  std::optional<Actions> nothing_to_fetch;
  {
    absl::MutexLock lock(&mu_);
    LogEvent(LogLevel::kInfo, "batch_accepted")
        .Add("batch_id", batch_id_)
        .Add("owner", owner_)
        .Add("total", total_)
        .Add("concurrency", concurrency_)
        .Add("resume", resume_)
        .Add("resumed_ok", static_cast<uint32_t>(resumed_.size()));
    started_ = clock_->MonoNow();
    observer_ = observer;
    if (stats_ != nullptr && phase_ != Phase::kFinished) {
      stats_->batches_active.Add(1);
      counted_active_ = true;
    }
    Notice notice;
    notice.kind = Notice::Kind::kAccepted;
    notice.event = std::move(accepted);
    notices_.push_back(std::move(notice));
    for (std::shared_ptr<const v1::FetchBatchEvent>& event : resumed_) {
      Notice resumed;
      resumed.kind = Notice::Kind::kResult;
      resumed.event = std::move(event);
      notices_.push_back(std::move(resumed));
    }
    resumed_.clear();
    if (received_ >= total_) {
      // Every result is stored already: nothing to submit.
      nothing_to_fetch = MaybeComplete();
    }
  }
  if (nothing_to_fetch.has_value()) {
    Act(*std::move(nothing_to_fetch));
    return;
  }
  DrainNotices();
  // Responses may arrive (OnFetched) before Submit returns.
  std::shared_ptr<FetchBatchHandle> handle = submit(shared_from_this());
  bool cancel = false;
  CancelMode mode = CancelMode::kCancel;
  {
    absl::MutexLock lock(&mu_);
    handle_ = handle;
    // A Cancel before this point found no handle and left it to us.
    cancel = cancelled_;
    mode = cancel_mode_;
  }
  if (cancel && handle != nullptr) Apply(*handle, mode);
}

void BatchRun::Cancel(CancelMode mode) {
  std::shared_ptr<FetchBatchHandle> handle;
  {
    absl::MutexLock lock(&mu_);
    if (cancelled_ || phase_ != Phase::kFetching) return;
    cancelled_ = true;
    cancel_mode_ = mode;
    handle = handle_;  // null before Start has it: Start applies it
  }
  if (handle != nullptr) Apply(*handle, mode);
}

void BatchRun::Apply(FetchBatchHandle& handle, CancelMode mode) {
  if (mode == CancelMode::kAtDeadline) {
    handle.EndAtDeadline();
  } else {
    handle.Cancel();
  }
}

void BatchRun::OnFetched(FetchedResponse response,
                         const std::shared_ptr<FetchBatchHandle>& batch) {
  auto slot = std::make_shared<ResultSlot>();
  slot->window = batch;
  v1::FetchResult* result = slot->event.mutable_result();
  FillResult(response, cleaner_, result);
  const bool ok = result->outcome() == v1::OUTCOME_OK;
  if (stats_ != nullptr) {
    stats_->results[result->outcome()].Increment();
    // A request that never started (cancelled or refused before I/O) has
    // no upstream time to show.
    if (response.attempts > 0) {
      stats_->upstream_seconds[result->outcome()]->Observe(
          absl::ToDoubleSeconds(response.timings.total));
    }
  }
  if (result->outcome() == v1::OUTCOME_BLOCKED) LogBlocked(batch_id_, *result);
  const v1::FetchBatchEvent* event = &slot->event;
  std::shared_ptr<const v1::FetchBatchEvent> shared_event(slot, event);
  if (store_ != nullptr) {
    // Streamed only once the store has it durable (or gave up on it), so a
    // crash can never lose a result the caller already saw (see the class
    // comment). The store's copy and the observer's share the slot.
    store_->AppendResult(
        batch_id_, std::shared_ptr<const v1::FetchResult>(slot, result),
        clock_->WallNow(),
        [self = shared_from_this(),
         shared_event](ResultStore::WriteOutcome outcome) mutable {
          self->OnStored(std::move(shared_event), outcome);
        });
  }
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    ++received_;
    if (ok) ++succeeded_;
    if (store_ == nullptr) {
      Notice notice;
      notice.kind = Notice::Kind::kResult;
      notice.event = std::move(shared_event);
      notices_.push_back(std::move(notice));
    }
    actions = MaybeComplete();
  }
  Act(std::move(actions));
}

void BatchRun::OnStored(std::shared_ptr<const v1::FetchBatchEvent> event,
                        const ResultStore::WriteOutcome& outcome) {
  Notice notice;
  notice.kind = Notice::Kind::kResult;
  notice.event = std::move(event);
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    ++store_acks_;
    if (!outcome.ok()) {
      if (store_error_.empty()) {
        store_error_ = std::string(outcome.status().message());
      }
    } else if (*outcome == ResultStore::Durability::kSpooled) {
      ++spooled_;
    } else {
      ++stored_;
    }
    notices_.push_back(std::move(notice));
    actions = MaybeComplete();
  }
  Act(std::move(actions));
}

void BatchRun::OnBatchRecorded(const ResultStore::WriteOutcome& outcome) {
  {
    absl::MutexLock lock(&mu_);
    if (!outcome.ok() && store_error_.empty()) {
      store_error_ = std::string(outcome.status().message());
    }
    QueueFinished();
  }
  DrainNotices();
}

BatchRun::Actions BatchRun::MaybeComplete() {
  Actions actions;
  if (phase_ != Phase::kFetching || received_ < total_) return actions;
  if (store_ != nullptr && store_acks_ < total_) return actions;
  record_.batch_id = batch_id_;
  record_.state = cancelled_ ? v1::BATCH_STATE_CANCELLED
                  : store_ != nullptr && stored_ + spooled_ < total_
                      ? v1::BATCH_STATE_FAILED
                      : v1::BATCH_STATE_DONE;
  record_.total = total_;
  record_.succeeded = succeeded_;
  record_.failed = total_ - succeeded_;
  record_.stored = stored_;
  record_.spooled = spooled_;
  record_.created_at = created_at_;
  // Microsecond precision: what the database keeps, so that the streamed
  // summary and GetBatch agree exactly.
  record_.finished_at = TruncateToMicros(clock_->WallNow());
  if (store_ != nullptr) {
    phase_ = Phase::kRecording;
    actions.finish_batch = record_;
    return actions;
  }
  QueueFinished();
  return actions;
}

void BatchRun::QueueFinished() {
  phase_ = Phase::kFinished;
  {
    // Under the lock (one write(2)), so it is logged exactly once, here.
    LogEvent finished(LogLevel::kInfo, "batch_finished");
    finished
        .Add("batch_id", batch_id_)
        // "done", "cancelled", ...: as the metrics' state label.
        .Add("state", absl::AsciiStrToLower(absl::StripPrefix(
                          v1::BatchState_Name(record_.state), "BATCH_STATE_")))
        .Add("total", record_.total)
        .Add("succeeded", record_.succeeded)
        .Add("failed", record_.failed)
        .Add("stored", record_.stored)
        .Add("spooled", record_.spooled)
        .Add("duration_ms",
             absl::ToInt64Milliseconds(Since(clock_->MonoNow(), started_)));
    if (!store_error_.empty()) finished.Add("store_error", store_error_);
  }
  if (stats_ != nullptr) {
    stats_->batches_finished[record_.state].Increment();
    if (counted_active_) stats_->batches_active.Add(-1);
    counted_active_ = false;
  }
  Notice notice;
  notice.kind = Notice::Kind::kFinished;
  v1::BatchSummary& s = notice.summary;
  s.set_batch_id(record_.batch_id);
  s.set_state(record_.state);
  s.set_total(record_.total);
  s.set_succeeded(record_.succeeded);
  s.set_failed(record_.failed);
  s.set_stored(record_.stored);
  s.set_spooled(record_.spooled);
  *s.mutable_created_at() = ToProtoTimestamp(record_.created_at);
  *s.mutable_finished_at() = ToProtoTimestamp(record_.finished_at);
  if (record_.state == v1::BATCH_STATE_CANCELLED) {
    notice.status = absl::CancelledError(
        cancel_mode_ == CancelMode::kAtDeadline
            ? "batch ended at the call's deadline; running requests were "
              "recorded as OUTCOME_TIMEOUT, unstarted ones as OUTCOME_CANCELLED"
            : "batch cancelled; unfinished requests were recorded as "
              "OUTCOME_CANCELLED");
  } else if (!store_error_.empty()) {
    notice.status = absl::UnavailableError(
        absl::StrCat(total_ - stored_ - spooled_, " of ", total_,
                     " results could not be stored: ", store_error_));
  }
  notices_.push_back(std::move(notice));
}

void BatchRun::Act(Actions actions) {
  if (actions.finish_batch.has_value()) {
    // The store runs `done` on its own thread, never inline; nothing here
    // depends on that.
    store_->FinishBatch(
        *actions.finish_batch,
        [self = shared_from_this()](ResultStore::WriteOutcome outcome) {
          self->OnBatchRecorded(outcome);
        });
  }
  DrainNotices();
}

void BatchRun::DrainNotices() {
  // An observer may drop the last other reference to the run (a reactor
  // deleting itself after OnFinished): stay alive until the loop is done.
  std::shared_ptr<BatchRun> keep = shared_from_this();
  mu_.Lock();
  if (notifying_) {
    // That thread delivers ours too, after its current one.
    mu_.Unlock();
    return;
  }
  notifying_ = true;
  while (!notices_.empty()) {
    Notice notice = std::move(notices_.front());
    notices_.pop_front();
    BatchObserver* observer = observer_;
    if (notice.kind == Notice::Kind::kFinished) observer_ = nullptr;
    mu_.Unlock();
    // Deliver takes the notice by value: the event is dropped (and its window
    // slot possibly released) before the lock is taken again.
    Deliver(observer, std::move(notice));
    mu_.Lock();
  }
  notifying_ = false;
  mu_.Unlock();
}

void BatchRun::Deliver(BatchObserver* observer, Notice notice) {
  if (observer == nullptr) return;
  switch (notice.kind) {
    case Notice::Kind::kAccepted:
      observer->OnAccepted(std::move(notice.event));
      return;
    case Notice::Kind::kResult:
      observer->OnResult(std::move(notice.event));
      return;
    case Notice::Kind::kFinished:
      observer->OnFinished(notice.summary, notice.status);
      return;
  }
}

BatchRun::Snapshot BatchRun::snapshot() const {
  absl::MutexLock lock(&mu_);
  Snapshot s;
  s.phase = phase_;
  s.received = received_;
  s.succeeded = succeeded_;
  s.store_acks = store_acks_;
  s.stored = stored_;
  s.spooled = spooled_;
  s.cancelled = cancelled_;
  return s;
}

bool BatchRun::IsLockedForTesting() const {
  if (!mu_.TryLock()) return true;
  mu_.Unlock();
  return false;
}

}  // namespace batchfetch

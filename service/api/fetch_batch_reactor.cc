#include "service/api/fetch_batch_reactor.h"

#include <utility>

#include "service/api/grpc_status.h"

namespace batchfetch {

bool CancelledByDeadline(absl::Time call_deadline, absl::Time now) {
  return call_deadline != absl::InfiniteFuture() &&
         call_deadline <= now + kDeadlineSlack;
}

FetchBatchReactor::FetchBatchReactor(const grpc::CallbackServerContext* context,
                                     const Clock* clock)
    : context_(context), clock_(clock) {}

void FetchBatchReactor::HoldUntilFinished(ActiveBatchLimiter::Lease lease) {
  absl::MutexLock lock(&mu_);
  lease_ = std::move(lease);
}

void FetchBatchReactor::Reject(const absl::Status& status) {
  ActiveBatchLimiter::Lease lease;
  {
    absl::MutexLock lock(&mu_);
    if (finish_called_) return;
    finish_called_ = true;
    lease = std::move(lease_);
  }
  lease.Release();  // before Finish: the caller may retry at once
  Finish(ToGrpcStatus(status));
}

void FetchBatchReactor::SetDetached() {
  absl::MutexLock lock(&mu_);
  detached_ = true;
}

void FetchBatchReactor::Run(std::shared_ptr<BatchRun> run,
                            BatchRun::Submit submit, BatchObserver* observer) {
  bool cancelled = false;
  BatchRun::CancelMode mode = BatchRun::CancelMode::kCancel;
  {
    absl::MutexLock lock(&mu_);
    run_ = run;
    cancelled = broken_ && !detached_;
    mode = cancel_mode_;
  }
  // Cancelled before the batch existed (e.g. while CreateBatch ran): it
  // still runs, ends at once, and every request is recorded.
  if (cancelled) run->Cancel(mode);
  run->Start(observer != nullptr ? observer : this, submit);
}

void FetchBatchReactor::OnAccepted(Event event) { Enqueue(std::move(event)); }

void FetchBatchReactor::OnResult(Event event) { Enqueue(std::move(event)); }

void FetchBatchReactor::OnFinished(const v1::BatchSummary& summary,
                                   const absl::Status& status) {
  auto event = std::make_shared<v1::FetchBatchEvent>();
  *event->mutable_summary() = summary;
  grpc::WriteOptions options;
  Event next;
  std::optional<grpc::Status> finish;
  ActiveBatchLimiter::Lease lease;
  {
    absl::MutexLock lock(&mu_);
    final_status_ = status;
    lease = std::move(lease_);
    if (!broken_) outbox_.push_back(std::move(event));
    next = NextWrite(&options);
    finish = FinishNow();
  }
  // The batch is no longer active: released before the caller can see the
  // summary, so a caller that starts its next batch on it is not refused.
  lease.Release();
  if (next != nullptr) StartWrite(next.get(), options);
  if (finish.has_value()) Finish(*finish);  // last: `this` may be gone after
}

void FetchBatchReactor::Enqueue(Event event) {
  Event dropped;  // released after the lock, if the stream is gone
  grpc::WriteOptions options;
  Event next;
  {
    absl::MutexLock lock(&mu_);
    if (broken_ || finish_called_) {
      dropped = std::move(event);
    } else {
      outbox_.push_back(std::move(event));
      next = NextWrite(&options);
    }
  }
  if (next != nullptr) StartWrite(next.get(), options);
}

void FetchBatchReactor::OnWriteDone(bool ok) {
  Event written;
  std::deque<Event> dropped;  // released after the lock
  std::shared_ptr<BatchRun> cancel;
  BatchRun::CancelMode mode = BatchRun::CancelMode::kCancel;
  grpc::WriteOptions options;
  Event next;
  std::optional<grpc::Status> finish;
  {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    written = std::move(outbox_.front());
    outbox_.pop_front();
    if (ok && written->has_summary()) summary_written_ = true;
    if (!ok && !broken_) {
      // The client is gone: stop fetching, keep storing what arrives.
      broken_ = true;
      cancel_mode_ = CancelModeNow();
      mode = cancel_mode_;
      if (!detached_) cancel = run_;
      dropped.swap(outbox_);
    }
    next = NextWrite(&options);
    finish = FinishNow();
  }
  if (cancel != nullptr) cancel->Cancel(mode);
  if (next != nullptr) StartWrite(next.get(), options);
  if (finish.has_value()) Finish(*finish);  // last: `this` may be gone after
}

void FetchBatchReactor::OnCancel() {
  std::deque<Event> dropped;  // released after the lock
  std::shared_ptr<BatchRun> run;
  BatchRun::CancelMode mode = BatchRun::CancelMode::kCancel;
  std::optional<grpc::Status> finish;
  {
    absl::MutexLock lock(&mu_);
    if (broken_ || finish_called_) return;
    broken_ = true;
    cancel_mode_ = CancelModeNow();
    mode = cancel_mode_;
    // Null before Run (Run cancels it then), and when detached.
    if (!detached_) run = run_;
    // Keep the event being written: its OnWriteDone still comes.
    while (outbox_.size() > (writing_ ? 1u : 0u)) {
      dropped.push_front(std::move(outbox_.back()));
      outbox_.pop_back();
    }
    finish = FinishNow();
  }
  if (run != nullptr) run->Cancel(mode);
  if (finish.has_value()) Finish(*finish);  // last: `this` may be gone after
}

void FetchBatchReactor::OnDone() { delete this; }

FetchBatchReactor::Event FetchBatchReactor::NextWrite(
    grpc::WriteOptions* options) {
  if (writing_ || broken_ || finish_called_ || outbox_.empty()) return nullptr;
  writing_ = true;
  // More events are queued behind this one: let gRPC coalesce them.
  if (outbox_.size() > 1) options->set_buffer_hint();
  return outbox_.front();
}

std::optional<grpc::Status> FetchBatchReactor::FinishNow() {
  if (finish_called_ || writing_ || !final_status_.has_value()) {
    return std::nullopt;
  }
  if (broken_) {
    finish_called_ = true;
    if (final_status_->code() == absl::StatusCode::kCancelled) {
      return ToGrpcStatus(*final_status_);
    }
    if (detached_) {
      return grpc::Status(grpc::StatusCode::CANCELLED,
                          "the call ended early; the detached batch ran on "
                          "(see GetBatch)");
    }
    return grpc::Status(grpc::StatusCode::CANCELLED,
                        "batch cancelled; unfinished requests were recorded "
                        "as OUTCOME_CANCELLED");
  }
  if (!summary_written_) return std::nullopt;
  finish_called_ = true;
  return ToGrpcStatus(*final_status_);
}

BatchRun::CancelMode FetchBatchReactor::CancelModeNow() const {
  return CancelledByDeadline(absl::FromChrono(context_->deadline()),
                             clock_->WallNow())
             ? BatchRun::CancelMode::kAtDeadline
             : BatchRun::CancelMode::kCancel;
}

}  // namespace batchfetch

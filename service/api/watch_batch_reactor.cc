#include "service/api/watch_batch_reactor.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "service/api/grpc_status.h"

namespace batchfetch {

WatchBatchReactor::WatchBatchReactor(Deps deps, std::string batch_id,
                                     uint32_t from_index, ReadScope scope)
    : deps_(std::move(deps)),
      batch_id_(std::move(batch_id)),
      from_index_(from_index),
      scope_(std::move(scope)),
      subscription_(std::make_shared<LiveSubscription>(this)) {}

void WatchBatchReactor::Start() {
  {
    absl::MutexLock lock(&mu_);
    task_pending_ = true;
  }
  SubmitOrFail(&WatchBatchReactor::Begin);
}

void WatchBatchReactor::Reject(const absl::Status& status) {
  subscription_->Detach();
  {
    absl::MutexLock lock(&mu_);
    if (finish_called_) return;
    finish_called_ = true;
  }
  Finish(ToGrpcStatus(status));
}

void WatchBatchReactor::SubmitOrFail(void (WatchBatchReactor::*task)()) {
  absl::Status queued =
      deps_.executor->Submit([this, task] { (this->*task)(); });
  if (!queued.ok()) TaskFailed(queued);
}

void WatchBatchReactor::Begin() {
  absl::StatusOr<v1::BatchSummary> summary =
      deps_.store->GetBatch(batch_id_, scope_);
  if (!summary.ok()) {
    TaskFailed(summary.status());
    return;
  }
  // Subscribed before the first scan reads the store: a result the run
  // reports from now on reaches us live, and one reported before was
  // acknowledged by the store before, so the scan finds it.
  bool live = false;
  if (summary->state() == v1::BATCH_STATE_RUNNING && deps_.find_live) {
    if (std::shared_ptr<BatchBroadcaster> broadcaster =
            deps_.find_live(batch_id_)) {
      live = broadcaster->Subscribe(subscription_);
    }
  }
  auto accepted = std::make_shared<v1::FetchBatchEvent>();
  accepted->mutable_accepted()->set_batch_id(batch_id_);
  accepted->mutable_accepted()->set_total(summary->total());
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    task_pending_ = false;
    begun_ = true;
    live_ = live;
    total_ = summary->total();
    sent_.assign(total_, false);
    lowest_unsent_ = from_index_;
    db_summary_ = *std::move(summary);
    scan_from_ = from_index_;
    outbox_.push_back(std::move(accepted));
    actions = Advance();
  }
  Act(std::move(actions));
}

void WatchBatchReactor::Poll() {
  absl::StatusOr<v1::BatchSummary> summary =
      deps_.store->GetBatch(batch_id_, scope_);
  if (!summary.ok()) {
    TaskFailed(summary.status());
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    // Read before the scan: if it is final, the scan sees every result.
    db_summary_ = *std::move(summary);
    scan_from_ = LowestUnsent();
    found_new_ = false;
  }
  ScanPage();  // still this task
}

void WatchBatchReactor::ScanPage() {
  uint32_t from = 0;
  {
    absl::MutexLock lock(&mu_);
    from = static_cast<uint32_t>(std::max<int64_t>(scan_from_, 0));
  }
  absl::StatusOr<ResultPage> page =
      deps_.store->ListResults(batch_id_, scope_, from, deps_.page_size);
  if (!page.ok()) {
    TaskFailed(page.status());
    return;
  }
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    task_pending_ = false;
    for (v1::FetchResult& r : page->results) {
      auto event = std::make_shared<v1::FetchBatchEvent>();
      *event->mutable_result() = std::move(r);
      QueueResult(std::move(event));
    }
    scan_from_ = page->next_index;
    actions = Advance();
  }
  Act(std::move(actions));
}

void WatchBatchReactor::TaskFailed(const absl::Status& status) {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    task_pending_ = false;
    if (begun_ && absl::IsUnavailable(status) && !broken_) {
      // The database is away for a moment: try again after the longest
      // wait, from where we are.
      scan_from_ = -1;
      task_pending_ = true;
      alarm_set_ = true;
      actions.arm = deps_.max_poll;
    } else if (!error_.has_value()) {
      error_ = ToGrpcStatus(status);
      // Nothing more is written (but the write in flight completes).
      while (outbox_.size() > (writing_ ? 1u : 0u)) outbox_.pop_back();
    }
    Actions more = Advance();
    if (more.finish.has_value()) actions.finish = std::move(more.finish);
    if (more.write != nullptr) {
      actions.write = std::move(more.write);
      actions.write_options = more.write_options;
    }
    actions.cancel_alarm = actions.cancel_alarm || more.cancel_alarm;
  }
  Act(std::move(actions));
}

void WatchBatchReactor::OnAlarm(bool fired) {
  bool poll = false;
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    alarm_set_ = false;
    if (fired && !broken_ && !error_.has_value()) {
      poll = true;  // task_pending_ stays set: Poll is the task now
    } else {
      task_pending_ = false;
      actions = Advance();
    }
  }
  if (poll) {
    SubmitOrFail(&WatchBatchReactor::Poll);
  } else {
    Act(std::move(actions));
  }
}

void WatchBatchReactor::QueueResult(Event event) {
  const uint32_t index = event->result().index();
  if (index < from_index_ || index >= total_ || sent_[index]) return;
  sent_[index] = true;
  found_new_ = true;
  outbox_.push_back(std::move(event));
}

uint32_t WatchBatchReactor::LowestUnsent() {
  while (lowest_unsent_ < total_ && sent_[lowest_unsent_]) ++lowest_unsent_;
  return lowest_unsent_;
}

void WatchBatchReactor::OnLiveResult(Event event) {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    if (broken_ || error_.has_value() || finish_called_) return;
    if (!live_ready_ || outbox_.size() >= kMaxLiveBacklog) {
      // Not kept: the next scan reads it from the store.
      missed_live_ = true;
      live_ready_ = false;
      return;
    }
    QueueResult(std::move(event));
    actions = Advance();
  }
  Act(std::move(actions));
}

void WatchBatchReactor::OnLiveFinished(const v1::BatchSummary& summary) {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    if (broken_ || error_.has_value() || finish_called_) return;
    live_summary_ = summary;
    actions = Advance();
  }
  Act(std::move(actions));
}

void WatchBatchReactor::OnWriteDone(bool ok) {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    Event written = std::move(outbox_.front());
    outbox_.pop_front();
    if (!ok) {
      broken_ = true;
      outbox_.clear();
    } else if (written->has_summary()) {
      summary_written_ = true;
    }
    actions = Advance();
  }
  Act(std::move(actions));
}

void WatchBatchReactor::OnCancel() {
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    if (finish_called_) return;
    broken_ = true;
    while (outbox_.size() > (writing_ ? 1u : 0u)) outbox_.pop_back();
    actions = Advance();
  }
  Act(std::move(actions));
}

void WatchBatchReactor::OnDone() { delete this; }

WatchBatchReactor::Actions WatchBatchReactor::Advance() {
  Actions a;
  if (finish_called_) return a;
  if (broken_ || error_.has_value()) {
    if (alarm_set_) {
      alarm_set_ = false;
      a.cancel_alarm = true;  // OnAlarm(false) clears task_pending_
    }
    if (!task_pending_ && !writing_) {
      finish_called_ = true;
      a.finish = error_.has_value() ? *error_
                                    : grpc::Status(grpc::StatusCode::CANCELLED,
                                                   "watch cancelled");
    }
    return a;  // nothing more is written
  }
  if (summary_written_) {
    finish_called_ = true;
    a.finish = grpc::Status::OK;
    return a;
  }
  // Next store step: only when nothing waits to be written (so at most one
  // page is held) and no task or alarm is pending.
  if (begun_ && !summary_queued_ && !task_pending_ && !writing_ &&
      outbox_.empty()) {
    if (scan_from_ >= 0) {
      task_pending_ = true;
      a.scan = true;
    } else if (live_) {
      if (missed_live_) {
        missed_live_ = false;
        scan_from_ = LowestUnsent();
        task_pending_ = true;
        a.scan = true;
      } else {
        live_ready_ = true;
        if (live_summary_.has_value()) {
          auto event = std::make_shared<v1::FetchBatchEvent>();
          *event->mutable_summary() = *live_summary_;
          outbox_.push_back(std::move(event));
          summary_queued_ = true;
        }
      }
    } else if (db_summary_.has_value() &&
               db_summary_->state() != v1::BATCH_STATE_RUNNING) {
      auto event = std::make_shared<v1::FetchBatchEvent>();
      *event->mutable_summary() = *db_summary_;
      outbox_.push_back(std::move(event));
      summary_queued_ = true;
    } else {
      backoff_ = found_new_ || backoff_ <= absl::ZeroDuration()
                     ? deps_.min_poll
                     : std::min(backoff_ * 2, deps_.max_poll);
      task_pending_ = true;
      alarm_set_ = true;
      a.arm = backoff_;
    }
  }
  if (!writing_ && !outbox_.empty()) {
    writing_ = true;
    // More events are queued behind this one: let gRPC coalesce them.
    if (outbox_.size() > 1) a.write_options.set_buffer_hint();
    a.write = outbox_.front();
  }
  return a;
}

void WatchBatchReactor::Act(Actions actions) {
  if (actions.cancel_alarm) {
    absl::MutexLock lock(&alarm_mu_);
    if (alarm_ != nullptr) alarm_->Cancel();
  }
  if (actions.arm.has_value()) {
    std::unique_ptr<grpc::Alarm> old;  // a fired one; destroyed unlocked
    {
      absl::MutexLock lock(&alarm_mu_);
      old = std::move(alarm_);
      alarm_ = std::make_unique<grpc::Alarm>();
      alarm_->Set(std::chrono::system_clock::now() +
                      absl::ToChronoNanoseconds(*actions.arm),
                  [this](bool fired) { OnAlarm(fired); });
    }
  }
  if (actions.scan) SubmitOrFail(&WatchBatchReactor::ScanPage);
  if (actions.write != nullptr)
    StartWrite(actions.write.get(), actions.write_options);
  if (actions.finish.has_value()) {
    subscription_->Detach();
    Finish(*actions.finish);  // last: `this` may be gone after
  }
}

}  // namespace batchfetch

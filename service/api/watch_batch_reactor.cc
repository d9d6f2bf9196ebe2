#include "service/api/watch_batch_reactor.h"

#include <algorithm>
#include <chrono>
#include <iterator>
#include <utility>

#include "service/api/grpc_status.h"
#include "service/store/mysql/mysql_reader.h"

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
    tail_from_ = from_index_;
    Enqueue(std::move(accepted));
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
    // First the gaps below tail_from_ (ranges around unsent indices), then
    // the rows from tail_from_ on: rows already sent are not read again.
    gap_next_ = LowestUnsent();
    in_gaps_ = true;
    scan_from_ = tail_from_;
    found_new_ = false;
  }
  ScanPage();  // still this task
}

bool WatchBatchReactor::NextGap(uint32_t* from, uint32_t* rows) {
  const uint32_t below = std::min(tail_from_, total_);
  uint32_t first = std::max(gap_next_, from_index_);
  while (first < below && sent_[first]) ++first;
  if (first >= below) return false;
  const uint32_t window_end = std::min<uint64_t>(
      below, uint64_t{first} + std::max<uint32_t>(deps_.page_size, 1));
  uint32_t last = first;
  for (uint32_t i = first + 1; i < window_end; ++i) {
    if (!sent_[i]) last = i;
  }
  *from = first;
  *rows = last - first + 1;
  return true;
}

void WatchBatchReactor::ScanPage() {
  enum class Kind { kTail, kGap, kMissed } kind = Kind::kTail;
  uint32_t from = 0;
  uint32_t limit = deps_.page_size;
  {
    absl::MutexLock lock(&mu_);
    if (rescan_rows_ > 0) {
      kind = Kind::kMissed;
      from = static_cast<uint32_t>(std::max<int64_t>(scan_from_, 0));
      limit = rescan_rows_;
    } else if (in_gaps_ && NextGap(&from, &limit)) {
      kind = Kind::kGap;
    } else {
      in_gaps_ = false;
      from = static_cast<uint32_t>(std::max<int64_t>(scan_from_, 0));
    }
  }
  absl::StatusOr<ResultPage> page =
      deps_.store->ListResults(batch_id_, scope_, from, limit);
  if (!page.ok()) {
    TaskFailed(page.status());
    return;
  }
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    task_pending_ = false;
    for (v1::FetchResult& r : page->results) {
      if (kind == Kind::kTail) tail_from_ = std::max(tail_from_, r.index() + 1);
      auto event = std::make_shared<v1::FetchBatchEvent>();
      *event->mutable_result() = std::move(r);
      QueueResult(std::move(event));
    }
    // The end of the range this read covered (a page may end early).
    const uint32_t end = static_cast<uint32_t>(
        std::min<int64_t>(page->next_index < 0 ? total_ : page->next_index,
                          int64_t{from} + limit));
    switch (kind) {
      case Kind::kMissed:
        // A rescan of missed live results reads one range and stops.
        // Every missed index it covered is settled: found and sent, or not
        // in the store (a result the store gave up on is reported all the
        // same).
        missed_.erase(missed_.lower_bound(from), missed_.lower_bound(end));
        rescan_rows_ = 0;
        rescan_wait_ = true;
        scan_from_ = -1;
        break;
      case Kind::kGap:
        gap_next_ = std::max(end, from + 1);  // scan_from_ still >= 0
        break;
      case Kind::kTail:
        scan_from_ = page->next_index;
        break;
    }
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
      in_gaps_ = false;
      rescan_rows_ = 0;  // the missed indices stay in missed_
      task_pending_ = true;
      alarm_set_ = true;
      actions.arm = deps_.max_poll;
    } else if (!error_.has_value()) {
      error_ = ToGrpcStatus(status);
      DropUnwritten();  // nothing more is written
    }
    Actions more = Advance();
    if (more.finish.has_value()) actions.finish = std::move(more.finish);
    if (more.write != nullptr) {
      actions.write = std::move(more.write);
      actions.write_options = more.write_options;
    }
  }
  Act(std::move(actions));
}

void WatchBatchReactor::OnAlarm(bool fired) {
  bool poll = false;
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    alarm_set_ = false;
    const bool rescan_wait = rescan_alarm_;
    rescan_alarm_ = false;
    if (fired && !broken_ && !error_.has_value() && !rescan_wait) {
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
  Enqueue(std::move(event));
}

void WatchBatchReactor::Enqueue(Event event) {
  outbox_bytes_ += event->ByteSizeLong();
  outbox_.push_back(std::move(event));
}

void WatchBatchReactor::DropUnwritten() {
  // The write in flight (the front) completes; it stays until OnWriteDone.
  while (outbox_.size() > (writing_ ? 1u : 0u)) {
    outbox_bytes_ -= outbox_.back()->ByteSizeLong();
    outbox_.pop_back();
  }
}

bool WatchBatchReactor::KeepLive(uint32_t index) {
  if (index < from_index_ || index >= total_ || sent_[index]) return false;
  if (!live_ready_ || outbox_.size() >= kMaxLiveBacklog ||
      outbox_bytes_ >= kMaxLiveBacklogBytes) {
    // Not kept: a rescan reads it from the store.
    missed_.insert(index);
    live_ready_ = false;
    return false;
  }
  return true;
}

uint32_t WatchBatchReactor::LowestUnsent() {
  while (lowest_unsent_ < total_ && sent_[lowest_unsent_]) ++lowest_unsent_;
  return lowest_unsent_;
}

void WatchBatchReactor::OnLiveResult(Event event) {
  const uint32_t index = event->result().index();
  {
    absl::MutexLock lock(&mu_);
    if (broken_ || error_.has_value() || finish_called_) return;
    if (!KeepLive(index)) return;
  }
  // A copy of our own, made without mu_: the run's event holds a slot of
  // the batch's engine window until its last owner lets go, so it is
  // dropped when this returns, never queued (a watcher that stops reading
  // must not stop the batch). Cut like a stored row (FitResult), so a
  // default client (4 MiB receive limit) can read it whatever the
  // request's max_body_bytes.
  auto copy = std::make_shared<v1::FetchBatchEvent>(*event);
  event.reset();
  FitResult(MysqlReader::kMaxRowBytes, copy->mutable_result());
  Actions actions;
  {
    absl::MutexLock lock(&mu_);
    // Live calls are serialized: only a gRPC reaction or a task may have
    // ended the call meanwhile (live_ready_ cannot have been cleared).
    if (broken_ || error_.has_value() || finish_called_) return;
    QueueResult(std::move(copy));
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
    outbox_bytes_ -= written->ByteSizeLong();
    if (!ok) {
      broken_ = true;
      DropUnwritten();
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
    DropUnwritten();
    actions = Advance();
  }
  Act(std::move(actions));
}

void WatchBatchReactor::OnDone() { delete this; }

WatchBatchReactor::Actions WatchBatchReactor::Advance() {
  Actions a;
  if (finish_called_) return a;
  if (broken_ || error_.has_value()) {
    // A pending alarm is never cancelled (see Act): it fires within
    // max_poll, and OnAlarm clears task_pending_ without polling.
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
      // Missed indices a scan has sent since are settled.
      for (auto it = missed_.begin(); it != missed_.end();) {
        it = sent_[*it] ? missed_.erase(it) : std::next(it);
      }
      if (!missed_.empty() && rescan_wait_) {
        // Rescans back to back only while misses keep coming: wait
        // min_poll first (live results are queued meanwhile).
        rescan_wait_ = false;
        rescan_alarm_ = true;
        live_ready_ = true;
        task_pending_ = true;
        alarm_set_ = true;
        a.arm = deps_.min_poll;
      } else if (!missed_.empty()) {
        // Reads only the range from the lowest missed index to the last
        // one within a page of it (not every row from the lowest gap).
        const uint32_t first = *missed_.begin();
        auto last = std::prev(missed_.lower_bound(
            first + std::max<uint32_t>(deps_.page_size, 1)));
        scan_from_ = first;
        rescan_rows_ = *last - first + 1;
        task_pending_ = true;
        a.scan = true;
      } else {
        rescan_wait_ = false;
        live_ready_ = true;
        if (live_summary_.has_value()) {
          auto event = std::make_shared<v1::FetchBatchEvent>();
          *event->mutable_summary() = *live_summary_;
          Enqueue(std::move(event));
          summary_queued_ = true;
        }
      }
    } else if (db_summary_.has_value() &&
               db_summary_->state() != v1::BATCH_STATE_RUNNING) {
      auto event = std::make_shared<v1::FetchBatchEvent>();
      *event->mutable_summary() = *db_summary_;
      Enqueue(std::move(event));
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
  // Lifetime: once Finish is called, or once the alarm is Set (its callback
  // may run on another thread at once and end the call), `this` may be
  // deleted by OnDone. So setting the alarm and finishing come last, and
  // never both (an armed alarm keeps task_pending_ set, which holds Finish
  // back). A scan or a write queued before them cannot lead to Finish
  // before StartWrite was called: the write keeps writing_ set until its
  // OnWriteDone.
  if (actions.scan) SubmitOrFail(&WatchBatchReactor::ScanPage);
  if (actions.write != nullptr)
    StartWrite(actions.write.get(), actions.write_options);
  if (actions.arm.has_value()) {
    // The previous alarm has fired (one is pending at a time and the
    // next is armed only after its OnAlarm), so destroying it is safe even
    // while its callback is still returning. alarm_ is touched only here
    // and in the destructor, one at a time (task_pending_ orders them).
    std::unique_ptr<grpc::Alarm> old = std::move(alarm_);
    old.reset();
    alarm_ = std::make_unique<grpc::Alarm>();
    alarm_->Set(std::chrono::system_clock::now() +
                    absl::ToChronoNanoseconds(*actions.arm),
                [this](bool fired) { OnAlarm(fired); });
    return;  // `this` may be gone now
  }
  if (actions.finish.has_value()) {
    subscription_->Detach();
    Finish(*actions.finish);  // last: `this` may be gone after
  }
}

}  // namespace batchfetch

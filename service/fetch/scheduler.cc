#include "service/fetch/scheduler.h"

#include <algorithm>
#include <utility>

namespace batchfetch {
namespace {

// Deadlines further out than this get no timer: Admit checks the deadline
// before every start anyway, and this keeps timers of long-finished
// batches from piling up.
constexpr absl::Duration kDeadlineTimerHorizon = absl::Hours(1);

}  // namespace

// Per-request bookkeeping.
struct SchedulerRequest {
  FetchSpec spec;
  HttpMethod method = HttpMethod::kGet;
  uint32_t host = 0;  // index into Batch::hosts, once validated
  uint32_t transfer = 0;
  int attempts = 0;
  bool running = false;  // an attempt is in flight
  bool ending = false;   // a terminal decision was issued
  // Answered without I/O (invalid, out of time) and not yet delivered: it
  // holds window room like a transfer in flight.
  bool answered = false;
  bool done = false;  // delivered
  MonoTime first_start;
  // The outcome of the last attempt while a retry waits (no body); set
  // exactly while the request waits on a retry timer.
  std::unique_ptr<FetchedResponse> last;
};

// A batch's requests to one scheme+host+port waiting for a slot.
struct SchedulerHostQueue {
  HostGovernor::Host* host = nullptr;  // referenced while the batch lives
  std::deque<uint32_t> queued;
  int in_flight = 0;
};

class Scheduler::Batch {
 public:
  BatchKey key = 0;
  BatchLimits limits;
  std::shared_ptr<BatchWindow> window;
  std::vector<SchedulerRequest> requests;
  size_t next = 0;  // first request not yet validated into a host queue
  std::vector<SchedulerHostQueue> hosts;
  std::unordered_map<std::string, uint32_t> host_ids;
  std::vector<uint32_t> ready_hosts;  // hosts with queued requests
  size_t host_cursor = 0;             // round-robin over ready_hosts
  size_t delivered = 0;
  int in_flight = 0;
  int answered = 0;  // requests with `answered` set
  bool cancelled = false;
  bool deadline_passed = false;
  bool listed = false;  // in Scheduler::active_

  bool HasQueued() const {
    return next < requests.size() || !ready_hosts.empty();
  }
};

Scheduler::Scheduler(HostGovernor* hosts) : hosts_(hosts) {}

Scheduler::~Scheduler() {
  for (auto& [key, batch] : batches_) {
    for (SchedulerHostQueue& h : batch->hosts) hosts_->Unref(h.host);
  }
}

Scheduler::Batch* Scheduler::Add(BatchKey key, std::vector<FetchSpec> requests,
                                 const BatchLimits& limits,
                                 std::shared_ptr<BatchWindow> window,
                                 MonoTime now) {
  auto batch = std::make_unique<Batch>();
  batch->key = key;
  batch->limits = limits;
  batch->limits.concurrency = std::max(batch->limits.concurrency, 1);
  batch->limits.window =
      std::max(batch->limits.window, batch->limits.concurrency);
  batch->window = std::move(window);
  batch->requests.resize(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    batch->requests[i].spec = std::move(requests[i]);
  }
  queued_ += static_cast<int64_t>(requests.size());
  Batch* raw = batch.get();
  batches_.emplace(key, std::move(batch));
  if (limits.deadline != MonoTime::max() &&
      Since(limits.deadline, now) < kDeadlineTimerHorizon) {
    timers_.Push(limits.deadline, Timer{key, 0, Timer::kDeadline});
  }
  List(*raw);
  return raw;
}

Scheduler::Batch* Scheduler::Find(BatchKey key) const {
  auto it = batches_.find(key);
  return it == batches_.end() ? nullptr : it->second.get();
}

void Scheduler::List(Batch& batch) {
  if (batch.listed) return;
  batch.listed = true;
  active_.push_back(&batch);
}

bool Scheduler::HasRoom(Batch& batch) {
  if (batch.in_flight >= batch.limits.concurrency) return false;
  auto fits = [&] {
    return batch.in_flight + batch.answered + batch.window->backlog.load() <
           batch.limits.window;
  };
  if (fits()) return true;
  // Publish that we wait before re-checking, so a concurrent release either
  // is seen here or sees `stalled` and wakes the engine.
  batch.window->stalled.store(true);
  if (!fits()) return false;
  batch.window->stalled.store(false);
  return true;
}

bool Scheduler::HostOpen(const Batch& batch, uint32_t host,
                         MonoTime now) const {
  const SchedulerHostQueue& queue = batch.hosts[host];
  if (batch.limits.per_host_concurrency > 0 &&
      queue.in_flight >= batch.limits.per_host_concurrency) {
    return false;
  }
  return hosts_->Open(*queue.host, now);
}

void Scheduler::Admit(MonoTime now, int free_slots,
                      std::vector<Decision>* out) {
  bool progressed = true;
  while (progressed && !active_.empty() && free_slots > 0) {
    progressed = false;
    for (size_t turns = active_.size(); turns > 0 && !active_.empty();
         --turns) {
      if (free_slots <= 0) return;
      if (cursor_ >= active_.size()) cursor_ = 0;
      Batch* batch = active_[cursor_];
      if (!batch->HasQueued() || batch->cancelled) {
        batch->listed = false;
        active_.erase(active_.begin() + static_cast<ptrdiff_t>(cursor_));
        continue;
      }
      ++cursor_;
      if (!HasRoom(*batch)) continue;
      bool started = false;
      if (DecideOne(*batch, now, out, &started)) progressed = true;
      if (started) --free_slots;
    }
  }
}

bool Scheduler::DecideOne(Batch& batch, MonoTime now,
                          std::vector<Decision>* out, bool* started) {
  // Requests already queued per host, hosts taking turns.
  for (size_t tries = batch.ready_hosts.size(); tries > 0; --tries) {
    if (batch.host_cursor >= batch.ready_hosts.size()) batch.host_cursor = 0;
    const uint32_t host = batch.ready_hosts[batch.host_cursor];
    if (!HostOpen(batch, host, now)) {
      ++batch.host_cursor;
      continue;
    }
    SchedulerHostQueue& queue = batch.hosts[host];
    const uint32_t pos = queue.queued.front();
    queue.queued.pop_front();
    if (queue.queued.empty()) {
      batch.ready_hosts.erase(batch.ready_hosts.begin() +
                              static_cast<ptrdiff_t>(batch.host_cursor));
    } else {
      ++batch.host_cursor;
    }
    Start(batch, pos, now, out, started);
    return true;
  }
  // Then new requests, in order; those whose host is closed are queued.
  while (batch.next < batch.requests.size()) {
    const uint32_t pos = static_cast<uint32_t>(batch.next++);
    SchedulerRequest& request = batch.requests[pos];
    absl::StatusOr<ValidatedRequest> valid = ValidateRequest(request.spec);
    if (!valid.ok()) {
      request.ending = true;
      request.answered = true;
      ++batch.answered;
      out->push_back({Decision::Kind::kInvalid, &batch, pos, 0,
                      std::string(valid.status().message())});
      return true;
    }
    request.method = valid->method;
    auto [it, inserted] = batch.host_ids.try_emplace(
        valid->host_key, static_cast<uint32_t>(batch.hosts.size()));
    if (inserted) {
      batch.hosts.push_back(
          SchedulerHostQueue{hosts_->Ref(valid->host_key), {}, 0});
    }
    request.host = it->second;
    if (HostOpen(batch, it->second, now)) {
      Start(batch, pos, now, out, started);
      return true;
    }
    Enqueue(batch, it->second, pos, /*front=*/false);
  }
  return false;
}

void Scheduler::Start(Batch& batch, uint32_t pos, MonoTime now,
                      std::vector<Decision>* out, bool* started) {
  SchedulerRequest& request = batch.requests[pos];
  // Too little time left to do anything useful: the batch is out of time.
  if (batch.limits.deadline != MonoTime::max() &&
      Since(batch.limits.deadline, now) < kMinUsefulTime) {
    request.ending = true;
    request.answered = true;
    ++batch.answered;
    out->push_back({Decision::Kind::kOutOfTime, &batch, pos, 0, {}});
    return;
  }
  request.last.reset();
  if (request.attempts == 0) request.first_start = now;
  ++request.attempts;
  request.running = true;
  ++batch.in_flight;
  SchedulerHostQueue& host = batch.hosts[request.host];
  ++host.in_flight;
  hosts_->TransferStarted(*host.host);
  --queued_;
  *started = true;
  out->push_back({Decision::Kind::kStart, &batch, pos, 0, {}});
}

void Scheduler::Enqueue(Batch& batch, uint32_t host, uint32_t pos, bool front) {
  SchedulerHostQueue& queue = batch.hosts[host];
  if (queue.queued.empty()) batch.ready_hosts.push_back(host);
  if (front) {
    queue.queued.push_front(pos);
  } else {
    queue.queued.push_back(pos);
  }
}

void Scheduler::RunTimers(MonoTime now, std::vector<Decision>* out) {
  std::vector<Timer> due;
  timers_.PopDue(now, &due);
  for (const Timer& timer : due) {
    if (timer.kind == Timer::kWake) continue;  // Admit runs after this
    Batch* batch = Find(timer.batch);
    if (batch == nullptr) continue;
    if (timer.kind == Timer::kDeadline) {
      ExpireDeadline(batch, /*cut_running=*/false, out);
      continue;
    }
    SchedulerRequest& request = batch->requests[timer.pos];
    // Still waiting for this retry: it keeps its last outcome until then.
    if (request.last == nullptr || request.ending || batch->cancelled) {
      continue;
    }
    // The retry goes first in its host's queue.
    Enqueue(*batch, request.host, timer.pos, /*front=*/true);
    List(*batch);
  }
}

MonoTime Scheduler::NextTimer() const {
  return timers_.empty() ? MonoTime::max() : timers_.next_at();
}

void Scheduler::DrainQueued(Batch& batch, Decision::Kind kind,
                            std::vector<Decision>* out) {
  for (SchedulerHostQueue& host : batch.hosts) host.queued.clear();
  batch.ready_hosts.clear();
  batch.next = batch.requests.size();
  for (uint32_t pos = 0; pos < batch.requests.size(); ++pos) {
    SchedulerRequest& request = batch.requests[pos];
    if (request.done || request.running || request.ending) continue;
    request.ending = true;
    out->push_back({kind, &batch, pos, 0, {}});
  }
}

void Scheduler::Cancel(Batch* batch, std::vector<Decision>* out) {
  if (batch->cancelled) return;
  batch->cancelled = true;
  for (uint32_t pos = 0; pos < batch->requests.size(); ++pos) {
    SchedulerRequest& request = batch->requests[pos];
    if (!request.running || request.ending) continue;
    request.ending = true;
    out->push_back(
        {Decision::Kind::kAbortCancelled, batch, pos, request.transfer, {}});
  }
  DrainQueued(*batch, Decision::Kind::kCancelled, out);
}

void Scheduler::ExpireDeadline(Batch* batch, bool cut_running,
                               std::vector<Decision>* out) {
  if (batch->cancelled) return;
  batch->deadline_passed = true;
  if (cut_running) {
    for (uint32_t pos = 0; pos < batch->requests.size(); ++pos) {
      SchedulerRequest& request = batch->requests[pos];
      if (!request.running || request.ending) continue;
      request.ending = true;
      out->push_back(
          {Decision::Kind::kAbortAtDeadline, batch, pos, request.transfer, {}});
    }
  }
  DrainQueued(*batch, Decision::Kind::kOutOfTime, out);
}

void Scheduler::SetTransfer(Batch* batch, uint32_t pos, uint32_t transfer) {
  batch->requests[pos].transfer = transfer;
}

void Scheduler::AttemptEnded(Batch* batch, uint32_t pos) {
  SchedulerRequest& request = batch->requests[pos];
  if (!request.running) return;
  request.running = false;
  --batch->in_flight;
  SchedulerHostQueue& host = batch->hosts[request.host];
  --host.in_flight;
  hosts_->TransferEnded(*host.host);
  ++queued_;
}

void Scheduler::ScheduleRetry(Batch* batch, uint32_t pos, MonoTime at,
                              FetchedResponse last) {
  SchedulerRequest& request = batch->requests[pos];
  request.last = std::make_unique<FetchedResponse>(std::move(last));
  timers_.Push(at, Timer{batch->key, pos, Timer::kRetry});
}

std::optional<FetchedResponse> Scheduler::TakeLastOutcome(Batch* batch,
                                                          uint32_t pos) {
  SchedulerRequest& request = batch->requests[pos];
  if (request.last == nullptr) return std::nullopt;
  FetchedResponse last = std::move(*request.last);
  request.last.reset();
  return last;
}

bool Scheduler::Delivered(Batch* batch, uint32_t pos) {
  SchedulerRequest& request = batch->requests[pos];
  request.done = true;
  request.ending = false;
  if (request.answered) {
    request.answered = false;
    --batch->answered;
  }
  request.last.reset();
  request.spec = FetchSpec();
  --queued_;
  batch->window->backlog.fetch_add(1);
  if (++batch->delivered < batch->requests.size()) return false;
  if (batch->listed) {
    auto it = std::find(active_.begin(), active_.end(), batch);
    const size_t at = static_cast<size_t>(it - active_.begin());
    active_.erase(it);
    if (at < cursor_) --cursor_;
  }
  for (SchedulerHostQueue& h : batch->hosts) hosts_->Unref(h.host);
  batch->hosts.clear();
  batches_.erase(batch->key);
  return true;
}

Scheduler::BatchKey Scheduler::key(const Batch* batch) const {
  return batch->key;
}
FetchSpec& Scheduler::spec(Batch* batch, uint32_t pos) {
  return batch->requests[pos].spec;
}
HttpMethod Scheduler::method(const Batch* batch, uint32_t pos) const {
  return batch->requests[pos].method;
}
const std::string& Scheduler::host_key(const Batch* batch, uint32_t pos) const {
  return batch->hosts[batch->requests[pos].host].host->key();
}
int Scheduler::attempts(const Batch* batch, uint32_t pos) const {
  return batch->requests[pos].attempts;
}
MonoTime Scheduler::first_start(const Batch* batch, uint32_t pos) const {
  return batch->requests[pos].first_start;
}
const BatchLimits& Scheduler::limits(const Batch* batch) const {
  return batch->limits;
}
bool Scheduler::cancelled(const Batch* batch) const { return batch->cancelled; }

std::vector<Scheduler::Batch*> Scheduler::AllBatches() const {
  std::vector<Batch*> all;
  all.reserve(batches_.size());
  for (const auto& [key, batch] : batches_) all.push_back(batch.get());
  return all;
}

}  // namespace batchfetch

#include "service/store/spooling_result_store.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "service/base/log.h"
#include "service/store/spool/spool_record.h"

namespace batchfetch {
namespace {

// What the replayer waits for: the inner store's answers for the records
// it handed over. Shared with the `done`s, which may run after the replay
// stopped waiting (writes parked because the spool filled up meanwhile).
struct ReplayAcks {
  absl::Mutex mu;
  uint64_t outstanding ABSL_GUARDED_BY(mu) = 0;
  // The first UNAVAILABLE (the database went away and the spool could not
  // take the write back): the replay stops and keeps the segment.
  absl::Status first_error ABSL_GUARDED_BY(mu);
  // Writes MySQL refused for good (the writer isolates such a row): retrying
  // cannot help, so they are counted and logged, and the replay goes on.
  uint64_t unstorable ABSL_GUARDED_BY(mu) = 0;
};

ResultStore::Done AckInto(std::shared_ptr<ReplayAcks> acks) {
  {
    absl::MutexLock lock(&acks->mu);
    ++acks->outstanding;
  }
  return [acks = std::move(acks)](ResultStore::WriteOutcome outcome) {
    absl::MutexLock lock(&acks->mu);
    --acks->outstanding;
    // kSpooled is fine too: the database went away again and the write is
    // durable in a newer segment.
    if (outcome.ok()) return;
    if (!absl::IsUnavailable(outcome.status())) {
      ++acks->unstorable;
      LogEvent(LogLevel::kError, "spool_record_unstorable")
          .Add("error", std::string(outcome.status().message()));
    } else if (acks->first_error.ok()) {
      acks->first_error = outcome.status();
    }
  };
}

SpoolRecord ToRecord(const WriteOp& op) {
  if (op.is_result()) {
    return SpoolRecord::Result(op.batch_id, op.fetched_at,
                               op.result->SerializeAsString());
  }
  return SpoolRecord::BatchFinished(op.record);
}

absl::Status SpoolFull(const ResultSpoolStats& stats) {
  return absl::UnavailableError(absl::StrCat(
      "the local spool is full (", stats.used_bytes,
      " of --spool_max_bytes=", stats.max_bytes,
      " bytes) while MySQL cannot take writes: no new batch is accepted "
      "until the spool is replayed"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<SpoolingResultStore>> SpoolingResultStore::Open(
    Options options, const OpenInner& open_inner) {
  absl::StatusOr<std::unique_ptr<ResultSpool>> spool =
      ResultSpool::Open(options.spool);
  if (!spool.ok()) return spool.status();
  std::unique_ptr<SpoolingResultStore> store(
      new SpoolingResultStore(std::move(options), *std::move(spool)));
  SpoolingResultStore* self = store.get();
  absl::StatusOr<std::unique_ptr<ResultStore>> inner =
      open_inner([self](std::vector<WriteOp>&& group, const absl::Status& why) {
        self->TakeOver(std::move(group), why);
      });
  if (!inner.ok()) return inner.status();
  store->inner_ = *std::move(inner);
  // The spooler first: the start-up replay may need it (what the writer
  // gives up during the replay is spooled again).
  store->spooler_ = std::thread([self] { self->SpoolerLoop(); });
  // Start-up: what an earlier process left is replayed before serving.
  if (store->HasWork() && store->inner_->Ping().ok()) {
    absl::StatusOr<ReplayReport> replayed = store->ReplayNow();
    if (!replayed.ok()) {
      LogEvent(LogLevel::kWarning, "spool_replay_failed")
          .Add("error", std::string(replayed.status().message()));
    }
  }
  store->replayer_ = std::thread([self] { self->ReplayerLoop(); });
  return store;
}

SpoolingResultStore::SpoolingResultStore(Options options,
                                         std::unique_ptr<ResultSpool> spool)
    : options_(std::move(options)), spool_(std::move(spool)) {}

SpoolingResultStore::~SpoolingResultStore() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (replayer_.joinable()) replayer_.join();
  // Drains the inner writer; what it gives up reaches the spooler. From
  // here on, Route (called back by batches the drain acknowledges) sends
  // writes to the spooler instead.
  std::unique_ptr<ResultStore> inner;
  {
    absl::WriterMutexLock lock(&inner_mu_);
    inner = std::move(inner_);
  }
  inner.reset();
  {
    absl::MutexLock lock(&mu_);
    spooler_stopping_ = true;
  }
  if (spooler_.joinable()) spooler_.join();
  std::deque<WriteOp> lost;
  {
    absl::MutexLock lock(&mu_);
    lost.swap(parked_);
  }
  if (!lost.empty()) {
    LogEvent(LogLevel::kError, "spool_lost_writes")
        .Add("writes", lost.size())
        .Add("error",
             "MySQL unreachable and the local spool full at shutdown: these "
             "writes were not stored");
  }
  const absl::Status status = SpoolFull(spool_->Stats());
  for (WriteOp& op : lost) std::move(op.done)(status);
}

void SpoolingResultStore::TakeOver(std::vector<WriteOp>&& group,
                                   const absl::Status& why) {
  bool first = false;
  {
    absl::MutexLock lock(&mu_);
    first = !outage_logged_;
    outage_logged_ = true;
    for (WriteOp& op : group) to_spool_.push_back(std::move(op));
  }
  group.clear();
  if (first) {
    LogEvent(LogLevel::kWarning, "store_spooling")
        .Add("error", std::string(why.message()))
        .Add("spool_dir", options_.spool.dir);
  }
}

void SpoolingResultStore::Route(WriteOp op) {
  absl::Status refused;
  {
    absl::ReaderMutexLock inner_lock(&inner_mu_);
    {
      absl::MutexLock lock(&mu_);
      if (conflicting_.count(op.batch_id) != 0) {
        // Its id now belongs to another batch: never write into that one.
        refused = absl::FailedPreconditionError(absl::StrCat(
            "batch_id '", op.batch_id,
            "' was taken by another batch while MySQL was away; this "
            "batch's results cannot be stored under it"));
      } else if (pending_creates_.count(op.batch_id) != 0 ||
                 inner_ == nullptr) {
        if (!spooler_stopping_) {
          to_spool_.push_back(std::move(op));
          return;
        }
        refused = absl::UnavailableError(
            "the store closed before this write could be kept");
      }
    }
    if (refused.ok()) {
      // Both only queue: `done` never runs inside these calls.
      if (op.is_result()) {
        inner_->AppendResult(op.batch_id, std::move(op.result), op.fetched_at,
                             std::move(op.done));
      } else {
        inner_->FinishBatch(op.record, std::move(op.done));
      }
      return;
    }
  }
  // Outside the locks: `done` may call back into Route (a batch's last
  // acknowledgement queues its final row).
  std::move(op.done)(refused);
}

void SpoolingResultStore::SpoolerLoop() {
  for (;;) {
    std::vector<WriteOp> ops;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](SpoolingResultStore* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
            return !s->to_spool_.empty() || s->spooler_stopping_;
          },
          this));
      if (to_spool_.empty()) return;  // stopping and drained
      for (WriteOp& op : to_spool_) ops.push_back(std::move(op));
      to_spool_.clear();
    }
    SpoolOps(std::move(ops));
  }
}

void SpoolingResultStore::SpoolOps(std::vector<WriteOp> ops) {
  std::vector<WriteOp> appended;
  uint64_t last = 0;
  size_t i = 0;
  for (; i < ops.size(); ++i) {
    {
      // Keep the order: behind writes already parked, park too.
      absl::MutexLock lock(&mu_);
      if (!parked_.empty()) break;
    }
    absl::StatusOr<uint64_t> sequence = spool_->Append(ToRecord(ops[i]));
    if (sequence.ok()) {
      if (last == 0) {
        absl::MutexLock lock(&mu_);
        full_ = false;  // there was room
      }
      last = *sequence;
      appended.push_back(std::move(ops[i]));
      continue;
    }
    if (absl::IsResourceExhausted(sequence.status())) break;  // park the rest
    LogEvent(LogLevel::kError, "spool_write_failed")
        .Add("batch_id", ops[i].batch_id)
        .Add("error", std::string(sequence.status().message()));
    std::move(ops[i].done)(absl::UnavailableError(
        absl::StrCat("MySQL unreachable and the local spool failed: ",
                     sequence.status().message())));
  }
  if (i < ops.size()) {
    bool first = false;
    {
      absl::MutexLock lock(&mu_);
      first = !full_;
      full_ = true;
      for (; i < ops.size(); ++i) parked_.push_back(std::move(ops[i]));
    }
    if (first) {
      const ResultSpoolStats stats = spool_->Stats();
      LogEvent(LogLevel::kError, "spool_full")
          .Add("used_bytes", stats.used_bytes)
          .Add("max_bytes", stats.max_bytes);
    }
  }
  if (appended.empty()) return;
  const absl::Status durable = spool_->WaitDurable(last);
  if (options_.stats != nullptr && durable.ok()) {
    options_.stats->spooled_writes.Increment(appended.size());
  }
  for (WriteOp& op : appended) {
    if (durable.ok()) {
      std::move(op.done)(Durability::kSpooled);
    } else {
      std::move(op.done)(absl::UnavailableError(
          absl::StrCat("MySQL unreachable and the local spool failed to sync: ",
                       durable.message())));
    }
  }
}

absl::Status SpoolingResultStore::SpoolBatchCreated(const BatchRecord& batch) {
  {
    // The id is reserved before the append (no write of the batch can come
    // before CreateBatch returns), and the append itself (it may fsync)
    // runs outside the lock.
    absl::MutexLock lock(&mu_);
    if (!pending_creates_.insert(batch.batch_id).second ||
        conflicting_.count(batch.batch_id) != 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("batch_id '", batch.batch_id, "' already exists"));
    }
  }
  absl::StatusOr<uint64_t> sequence =
      spool_->Append(SpoolRecord::BatchCreated(batch));
  if (!sequence.ok()) {
    absl::MutexLock lock(&mu_);
    pending_creates_.erase(batch.batch_id);
    if (absl::IsResourceExhausted(sequence.status())) full_ = true;
    return sequence.status();
  }
  return spool_->WaitDurable(*sequence);
}

absl::Status SpoolingResultStore::CreateBatch(const BatchRecord& batch) {
  if (spool_full()) return SpoolFull(spool_->Stats());
  const absl::Status created = inner_->CreateBatch(batch);
  if (!absl::IsUnavailable(created)) return created;
  // The database does not answer (or its answer was lost: replay then finds
  // our own row). The batch starts from the spool.
  const absl::Status spooled = SpoolBatchCreated(batch);
  if (absl::IsAlreadyExists(spooled)) return spooled;
  if (!spooled.ok()) {
    return absl::UnavailableError(
        absl::StrCat(created.message(),
                     "; the local spool could not take the batch either: ",
                     spooled.message()));
  }
  LogEvent(LogLevel::kWarning, "batch_created_in_spool")
      .Add("batch_id", batch.batch_id)
      .Add("error", std::string(created.message()));
  return absl::OkStatus();
}

void SpoolingResultStore::AppendResult(
    const std::string& batch_id, std::shared_ptr<const v1::FetchResult> result,
    absl::Time fetched_at, Done done) {
  Route(WriteOp::Result(batch_id, std::move(result), fetched_at,
                        std::move(done)));
}

void SpoolingResultStore::FinishBatch(const BatchRecord& batch, Done done) {
  Route(WriteOp::FinishBatch(batch, std::move(done)));
}

absl::StatusOr<v1::BatchSummary> SpoolingResultStore::GetBatch(
    const std::string& batch_id, const ReadScope& scope) {
  return inner_->GetBatch(batch_id, scope);
}

absl::StatusOr<ResultPage> SpoolingResultStore::ListResults(
    const std::string& batch_id, const ReadScope& scope, uint32_t from_index,
    uint32_t limit) {
  return inner_->ListResults(batch_id, scope, from_index, limit);
}

absl::Status SpoolingResultStore::Ping() {
  if (spool_full()) return SpoolFull(spool_->Stats());
  const absl::Status database = inner_->Ping();
  // While the spool has room, batches can start and nothing is lost: the
  // service is ready. The outage itself is logged here, once each way.
  bool changed = false;
  {
    absl::MutexLock lock(&mu_);
    changed = database_answers_ != database.ok();
    database_answers_ = database.ok();
  }
  if (changed) {
    if (database.ok()) {
      LogEvent(LogLevel::kInfo, "database_reachable");
    } else {
      LogEvent(LogLevel::kWarning, "database_unreachable")
          .Add("error", std::string(database.message()))
          .Add("spool", "taking writes");
    }
  }
  return absl::OkStatus();
}

void SpoolingResultStore::StartDraining() { inner_->StartDraining(); }

absl::Status SpoolingResultStore::RecountStored(const std::string& batch_id) {
  return inner_->RecountStored(batch_id);
}

absl::Status SpoolingResultStore::RenewLeases() {
  return inner_->RenewLeases();
}

absl::StatusOr<std::vector<std::string>>
SpoolingResultStore::InterruptExpiredLeases() {
  return inner_->InterruptExpiredLeases();
}

// Batches with spooled results are kept by the database's own check.
absl::StatusOr<RetentionPass> SpoolingResultStore::DeleteExpiredBatches(
    absl::Time ended_before, int max_batches) {
  return inner_->DeleteExpiredBatches(ended_before, max_batches);
}

absl::StatusOr<ResumePlan> SpoolingResultStore::BeginResume(
    const std::string& batch_id, const ReadScope& scope,
    const std::string& requests_sha256) {
  // Spooled writes of the batch (its old results, its final row) replayed
  // after the resume began would overwrite the resumed run's.
  if (HasWork()) {
    return absl::UnavailableError(
        "the local spool still holds writes not yet replayed into MySQL; "
        "resume once they are (retry in a few seconds)");
  }
  return inner_->BeginResume(batch_id, scope, requests_sha256);
}

absl::StatusOr<StoredBatch> SpoolingResultStore::ReadStoredBatch(
    const std::string& batch_id) {
  return inner_->ReadStoredBatch(batch_id);
}

absl::Status SpoolingResultStore::RequestCancel(const std::string& batch_id,
                                                const ReadScope& scope) {
  return inner_->RequestCancel(batch_id, scope);
}

absl::StatusOr<std::vector<std::string>>
SpoolingResultStore::CancelRequestedBatches() {
  return inner_->CancelRequestedBatches();
}

absl::StatusOr<BatchListPage> SpoolingResultStore::ListBatches(
    const ReadScope& scope, const BatchListQuery& query) {
  return inner_->ListBatches(scope, query);
}

absl::StatusOr<std::string> SpoolingResultStore::PageTokenKey() {
  return inner_->PageTokenKey();
}

size_t SpoolingResultStore::parked() const {
  absl::MutexLock lock(&mu_);
  return parked_.size();
}

bool SpoolingResultStore::spool_full() const {
  absl::MutexLock lock(&mu_);
  return full_;
}

bool SpoolingResultStore::HasWork() const {
  if (spool_->Stats().used_bytes > 0) return true;
  absl::MutexLock lock(&mu_);
  return !parked_.empty();
}

void SpoolingResultStore::RetryParked(bool database_answers) {
  std::deque<WriteOp> parked;
  {
    absl::MutexLock lock(&mu_);
    parked.swap(parked_);
    // With the database back, the spool need not take more: replay will
    // make room. Otherwise SpoolOps decides.
    if (database_answers) full_ = false;
  }
  if (parked.empty()) return;
  if (database_answers) {
    for (WriteOp& op : parked) Route(std::move(op));
    return;
  }
  std::vector<WriteOp> ops;
  for (WriteOp& op : parked) ops.push_back(std::move(op));
  SpoolOps(std::move(ops));
}

void SpoolingResultStore::ReplayerLoop() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_),
                           options_.replay_interval);
      if (stopping_) return;
    }
    if (options_.stats != nullptr) {
      options_.stats->spool_bytes.Set(
          static_cast<int64_t>(spool_->Stats().used_bytes));
      options_.stats->parked_writes.Set(static_cast<int64_t>(parked()));
    }
    if (!HasWork()) continue;
    const bool answers = inner_->Ping().ok();
    RetryParked(answers);
    if (!answers) continue;
    absl::StatusOr<ReplayReport> replayed = ReplayNow();
    if (!replayed.ok()) {
      LogEvent(LogLevel::kWarning, "spool_replay_failed")
          .Add("error", std::string(replayed.status().message()));
    }
  }
}

absl::StatusOr<SpoolingResultStore::ReplayReport>
SpoolingResultStore::ReplayNow() {
  absl::MutexLock replay_lock(&replay_mu_);
  ReplayReport report;
  if (spool_full()) {
    // Replayed writes the database gives up on again would only be parked
    // (once per attempt): first the parked ones must go.
    return absl::UnavailableError("the spool is full: parked writes go first");
  }
  absl::StatusOr<std::vector<uint64_t>> segments = spool_->SealForReplay();
  if (!segments.ok()) return segments.status();
  for (uint64_t segment : *segments) {
    auto acks = std::make_shared<ReplayAcks>();
    std::set<std::string> touched;
    // Waits until at most `limit` handed-over records are unanswered;
    // gives up (keeping the segment) if the spool filled up meanwhile: the
    // rest may be parked until the replayer itself retries them.
    auto wait_for_acks = [&](uint64_t limit) -> absl::Status {
      for (;;) {
        {
          absl::MutexLock lock(&acks->mu);
          auto below = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(acks->mu) {
            return acks->outstanding <= limit;
          };
          acks->mu.AwaitWithTimeout(absl::Condition(&below),
                                    absl::Milliseconds(200));
          if (!acks->first_error.ok()) return acks->first_error;
          if (acks->outstanding <= limit) return absl::OkStatus();
        }
        if (spool_full()) {
          return absl::UnavailableError(
              "the spool filled up while replaying into MySQL");
        }
      }
    };
    absl::StatusOr<SpoolSegmentReplay> read = spool_->ReplaySegment(
        segment, [&](const SpoolRecord& record) -> absl::Status {
          {
            absl::MutexLock lock(&mu_);
            if (stopping_) {
              // Shutting down: the rest stays in the spool for next time.
              return absl::CancelledError("the store is closing");
            }
          }
          switch (record.kind) {
            case SpoolRecord::Kind::kBatchCreated: {
              const std::string& id = record.batch.batch_id;
              BatchRecord batch = record.batch;
              {
                // Not started by this process: nothing runs it any more.
                absl::MutexLock lock(&mu_);
                batch.orphaned = pending_creates_.count(id) == 0;
              }
              absl::Status created = inner_->CreateBatch(batch);
              if (absl::IsAlreadyExists(created)) {
                // Ours if the row has our owner and creation time: a
                // CreateBatch whose answer was lost.
                absl::StatusOr<v1::BatchSummary> existing = inner_->GetBatch(
                    id, ReadScope::OwnedBy(record.batch.owner));
                if (!existing.ok() && !absl::IsNotFound(existing.status())) {
                  return existing.status();
                }
                const bool same =
                    existing.ok() &&
                    absl::FromUnixSeconds(existing->created_at().seconds()) +
                            absl::Nanoseconds(existing->created_at().nanos()) ==
                        record.batch.created_at;
                if (same) {
                  created = absl::OkStatus();
                } else {
                  absl::MutexLock lock(&mu_);
                  conflicting_.insert(id);
                  pending_creates_.erase(id);
                  LogEvent(LogLevel::kError, "spool_batch_conflict")
                      .Add("batch_id", id)
                      .Add("error",
                           "a batch spooled while MySQL was away has an id "
                           "another batch took meanwhile; its spooled "
                           "results are dropped rather than mixed in");
                  ++report.conflicts;
                  return absl::OkStatus();
                }
              }
              if (absl::IsUnavailable(created)) return created;
              absl::MutexLock lock(&mu_);
              pending_creates_.erase(id);
              if (!created.ok()) {
                // Refused for good: its records cannot be stored either.
                conflicting_.insert(id);
                ++report.unstorable;
                LogEvent(LogLevel::kError, "spool_record_unstorable")
                    .Add("batch_id", id)
                    .Add("error", std::string(created.message()));
                return absl::OkStatus();
              }
              ++report.records;
              return absl::OkStatus();
            }
            case SpoolRecord::Kind::kResult:
            case SpoolRecord::Kind::kBatchFinished: {
              const std::string& id = record.kind == SpoolRecord::Kind::kResult
                                          ? record.batch_id
                                          : record.batch.batch_id;
              {
                absl::MutexLock lock(&mu_);
                if (conflicting_.count(id) != 0) {
                  ++report.conflicts;
                  return absl::OkStatus();
                }
              }
              if (record.kind == SpoolRecord::Kind::kResult) {
                auto result = std::make_shared<v1::FetchResult>();
                if (!result->ParseFromString(record.result_bytes)) {
                  ++report.damaged;
                  return absl::OkStatus();
                }
                inner_->AppendResult(id, std::move(result), record.fetched_at,
                                     AckInto(acks));
              } else {
                inner_->FinishBatch(record.batch, AckInto(acks));
              }
              touched.insert(id);
              ++report.records;
              return wait_for_acks(options_.replay_chunk_records);
            }
          }
          return absl::OkStatus();
        });
    if (!read.ok()) return read.status();
    absl::Status acked = wait_for_acks(0);
    if (!acked.ok()) return acked;
    {
      absl::MutexLock lock(&acks->mu);
      report.unstorable += acks->unstorable;
    }
    report.damaged += read->undecodable_records + read->log.corruptions;
    // The final rows were written with the counts of their time; replayed
    // results change them.
    for (const std::string& id : touched) {
      absl::Status recounted = inner_->RecountStored(id);
      if (!recounted.ok()) return recounted;
    }
    absl::Status released = spool_->ReleaseReplayedSegment(segment, *read);
    if (!released.ok()) return released;
    {
      absl::MutexLock lock(&mu_);
      if (parked_.empty()) full_ = false;
    }
    if (options_.stats != nullptr) {
      options_.stats->replayed_writes.Increment(read->records);
    }
  }
  bool emptied = false;
  {
    absl::MutexLock lock(&mu_);
    if (spool_->Stats().used_bytes == 0 && parked_.empty()) {
      emptied = outage_logged_;
      outage_logged_ = false;
    }
  }
  if (report.records > 0 || report.conflicts > 0 || report.damaged > 0 ||
      report.unstorable > 0) {
    LogEvent(emptied ? LogLevel::kInfo : LogLevel::kWarning, "spool_replayed")
        .Add("records", report.records)
        .Add("conflicts", report.conflicts)
        .Add("damaged", report.damaged)
        .Add("unstorable", report.unstorable)
        .Add("spool_bytes_left", spool_->Stats().used_bytes);
  }
  return report;
}

}  // namespace batchfetch

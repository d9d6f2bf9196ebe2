#ifndef BATCHFETCH_SERVICE_STORE_SPOOLING_RESULT_STORE_H_
#define BATCHFETCH_SERVICE_STORE_SPOOLING_RESULT_STORE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "service/store/mysql/write_op.h"
#include "service/store/result_store.h"
#include "service/store/spool/result_spool.h"
#include "service/store/store_stats.h"

namespace batchfetch {

// A ResultStore that loses nothing while MySQL is away: it forwards to the
// real store (`inner`, MysqlResultStore) and takes over what that store
// cannot commit, into a ResultSpool (--spool_dir):
//  * the groups the inner writer gives up on (its GivenUpHandler): each
//    write is appended to the spool and acknowledged kSpooled once the
//    spool has fsynced it;
//  * CreateBatch when the database does not answer (UNAVAILABLE): the batch
//    row is spooled and the batch may start;
//  * every later write of a batch whose creation is still in the spool goes
//    straight to the spool, so that replay (in append order) creates the
//    batch row before its results and its final row.
// A replayer thread replays the spool into the inner store whenever the
// spool holds anything and the database answers Ping (checked every
// `replay_interval`), and once synchronously in Open (start-up). Replay is
// idempotent: results are keyed by (batch_id, index) and the first row
// stays; a batch row that already exists with the same owner and creation
// time is ours (a CreateBatch whose answer was lost). A spooled batch whose
// id was meanwhile taken by another batch is never mixed into it: its
// records are dropped with a spool_batch_conflict error line.
//
// When the spool is full (RESOURCE_EXHAUSTED naming --spool_max_bytes),
// given-up writes are parked in memory, unacknowledged, and retried every
// `replay_interval`: the batches' engine windows then stop new transfers
// until there is room, and nothing is dropped. Meanwhile CreateBatch
// answers UNAVAILABLE and Ping fails, so health says NOT_SERVING.
//
// Thread-safety: as ResultStore. Ownership: owns the inner store and the
// spool; the destructor stops the replayer, drains the inner store (what it
// gives up is spooled), and only then closes the spool; writes still parked
// then (spool full and database away) fail with UNAVAILABLE and are logged.
class SpoolingResultStore : public ResultStore {
 public:
  struct Options {
    ResultSpoolOptions spool;
    // How often the replayer checks for work (spool not empty or writes
    // parked) and, if so, pings the database.
    absl::Duration replay_interval = absl::Seconds(1);
    // Records replayed per step: the replayer waits for these to commit
    // before reading more, which bounds its memory.
    uint32_t replay_chunk_records = 1024;
    // Spool counters for metrics; not owned, may be null.
    StoreStats* stats = nullptr;
  };

  // Opens the spool, then the inner store through `open_inner`, which must
  // install the given handler as the inner writer's GivenUpHandler. Then
  // replays what an earlier process left in the spool (if the database
  // answers) and starts the replayer.
  using OpenInner = std::function<absl::StatusOr<std::unique_ptr<ResultStore>>(
      GivenUpHandler on_group_given_up)>;
  static absl::StatusOr<std::unique_ptr<SpoolingResultStore>> Open(
      Options options, const OpenInner& open_inner);

  ~SpoolingResultStore() override;

  absl::Status CreateBatch(const BatchRecord& batch) override;
  void AppendResult(const std::string& batch_id,
                    std::shared_ptr<const v1::FetchResult> result,
                    absl::Time fetched_at, Done done) override;
  void FinishBatch(const BatchRecord& batch, Done done) override;
  absl::StatusOr<v1::BatchSummary> GetBatch(const std::string& batch_id,
                                            const ReadScope& scope) override;
  absl::StatusOr<ResultPage> ListResults(const std::string& batch_id,
                                         const ReadScope& scope,
                                         uint32_t from_index,
                                         uint32_t limit) override;
  // OK while the spool can take writes, whether or not the database
  // answers (batches can start and nothing is lost; reads fail meanwhile);
  // UNAVAILABLE while it is full. Logs database_unreachable and
  // database_reachable when the database's answer changes.
  absl::Status Ping() override;
  void StartDraining() override;
  absl::Status RecountStored(const std::string& batch_id) override;
  absl::Status RenewLeases() override;
  absl::StatusOr<std::vector<std::string>> InterruptExpiredLeases() override;
  absl::StatusOr<RetentionPass> DeleteExpiredBatches(absl::Time ended_before,
                                                     int max_batches) override;
  absl::StatusOr<ResumePlan> BeginResume(
      const std::string& batch_id, const ReadScope& scope,
      const std::string& requests_sha256) override;
  // The inner store's.
  absl::StatusOr<StoredBatch> ReadStoredBatch(
      const std::string& batch_id) override;
  // Callers' batch control: the inner store's.
  absl::Status RequestCancel(const std::string& batch_id,
                             const ReadScope& scope) override;
  absl::StatusOr<std::vector<std::string>> CancelRequestedBatches() override;
  absl::StatusOr<BatchListPage> ListBatches(
      const ReadScope& scope, const BatchListQuery& query) override;
  absl::StatusOr<std::string> PageTokenKey() override;

  // Replays the spool now (what the replayer does when the database
  // answers); returns what it replayed. For tests and start-up.
  struct ReplayReport {
    uint64_t records = 0;    // handed to the inner store
    uint64_t conflicts = 0;  // dropped: their batch id belongs to another
    uint64_t damaged = 0;    // undecodable or damaged in the log
    // Refused by MySQL for good (logged as spool_record_unstorable).
    uint64_t unstorable = 0;
  };
  absl::StatusOr<ReplayReport> ReplayNow();

  ResultSpoolStats SpoolStats() const { return spool_->Stats(); }
  // Writes parked because the spool was full.
  size_t parked() const;
  bool spool_full() const;

 private:
  SpoolingResultStore(Options options, std::unique_ptr<ResultSpool> spool);

  // The inner writer's GivenUpHandler (runs on its thread).
  void TakeOver(std::vector<WriteOp>&& group, const absl::Status& status);
  // Appends `ops` to the spool, waits until durable, and acknowledges each
  // kSpooled; parks them when the spool is full; fails them on any other
  // spool error.
  void SpoolOps(std::vector<WriteOp> ops);
  // Hands parked writes back to the inner store when the database answers,
  // else to the spool (there may be room again).
  void RetryParked(bool database_answers);
  // Sends `op` to the inner store; to the spooler when its batch's creation
  // is still in the spool or the inner store is closing; fails it when its
  // batch id was taken by another batch while MySQL was away.
  void Route(WriteOp op);
  // Appends what reaches `to_spool_`, in order (so that neither the inner
  // writer nor a caller's thread waits for an fsync).
  void SpoolerLoop();
  void ReplayerLoop();
  bool HasWork() const;
  absl::Status SpoolBatchCreated(const BatchRecord& batch);

  const Options options_;
  const std::unique_ptr<ResultSpool> spool_;
  // Set once in Open, before any other thread can see the store; taken
  // away (under inner_mu_, exclusively) by the destructor after the
  // replayer stopped. Route, which the drain's callbacks reach, holds
  // inner_mu_ shared while it uses it.
  absl::Mutex inner_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::unique_ptr<ResultStore> inner_;

  // Serializes replays (replayer thread, ReplayNow).
  absl::Mutex replay_mu_ ABSL_ACQUIRED_BEFORE(mu_);

  mutable absl::Mutex mu_;
  // Batches whose kBatchCreated is in the spool and not yet replayed.
  std::set<std::string> pending_creates_ ABSL_GUARDED_BY(mu_);
  // Spooled batches found to clash with another batch's id at replay.
  std::set<std::string> conflicting_ ABSL_GUARDED_BY(mu_);
  // Writes for the spooler, in order.
  std::deque<WriteOp> to_spool_ ABSL_GUARDED_BY(mu_);
  std::deque<WriteOp> parked_ ABSL_GUARDED_BY(mu_);
  bool full_ ABSL_GUARDED_BY(mu_) = false;
  // What Ping last saw of the database (an outage is logged once).
  bool database_answers_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;          // the replayer
  bool spooler_stopping_ ABSL_GUARDED_BY(mu_) = false;  // the spooler
  // An outage is logged once: set by the first spooled write, cleared by a
  // replay that emptied the spool.
  bool outage_logged_ ABSL_GUARDED_BY(mu_) = false;
  std::thread spooler_;
  std::thread replayer_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_SPOOLING_RESULT_STORE_H_

#ifndef BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_RESULT_STORE_H_
#define BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_RESULT_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "service/base/clock.h"
#include "service/store/mysql/write_op.h"
#include "service/store/result_store.h"
#include "service/store/store_stats.h"

namespace batchfetch {

class MysqlReader;
class MysqlWriter;

// ResultStore over MySQL 8 / MariaDB 10.11 through Connector/C++ 1.1: a thin
// facade over its parts (all in this folder):
//  * MysqlSession: one connection, connect options, error mapping;
//  * MysqlSchema: versioned, idempotent migrations under GET_LOCK (run by
//    Open());
//  * MysqlWriter: the writer thread, grouped multi-row INSERTs in one short
//    transaction per group, reconnect/replay, deadlock retry, row-by-row
//    split on a permanent error; it gives a group up when its
//    WriteRetryPolicy says so (after `retry_budget`) and hands it to
//    `on_group_given_up`;
//  * MysqlReader: CreateBatch, GetBatch, ListResults on a pool of at most
//    `max_read_connections` connections;
//  * MysqlLeases: renewing this replica's batch leases and interrupting
//    expired ones (CreateBatch takes a batch's first lease);
//  * MysqlRetention: deleting batches that ended long ago, in chunks.
// Every round trip is bounded by `io_timeout`, so a half-open connection
// cannot hang a caller, the writer or shutdown.
//
// No exception leaves this class: Connector/C++ errors become absl::Status.
// Thread-safety: as ResultStore (every method from any thread).
class MysqlResultStore : public ResultStore {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    int port = 3306;
    std::string user = "batchfetch";
    std::string password;
    std::string database = "batchfetch";
    absl::Duration connect_timeout = absl::Seconds(5);
    // Read and write timeout of every connection (whole seconds, rounded
    // up): a round trip that stalls this long fails as a lost connection.
    absl::Duration io_timeout = absl::Seconds(30);
    // How long Open() keeps trying to reach the database at start-up.
    absl::Duration startup_wait = absl::Seconds(30);
    // How long the writer retries a group through connection loss. While
    // the store is being destroyed, the whole drain shares one budget.
    absl::Duration retry_budget = absl::Seconds(30);
    // What the whole drain shares (see WriteRetryPolicy::Options::
    // drain_budget); negative: `retry_budget`.
    absl::Duration drain_retry_budget = absl::Seconds(-1);
    int max_group_rows = 512;
    int64_t max_group_bytes = 8 << 20;
    // Connect and read timeout of Ping()'s probe (whole seconds).
    absl::Duration ping_timeout = absl::Seconds(2);
    // Connections of the read pool open at once; callers wait for one.
    int max_read_connections = 8;
    // Where the writer's deadlines come from; not owned, must outlive the
    // store. Backoff waits themselves are real sleeps.
    Clock* clock = Clock::Real();
    // Takes the groups the writer gives up on (runs on the writer thread;
    // see GivenUpHandler). Empty: each op's `done` gets UNAVAILABLE.
    GivenUpHandler on_group_given_up;
    // The writer's counters (metrics); not owned, must outlive the store.
    // Null: not counted.
    StoreStats* stats = nullptr;
    // This replica's identity in the batch leases (lease_owner; at most 64
    // ASCII characters, unique among the replicas sharing the database; see
    // NewReplicaId). Empty: Open() makes one.
    std::string replica_id;
    // How long a batch's lease lasts without a renewal (RenewLeases); a
    // RUNNING batch whose lease expired is interrupted by another replica's
    // InterruptExpiredLeases.
    absl::Duration lease_duration = absl::Seconds(30);
    // fetch_results rows one retention DELETE removes (MysqlRetention).
    // Rows may hold bodies up to --max_body_bytes: 100 keeps one DELETE's
    // undo and lock time small even for large bodies.
    int retention_rows_per_chunk = 100;
  };

  // Connects, applies pending schema migrations (serialized across replicas
  // with GET_LOCK) and starts the writer thread.
  static absl::StatusOr<std::unique_ptr<MysqlResultStore>> Open(
      const Options& options);

  // Drains the queue (bounded by about one retry_budget in total), then
  // stops the writer. Must run after every other call has returned.
  ~MysqlResultStore() override;

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
  // MysqlReader::BeginResume: the lease taken is `replica_id`'s.
  absl::StatusOr<ResumePlan> BeginResume(
      const std::string& batch_id, const ReadScope& scope,
      const std::string& requests_sha256) override;
  // The serialized FetchBatchRequest stored with `batch_id` by CreateBatch
  // (MysqlReader::ReadRequest); NOT_FOUND when none was stored.
  absl::StatusOr<std::string> ReadRequest(const std::string& batch_id);
  // MysqlReader::ReadStoredBatch, on the read pool.
  absl::StatusOr<StoredBatch> ReadStoredBatch(
      const std::string& batch_id) override;
  // "SELECT 1" on a connection of its own (so a busy read pool cannot
  // delay it), with `ping_timeout` for connecting and reading; the
  // connection is kept between pings and reopened after a failure.
  // UNAVAILABLE when the database does not answer. Calls are serialized.
  absl::Status Ping() override;
  // Starts the writer's drain (MysqlWriter::StartDraining): every write group
  // from now on is given up by about one retry_budget from this call.
  void StartDraining() override;
  absl::Status RecountStored(const std::string& batch_id) override;
  // See ResultStore and MysqlBatchControl; on the read pool.
  absl::Status RequestCancel(const std::string& batch_id,
                             const ReadScope& scope) override;
  absl::StatusOr<std::vector<std::string>> CancelRequestedBatches() override;
  absl::StatusOr<BatchListPage> ListBatches(
      const ReadScope& scope, const BatchListQuery& query) override;
  absl::StatusOr<std::string> PageTokenKey() override;
  // See ResultStore and MysqlLeases; on a connection of their own.
  absl::Status RenewLeases() override;
  absl::StatusOr<std::vector<std::string>> InterruptExpiredLeases() override;
  // See ResultStore and MysqlRetention; on a connection of its own.
  absl::StatusOr<RetentionPass> DeleteExpiredBatches(absl::Time ended_before,
                                                     int max_batches) override;

  // "<hostname>-<pid>-<6 random hex digits>", at most 64 ASCII characters:
  // unique per process start, so a restarted replica never mistakes its
  // predecessor's leases for its own.
  static std::string NewReplicaId();

  // Latest schema version this build knows.
  static int LatestSchemaVersion();

 private:
  class Impl;
  explicit MysqlResultStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_RESULT_STORE_H_

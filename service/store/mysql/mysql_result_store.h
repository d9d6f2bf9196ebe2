#ifndef BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_RESULT_STORE_H_
#define BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_RESULT_STORE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "service/store/result_store.h"

namespace batchfetch {

// ResultStore over MySQL 8 / MariaDB 10.11 through Connector/C++ 1.1.
//
// Writes go through one writer thread with its own connection: queued rows
// are grouped into multi-row INSERTs inside one short transaction per group
// (as many rows as have queued up, bounded by rows and bytes), so commit cost
// is shared under load and latency stays low when idle. Inserts are
// idempotent on (batch_id, idx); after a lost connection (2006/2013) the
// writer reconnects and replays the group, deadlocks are retried, and a group
// is given up only after `retry_budget`.
//
// Reads and CreateBatch use a small pool of other connections.
// No exception leaves this class: Connector/C++ errors become absl::Status.
class MysqlResultStore : public ResultStore {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    int port = 3306;
    std::string user = "batchfetch";
    std::string password;
    std::string database = "batchfetch";
    absl::Duration connect_timeout = absl::Seconds(5);
    // How long Open() keeps trying to reach the database at start-up.
    absl::Duration startup_wait = absl::Seconds(30);
    // How long the writer retries a group through connection loss.
    absl::Duration retry_budget = absl::Seconds(30);
    int max_group_rows = 512;
    int64_t max_group_bytes = 8 << 20;
    int max_read_connections = 8;
  };

  // Connects, applies pending schema migrations (serialized across replicas
  // with GET_LOCK) and starts the writer thread.
  static absl::StatusOr<std::unique_ptr<MysqlResultStore>> Open(
      const Options& options);

  // Drains the queue (bounded by retry_budget), then stops the writer.
  ~MysqlResultStore() override;

  absl::Status CreateBatch(const BatchRecord& batch) override;
  void AppendResult(const std::string& batch_id,
                    std::shared_ptr<const v1::FetchResult> result,
                    absl::Time fetched_at, Done done) override;
  void FinishBatch(const BatchRecord& batch, Done done) override;
  absl::StatusOr<v1::BatchSummary> GetBatch(
      const std::string& batch_id) override;
  absl::StatusOr<ResultPage> ListResults(const std::string& batch_id,
                                         uint32_t from_index,
                                         uint32_t limit) override;

  // Latest schema version this build knows.
  static int LatestSchemaVersion();

 private:
  class Impl;
  explicit MysqlResultStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_RESULT_STORE_H_

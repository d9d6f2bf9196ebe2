#ifndef BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_WRITER_H_
#define BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_WRITER_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "service/base/clock.h"
#include "service/store/mysql/mysql_session.h"
#include "service/store/mysql/write_op.h"
#include "service/store/mysql/write_retry_policy.h"
#include "service/store/store_stats.h"

namespace batchfetch {

// The one writer thread of the MySQL store and its connection.
//
// Contract: ops are written in the order they were queued. The writer takes
// as many queued ops as are waiting (bounded by `max_group_rows` and
// `max_group_bytes`, at least one) and writes them in one transaction:
// every result as multi-row `INSERT ... ON DUPLICATE KEY UPDATE idx = idx`
// (chunks of 256/64/16/4/1 rows, so few distinct prepared statements), then
// the batch UPDATEs, then COMMIT; then it runs each op's `done` with OK.
// Failures:
//  * lost connection: reconnect and replay the whole group (inserts are
//    idempotent); deadlock / lock-wait timeout: retry. Both only while the
//    WriteRetryPolicy says so; a group it gives up on goes, whole, to the
//    GivenUpHandler with UNAVAILABLE (default: FailEachOp).
//  * any other (permanent) error: the group is split and written op by op,
//    so one bad row fails only its own `done` (with that error).
// Every round trip is bounded by the session's io_timeout, so a half-open
// connection costs at most about one timeout per try.
//
// Ownership: owns its thread, session, queue and retry policy; the clock is
// not owned and must outlive the writer.
// Threading: Enqueue() may be called from any thread and never blocks on
// I/O. Everything else, including every `done` and the GivenUpHandler, runs
// on the writer thread. StartDraining() (any thread) starts the shared drain
// budget early; the destructor starts it (unless StartDraining did), drains
// the queue (see WriteRetryPolicy::StartDraining for the bound) and joins.
class MysqlWriter {
 public:
  struct Options {
    // Must select the database; autocommit is turned off by the writer.
    MysqlSession::Options session;
    int max_group_rows = 512;
    int64_t max_group_bytes = 8 << 20;
    WriteRetryPolicy::Options retry;
    // Empty: FailEachOp.
    GivenUpHandler on_group_given_up;
    // Where the writer counts its queue, rows, errors and commit times (see
    // StoreStats). Not owned; must outlive the writer. Null: not counted.
    StoreStats* stats = nullptr;
  };

  // Number of bound columns per result row.
  static constexpr int kResultColumns = 18;
  // A group of n rows is inserted in chunks of these sizes.
  static constexpr int kChunkSizes[] = {256, 64, 16, 4, 1};

  // Starts the writer thread; it connects on its first group.
  MysqlWriter(Options options, const Clock* clock);
  MysqlWriter(const MysqlWriter&) = delete;
  MysqlWriter& operator=(const MysqlWriter&) = delete;
  ~MysqlWriter();

  void Enqueue(WriteOp op);

  // The server began draining: every group the writer starts from now on
  // shares one retry budget counted from this call (WriteRetryPolicy::
  // StartDraining), so queued groups against a dead database are given up
  // within about one budget in total rather than one budget each. Only the
  // first call counts; thread-safe; never blocks on I/O.
  void StartDraining();

  // Pure helpers, exposed for tests.
  // The multi-row INSERT for `rows` rows.
  static std::string InsertSql(int rows);
  // The largest chunk size not above `remaining` (> 0).
  static int ChunkSize(size_t remaining);
  // Moves the next group off the front of `queue`: at least one op if any,
  // then more while within `max_rows` and `max_bytes`.
  static std::vector<WriteOp> TakeGroup(std::deque<WriteOp>& queue,
                                        int max_rows, int64_t max_bytes);

 private:
  void Loop();
  // Writes `group`, giving up or splitting as the class comment says, and
  // runs (or hands on) every op's `done`.
  void Process(std::vector<WriteOp>& group);
  // One group with reconnects and retries, until success or the policy
  // gives up; returns the last failure.
  MysqlStatus WriteWithRetries(const std::vector<WriteOp>& group);
  void GiveUp(std::vector<WriteOp>&& group, const MysqlStatus& last);
  // A group's transaction committed after `took`: its result rows and the
  // time go to options_.stats.
  void CountCommitted(const std::vector<WriteOp>& group, absl::Duration took);
  // One transaction; throws sql::SQLException.
  void WriteGroup(MysqlSession& s, const std::vector<WriteOp>& group);

  const Options options_;
  const Clock* const clock_;
  WriteRetryPolicy policy_;                // writer thread only
  std::unique_ptr<MysqlSession> session_;  // writer thread only

  absl::Mutex mu_;
  std::deque<WriteOp> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Set by StartDraining or the destructor, whichever comes first; the writer
  // thread hands it to policy_ (which only it touches) before each group.
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  MonoTime drain_started_at_ ABSL_GUARDED_BY(mu_);

  std::thread thread_;  // last: started after everything above exists
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_WRITER_H_

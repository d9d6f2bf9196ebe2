#ifndef BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_RETENTION_H_
#define BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_RETENTION_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "service/store/mysql/mysql_dedicated_session.h"
#include "service/store/mysql/mysql_session.h"
#include "service/store/result_store.h"

namespace batchfetch {

// Deletes batches that ended long ago (--retention; see
// ResultStore::DeleteExpiredBatches for the contract).
//
// When a batch ended: COALESCE(finished_at, lease_expires_at, created_at),
// for batches in a final state only (DONE, CANCELLED, FAILED, INTERRUPTED;
// an interrupted batch has no finished_at, and its lease expired when its
// replica stopped). Batches with `spooled` > 0 are kept: a spool may still
// replay rows for them.
//
// Per batch, every step its own short transaction (autocommit), so a
// concurrent write or read never waits long on our locks:
//  1. under the row lock (SELECT ... FOR UPDATE), recheck the batch and
//     clear its requests_sha256, so a resume arriving now fails instead of
//     running on half-deleted results (BeginResume locks the same row);
//  2. DELETE its batch_requests rows, `request_rows_per_chunk` at a time;
//  3. DELETE its fetch_results rows, `result_rows_per_chunk` at a time;
//  4. DELETE the batch row (still final, so it was not resumed meanwhile).
// A pass cut short (lost connection, crash) leaves the batch row with
// fewer rows; the next pass finds it again and finishes it. Every step is
// idempotent, so a lost connection retries the batch once on a new one.
//
// Ownership: owns one connection of its own (a long pass must not hold a
// read-pool connection; a MysqlDedicatedSession), opened on first use and
// reopened after a failure.
// Threading: DeleteExpired may be called from any thread; calls are
// serialized.
class MysqlRetention {
 public:
  struct Options {
    // Must select the database.
    MysqlSession::Options session;
    // Rows one DELETE removes: fetch_results rows (bodies are up to
    // --max_body_bytes each) and batch_requests rows (up to 1 MiB each).
    int result_rows_per_chunk = 1000;
    int request_rows_per_chunk = 4;
  };

  explicit MysqlRetention(Options options);
  MysqlRetention(const MysqlRetention&) = delete;
  MysqlRetention& operator=(const MysqlRetention&) = delete;

  // Deletes at most `max_batches` batches that ended before `ended_before`,
  // oldest first. UNAVAILABLE when the database cannot be reached; what was
  // deleted before a failure stays deleted (and is not reported).
  absl::StatusOr<RetentionPass> DeleteExpired(absl::Time ended_before,
                                              int max_batches);

 private:
  // The ids of at most `limit` batches due for deletion, oldest first.
  absl::StatusOr<std::vector<std::string>> SelectExpired(
      absl::Time ended_before, int limit) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Steps 1-4 for one batch; adds the rows it deleted to `*pass` and counts
  // the batch when its row went (false: it was no longer due).
  absl::Status DeleteBatch(const std::string& batch_id, absl::Time ended_before,
                           RetentionPass* pass)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  // Held for a whole DeleteExpired: passes do not interleave.
  absl::Mutex mu_;
  MysqlDedicatedSession session_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_RETENTION_H_

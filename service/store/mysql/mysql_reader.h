#ifndef BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_READER_H_
#define BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_READER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "batchfetch/v1/batchfetch.pb.h"
#include "service/store/mysql/mysql_session.h"
#include "service/store/result_store.h"

namespace batchfetch {

// Where a ListResults page ends: at most `max_rows` rows and, beyond the
// first row (which always fits), at most `max_bytes` of serialized results.
// Pure; not thread-safe.
class ResultPageLimiter {
 public:
  ResultPageLimiter(uint32_t max_rows, size_t max_bytes)
      : max_rows_(max_rows), max_bytes_(max_bytes) {}

  // No further row can join the page.
  bool full() const { return rows_ >= max_rows_; }
  // Whether a next row of `bytes` joins the page; if so it is counted.
  bool Add(size_t bytes) {
    if (full()) return false;
    if (rows_ > 0 && bytes_ + bytes > max_bytes_) return false;
    ++rows_;
    bytes_ += bytes;
    return true;
  }
  uint32_t rows() const { return rows_; }

 private:
  const uint32_t max_rows_;
  const size_t max_bytes_;
  uint32_t rows_ = 0;
  size_t bytes_ = 0;
};

// Cuts `result` so it serializes to at most `max_bytes`: `body` first, then
// `json` (at a UTF-8 character boundary, so the string stays valid UTF-8;
// the cut JSON is no longer valid JSON). Sets `truncated` when anything was
// cut; a result that fits is left alone. Pure.
void FitResult(size_t max_bytes, v1::FetchResult* result);

// The read side of the MySQL store: CreateBatch, GetBatch and ListResults on
// a bounded pool of connections.
//
// Contract: at most `max_read_connections` connections are open at once
// (idle or lent); a caller finding none free waits until one is returned.
// Each call borrows one connection; when it turns out dead (lost
// connection) it is closed and the call retried once on a fresh one. Every
// round trip is bounded by the session's io_timeout. A page of ListResults
// also ends after ~kMaxPageBytes of serialized results (at least one row,
// cut to kMaxRowBytes if it is larger), so it fits common 4 MB receive
// limits.
//
// Ownership: owns the pooled sessions.
// Threading: every method may be called from any thread concurrently; they
// block for their round trips (and for a free connection). The destructor
// must run after every call has returned.
class MysqlReader {
 public:
  struct Options {
    // Must select the database.
    MysqlSession::Options session;
    int max_read_connections = 8;  // values below 1 count as 1
    // CreateBatch leases the new batch to `replica_id` for
    // `lease_duration` (see MysqlLeases).
    std::string replica_id;
    absl::Duration lease_duration = absl::Seconds(30);
  };

  static constexpr size_t kMaxPageBytes = 3 << 20;
  // One stored row larger than this is cut (FitResult) rather than sent
  // whole: with the response's framing and page token it stays under the
  // 4 MiB a default gRPC client accepts. Stored rows can be larger because
  // a request may raise its max_body_bytes up to --max_body_bytes.
  static constexpr size_t kMaxRowBytes = (4 << 20) - (64 << 10);
  // The live counters of a RUNNING batch; the OK outcome is a parameter.
  // Appended to "... WHERE batch_id = ?": the scope's two parameters (any
  // owner?, the owner).
  static constexpr char kScopeSql[] = " AND (? <> 0 OR owner = ?)";
  static constexpr char kCountResultsSql[] =
      "SELECT COUNT(*) AS n, COALESCE(SUM(outcome = ?), 0) AS ok "
      "FROM fetch_results WHERE batch_id = ?";

  explicit MysqlReader(Options options);
  MysqlReader(const MysqlReader&) = delete;
  MysqlReader& operator=(const MysqlReader&) = delete;
  ~MysqlReader();

  // Largest piece of a stored request in one batch_requests row: well under
  // MySQL's max_allowed_packet (16 MiB on MariaDB, 64 MiB on MySQL 8).
  static constexpr size_t kRequestChunkBytes = 1 << 20;

  // ALREADY_EXISTS (message from MySQL) when the id is taken. The row, its
  // requests_sha256 and `batch.request` (in batch_requests, in chunks of
  // kRequestChunkBytes) are committed in one transaction.
  absl::Status CreateBatch(const BatchRecord& batch);
  // ResultStore::BeginResume; the lease taken is `replica_id`'s for
  // `lease_duration` (database time).
  absl::StatusOr<ResumePlan> BeginResume(const std::string& batch_id,
                                         const ReadScope& scope,
                                         const std::string& requests_sha256);
  // The serialized request CreateBatch stored with `batch_id`, reassembled;
  // NOT_FOUND when none was stored. Unscoped: for the service's own use
  // (takeover), never a caller's read.
  absl::StatusOr<std::string> ReadRequest(const std::string& batch_id);
  // ReadRequest with the batch row's owner, lease_owner and state (one
  // session); NOT_FOUND for an unknown id; an empty `request` when none was
  // stored.
  absl::StatusOr<StoredBatch> ReadStoredBatch(const std::string& batch_id);
  // NOT_FOUND, as for an unknown id, when the batch is outside `scope`.
  absl::StatusOr<v1::BatchSummary> GetBatch(const std::string& batch_id,
                                            const ReadScope& scope);
  absl::StatusOr<ResultPage> ListResults(const std::string& batch_id,
                                         const ReadScope& scope,
                                         uint32_t from_index, uint32_t limit);
  // ResultStore::RecountStored.
  absl::Status RecountStored(const std::string& batch_id);

  // Runs `fn` on a pooled connection, as the methods above do (a lost
  // connection is retried once on a fresh one, so `fn` must be safe to
  // run twice); for queries kept in files of their own
  // (MysqlBatchControl).
  absl::Status RunOnPooledSession(
      absl::string_view what,
      absl::FunctionRef<absl::Status(MysqlSession&)> fn);

  // Connections open now (idle or lent), and the most ever open at once.
  int open_connections() const;
  int peak_open_connections() const;

 private:
  // Binds kScopeSql's two parameters, from parameter index `first`.
  static void BindScope(sql::PreparedStatement& ps, int first,
                        const ReadScope& scope);
  // Sets `batch`'s requests_sha256 and inserts `batch.request` in chunks
  // (inside CreateBatch's transaction).
  static void WriteRequests(MysqlSession& s, const BatchRecord& batch);
  // Whether `batch`'s row holds exactly what CreateBatch inserts for it.
  static bool IsRowWeInserted(MysqlSession& s, const BatchRecord& batch);
  // Runs `fn(session)` on a pooled connection (see the class comment).
  template <typename Fn>
  absl::Status WithSession(absl::string_view what, Fn fn);
  // Waits for a free slot. `fresh`: never reuse an idle connection (an idle
  // one is closed to free its slot if the pool is full).
  absl::StatusOr<std::unique_ptr<MysqlSession>> Acquire(bool fresh);
  void Release(std::unique_ptr<MysqlSession> session, bool healthy);

  const Options options_;
  const int max_open_;

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<MysqlSession>> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;  // idle + lent + being opened
  int peak_open_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_READER_H_

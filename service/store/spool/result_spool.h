#ifndef BATCHFETCH_SERVICE_STORE_SPOOL_RESULT_SPOOL_H_
#define BATCHFETCH_SERVICE_STORE_SPOOL_RESULT_SPOOL_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "service/base/clock.h"
#include "service/store/spool/spool_log_reader.h"
#include "service/store/spool/spool_log_writer.h"
#include "service/store/spool/spool_record.h"

namespace batchfetch {

struct ResultSpoolOptions {
  // The spool's directory (--spool_dir); created if missing (not its
  // parents). One process at a time: Open takes an exclusive lock on
  // <dir>/LOCK.
  std::string dir;
  // The bound on the bytes of all segment files (--spool_max_bytes).
  uint64_t max_bytes = uint64_t{1} << 30;
  // A segment is closed and a new one started once it reaches this size, so
  // replayed space can be given back segment by segment.
  uint64_t segment_bytes = uint64_t{64} << 20;
  // Group commit: Append itself syncs once this many records, or records
  // this old (by `clock`), wait unsynced. Callers that must know a record
  // is durable wait with WaitDurable.
  uint32_t max_unsynced_records = 512;
  absl::Duration max_sync_delay = absl::Milliseconds(5);
  Clock* clock = Clock::Real();
  // Flushes a segment's data to the disk (::fdatasync unless set; a seam for
  // tests to count or fail syncs). Never called concurrently.
  std::function<int(int fd)> datasync;
};

struct ResultSpoolStats {
  uint64_t used_bytes = 0;  // all segment files, for metrics and health
  uint64_t max_bytes = 0;
  uint64_t segments = 0;           // files, the one being appended to too
  uint64_t appended_sequence = 0;  // the last Append's sequence
  uint64_t durable_sequence = 0;   // every record up to here is durable
};

// What replaying one segment found.
struct SpoolSegmentReplay {
  uint64_t records = 0;              // decoded and handed to the visitor
  uint64_t undecodable_records = 0;  // intact in the log, not a valid record
  SpoolReadStats log;                // damage and torn tail of the file
};

// The durable local spool: the writes the store could not commit to MySQL,
// appended to numbered segment files (<dir>/<20 digits>.spool, each a spool
// log of SpoolRecords) until they are replayed into MySQL.
//
// Durability contract:
//  * Append returns a sequence number (this process only: 1, 2, …). The
//    record is then in the file but not yet durable.
//  * WaitDurable(s) returns OK once every record up to s survives a crash of
//    the process or the machine (fdatasync of the segment, after the
//    directory entry was fsynced). Concurrent waiters share one fdatasync
//    (group commit): one of them syncs everything appended so far while the
//    others wait for it.
//  * Records nobody waits for are synced by the Append that finds
//    `max_unsynced_records` pending, or the oldest pending one older than
//    `max_sync_delay` (unless a sync is already running: Append never
//    waits for one); or by Sync, SyncIfDue, roll-over or destruction.
//    Without a periodic SyncIfDue, the delay is bounded only while appends
//    keep coming.
//  * A released segment's deletion is not fsynced: after a machine crash it
//    may come back and be replayed again (replay must be idempotent).
//  * After a crash, reopening yields every durable record; of the rest, a
//    prefix (a torn last record is dropped, never half-read).
//  * A failed fdatasync is sticky: the page cache may have dropped the data,
//    so the spool takes no more records (UNAVAILABLE) and waiters get the
//    error.
//
// Replay: SealForReplay closes the segment being appended to (later Appends
// start a new one) and lists the closed segments, oldest first;
// ReplaySegment reads one; ReleaseSegment deletes it once the caller has
// stored all its records elsewhere. Replay order is append order.
//
// Thread-safety: every method may be called from any thread. Appends are
// serialized by a mutex (one positioned write each); fdatasync runs outside
// it, so appends continue while a sync is in progress.
class ResultSpool {
 public:
  // Opens (creating it if needed) the spool in `options.dir`. Existing
  // segments are kept for replay; numbering continues after the highest.
  // FAILED_PRECONDITION if another ResultSpool holds the directory.
  static absl::StatusOr<std::unique_ptr<ResultSpool>> Open(
      ResultSpoolOptions options);

  // Syncs what was appended and closes the files.
  ~ResultSpool();

  ResultSpool(const ResultSpool&) = delete;
  ResultSpool& operator=(const ResultSpool&) = delete;

  // Appends `record`; returns its sequence number. RESOURCE_EXHAUSTED
  // (naming --spool_max_bytes) when it would take the spool past
  // `max_bytes`: nothing is written then. Other errors: the file write
  // failed (nothing of the record is left in the file), or the spool is
  // unusable after a failed sync.
  absl::StatusOr<uint64_t> Append(const SpoolRecord& record);

  // Blocks until every record up to `sequence` is durable (see above).
  // INVALID_ARGUMENT for a sequence not appended yet.
  absl::Status WaitDurable(uint64_t sequence);
  // WaitDurable(everything appended so far).
  absl::Status Sync();
  // Syncs if the group-commit policy says pending records have waited long
  // enough (for a caller that ticks periodically).
  absl::Status SyncIfDue();

  ResultSpoolStats Stats() const;

  // Closes (after syncing) the segment being appended to, if it holds
  // anything, and returns the numbers of every closed segment, oldest first.
  absl::StatusOr<std::vector<uint64_t>> SealForReplay();

  // Decodes the records of closed segment `segment` in order and hands each
  // to `visit`; stops at the first error `visit` returns and returns it.
  // Damaged or undecodable records are skipped and counted. NOT_FOUND for a
  // segment that is not closed (or unknown).
  absl::StatusOr<SpoolSegmentReplay> ReplaySegment(
      uint64_t segment,
      absl::FunctionRef<absl::Status(const SpoolRecord&)> visit) const;

  // Deletes closed segment `segment`, giving its bytes back. The caller
  // confirms that every record of it is stored (committed) elsewhere.
  absl::Status ReleaseSegment(uint64_t segment);
  // ReleaseSegment for a segment the caller replayed (ReplaySegment gave
  // `replay`) and stored: when it had damaged or undecodable records
  // (counted, never stored), a spool_segment_released_with_damage warning
  // (LogEvent) gives the counts, since they are gone with the file.
  absl::Status ReleaseReplayedSegment(uint64_t segment,
                                      const SpoolSegmentReplay& replay);

  // Start-up or "MySQL is back" in one call, for a synchronous `store`:
  // SealForReplay, then for each segment ReplaySegment and, when `store`
  // took every decodable record, ReleaseSegment. Stops at the first error
  // of `store` (that segment is kept). A segment with damaged or
  // undecodable records (counted, never stored) is released all the same:
  // nothing can recover them, and keeping the file would hold its space
  // for good; a spool_segment_released_with_damage warning (LogEvent) gives
  // the counts. Returns the sums over the replayed segments.
  absl::StatusOr<SpoolSegmentReplay> ReplayAndRelease(
      absl::FunctionRef<absl::Status(const SpoolRecord&)> store);

  // "<dir>/<20-digit number>.spool".
  static std::string SegmentPath(const std::string& dir, uint64_t segment);

 private:
  struct ActiveSegment {
    uint64_t number = 0;
    int fd = -1;
    std::unique_ptr<SpoolLogWriter> writer;
  };

  ResultSpool(ResultSpoolOptions options, int lock_fd);

  absl::Status StartSegmentLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Syncs and closes the active segment (no-op without one).
  absl::Status RollLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SyncLocked(uint64_t sequence) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool SyncDueLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SyncFailedLocked(int error) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ResultSpoolOptions options_;
  const int lock_fd_;

  mutable absl::Mutex mu_;
  absl::CondVar sync_done_;
  // Closed segments: number → file bytes.
  std::map<uint64_t, uint64_t> closed_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<ActiveSegment> active_ ABSL_GUARDED_BY(mu_);
  uint64_t next_segment_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t used_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t appended_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t durable_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  // When the oldest record not known durable was appended (or a sync that
  // did not cover it started).
  MonoTime oldest_unsynced_at_ ABSL_GUARDED_BY(mu_);
  bool sync_in_progress_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status sync_error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_SPOOL_RESULT_SPOOL_H_

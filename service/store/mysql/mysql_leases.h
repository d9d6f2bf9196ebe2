#ifndef BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_LEASES_H_
#define BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_LEASES_H_

#include <memory>
#include <set>
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

namespace batchfetch {

// The lease rows of `batches` (schema migration 5): which replica runs a
// RUNNING batch (`lease_owner`) and until when it promised to renew
// (`lease_expires_at`). CreateBatch (MysqlReader) takes the first lease;
// this class renews this replica's leases and interrupts expired foreign
// ones.
//
// Contract: every time is the database's NOW(6) (sessions run in UTC), never
// a local clock, so clock skew between replicas does not matter. Only
// RUNNING batches are ever touched, so a batch that finished (DONE,
// CANCELLED, FAILED) is never interrupted, and a batch created before
// migration 5 (lease_expires_at NULL) is left alone. The final-row UPDATE
// (MysqlWriter) is unconditional, so an owner that was wrongly interrupted
// (e.g. it lost the database for longer than a lease) still finishes its
// batch normally.
//
// Ownership: owns one connection of its own (so a busy read pool cannot
// delay a renewal; a MysqlDedicatedSession), opened on first use and
// reopened after a failure.
// Threading: the methods may be called from any thread; calls are
// serialized. Each blocks for a few round trips, each bounded by the
// session's io_timeout.
class MysqlLeases {
 public:
  struct Options {
    // Must select the database.
    MysqlSession::Options session;
    // This replica's identity, written into lease_owner (at most 64 ASCII
    // characters).
    std::string replica_id;
    absl::Duration lease_duration = absl::Seconds(30);
  };

  // Sweep at most this many batches per InterruptExpired call; the next
  // call takes the rest.
  static constexpr int kMaxInterruptsPerSweep = 1000;

  explicit MysqlLeases(Options options);
  MysqlLeases(const MysqlLeases&) = delete;
  MysqlLeases& operator=(const MysqlLeases&) = delete;

  // One UPDATE: lease_expires_at = NOW(6) + lease_duration for every
  // RUNNING batch whose lease_owner is this replica.
  //
  // Only the batches in `live` (the ones this process runs): a RUNNING row
  // this replica owns but no longer runs (its final row could not be
  // written) must expire, not be renewed for the life of the process.
  absl::Status Renew(const std::vector<std::string>& live);
  // In one transaction: locks (SELECT ... FOR UPDATE) the RUNNING batches
  // whose lease expired before NOW(6) (but for this replica's live ones),
  // marks each BATCH_STATE_INTERRUPTED with InterruptedReason(), commits,
  // and returns their ids. Two replicas sweeping at once: the second waits
  // for the first's row locks, then no longer sees those rows RUNNING, so
  // each batch is returned once.
  // This replica's own expired rows count too, except those in `live`
  // (running here, only not renewed in time, e.g. the database was away).
  absl::StatusOr<std::vector<std::string>> InterruptExpired(
      const std::set<std::string>& live);

  // "lease of replica <owner> expired at <time>: the replica stopped (crash
  // or lost database)", at most 255 bytes (the column). Pure.
  static std::string InterruptedReason(absl::string_view owner,
                                       absl::Time expired_at);

 private:
  const Options options_;
  MysqlDedicatedSession session_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_LEASES_H_

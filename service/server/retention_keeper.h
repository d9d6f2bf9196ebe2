#ifndef BATCHFETCH_SERVICE_SERVER_RETENTION_KEEPER_H_
#define BATCHFETCH_SERVICE_SERVER_RETENTION_KEEPER_H_

#include <functional>

#include "absl/time/time.h"
#include "service/base/clock.h"
#include "service/base/outage_log.h"
#include "service/server/periodic_worker.h"
#include "service/store/result_store.h"

namespace batchfetch {

// The background thread of --retention: deletes the batches (and their
// results) that ended more than `retention` ago, through
// ResultStore::DeleteExpiredBatches, which deletes in small chunks.
//
// Schedule: a pass at start, then one every `interval`. A pass deletes at
// most `max_batches_per_pass` batches; when it reports more due, the next
// pass comes after `pause_between_passes` instead, so a large backlog goes
// steadily without holding the database busy in one long run. The cutoff
// is the clock's wall time minus `retention` at each pass (at retention
// scale, days, clock skew between replicas does not matter; replicas
// deleting at once is harmless: each step rechecks its batch).
//
// Logs: `retention_deleted` (info; batches, rows, ended_before) after a
// pass that deleted something, never for an empty one; a failing pass is
// logged once when it starts failing (`retention_failed`, warning, with the
// error) and once when it works again (`retention_recovered`), and is
// retried at the next `interval`.
//
// As LeaseKeeper: unit tests drive RunDue() with a FakeClock instead of
// starting the thread.
// Ownership: `store` is not owned and must outlive Stop().
// Threading: Start() starts the keeper's own thread (a PeriodicWorker) (its
// first pass runs there, so start-up does not wait for a backlog); Stop() (or
// the destructor) wakes and joins it; a pass in progress finishes its current
// store call first. RunDue() only while the thread is not started.
class RetentionKeeper {
 public:
  struct Options {
    // Batches that ended longer ago than this go. Must be > 0.
    absl::Duration retention = absl::Hours(24 * 30);
    absl::Duration interval = absl::Minutes(5);
    int max_batches_per_pass = 100;
    absl::Duration pause_between_passes = absl::Seconds(1);
    // Run on the keeper's thread before its first pass and after its last
    // (MysqlSession::ThreadInit/ThreadEnd). Empty: nothing.
    std::function<void()> thread_init;
    std::function<void()> thread_end;
  };

  RetentionKeeper(ResultStore* store, Options options,
                  const Clock* clock = Clock::Real());
  ~RetentionKeeper();
  RetentionKeeper(const RetentionKeeper&) = delete;
  RetentionKeeper& operator=(const RetentionKeeper&) = delete;

  void Start();
  void Stop();

  // Runs a pass if one is due at the clock's now (always on the first
  // call) and returns when the next one is due.
  MonoTime RunDue();

 private:
  // One pass; returns when the next is due, counted from `now`.
  MonoTime RunPass(MonoTime now);

  ResultStore* const store_;
  const Options options_;
  const Clock* const clock_;

  // Touched by RunDue only (one thread).
  bool started_passes_ = false;
  MonoTime next_pass_;
  OutageLog outage_{"retention_failed", "retention_recovered"};

  // Last: stopped (joined) before the members its passes use go.
  PeriodicWorker worker_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_SERVER_RETENTION_KEEPER_H_

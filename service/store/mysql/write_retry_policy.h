#ifndef BATCHFETCH_SERVICE_STORE_MYSQL_WRITE_RETRY_POLICY_H_
#define BATCHFETCH_SERVICE_STORE_MYSQL_WRITE_RETRY_POLICY_H_

#include <optional>

#include "absl/time/time.h"
#include "service/base/clock.h"
#include "service/store/mysql/mysql_session.h"

namespace batchfetch {

// The writer's "keep retrying or give up" decision, apart from the writer so
// that it can be tested with a fake clock and replaced.
//
// Contract: a group is retried only after a transient error (lost
// connection, deadlock, lock-wait timeout), with a backoff starting at
// `initial_backoff` and doubling up to `max_backoff`, for as long as the
// next try would start within `budget` of the group's first try.
//
// Shutdown: once StartDraining(since) was called, every group (the one in
// progress too) is given up by `since + drain_budget`; and once that has
// passed, a group following one that was given up (the database is unreachable)
// is given up without a try. So a drain against a dead or half-open database
// takes about one budget (plus one try's timeouts) in total, not one per queued
// group, while a drain against a healthy database still writes everything.
//
// Ownership: the policy holds a `clock` it does not own (must outlive it);
// a Group refers to its policy, which must outlive the group.
// Threading: not thread-safe; the writer thread owns both.
class WriteRetryPolicy {
 public:
  struct Options {
    absl::Duration budget = absl::Seconds(30);
    // The budget the whole drain shares (StartDraining). Shorter than
    // `budget` when what is given up is spooled rather than lost, so a
    // drain against a dead database ends soon. Negative: `budget`.
    absl::Duration drain_budget = absl::Seconds(-1);
    absl::Duration initial_backoff = absl::Milliseconds(50);
    absl::Duration max_backoff = absl::Seconds(2);
  };

  // The tries of one group.
  class Group {
   public:
    // Called after a failed try that ended with `kind`: how long to wait
    // before the next try, or nullopt to give up now.
    // Giving up after a transient error marks the database unreachable.
    std::optional<absl::Duration> NextDelay(MysqlErrorKind kind);
    // The group was written: the database is reachable.
    void Succeeded();

    // When this group is given up at the latest.
    MonoTime deadline() const { return deadline_; }

   private:
    friend class WriteRetryPolicy;
    Group(WriteRetryPolicy* policy, MonoTime deadline);

    WriteRetryPolicy* policy_;
    MonoTime deadline_;
    absl::Duration backoff_;
  };

  WriteRetryPolicy(const Options& options, const Clock* clock);

  // Starts the tries of a group now.
  Group StartGroup();

  // Whether a group starting now is to be given up without a try (see the
  // class comment).
  bool GiveUpWithoutTrying() const;

  // The store began shutting down at `since`: later groups share one budget
  // from then. Only the first call counts.
  void StartDraining(MonoTime since);
  bool draining() const { return draining_; }

 private:
  const Options options_;
  const Clock* const clock_;
  bool draining_ = false;
  MonoTime drain_deadline_ = MonoTime::max();
  // The last group that ended was given up after transient errors.
  bool unreachable_ = false;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_MYSQL_WRITE_RETRY_POLICY_H_

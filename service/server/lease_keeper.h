#ifndef BATCHFETCH_SERVICE_SERVER_LEASE_KEEPER_H_
#define BATCHFETCH_SERVICE_SERVER_LEASE_KEEPER_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "service/base/clock.h"
#include "service/base/outage_log.h"
#include "service/server/periodic_worker.h"
#include "service/store/result_store.h"
#include "service/store/store_stats.h"

namespace batchfetch {

// The background thread that keeps this replica's batch leases alive and
// interrupts the batches of replicas that stopped (issue 9, "Crashes").
//
// Every lease_duration / 4 it renews this replica's leases
// (ResultStore::RenewLeases), so three renewals in a row may fail before a
// lease expires. At start and every lease_duration / 2 it sweeps
// (ResultStore::InterruptExpiredLeases): each batch it marks interrupted
// gives one warning LogEvent `batch_interrupted` (batch_id, reason: the
// stored state_reason) and one count in StoreStats::batches_interrupted.
// A failing renewal or sweep (the database is away) is logged once when it
// starts failing (`lease_renewal_failed`, `lease_sweep_failed`, warning,
// with the error) and once when it works again (`lease_renewal_recovered`,
// `lease_sweep_recovered`), never per tick, and never stops the thread.
//
// Timing comes from `clock`'s monotonic time (the schedule only; every
// lease time is the database's). The thread waits in real time between
// rounds, so unit tests drive RunDue() with a FakeClock instead of starting
// the thread.
//
// Ownership: `store` and `stats` are not owned and must outlive Stop().
// Threading: Start() starts the keeper's own thread and returns once its
// first round (sweep, then renewal) is done; Stop() (or the destructor)
// wakes and joins it. Tests may call RunDue() on their thread, but only
// while the thread is not started.
class LeaseKeeper {
 public:
  struct Options {
    // The store's lease duration (MysqlResultStore::Options::
    // lease_duration); paces the rounds.
    absl::Duration lease_duration = absl::Seconds(30);
    // Run on the keeper's thread before its first round and after its last
    // (MysqlSession::ThreadInit/ThreadEnd). Empty: nothing.
    std::function<void()> thread_init;
    std::function<void()> thread_end;
  };

  // `stats`: may be null (not counted).
  LeaseKeeper(ResultStore* store, StoreStats* stats, Options options,
              const Clock* clock = Clock::Real());
  ~LeaseKeeper();
  LeaseKeeper(const LeaseKeeper&) = delete;
  LeaseKeeper& operator=(const LeaseKeeper&) = delete;

  void Start();
  void Stop();

  // Who hears of the batches each sweep interrupts (the service's
  // takeover, BatchFetcherService::TakeOverInterrupted): called on the
  // keeper's thread after every successful sweep with the ids it
  // interrupted, possibly none (so the listener can retry what it put
  // off); it must not block. Ids interrupted while no listener is set (the
  // first sweep runs before the service exists) are handed to the next
  // listener set, at most kMaxUnheard of them.
  using SweepListener = std::function<void(std::vector<std::string>)>;
  static constexpr size_t kMaxUnheard = 1000;
  // Sets the listener; an empty one unsets it. Once this returns, no call
  // to the previous listener is in progress (a call running now is waited
  // for), so its target may go away. Not from inside the listener.
  void SetSweepListener(SweepListener listener)
      ABSL_LOCKS_EXCLUDED(listener_mu_);

  // Runs the sweep and/or the renewal due at the clock's now (both on the
  // first call) and returns when the next one is due.
  MonoTime RunDue();

 private:
  void Renew();
  void Sweep();

  ResultStore* const store_;
  StoreStats* const stats_;
  const Options options_;
  const Clock* const clock_;

  // The schedule and the outage state: touched by RunDue only (one thread).
  bool started_rounds_ = false;
  MonoTime next_renewal_;
  MonoTime next_sweep_;
  OutageLog renewal_outage_{"lease_renewal_failed", "lease_renewal_recovered"};
  OutageLog sweep_outage_{"lease_sweep_failed", "lease_sweep_recovered"};

  // Held while the listener runs (see SetSweepListener).
  absl::Mutex listener_mu_;
  SweepListener listener_ ABSL_GUARDED_BY(listener_mu_);
  std::vector<std::string> unheard_ ABSL_GUARDED_BY(listener_mu_);

  // Last: its thread runs RunDue, which reads the members above.
  PeriodicWorker worker_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_SERVER_LEASE_KEEPER_H_

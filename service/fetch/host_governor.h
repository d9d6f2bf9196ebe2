#ifndef BATCHFETCH_SERVICE_FETCH_HOST_GOVERNOR_H_
#define BATCHFETCH_SERVICE_FETCH_HOST_GOVERNOR_H_

#include <cstddef>
#include <string>
#include <unordered_map>

#include "service/base/clock.h"

namespace batchfetch {

// Engine-wide state per upstream host (scheme://host:port), shared by every
// batch: Retry-After cooldowns and transfers in flight counted across
// batches. Adaptive per-host limits will live here.
//
// Thread-safety: none; the engine thread owns it.
class HostGovernor {
 public:
  // One host's state. The address is stable while referenced.
  class Host {
   public:
    const std::string& key() const { return *key_; }
    int in_flight() const { return in_flight_; }
    MonoTime cooldown_until() const { return cooldown_until_; }

   private:
    friend class HostGovernor;
    // The map's own key: node-based, so stable (unlike an iterator, which a
    // rehash invalidates).
    const std::string* key_ = nullptr;
    int refs_ = 0;
    int in_flight_ = 0;
    MonoTime cooldown_until_ = MonoTime::min();
  };

  HostGovernor() = default;
  HostGovernor(const HostGovernor&) = delete;
  HostGovernor& operator=(const HostGovernor&) = delete;

  // A reference to `key`'s state, created on first use. Pair with Unref.
  Host* Ref(const std::string& key);
  // REQUIRES: `host` came from Ref and is not yet unreferenced that often.
  void Unref(Host* host);

  // Whether requests to `host` may start now (no cooldown running).
  bool Open(const Host& host, MonoTime now) const {
    return host.cooldown_until_ <= now;
  }

  // Holds back every request to `key` until `until` (a later cooldown
  // extends, an earlier one never shortens). `key` need not be referenced:
  // a redirect target's host can be cooled too. Cooldowns of hosts no batch
  // references are forgotten once they end.
  void StartCooldown(const std::string& key, MonoTime until, MonoTime now);

  void TransferStarted(Host& host) { ++host.in_flight_; }
  void TransferEnded(Host& host) { --host.in_flight_; }

  // Hosts with state (referenced or cooling down).
  size_t size() const { return hosts_.size(); }

 private:
  // Removes unreferenced hosts whose cooldown has ended.
  void Prune(MonoTime now);

  std::unordered_map<std::string, Host> hosts_;
  size_t prune_at_ = 1024;  // size that triggers the next Prune
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_FETCH_HOST_GOVERNOR_H_

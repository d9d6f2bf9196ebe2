#include "service/fetch/host_governor.h"

#include <algorithm>

namespace batchfetch {

HostGovernor::Host* HostGovernor::Ref(const std::string& key) {
  auto [it, inserted] = hosts_.try_emplace(key);
  if (inserted) it->second.key_ = &it->first;
  ++it->second.refs_;
  return &it->second;
}

void HostGovernor::Unref(Host* host) {
  if (--host->refs_ > 0) return;
  // Keep a running cooldown: it must still hold back later batches. The
  // next Prune forgets it once it has ended.
  if (host->cooldown_until_ == MonoTime::min()) hosts_.erase(*host->key_);
}

void HostGovernor::StartCooldown(const std::string& key, MonoTime until,
                                 MonoTime now) {
  auto [it, inserted] = hosts_.try_emplace(key);
  if (inserted) it->second.key_ = &it->first;
  it->second.cooldown_until_ = std::max(it->second.cooldown_until_, until);
  if (hosts_.size() >= prune_at_) Prune(now);
}

void HostGovernor::Prune(MonoTime now) {
  for (auto it = hosts_.begin(); it != hosts_.end();) {
    const Host& host = it->second;
    it = host.refs_ == 0 && host.cooldown_until_ <= now ? hosts_.erase(it)
                                                        : std::next(it);
  }
  // Amortized: the next prune waits until the map has doubled again.
  prune_at_ = std::max<size_t>(1024, 2 * hosts_.size());
}

}  // namespace batchfetch

#include "service/api/active_batch_limiter.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace batchfetch {

std::string PeerAddressKey(std::string_view peer) {
  const bool ipv4 = peer.substr(0, 5) == "ipv4:";
  const bool ipv6 = peer.substr(0, 5) == "ipv6:";
  if (!ipv4 && !ipv6) return std::string(peer);
  const size_t colon = peer.rfind(':');
  if (colon == std::string_view::npos || colon < 5) return std::string(peer);
  // An ipv6 address is bracketed when a port follows, the brackets perhaps
  // percent-encoded: "ipv6:[::1]:5555", "ipv6:%5B::1%5D:5555".
  const std::string_view host = peer.substr(0, colon);
  const auto ends_with = [&](std::string_view suffix) {
    return host.size() >= suffix.size() &&
           host.substr(host.size() - suffix.size()) == suffix;
  };
  if (ipv6 && !ends_with("]") && !ends_with("%5D") && !ends_with("%5d")) {
    return std::string(peer);
  }
  return std::string(host);
}

ActiveBatchLimiter::Lease::Lease(Lease&& other) noexcept
    : limiter_(std::exchange(other.limiter_, nullptr)),
      caller_(std::move(other.caller_)) {}

ActiveBatchLimiter::Lease& ActiveBatchLimiter::Lease::operator=(
    Lease&& other) noexcept {
  if (this != &other) {
    Release();
    limiter_ = std::exchange(other.limiter_, nullptr);
    caller_ = std::move(other.caller_);
  }
  return *this;
}

void ActiveBatchLimiter::Lease::Release() {
  if (limiter_ == nullptr) return;
  std::exchange(limiter_, nullptr)->Release(caller_);
}

absl::StatusOr<ActiveBatchLimiter::Lease> ActiveBatchLimiter::TryAcquire(
    const std::string& caller) {
  absl::MutexLock lock(&mu_);
  if (closed_) {
    return absl::UnavailableError(
        "the server is draining (shutting down); retry on another instance");
  }
  if (limits_.max_active > 0 && active_ >= limits_.max_active) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the server runs --max_active_batches=", limits_.max_active,
        " batches already; retry when one has finished"));
  }
  auto it = per_caller_.find(caller);
  const int mine = it == per_caller_.end() ? 0 : it->second;
  if (limits_.max_per_caller > 0 && mine >= limits_.max_per_caller) {
    return absl::ResourceExhaustedError(
        absl::StrCat("this caller runs --max_active_batches_per_caller=",
                     limits_.max_per_caller,
                     " batches already; retry when one of them has finished"));
  }
  ++active_;
  ++per_caller_[caller];
  return Lease(this, caller);
}

void ActiveBatchLimiter::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

void ActiveBatchLimiter::Release(const std::string& caller) {
  absl::MutexLock lock(&mu_);
  --active_;
  auto it = per_caller_.find(caller);
  if (it != per_caller_.end() && --it->second <= 0) per_caller_.erase(it);
}

int ActiveBatchLimiter::active() const {
  absl::MutexLock lock(&mu_);
  return active_;
}

int ActiveBatchLimiter::active_for(const std::string& caller) const {
  absl::MutexLock lock(&mu_);
  auto it = per_caller_.find(caller);
  return it == per_caller_.end() ? 0 : it->second;
}

}  // namespace batchfetch

#ifndef BATCHFETCH_SERVICE_FETCH_EGRESS_POLICY_H_
#define BATCHFETCH_SERVICE_FETCH_EGRESS_POLICY_H_

#include <sys/socket.h>

#include "absl/status/status.h"

namespace batchfetch {

// Decides which addresses transfers may connect to. CurlDriver asks it for
// every socket it is about to open, with the address actually being
// connected to (after DNS), so a refused address never gets a SYN; a
// refusal ends the transfer as TransferResult::kBlocked with
// EndReason::kBlockedByPolicy and the status message as its error.
//
// Thread-safety: called on the engine thread; implementations must be
// immutable after construction or synchronize themselves.
class EgressPolicy {
 public:
  virtual ~EgressPolicy() = default;
  // OK to allow; PERMISSION_DENIED naming the address and rule to refuse.
  virtual absl::Status CheckConnect(const sockaddr* address,
                                    socklen_t length) const = 0;
};

// Allows everything. The default until the egress rules land.
class AllowAllEgress final : public EgressPolicy {
 public:
  absl::Status CheckConnect(const sockaddr*, socklen_t) const override {
    return absl::OkStatus();
  }
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_FETCH_EGRESS_POLICY_H_

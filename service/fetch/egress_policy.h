#ifndef BATCHFETCH_SERVICE_FETCH_EGRESS_POLICY_H_
#define BATCHFETCH_SERVICE_FETCH_EGRESS_POLICY_H_

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace batchfetch {

// An IPv4 or IPv6 address. IPv4 is kept as such (not mapped), so rules and
// messages show what was connected to.
struct IpAddress {
  bool v4 = true;
  std::array<uint8_t, 16> bytes{};  // v4: the first 4 bytes

  static std::optional<IpAddress> FromSockaddr(const sockaddr* address,
                                               socklen_t length);
  // "127.0.0.1", "::1" (no brackets, no port). INVALID_ARGUMENT otherwise.
  static absl::StatusOr<IpAddress> Parse(absl::string_view text);
  std::string ToString() const;
  // The IPv4 addresses an IPv6 address carries in one of the forms that
  // tunnel or translate to IPv4: IPv4-mapped ::ffff:0:0/96, IPv4-translated
  // ::ffff:0:0:0/96 (RFC 2765), IPv4-compatible ::/96 (other than :: and
  // ::1), NAT64 64:ff9b::/96, 6to4 2002::/16, and Teredo 2001::/32, which
  // carries two: the client (obfuscated in the last 32 bits), then the
  // Teredo server (bits 32..63). Empty for IPv4 and every other address.
  // The local-use NAT64 prefix 64:ff9b:1::/48 is not decoded (where the
  // IPv4 address sits depends on the operator's prefix length): the
  // built-in list denies all of it instead.
  std::vector<IpAddress> EmbeddedIpv4Addresses() const;
};

// Decides which addresses transfers may connect to and send requests on.
// CurlDriver asks it twice, always with the address actually connected to
// (after DNS), never with the URL's text:
//   * for every socket it is about to open (CheckSocketAddress), so a
//     refused address never gets a SYN;
//   * before every request (CheckPeer, from CURLOPT_PREREQFUNCTION): on a
//     reused keep-alive connection and on every redirect hop too.
// Both come down to the one decision, Check. A refusal ends the transfer as
// TransferResult::kBlocked with EndReason::kBlockedByPolicy (never retried)
// and the status message as its error. Through a proxy, the address
// connected to is the proxy's.
//
// Thread-safety: called on the engine thread; implementations must be
// immutable after construction or synchronize themselves.
class EgressPolicy {
 public:
  virtual ~EgressPolicy() = default;
  // OK to allow a connection to `address` port `port`; PERMISSION_DENIED
  // naming the address and the rule to refuse.
  virtual absl::Status Check(const IpAddress& address, int port) const = 0;

  // Check for a socket address (AF_INET or AF_INET6; any other family is
  // refused).
  absl::Status CheckSocketAddress(const sockaddr* address,
                                  socklen_t length) const;
  // Check for a connection as libcurl reports it: the numeric address text
  // ("10.0.0.1", "::1") and port. Text that is not an IP address (e.g. an
  // empty one) is refused.
  absl::Status CheckPeer(absl::string_view address, int port) const;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_FETCH_EGRESS_POLICY_H_

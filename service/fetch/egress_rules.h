#ifndef BATCHFETCH_SERVICE_FETCH_EGRESS_RULES_H_
#define BATCHFETCH_SERVICE_FETCH_EGRESS_RULES_H_

// Address rules for the egress policy: which IP addresses a transfer may
// connect to. Pure and immutable; thread-safe.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "service/fetch/egress_policy.h"

namespace batchfetch {

// An address range, "10.0.0.0/8" or "fc00::/7" (a bare address means a
// single host).
struct IpNetwork {
  IpAddress base;
  int prefix = 32;

  static absl::StatusOr<IpNetwork> Parse(absl::string_view text);
  bool Contains(const IpAddress& address) const;
  std::string ToString() const;
};

// The built-in deny list: loopback, private (RFC 1918), link-local,
// CGNAT, "this network", IETF protocol assignments, 6to4 relay anycast,
// multicast, reserved, broadcast, benchmark and documentation ranges, and
// their IPv6 counterparts (::1, ::, ULA, link-local, deprecated site-local
// fec0::/10, multicast, documentation), plus the IPv6 ranges that are
// never a public destination: local-use NAT64 64:ff9b:1::/48, discard-only
// 100::/64 and ORCHID 2001:10::/28 and 2001:20::/28. Returns the most
// specific range that denies `address` with its name, e.g.
// "127.0.0.0/8 (loopback)"; nullopt when none does. Does not look into
// embedded IPv4 (see EgressRules).
std::optional<std::string> BuiltInDenial(const IpAddress& address);

// The policy: an explicit deny wins over everything; an explicit allow wins
// over the built-in list; everything else the built-in list does not deny
// is allowed. An IPv6 address that embeds IPv4 addresses
// (IpAddress::EmbeddedIpv4Addresses) is denied when any of them would be
// (unless the IPv6 address itself is allowed explicitly). `allow_ports`
// empty means any port.
class EgressRules final : public EgressPolicy {
 public:
  struct Options {
    std::vector<std::string> allow_cidrs;
    std::vector<std::string> deny_cidrs;
    std::vector<int> allow_ports;
  };
  // INVALID_ARGUMENT naming the bad entry.
  static absl::StatusOr<std::shared_ptr<EgressRules>> Create(
      const Options& options);

  // OK, or PERMISSION_DENIED naming the address and the rule.
  absl::Status Check(const IpAddress& address, int port) const override;

 private:
  EgressRules() = default;
  // Why `address` is denied by the address rules, or nullopt.
  std::optional<std::string> Denial(const IpAddress& address) const;

  std::vector<IpNetwork> allow_;
  std::vector<IpNetwork> deny_;
  std::vector<int> allow_ports_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_FETCH_EGRESS_RULES_H_

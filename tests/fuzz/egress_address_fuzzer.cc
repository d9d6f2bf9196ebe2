// Fuzzes the egress address classifier: IpAddress::Parse, IpNetwork::Parse,
// BuiltInDenial and EgressRules::Check/CheckPeer/CheckSocketAddress. Input:
// a count (0-3) and that many --egress_allow_cidr lines, the same for
// --egress_deny_cidr and --egress_allow_ports, then the connected address
// line and its port line (tests/fuzz/fuzz_input.h).
//
// Invariants: no crash or UB; a parsed address prints as text that parses
// back to it, and reads back from a sockaddr unchanged; a parsed network
// contains its base and round-trips through its text; Check answers OK or
// PERMISSION_DENIED only; an explicit deny always wins; a port outside
// --egress_allow_ports is refused; without rules exactly the built-in
// ranges (directly or through an embedded IPv4 address) are refused; and
// CheckPeer on the text, CheckSocketAddress on the sockaddr and Check on
// the parsed address agree.

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "service/fetch/egress_policy.h"
#include "service/fetch/egress_rules.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using batchfetch::EgressRules;
using batchfetch::IpAddress;
using batchfetch::IpNetwork;

bool Same(const IpAddress& a, const IpAddress& b) {
  return a.v4 == b.v4 && a.bytes == b.bytes;
}

void CheckAddressRoundTrips(const IpAddress& address) {
  if (address.v4) {
    FUZZ_CHECK(std::all_of(address.bytes.begin() + 4, address.bytes.end(),
                           [](uint8_t b) { return b == 0; }),
               "an IPv4 address has bytes past the fourth");
  }
  const absl::StatusOr<IpAddress> again = IpAddress::Parse(address.ToString());
  FUZZ_CHECK(again.ok() && Same(*again, address),
             "an address does not round-trip through its text");
  for (const IpAddress& inner : address.EmbeddedIpv4Addresses()) {
    FUZZ_CHECK(!address.v4 && inner.v4, "an embedded address is not IPv4");
  }
}

// `address` as the socket address curl would open, and Check through it.
absl::Status CheckThroughSockaddr(const EgressRules& rules,
                                  const IpAddress& address, int port) {
  if (address.v4) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(static_cast<uint16_t>(port));
    std::memcpy(&in.sin_addr, address.bytes.data(), 4);
    const auto* generic = reinterpret_cast<const sockaddr*>(&in);
    const std::optional<IpAddress> back =
        IpAddress::FromSockaddr(generic, sizeof(in));
    FUZZ_CHECK(back.has_value() && Same(*back, address),
               "an IPv4 sockaddr does not read back");
    return rules.CheckSocketAddress(generic, sizeof(in));
  }
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(static_cast<uint16_t>(port));
  std::memcpy(&in6.sin6_addr, address.bytes.data(), 16);
  const auto* generic = reinterpret_cast<const sockaddr*>(&in6);
  const std::optional<IpAddress> back =
      IpAddress::FromSockaddr(generic, sizeof(in6));
  FUZZ_CHECK(back.has_value() && Same(*back, address),
             "an IPv6 sockaddr does not read back");
  return rules.CheckSocketAddress(generic, sizeof(in6));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  batchfetch::fuzz::Input input(data, size);
  EgressRules::Options options;
  std::vector<IpNetwork> denies;
  for (auto* list : {&options.allow_cidrs, &options.deny_cidrs}) {
    const int count = input.TakeCount(3);
    for (int i = 0; i < count; ++i) {
      std::string text = input.TakeString(64);
      const absl::StatusOr<IpNetwork> network = IpNetwork::Parse(text);
      if (network.ok()) {
        FUZZ_CHECK(network->prefix >= 0 &&
                       network->prefix <= (network->base.v4 ? 32 : 128),
                   "a prefix length out of range");
        FUZZ_CHECK(network->Contains(network->base),
                   "a network does not contain its base");
        const absl::StatusOr<IpNetwork> again =
            IpNetwork::Parse(network->ToString());
        FUZZ_CHECK(again.ok() && again->prefix == network->prefix &&
                       Same(again->base, network->base),
                   "a network does not round-trip through its text");
        if (list == &options.deny_cidrs) denies.push_back(*network);
      }
      list->push_back(std::move(text));
    }
  }
  const int ports = input.TakeCount(3);
  for (int i = 0; i < ports; ++i) {
    int port = 0;
    if (!absl::SimpleAtoi(input.TakeString(8), &port)) port = 0;
    options.allow_ports.push_back(port);
  }
  const std::string peer = input.TakeString(64);
  int port = 0;
  if (!absl::SimpleAtoi(input.TakeString(8), &port) || port < 0 ||
      port > 65535) {
    port = 80;
  }

  const absl::StatusOr<std::shared_ptr<EgressRules>> rules =
      EgressRules::Create(options);
  const absl::StatusOr<IpAddress> address = IpAddress::Parse(peer);
  if (address.ok()) CheckAddressRoundTrips(*address);
  if (!rules.ok()) return 0;

  const absl::Status by_text = (*rules)->CheckPeer(peer, port);
  FUZZ_CHECK(by_text.ok() || absl::IsPermissionDenied(by_text),
             "CheckPeer answered something but OK or PERMISSION_DENIED");
  if (!address.ok()) {
    FUZZ_CHECK(absl::IsPermissionDenied(by_text),
               "a peer that is not an address was allowed");
    return 0;
  }
  const absl::Status status = (*rules)->Check(*address, port);
  FUZZ_CHECK(status.ok() || absl::IsPermissionDenied(status),
             "Check answered something but OK or PERMISSION_DENIED");
  FUZZ_CHECK(status.code() == by_text.code(), "CheckPeer and Check disagree");
  FUZZ_CHECK(
      CheckThroughSockaddr(**rules, *address, port).code() == status.code(),
      "CheckSocketAddress and Check disagree");
  for (const IpNetwork& deny : denies) {
    if (deny.Contains(*address)) {
      FUZZ_CHECK(!status.ok(), "an explicitly denied address was allowed");
    }
  }
  if (!options.allow_ports.empty() &&
      std::find(options.allow_ports.begin(), options.allow_ports.end(), port) ==
          options.allow_ports.end()) {
    FUZZ_CHECK(!status.ok(), "a port outside --egress_allow_ports passed");
  }
  if (options.allow_cidrs.empty() && options.deny_cidrs.empty() &&
      options.allow_ports.empty()) {
    bool built_in_denied = batchfetch::BuiltInDenial(*address).has_value();
    for (const IpAddress& inner : address->EmbeddedIpv4Addresses()) {
      built_in_denied |= batchfetch::BuiltInDenial(inner).has_value();
    }
    FUZZ_CHECK(status.ok() != built_in_denied,
               "without rules, only the built-in ranges are refused");
  }
  return 0;
}

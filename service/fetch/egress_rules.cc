#include "service/fetch/egress_rules.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace batchfetch {
namespace {

struct NamedRange {
  const char* cidr;
  const char* name;
};

// Built-in denials. IPv4 first, then IPv6.
constexpr NamedRange kBuiltIn[] = {
    {"0.0.0.0/8", "\"this network\""},
    {"10.0.0.0/8", "private"},
    {"100.64.0.0/10", "carrier-grade NAT"},
    {"127.0.0.0/8", "loopback"},
    {"169.254.0.0/16", "link-local"},
    {"172.16.0.0/12", "private"},
    {"192.0.0.0/24", "IETF protocol assignments"},
    {"192.0.2.0/24", "documentation"},
    {"192.88.99.0/24", "6to4 relay anycast"},
    {"192.168.0.0/16", "private"},
    {"198.18.0.0/15", "benchmarking"},
    {"198.51.100.0/24", "documentation"},
    {"203.0.113.0/24", "documentation"},
    {"224.0.0.0/4", "multicast"},
    // Before 240/4, which contains it: the most specific rule is named.
    {"255.255.255.255/32", "broadcast"},
    {"240.0.0.0/4", "reserved"},
    {"::/128", "unspecified"},
    {"::1/128", "loopback"},
    // RFC 8215: an operator's own NAT64 prefix, internal by definition; its
    // IPv4 address may sit at any of several offsets, so all of it is
    // denied rather than decoded.
    {"64:ff9b:1::/48", "local-use NAT64"},
    {"100::/64", "discard-only"},
    {"2001:10::/28", "ORCHID (deprecated)"},
    {"2001:20::/28", "ORCHIDv2"},
    {"2001:db8::/32", "documentation"},
    {"fc00::/7", "unique local"},
    {"fe80::/10", "link-local"},
    {"fec0::/10", "site-local (deprecated)"},
    {"ff00::/8", "multicast"},
};

const std::vector<std::pair<IpNetwork, const char*>>& BuiltInRanges() {
  static const auto* ranges = [] {
    auto* out = new std::vector<std::pair<IpNetwork, const char*>>;
    for (const NamedRange& r : kBuiltIn) {
      out->emplace_back(*IpNetwork::Parse(r.cidr), r.name);
    }
    return out;
  }();
  return *ranges;
}

}  // namespace

absl::StatusOr<IpNetwork> IpNetwork::Parse(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '/');
  if (parts.size() > 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not a CIDR range"));
  }
  absl::StatusOr<IpAddress> base = IpAddress::Parse(parts[0]);
  if (!base.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not a CIDR range"));
  }
  IpNetwork out;
  out.base = *base;
  const int bits = base->v4 ? 32 : 128;
  out.prefix = bits;
  if (parts.size() == 2 && (!absl::SimpleAtoi(parts[1], &out.prefix) ||
                            out.prefix < 0 || out.prefix > bits)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "': the prefix length must be 0 to ", bits));
  }
  // Canonical: host bits cleared.
  for (int i = out.prefix; i < bits; ++i) {
    out.base.bytes[static_cast<size_t>(i / 8)] &=
        static_cast<uint8_t>(~(0x80 >> (i % 8)));
  }
  return out;
}

bool IpNetwork::Contains(const IpAddress& address) const {
  if (address.v4 != base.v4) return false;
  for (int i = 0; i < prefix; ++i) {
    const size_t byte = static_cast<size_t>(i / 8);
    const uint8_t mask = static_cast<uint8_t>(0x80 >> (i % 8));
    if ((address.bytes[byte] & mask) != (base.bytes[byte] & mask)) {
      return false;
    }
  }
  return true;
}

std::string IpNetwork::ToString() const {
  return absl::StrCat(base.ToString(), "/", prefix);
}

std::optional<std::string> BuiltInDenial(const IpAddress& address) {
  for (const auto& [network, name] : BuiltInRanges()) {
    if (network.Contains(address)) {
      return absl::StrCat(network.ToString(), " (", name, ")");
    }
  }
  return std::nullopt;
}

absl::StatusOr<std::shared_ptr<EgressRules>> EgressRules::Create(
    const Options& options) {
  std::shared_ptr<EgressRules> rules(new EgressRules);
  for (const auto& [list, out, flag] :
       {std::tuple{&options.allow_cidrs, &rules->allow_, "egress_allow_cidr"},
        std::tuple{&options.deny_cidrs, &rules->deny_, "egress_deny_cidr"}}) {
    for (const std::string& text : *list) {
      absl::StatusOr<IpNetwork> network = IpNetwork::Parse(text);
      if (!network.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", flag, ": ", network.status().message()));
      }
      out->push_back(*network);
    }
  }
  for (int port : options.allow_ports) {
    if (port < 1 || port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("--egress_allow_ports: ", port, " is not a TCP port"));
    }
  }
  rules->allow_ports_ = options.allow_ports;
  return rules;
}

std::optional<std::string> EgressRules::Denial(const IpAddress& address) const {
  for (const IpNetwork& network : deny_) {
    if (network.Contains(address)) {
      return absl::StrCat(network.ToString(), " (--egress_deny_cidr)");
    }
  }
  for (const IpNetwork& network : allow_) {
    if (network.Contains(address)) return std::nullopt;
  }
  if (std::optional<std::string> why = BuiltInDenial(address)) return why;
  for (const IpAddress& inner : address.EmbeddedIpv4Addresses()) {
    if (std::optional<std::string> why = Denial(inner)) {
      return absl::StrCat("embedded IPv4 ", inner.ToString(), " in ", *why);
    }
  }
  return std::nullopt;
}

absl::Status EgressRules::Check(const IpAddress& address, int port) const {
  if (std::optional<std::string> why = Denial(address)) {
    return absl::PermissionDeniedError(
        absl::StrCat("egress to ", address.ToString(), " denied by ", *why));
  }
  if (!allow_ports_.empty() &&
      std::find(allow_ports_.begin(), allow_ports_.end(), port) ==
          allow_ports_.end()) {
    return absl::PermissionDeniedError(
        absl::StrCat("egress to ", address.ToString(), " port ", port,
                     " denied: not in --egress_allow_ports"));
  }
  return absl::OkStatus();
}

}  // namespace batchfetch

#include "service/fetch/egress_policy.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>
#include <initializer_list>

#include "absl/strings/str_cat.h"

namespace batchfetch {
namespace {

bool StartsWith(const IpAddress& a, std::initializer_list<uint8_t> prefix) {
  size_t i = 0;
  for (uint8_t b : prefix) {
    if (a.bytes[i++] != b) return false;
  }
  return true;
}

IpAddress V4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  IpAddress out;
  out.v4 = true;
  out.bytes[0] = a;
  out.bytes[1] = b;
  out.bytes[2] = c;
  out.bytes[3] = d;
  return out;
}

}  // namespace

std::optional<IpAddress> IpAddress::FromSockaddr(const sockaddr* address,
                                                 socklen_t length) {
  IpAddress out;
  if (address == nullptr) return std::nullopt;
  if (address->sa_family == AF_INET &&
      length >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(address);
    out.v4 = true;
    std::memcpy(out.bytes.data(), &in->sin_addr, 4);
    return out;
  }
  if (address->sa_family == AF_INET6 &&
      length >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(address);
    out.v4 = false;
    std::memcpy(out.bytes.data(), &in6->sin6_addr, 16);
    return out;
  }
  return std::nullopt;
}

absl::StatusOr<IpAddress> IpAddress::Parse(absl::string_view text) {
  const std::string s(text);
  IpAddress out;
  if (inet_pton(AF_INET, s.c_str(), out.bytes.data()) == 1) {
    out.v4 = true;
    return out;
  }
  if (inet_pton(AF_INET6, s.c_str(), out.bytes.data()) == 1) {
    out.v4 = false;
    return out;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'", text, "' is not an IP address"));
}

std::string IpAddress::ToString() const {
  char buffer[INET6_ADDRSTRLEN] = {0};
  inet_ntop(v4 ? AF_INET : AF_INET6, bytes.data(), buffer, sizeof(buffer));
  return buffer;
}

std::vector<IpAddress> IpAddress::EmbeddedIpv4Addresses() const {
  if (v4) return {};
  const auto& b = bytes;
  const auto at = [&](size_t i) {
    return V4(b[i], b[i + 1], b[i + 2], b[i + 3]);
  };
  // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated).
  if (StartsWith(*this, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0})) {
    if (b[10] == 0xff && b[11] == 0xff) return {at(12)};
    if (b[10] == 0 && b[11] == 0) {
      const bool unspecified_or_loopback =
          b[12] == 0 && b[13] == 0 && b[14] == 0 && b[15] <= 1;
      if (!unspecified_or_loopback) return {at(12)};
    }
    return {};
  }
  // ::ffff:0:a.b.c.d (IPv4-translated, RFC 2765 SIIT).
  if (StartsWith(*this, {0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0})) {
    return {at(12)};
  }
  // 64:ff9b::a.b.c.d (NAT64 well-known prefix, RFC 6052).
  if (StartsWith(*this, {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0})) {
    return {at(12)};
  }
  // 2002:AABB:CCDD::/48 (6to4).
  if (StartsWith(*this, {0x20, 0x02})) return {at(2)};
  // 2001:0000::/32 (Teredo, RFC 4380): the client's address, inverted, in
  // the last 32 bits; the Teredo server's address as is in bits 32..63.
  // Either may be the one an operator's network routes inward.
  if (StartsWith(*this, {0x20, 0x01, 0, 0})) {
    IpAddress client = at(12);
    for (size_t i = 0; i < 4; ++i) client.bytes[i] ^= 0xff;
    return {client, at(4)};
  }
  return {};
}

absl::Status EgressPolicy::CheckSocketAddress(const sockaddr* address,
                                              socklen_t length) const {
  std::optional<IpAddress> ip = IpAddress::FromSockaddr(address, length);
  if (!ip.has_value()) {
    return absl::PermissionDeniedError(
        "egress denied: not an IPv4 or IPv6 address");
  }
  const in_port_t port =
      address->sa_family == AF_INET
          ? reinterpret_cast<const sockaddr_in*>(address)->sin_port
          : reinterpret_cast<const sockaddr_in6*>(address)->sin6_port;
  return Check(*ip, ntohs(port));
}

absl::Status EgressPolicy::CheckPeer(absl::string_view address,
                                     int port) const {
  absl::StatusOr<IpAddress> ip = IpAddress::Parse(address);
  if (!ip.ok()) {
    return absl::PermissionDeniedError(
        absl::StrCat("egress denied: the connected address '", address,
                     "' is not an IPv4 or IPv6 address"));
  }
  return Check(*ip, port);
}

}  // namespace batchfetch

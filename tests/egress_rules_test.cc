// The egress address classifier against classic SSRF bypass spellings. Each
// URL's host is taken with libcurl's own URL parser and turned into the
// address a connection would use (numeric forms only: no DNS, no traffic).
#include "service/fetch/egress_rules.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"

namespace batchfetch {
namespace {

// The address a connection to `url` goes to, as curl would resolve a
// numeric host (its parser normalizes IPv4 spellings; getaddrinfo with
// AI_NUMERICHOST covers what it leaves).
absl::StatusOr<IpAddress> AddressOf(const std::string& url) {
  CURLU* parsed = curl_url();
  char* host = nullptr;
  std::string text;
  if (curl_url_set(parsed, CURLUPART_URL, url.c_str(), 0) == CURLUE_OK &&
      curl_url_get(parsed, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
    text = host;
  }
  curl_free(host);
  curl_url_cleanup(parsed);
  if (text.empty()) return absl::InvalidArgumentError("no host: " + url);
  absl::string_view bare = text;
  if (absl::ConsumePrefix(&bare, "[")) absl::ConsumeSuffix(&bare, "]");
  if (auto ip = IpAddress::Parse(bare); ip.ok()) return ip;
  addrinfo hints{};
  hints.ai_flags = AI_NUMERICHOST;
  addrinfo* result = nullptr;
  const std::string host_only(bare);
  if (getaddrinfo(host_only.c_str(), nullptr, &hints, &result) != 0) {
    return absl::InvalidArgumentError("not numeric: " + host_only);
  }
  auto ip = IpAddress::FromSockaddr(result->ai_addr, result->ai_addrlen);
  freeaddrinfo(result);
  if (!ip.has_value()) return absl::InternalError("no address");
  return *ip;
}

std::shared_ptr<EgressRules> Default() {
  return *EgressRules::Create(EgressRules::Options{});
}

class DeniedByDefault : public ::testing::TestWithParam<const char*> {};

TEST_P(DeniedByDefault, BypassSpellingIsDenied) {
  absl::StatusOr<IpAddress> ip = AddressOf(GetParam());
  ASSERT_TRUE(ip.ok()) << ip.status();
  absl::Status verdict = Default()->Check(*ip, 80);
  EXPECT_EQ(verdict.code(), absl::StatusCode::kPermissionDenied)
      << GetParam() << " -> " << ip->ToString();
  // The message names the address and the rule.
  EXPECT_TRUE(absl::StrContains(verdict.message(), ip->ToString()))
      << verdict.message();
}

INSTANTIATE_TEST_SUITE_P(
    ClassicSpellings, DeniedByDefault,
    ::testing::Values(
        "http://127.0.0.1/", "http://2130706433/", "http://0177.0.0.1/",
        "http://0x7f.1/", "http://127.1/", "http://0/", "http://[::1]/",
        "http://user@127.0.0.1/", "http://user:pw@127.0.0.1:8080/x",
        "http://0x7f000001/", "http://017700000001/", "http://127.000.000.001/",
        "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/",
        "http://[::127.0.0.1]/", "http://[2002:a9fe:a9fe::]/",
        "http://[64:ff9b::a9fe:a9fe]/", "http://0xA9FEA9FE/",
        "http://169.254.169.254/latest/meta-data/", "http://100.64.0.1/",
        "http://198.18.0.1/", "http://[fe80::1]/", "http://10.0.0.5/",
        "http://[::ffff:10.0.0.5]/admin", "http://192.168.1.1/",
        "http://172.16.0.1/", "http://172.31.255.255/", "http://[fc00::1]/",
        "http://[fd12:3456::1]/", "http://224.0.0.1/",
        "http://255.255.255.255/", "http://240.0.0.1/", "http://192.0.2.1/",
        "http://203.0.113.5/", "http://198.51.100.7/", "http://[::]/",
        "http://0.0.0.0/", "http://[ff02::1]/", "http://[2001:db8::1]/",
        // Teredo whose client address (inverted in the last 32 bits) is
        // 10.0.0.1.
        "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/",
        "https://[::ffff:192.168.0.1]:8443/",
        // IPv4-translated (RFC 2765), judged by its IPv4 address.
        "http://[::ffff:0:127.0.0.1]/", "http://[::ffff:0:a9fe:a9fe]/",
        // Local-use NAT64 (RFC 8215): all of it, wherever the IPv4 sits.
        "http://[64:ff9b:1::a9fe:a9fe]/", "http://[64:ff9b:1:7f00:1::]/",
        "http://[64:ff9b:1::808:808]/",
        // Deprecated site-local, discard-only, ORCHID and ORCHIDv2, 6to4
        // relay anycast.
        "http://[fec0::1]/", "http://[feff::1]/", "http://[100::1]/",
        "http://[2001:10::1]/", "http://[2001:20::1]/", "http://[2001:2f::1]/",
        "http://192.88.99.1/",
        // Teredo whose server (bits 32..63) is 10.0.0.1 although the client
        // (inverted) is the public 8.8.8.8.
        "http://[2001:0:a00:1:8000:63bf:f7f7:f7f7]/"));

class AllowedByDefault : public ::testing::TestWithParam<const char*> {};

TEST_P(AllowedByDefault, PublicAddressIsAllowed) {
  absl::StatusOr<IpAddress> ip = AddressOf(GetParam());
  ASSERT_TRUE(ip.ok()) << ip.status();
  EXPECT_TRUE(Default()->Check(*ip, 443).ok()) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(
    PublicAddresses, AllowedByDefault,
    ::testing::Values("http://100.63.255.254/", "http://8.8.8.8/",
                      "http://[2001:4860::8888]/", "http://1.1.1.1/",
                      "http://172.32.0.1/", "http://100.128.0.1/",
                      "http://[2606:4700::1111]/", "http://198.20.0.1/",
                      "http://[::ffff:8.8.8.8]/", "http://[::ffff:0:8.8.8.8]/",
                      "http://[64:ff9b::808:808]/",
                      // Teredo with a public server and a public client.
                      "http://[2001:0:4136:e378:8000:63bf:f7f7:f7f7]/",
                      "http://192.88.100.1/", "http://[2001:30::1]/"));

// Each denial names the most specific rule (broadcast, not the 240/4 that
// contains it) and, for an embedded address, the IPv4 address judged.
TEST(EgressRules, DenialsNameTheRule) {
  const struct {
    const char* address;
    const char* rule;
  } cases[] = {
      {"255.255.255.255", "by 255.255.255.255/32 (broadcast)"},
      {"240.0.0.1", "by 240.0.0.0/4 (reserved)"},
      {"192.88.99.1", "by 192.88.99.0/24 (6to4 relay anycast)"},
      {"::ffff:0:127.0.0.1",
       "by embedded IPv4 127.0.0.1 in 127.0.0.0/8 (loopback)"},
      {"64:ff9b:1::808:808", "by 64:ff9b:1::/48 (local-use NAT64)"},
      {"fec0::1", "by fec0::/10 (site-local (deprecated))"},
      {"100::1", "by 100::/64 (discard-only)"},
      {"2001:10::1", "by 2001:10::/28 (ORCHID (deprecated))"},
      {"2001:20::1", "by 2001:20::/28 (ORCHIDv2)"},
      {"2001:0:a00:1:8000:63bf:f7f7:f7f7",
       "by embedded IPv4 10.0.0.1 in 10.0.0.0/8 (private)"},
      {"2001:0:4136:e378:8000:63bf:f5ff:fffe",
       "by embedded IPv4 10.0.0.1 in 10.0.0.0/8 (private)"},
  };
  auto rules = Default();
  for (const auto& c : cases) {
    absl::Status verdict = rules->Check(*IpAddress::Parse(c.address), 80);
    EXPECT_EQ(verdict.code(), absl::StatusCode::kPermissionDenied) << c.address;
    EXPECT_TRUE(absl::EndsWith(verdict.message(), c.rule))
        << c.address << ": " << verdict.message();
  }
}

TEST(EgressRules, AllowWinsOverBuiltInAndDenyWinsOverAllow) {
  EgressRules::Options options;
  options.allow_cidrs = {"127.0.0.0/8"};
  options.deny_cidrs = {"127.0.0.2/32"};
  auto rules = *EgressRules::Create(options);
  EXPECT_TRUE(rules->Check(*IpAddress::Parse("127.0.0.1"), 80).ok());
  absl::Status denied = rules->Check(*IpAddress::Parse("127.0.0.2"), 80);
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(denied.message(), "--egress_deny_cidr"))
      << denied.message();
  // Opening 127.0.0.0/8 opens its IPv4-mapped spelling too, but not ::1.
  EXPECT_TRUE(rules->Check(*IpAddress::Parse("::ffff:127.0.0.1"), 80).ok());
  EXPECT_FALSE(rules->Check(*IpAddress::Parse("::1"), 80).ok());
}

TEST(EgressRules, EmbeddedIpv4IsJudgedAsIpv4) {
  auto rules = Default();
  absl::Status verdict =
      rules->Check(*IpAddress::Parse("64:ff9b::a9fe:a9fe"), 80);
  EXPECT_TRUE(absl::StrContains(verdict.message(), "embedded IPv4 169.254"))
      << verdict.message();
  const auto embedded = [](const char* text) {
    std::vector<std::string> out;
    for (const IpAddress& inner :
         IpAddress::Parse(text)->EmbeddedIpv4Addresses()) {
      EXPECT_TRUE(inner.v4) << text;
      out.push_back(inner.ToString());
    }
    return out;
  };
  using Addresses = std::vector<std::string>;
  EXPECT_EQ(embedded("2002:a9fe:a9fe::"), Addresses{"169.254.169.254"});
  EXPECT_EQ(embedded("::ffff:10.1.2.3"), Addresses{"10.1.2.3"});
  EXPECT_EQ(embedded("::ffff:0:10.1.2.3"), Addresses{"10.1.2.3"});
  EXPECT_EQ(embedded("::10.1.2.3"), Addresses{"10.1.2.3"});
  EXPECT_EQ(embedded("64:ff9b::10.1.2.3"), Addresses{"10.1.2.3"});
  // Teredo: the client (inverted), then the server.
  EXPECT_EQ(embedded("2001:0:4136:e378:8000:63bf:f5ff:fffe"),
            (Addresses{"10.0.0.1", "65.54.227.120"}));
  EXPECT_EQ(embedded("::1"), Addresses{});
  EXPECT_EQ(embedded("::"), Addresses{});
  EXPECT_EQ(embedded("64:ff9b:1::a9fe:a9fe"), Addresses{});
  EXPECT_EQ(embedded("2001:4860::8888"), Addresses{});
  EXPECT_EQ(embedded("127.0.0.1"), Addresses{});
}

TEST(EgressRules, PortsCanBeRestricted) {
  EgressRules::Options options;
  options.allow_ports = {80, 443};
  auto rules = *EgressRules::Create(options);
  EXPECT_TRUE(rules->Check(*IpAddress::Parse("8.8.8.8"), 443).ok());
  absl::Status denied = rules->Check(*IpAddress::Parse("8.8.8.8"), 3306);
  EXPECT_TRUE(absl::StrContains(denied.message(), "--egress_allow_ports"))
      << denied.message();
}

TEST(EgressRules, RejectsBadRulesNamingTheFlag) {
  EgressRules::Options options;
  options.allow_cidrs = {"10.0.0.0/33"};
  absl::StatusOr<std::shared_ptr<EgressRules>> rules =
      EgressRules::Create(options);
  ASSERT_FALSE(rules.ok());
  EXPECT_TRUE(
      absl::StrContains(rules.status().message(), "--egress_allow_cidr"));
  options.allow_cidrs = {};
  options.deny_cidrs = {"not-an-ip"};
  EXPECT_FALSE(EgressRules::Create(options).ok());
  options.deny_cidrs = {};
  options.allow_ports = {70000};
  EXPECT_FALSE(EgressRules::Create(options).ok());
}

TEST(IpNetwork, ParsesAndCanonicalizes) {
  IpNetwork n = *IpNetwork::Parse("10.1.2.3/8");
  EXPECT_EQ(n.ToString(), "10.0.0.0/8");
  EXPECT_TRUE(n.Contains(*IpAddress::Parse("10.255.0.1")));
  EXPECT_FALSE(n.Contains(*IpAddress::Parse("11.0.0.1")));
  EXPECT_FALSE(n.Contains(*IpAddress::Parse("::ffff:10.0.0.1")));
  EXPECT_EQ(IpNetwork::Parse("fe80::1/10")->ToString(), "fe80::/10");
  EXPECT_EQ(IpNetwork::Parse("1.2.3.4")->prefix, 32);
}

// The two ways CurlDriver asks (a socket address before connect, the
// connection's address text before each request) reach the one Check.
TEST(EgressPolicy, CheckPeerJudgesTheConnectionsAddressText) {
  EgressRules::Options options;
  options.allow_ports = {443};
  auto rules = *EgressRules::Create(options);
  EXPECT_TRUE(rules->CheckPeer("8.8.8.8", 443).ok());
  EXPECT_TRUE(rules->CheckPeer("2001:4860::8888", 443).ok());
  absl::Status port = rules->CheckPeer("8.8.8.8", 80);
  EXPECT_EQ(port.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(port.message(), "port 80")) << port;
  absl::Status loopback = rules->CheckPeer("::ffff:127.0.0.1", 443);
  EXPECT_EQ(loopback.message(),
            "egress to ::ffff:127.0.0.1 denied by embedded IPv4 127.0.0.1 in "
            "127.0.0.0/8 (loopback)");
}

TEST(EgressPolicy, CheckPeerRefusesTextThatIsNoAddress) {
  auto rules = Default();
  for (const char* text : {"", "localhost", "127.0.0.1:80", "[::1]"}) {
    absl::Status verdict = rules->CheckPeer(text, 80);
    EXPECT_EQ(verdict.code(), absl::StatusCode::kPermissionDenied) << text;
    EXPECT_TRUE(
        absl::StrContains(verdict.message(), "is not an IPv4 or IPv6 address"))
        << verdict;
  }
}

TEST(EgressPolicy, CheckSocketAddressReadsAddressAndPort) {
  EgressRules::Options options;
  options.allow_ports = {443};
  auto rules = *EgressRules::Create(options);
  sockaddr_in in{};
  in.sin_family = AF_INET;
  in.sin_port = htons(443);
  ASSERT_EQ(inet_pton(AF_INET, "8.8.8.8", &in.sin_addr), 1);
  const auto* address = reinterpret_cast<const sockaddr*>(&in);
  EXPECT_TRUE(rules->CheckSocketAddress(address, sizeof(in)).ok());
  in.sin_port = htons(80);
  EXPECT_FALSE(rules->CheckSocketAddress(address, sizeof(in)).ok());

  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(443);
  ASSERT_EQ(inet_pton(AF_INET6, "::1", &in6.sin6_addr), 1);
  absl::Status loopback = rules->CheckSocketAddress(
      reinterpret_cast<const sockaddr*>(&in6), sizeof(in6));
  EXPECT_EQ(loopback.message(), "egress to ::1 denied by ::1/128 (loopback)");

  sockaddr_un local{};
  local.sun_family = AF_UNIX;
  EXPECT_EQ(rules
                ->CheckSocketAddress(reinterpret_cast<const sockaddr*>(&local),
                                     sizeof(local))
                .code(),
            absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace batchfetch

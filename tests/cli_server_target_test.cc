// The CLI's --server targets (ParseServerTarget) and the load balancing
// MakeChannel picks for them. Part of cli_unit_tests; the channel test
// only dials closed loopback ports.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <sstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "client/cli_args.h"
#include "client/cli_channel.h"
#include "gtest/gtest.h"

namespace batchfetch::cli {
namespace {

ServerTarget Parsed(const std::string& value) {
  absl::StatusOr<ServerTarget> target = ParseServerTarget(value, "--server");
  EXPECT_TRUE(target.ok()) << value << ": " << target.status();
  return target.ok() ? *target : ServerTarget{};
}

std::string ErrorOf(const std::string& value) {
  absl::StatusOr<ServerTarget> target = ParseServerTarget(value, "--server");
  EXPECT_FALSE(target.ok()) << value;
  return std::string(target.status().message());
}

TEST(CliServerTarget, OneHostUsesGrpcsDefaultPolicy) {
  const ServerTarget target = Parsed("batchfetch.example:50051");
  EXPECT_EQ(target.target, "batchfetch.example:50051");
  EXPECT_FALSE(target.round_robin);
  EXPECT_FALSE(Parsed("ipv4:127.0.0.1:7000").round_robin);
  EXPECT_FALSE(Parsed("unix:/run/batchfetch.sock").round_robin);
}

TEST(CliServerTarget, AnAddressListIsPassedOnAndSpreadRoundRobin) {
  const ServerTarget target =
      Parsed("ipv4:127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003");
  EXPECT_EQ(target.target, "ipv4:127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003");
  EXPECT_TRUE(target.round_robin);
  EXPECT_TRUE(Parsed("ipv6:[::1]:7001,[::1]:7002").round_robin);
}

TEST(CliServerTarget, ADnsNameMayResolveToSeveralReplicasSoItIsRoundRobin) {
  for (const char* value :
       {"dns:///batchfetch-headless.default.svc:50051", "dns:batchfetch:50051",
        "dns://10.0.0.10:53/batchfetch:50051"}) {
    const ServerTarget target = Parsed(value);
    EXPECT_EQ(target.target, value);
    EXPECT_TRUE(target.round_robin) << value;
  }
}

TEST(CliServerTarget, MalformedListsAndNamelessDnsTargetsAreRefused) {
  for (const char* value :
       {"ipv4:", "ipv4:127.0.0.1:7001,", "ipv4:127.0.0.1", "ipv4:127.0.0.1:x",
        "ipv4:127.0.0.1:0", "ipv4::7001", "ipv4:127.0.0.1:70000"}) {
    const std::string error = ErrorOf(value);
    EXPECT_TRUE(absl::StartsWith(error, "--server: '")) << error;
    EXPECT_TRUE(absl::StrContains(error, "ADDRESS:PORT")) << error;
  }
  for (const char* value : {"dns:", "dns:///", "dns://resolver"}) {
    EXPECT_TRUE(absl::StrContains(ErrorOf(value), "names no host")) << value;
  }
}

TEST(CliServerTarget, TheServerFlagIsCheckedWhenParsed) {
  std::istringstream in;
  absl::StatusOr<FetchOptions> options =
      ParseFetchArgs({"--server=ipv4:127.0.0.1:1,", "http://a/"}, "h:1", in);
  ASSERT_FALSE(options.ok());
  EXPECT_TRUE(absl::StartsWith(options.status().message(), "--server: "))
      << options.status();
  options = ParseFetchArgs(
      {"--server=ipv4:127.0.0.1:1,127.0.0.1:2", "http://a/"}, "h:1", in);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->connection.server, "ipv4:127.0.0.1:1,127.0.0.1:2");
}

// The policy gRPC reports once the channel has resolved its addresses and
// tried them (closed ports: the attempts fail at once).
std::string PolicyAfterConnecting(const std::string& value) {
  std::shared_ptr<grpc::Channel> channel =
      MakeChannel(Parsed(value), TlsSettings{});
  const auto deadline =
      std::chrono::system_clock::now() + std::chrono::seconds(10);
  grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_TRANSIENT_FAILURE &&
         state != GRPC_CHANNEL_READY &&
         channel->WaitForStateChange(state, deadline)) {
    state = channel->GetState(/*try_to_connect=*/true);
  }
  return channel->GetLoadBalancingPolicyName();
}

TEST(CliServerTarget, MakeChannelUsesRoundRobinOnlyForSeveralAddresses) {
  EXPECT_EQ(PolicyAfterConnecting("ipv4:127.0.0.1:1,127.0.0.1:2"),
            "round_robin");
  EXPECT_EQ(PolicyAfterConnecting("ipv4:127.0.0.1:1"), "pick_first");
}

}  // namespace
}  // namespace batchfetch::cli

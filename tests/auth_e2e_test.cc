// End to end against the real binary: bearer tokens (--auth_token_file,
// reloaded on SIGHUP), tenancy (a batch belongs to the token name that
// created it), the active-batch limits, and the CLI's --token-file.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/service_fixture.h"
#include "tests/support/standard_services.h"

namespace batchfetch::e2e {
namespace {

constexpr char kAliceToken[] = "alice-token-0123456789abcdef";
constexpr char kBobToken[] = "bob-token-0123456789abcdefgh";
constexpr char kCarolToken[] = "carol-token-0123456789abcdef";

std::string Tokens(
    const std::vector<std::pair<std::string, std::string>>& name_and_token) {
  std::string contents = "# name token\n";
  for (const auto& [name, token] : name_and_token) {
    absl::StrAppend(&contents, name, " ", token, "\n");
  }
  return contents;
}

class AuthE2eTest : public BinaryTest {
 protected:
  void SetUp() override {
    BinaryTest::SetUp();
    token_file_ = TempPath("tokens");
    WriteFile(token_file_,
              Tokens({{"alice", kAliceToken}, {"bob", kBobToken}}));
  }
  void TearDown() override {
    for (const std::string& path : written_) std::remove(path.c_str());
  }

  std::string TempPath(const std::string& name) {
    return absl::StrCat(::testing::TempDir(), "auth_e2e_", getpid(), "_", name);
  }
  // Written whole under another name, then renamed: a reload never sees
  // half a file.
  void WriteFile(const std::string& path, const std::string& contents) {
    const std::string partial = path + ".partial";
    std::ofstream(partial) << contents;
    ASSERT_EQ(std::rename(partial.c_str(), path.c_str()), 0);
    written_.push_back(path);
  }

  void StartWithAuth(std::vector<std::string> extra = {}) {
    extra.push_back("--auth_token_file=" + token_file_);
    StartServerBinary(extra);
  }

  // FetchBatch with `token` ("" = no authorization metadata).
  // `on_accepted` is notified once the batch is accepted (if it is).
  // `stub`: another connection's (default: the fixture's).
  Streamed FetchAs(const std::string& token,
                   const v1::FetchBatchRequest& request,
                   absl::Notification* on_accepted = nullptr,
                   v1::BatchFetcher::Stub* stub = nullptr) {
    if (stub == nullptr) stub = stub_.get();
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    Streamed out;
    auto reader = stub->FetchBatch(&context, request);
    v1::FetchBatchEvent event;
    while (reader->Read(&event)) {
      out.events.push_back(event);
      if (event.has_accepted() && on_accepted != nullptr) {
        on_accepted->Notify();
      }
    }
    out.status = reader->Finish();
    return out;
  }

  grpc::Status GetAs(const std::string& token, const std::string& id) {
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    v1::GetBatchRequest request;
    request.set_batch_id(id);
    v1::BatchSummary summary;
    return stub_->GetBatch(&context, request, &summary);
  }

  grpc::Status ListAs(const std::string& token, const std::string& id,
                      int* results = nullptr) {
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    v1::ListResultsRequest request;
    request.set_batch_id(id);
    v1::ListResultsResponse response;
    grpc::Status status = stub_->ListResults(&context, request, &response);
    if (results != nullptr) *results = response.results_size();
    return status;
  }

  // Streams a batch as `token` that stays active for about 1.5 s (one slow
  // URL) into `*slow` on `*thread`, and returns true once the server has
  // accepted it. Join `*thread` before reading `*slow`. False when it was
  // not accepted within 30 s; the thread is then joined already.
  bool StartSlowBatchAs(const std::string& token, Streamed* slow,
                        std::thread* thread) {
    auto accepted = std::make_shared<absl::Notification>();
    *thread = std::thread([this, token, slow, accepted] {
      *slow = FetchAs(token, Batch({upstream_->Url("/slow?delay_ms=1500")}),
                      accepted.get());
    });
    if (accepted->WaitForNotificationWithTimeout(absl::Seconds(30))) {
      return true;
    }
    thread->join();
    return false;
  }

  // Polls (bounded) until FetchBatch with `token` gets `code`.
  bool EventuallyFetchGets(const std::string& token, grpc::StatusCode code) {
    const absl::Time give_up = absl::Now() + absl::Seconds(10);
    while (absl::Now() < give_up) {
      if (FetchAs(token, Batch({upstream_->Url("/r")})).status.error_code() ==
          code) {
        return true;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    return false;
  }

  std::string token_file_;
  std::vector<std::string> written_;
};

TEST_F(AuthE2eTest, EveryCallWithoutAValidTokenIsUnauthenticated) {
  StartWithAuth();
  const v1::FetchBatchRequest request = Batch({upstream_->Url("/a")});

  Streamed none = FetchAs("", request);
  EXPECT_EQ(none.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(none.status.error_message(),
            "missing 'authorization: Bearer <token>' metadata");
  EXPECT_TRUE(none.events.empty());
  EXPECT_EQ(GetAs("", "any-id").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ListAs("", "any-id").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  const std::string wrong = "alice-token-0123456789abcdeX";
  Streamed bad = FetchAs(wrong, request);
  EXPECT_EQ(bad.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(bad.status.error_message(), "bearer token is not valid");
  EXPECT_FALSE(absl::StrContains(bad.status.error_message(), "token-"));
  EXPECT_EQ(GetAs(wrong, "any-id").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ListAs(wrong, "any-id").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  Streamed good = FetchAs(kAliceToken, request);
  ASSERT_TRUE(good.status.ok()) << good.status.error_message();
  ExpectWellFormedStream(good, 1);
  EXPECT_EQ(good.results().at(0).outcome(), v1::OUTCOME_OK);
}

// Health and reflection are other services: no token needed.
TEST_F(AuthE2eTest, HealthAndReflectionWorkWithoutAToken) {
  StartWithAuth();
  testing::ExpectHealthAndReflectionServed(channel_);
}

TEST_F(AuthE2eTest, ABatchIsVisibleOnlyToTheIdentityThatCreatedIt) {
  StartWithAuth();
  v1::FetchBatchRequest request =
      Batch({upstream_->Url("/a"), upstream_->Url("/b")});
  request.set_batch_id("alices-batch");
  Streamed created = FetchAs(kAliceToken, request);
  ASSERT_TRUE(created.status.ok()) << created.status.error_message();

  int results = 0;
  EXPECT_TRUE(GetAs(kAliceToken, "alices-batch").ok());
  EXPECT_TRUE(ListAs(kAliceToken, "alices-batch", &results).ok());
  EXPECT_EQ(results, 2);

  // Bob gets exactly what an unknown id gets.
  const grpc::Status unknown = GetAs(kBobToken, "no-such-batch");
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND);
  const grpc::Status theirs = GetAs(kBobToken, "alices-batch");
  EXPECT_EQ(theirs.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(theirs.error_message(), "no batch with id 'alices-batch'");
  const grpc::Status listed = ListAs(kBobToken, "alices-batch");
  EXPECT_EQ(listed.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(listed.error_message(), "no batch with id 'alices-batch'");

  // The id is taken for everyone (ids are one namespace); bob learns only
  // that, and alice's batch is left as it was.
  Streamed again = FetchAs(kBobToken, request);
  EXPECT_EQ(again.status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(GetAs(kBobToken, "alices-batch").error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(GetAs(kAliceToken, "alices-batch").ok());
}

TEST_F(AuthE2eTest, SighupReloadsTheTokenFile) {
  StartWithAuth();
  ASSERT_EQ(
      FetchAs(kCarolToken, Batch({upstream_->Url("/c")})).status.error_code(),
      grpc::StatusCode::UNAUTHENTICATED);

  // carol added, alice removed.
  WriteFile(token_file_, Tokens({{"bob", kBobToken}, {"carol", kCarolToken}}));
  ASSERT_EQ(kill(server_process_->pid(), SIGHUP), 0);
  EXPECT_TRUE(EventuallyFetchGets(kCarolToken, grpc::StatusCode::OK));
  EXPECT_EQ(
      FetchAs(kAliceToken, Batch({upstream_->Url("/a")})).status.error_code(),
      grpc::StatusCode::UNAUTHENTICATED);

  // A broken file is refused and the tokens loaded before stay.
  WriteFile(token_file_, "carol short\n");
  ASSERT_EQ(kill(server_process_->pid(), SIGHUP), 0);
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_TRUE(FetchAs(kCarolToken, Batch({upstream_->Url("/c")})).status.ok());
  EXPECT_TRUE(FetchAs(kBobToken, Batch({upstream_->Url("/b")})).status.ok());

  // And the server still runs and reloads.
  WriteFile(token_file_, Tokens({{"alice", kAliceToken}}));
  ASSERT_EQ(kill(server_process_->pid(), SIGHUP), 0);
  EXPECT_TRUE(EventuallyFetchGets(kAliceToken, grpc::StatusCode::OK));
  EXPECT_EQ(
      FetchAs(kCarolToken, Batch({upstream_->Url("/c")})).status.error_code(),
      grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(AuthE2eTest, MaxActiveBatchesRefusesWhileOneRunsThenAcceptsAgain) {
  StartServerBinary({"--max_active_batches=1"});  // auth off
  Streamed slow;
  std::thread first;
  ASSERT_TRUE(StartSlowBatchAs("", &slow, &first));

  Streamed refused = FetchAs("", Batch({upstream_->Url("/second")}));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(absl::StrContains(refused.status.error_message(),
                                "--max_active_batches=1"))
      << refused.status.error_message();
  EXPECT_TRUE(refused.events.empty());

  first.join();
  ASSERT_TRUE(slow.status.ok()) << slow.status.error_message();
  Streamed after = FetchAs("", Batch({upstream_->Url("/third")}));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  ExpectWellFormedStream(after, 1);
}

TEST_F(AuthE2eTest, PerCallerLimitCountsEachIdentityApart) {
  StartWithAuth({"--max_active_batches_per_caller=1"});
  Streamed slow;
  std::thread first;
  ASSERT_TRUE(StartSlowBatchAs(kAliceToken, &slow, &first));

  Streamed refused = FetchAs(kAliceToken, Batch({upstream_->Url("/more")}));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(absl::StrContains(refused.status.error_message(),
                                "--max_active_batches_per_caller=1"))
      << refused.status.error_message();
  // Another identity is not held back by alice's batch.
  EXPECT_TRUE(FetchAs(kBobToken, Batch({upstream_->Url("/bob")})).status.ok());

  first.join();
  ASSERT_TRUE(slow.status.ok()) << slow.status.error_message();
  EXPECT_TRUE(
      FetchAs(kAliceToken, Batch({upstream_->Url("/again")})).status.ok());
}

// Without auth a caller is its peer address: a second connection from the
// same address shares the count.
TEST_F(AuthE2eTest, WithoutAuthThePerCallerLimitCountsThePeerAddress) {
  StartServerBinary({"--max_active_batches_per_caller=1"});
  Streamed slow;
  std::thread first;
  ASSERT_TRUE(StartSlowBatchAs("", &slow, &first));

  grpc::ChannelArguments separate;  // its own connection, another port
  separate.SetInt("batchfetch.test.separate", 1);
  auto other = v1::BatchFetcher::NewStub(
      grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port_),
                                grpc::InsecureChannelCredentials(), separate));
  Streamed refused =
      FetchAs("", Batch({upstream_->Url("/more")}), nullptr, other.get());
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(absl::StrContains(refused.status.error_message(),
                                "--max_active_batches_per_caller=1"))
      << refused.status.error_message();
  first.join();
  EXPECT_TRUE(slow.status.ok()) << slow.status.error_message();
}

TEST_F(AuthE2eTest, TheCliSendsTheTokenFromItsTokenFile) {
  StartWithAuth();
  const std::string server = absl::StrCat("--server=127.0.0.1:", port_);
  // The token alone, and a line of the server's format.
  const std::string alice_file = TempPath("alice.token");
  WriteFile(alice_file, absl::StrCat("  ", kAliceToken, "\n"));
  const std::string bob_file = TempPath("bob.token");
  WriteFile(bob_file, absl::StrCat("bob ", kBobToken, "\n"));

  std::vector<std::string> lines;
  EXPECT_EQ(RunCli({"fetch", server, "--token-file=" + alice_file, "--quiet",
                    "--batch-id=cli-alice", upstream_->Url("/cli")},
                   &lines),
            0);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(absl::StrContains(lines[0], "\"outcome\":\"ok\"")) << lines[0];

  lines.clear();
  EXPECT_EQ(RunCli({"get", "cli-alice", server, "--token-file", alice_file,
                    "--results"},
                   &lines),
            0);
  EXPECT_EQ(lines.size(), 2u);  // the summary, then the one result

  // Bob's token works, but alice's batch is not his.
  lines.clear();
  EXPECT_EQ(
      RunCli({"get", "cli-alice", server, "--token-file=" + bob_file}, &lines),
      1);
  EXPECT_TRUE(lines.empty());

  // No token: an RPC error.
  lines.clear();
  EXPECT_EQ(
      RunCli({"fetch", server, "--quiet", upstream_->Url("/cli")}, &lines), 2);
  EXPECT_TRUE(lines.empty());
}

}  // namespace
}  // namespace batchfetch::e2e

// End to end against the real binary: bearer tokens (--auth_token_file,
// reloaded on SIGHUP) on every BatchFetcher call, tenancy (a batch belongs
// to the token name that created it, also while it runs detached, and its
// page tokens serve no one else), the active-batch limits (a detached or
// resumed batch whose caller went away still counts), and the CLI's
// --token-file.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
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
    BinaryTest::TearDown();
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

  // Adds `token` as the call's bearer token ("" = none).
  static void As(grpc::ClientContext* context, const std::string& token) {
    if (!token.empty())
      context->AddMetadata("authorization", "Bearer " + token);
  }

  grpc::Status GetAs(const std::string& token, const std::string& id,
                     v1::BatchSummary* summary = nullptr) {
    grpc::ClientContext context;
    As(&context, token);
    v1::GetBatchRequest request;
    request.set_batch_id(id);
    v1::BatchSummary ignored;
    return stub_->GetBatch(&context, request,
                           summary != nullptr ? summary : &ignored);
  }

  grpc::Status ListAs(const std::string& token, const std::string& id,
                      int* results = nullptr) {
    v1::ListResultsRequest request;
    request.set_batch_id(id);
    v1::ListResultsResponse response;
    grpc::Status status = ListResultsAs(token, request, &response);
    if (results != nullptr) *results = response.results_size();
    return status;
  }

  grpc::Status ListResultsAs(const std::string& token,
                             const v1::ListResultsRequest& request,
                             v1::ListResultsResponse* response) {
    grpc::ClientContext context;
    As(&context, token);
    return stub_->ListResults(&context, request, response);
  }

  // WatchBatch to its end; `*events` counts what was streamed.
  grpc::Status WatchAs(const std::string& token, const std::string& id,
                       int* events = nullptr) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    As(&context, token);
    v1::WatchBatchRequest request;
    request.set_batch_id(id);
    auto reader = stub_->WatchBatch(&context, request);
    v1::FetchBatchEvent event;
    int read = 0;
    while (reader->Read(&event)) ++read;
    if (events != nullptr) *events = read;
    return reader->Finish();
  }

  grpc::Status CancelAs(const std::string& token, const std::string& id) {
    grpc::ClientContext context;
    As(&context, token);
    v1::CancelBatchRequest request;
    request.set_batch_id(id);
    v1::BatchSummary summary;
    return stub_->CancelBatch(&context, request, &summary);
  }

  grpc::Status ListBatchesAs(const std::string& token,
                             const v1::ListBatchesRequest& request,
                             v1::ListBatchesResponse* response) {
    grpc::ClientContext context;
    As(&context, token);
    return stub_->ListBatches(&context, request, response);
  }

  // Starts `request` detached as `token`, reads `accepted`, then goes away
  // (cancels the call). The batch id, or "" if it was not accepted.
  std::string StartDetachedAndLeaveAs(const std::string& token,
                                      v1::FetchBatchRequest request) {
    request.set_detach(true);
    grpc::ClientContext context;
    As(&context, token);
    auto reader = stub_->FetchBatch(&context, request);
    v1::FetchBatchEvent event;
    const bool read = reader->Read(&event);
    EXPECT_TRUE(read && event.has_accepted()) << event.ShortDebugString();
    context.TryCancel();
    v1::FetchBatchEvent rest;
    while (reader->Read(&rest)) {
    }
    const grpc::Status status = reader->Finish();
    if (!read || !event.has_accepted()) {
      ADD_FAILURE() << "not accepted: " << status.error_message();
      return "";
    }
    EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
    return event.accepted().batch_id();
  }

  // Polls GetBatch as `token` until the batch is no longer RUNNING (at most
  // 20 s); its summary then (or as last seen).
  v1::BatchSummary WaitUntilFinished(const std::string& token,
                                     const std::string& id) {
    const absl::Time give_up = absl::Now() + absl::Seconds(20);
    v1::BatchSummary summary;
    while (absl::Now() < give_up) {
      const grpc::Status status = GetAs(token, id, &summary);
      EXPECT_TRUE(status.ok()) << status.error_message();
      if (!status.ok() || summary.state() != v1::BATCH_STATE_RUNNING) break;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return summary;
  }

  // batches.cancel_requested of `id`, read from the database directly; -1
  // when the row or the query is missing.
  int CancelRequestedInDatabase(const std::string& id) {
    absl::StatusOr<std::string> out = db_->Execute(
        absl::StrCat("SELECT cancel_requested FROM batches WHERE batch_id = '",
                     id, "'"),
        database_);
    EXPECT_TRUE(out.ok()) << out.status();
    int flag = -1;
    if (out.ok() &&
        !absl::SimpleAtoi(absl::StripAsciiWhitespace(*out), &flag)) {
      return -1;
    }
    return flag;
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

// `refused` was turned away with RESOURCE_EXHAUSTED naming `limit` (e.g.
// "--max_active_batches=1").
void ExpectOverTheLimit(const Streamed& refused, const std::string& limit) {
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(absl::StrContains(refused.status.error_message(), limit))
      << refused.status.error_message();
}

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
  int watched = -1;
  EXPECT_EQ(WatchAs("", "any-id", &watched).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(watched, 0);
  EXPECT_EQ(CancelAs("", "any-id").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  v1::ListBatchesResponse listed;
  EXPECT_EQ(ListBatchesAs("", {}, &listed).error_code(),
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
  watched = -1;
  EXPECT_EQ(WatchAs(wrong, "any-id", &watched).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(watched, 0);
  EXPECT_EQ(CancelAs(wrong, "any-id").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ListBatchesAs(wrong, {}, &listed).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  Streamed good = FetchAs(kAliceToken, request);
  ASSERT_TRUE(good.status.ok()) << good.status.error_message();
  ExpectWellFormedStream(good, 1);
  EXPECT_EQ(good.results().at(0).outcome(), v1::OUTCOME_OK);

  // The calls refused above are answered for a real batch with the token.
  EXPECT_TRUE(GetAs(kAliceToken, good.batch_id()).ok());
  EXPECT_TRUE(WatchAs(kAliceToken, good.batch_id()).ok());
  EXPECT_TRUE(CancelAs(kAliceToken, good.batch_id()).ok());
  EXPECT_TRUE(ListBatchesAs(kAliceToken, {}, &listed).ok());
  EXPECT_EQ(listed.batches_size(), 1);
  // Nor did a refused call touch alice's batch.
  EXPECT_EQ(CancelRequestedInDatabase(good.batch_id()), 0);
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

// While alice's detached batch runs (her caller gone, one slow request
// left), bob learns nothing of it: every per-batch call, a resume and her
// page tokens answer him as for an unknown batch (or refuse the token), his
// cancel does not touch it, and the batch ends DONE.
TEST_F(AuthE2eTest, AnotherIdentitysRunningDetachedBatchIsNotFoundEverywhere) {
  StartWithAuth();
  Streamed alices_first =
      FetchAs(kAliceToken, Batch({upstream_->Url("/alice-first")}));
  ASSERT_TRUE(alices_first.status.ok()) << alices_first.status.error_message();
  Streamed bobs_own = FetchAs(kBobToken, Batch({upstream_->Url("/bob-own")}));
  ASSERT_TRUE(bobs_own.status.ok()) << bobs_own.status.error_message();

  // Three quick requests and one the upstream holds for 3 s.
  v1::FetchBatchRequest request =
      Batch({upstream_->Url("/quick/0"), upstream_->Url("/quick/1"),
             upstream_->Url("/quick/2"), upstream_->Url("/held?delay_ms=3000")},
            4);
  request.set_batch_id("alices-detached");
  const std::string id = StartDetachedAndLeaveAs(kAliceToken, request);
  ASSERT_EQ(id, "alices-detached");

  // Alice's ListResults page token (pages of one: a token once two results
  // are stored) and ListBatches page token (her two batches, pages of one).
  v1::ListResultsRequest alices_page;
  alices_page.set_batch_id(id);
  alices_page.set_page_size(1);
  v1::ListResultsResponse alices_results;
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  do {
    alices_results.Clear();
    ASSERT_TRUE(ListResultsAs(kAliceToken, alices_page, &alices_results).ok());
    if (!alices_results.next_page_token().empty()) break;
    absl::SleepFor(absl::Milliseconds(20));
  } while (absl::Now() < give_up);
  ASSERT_FALSE(alices_results.next_page_token().empty());
  v1::ListBatchesRequest alices_list;
  alices_list.set_page_size(1);
  v1::ListBatchesResponse alices_batches;
  ASSERT_TRUE(ListBatchesAs(kAliceToken, alices_list, &alices_batches).ok());
  ASSERT_EQ(alices_batches.batches_size(), 1);
  EXPECT_EQ(alices_batches.batches(0).batch_id(), id);  // newest first
  ASSERT_FALSE(alices_batches.next_page_token().empty());

  const std::string unknown = absl::StrCat("no batch with id '", id, "'");
  const grpc::Status got = GetAs(kBobToken, id);
  EXPECT_EQ(got.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(got.error_message(), unknown);
  int results = -1;
  const grpc::Status listed = ListAs(kBobToken, id, &results);
  EXPECT_EQ(listed.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(listed.error_message(), unknown);
  EXPECT_EQ(results, 0);
  int watched = -1;
  const grpc::Status watch = WatchAs(kBobToken, id, &watched);
  EXPECT_EQ(watch.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(watch.error_message(), unknown);
  EXPECT_EQ(watched, 0);
  const grpc::Status cancel = CancelAs(kBobToken, id);
  EXPECT_EQ(cancel.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(cancel.error_message(), unknown);
  EXPECT_EQ(CancelRequestedInDatabase(id), 0);
  // A resume by bob: not found (alice would get FAILED_PRECONDITION, the
  // batch is running on a live replica).
  v1::FetchBatchRequest resume = request;
  resume.set_resume(true);
  Streamed resumed = FetchAs(kBobToken, resume);
  EXPECT_EQ(resumed.status.error_code(), grpc::StatusCode::NOT_FOUND)
      << resumed.status.error_message();
  EXPECT_EQ(resumed.status.error_message(), unknown);
  EXPECT_TRUE(resumed.events.empty());

  // Bob's list holds his own batch only.
  v1::ListBatchesResponse bobs_batches;
  ASSERT_TRUE(ListBatchesAs(kBobToken, {}, &bobs_batches).ok());
  ASSERT_EQ(bobs_batches.batches_size(), 1);
  EXPECT_EQ(bobs_batches.batches(0).batch_id(), bobs_own.batch_id());

  // Alice's page tokens in bob's hands: no row of hers.
  v1::ListResultsRequest next_results = alices_page;
  next_results.set_page_token(alices_results.next_page_token());
  v1::ListResultsResponse bobs_results;
  const grpc::Status paged =
      ListResultsAs(kBobToken, next_results, &bobs_results);
  EXPECT_EQ(paged.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(paged.error_message(), unknown);
  EXPECT_EQ(bobs_results.results_size(), 0);
  EXPECT_TRUE(bobs_results.next_page_token().empty());
  v1::ListBatchesRequest next_batches = alices_list;
  next_batches.set_page_token(alices_batches.next_page_token());
  v1::ListBatchesResponse bobs_page;
  const grpc::Status continued =
      ListBatchesAs(kBobToken, next_batches, &bobs_page);
  EXPECT_EQ(continued.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(continued.error_message(),
                                "another query or another caller"))
      << continued.error_message();
  EXPECT_FALSE(absl::StrContains(continued.error_message(), "alice"))
      << continued.error_message();
  EXPECT_EQ(bobs_page.batches_size(), 0);
  // Alice herself may go on with it.
  v1::ListBatchesResponse alices_second;
  ASSERT_TRUE(ListBatchesAs(kAliceToken, next_batches, &alices_second).ok());
  ASSERT_EQ(alices_second.batches_size(), 1);
  EXPECT_EQ(alices_second.batches(0).batch_id(), alices_first.batch_id());

  // Every check above was made while the batch ran.
  v1::BatchSummary now;
  ASSERT_TRUE(GetAs(kAliceToken, id, &now).ok());
  ASSERT_EQ(now.state(), v1::BATCH_STATE_RUNNING)
      << "the held request ended before the checks did; "
      << now.ShortDebugString();

  // Bob's cancel did nothing: the batch ends DONE, every request OK.
  const v1::BatchSummary finished = WaitUntilFinished(kAliceToken, id);
  EXPECT_EQ(finished.state(), v1::BATCH_STATE_DONE)
      << finished.ShortDebugString();
  EXPECT_EQ(finished.succeeded(), 4u);
  EXPECT_EQ(CancelRequestedInDatabase(id), 0);
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
  ExpectOverTheLimit(refused, "--max_active_batches=1");
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
  ExpectOverTheLimit(refused, "--max_active_batches_per_caller=1");
  // Another identity is not held back by alice's batch.
  EXPECT_TRUE(FetchAs(kBobToken, Batch({upstream_->Url("/bob")})).status.ok());

  first.join();
  ASSERT_TRUE(slow.status.ok()) << slow.status.error_message();
  EXPECT_TRUE(
      FetchAs(kAliceToken, Batch({upstream_->Url("/again")})).status.ok());
}

// A detached batch holds its slot after its caller has gone, until it
// finishes.
TEST_F(AuthE2eTest, ADetachedBatchWhoseCallerHasGoneCountsTowardTheLimit) {
  StartServerBinary({"--max_active_batches=1"});  // auth off
  const std::string id = StartDetachedAndLeaveAs(
      "", Batch({upstream_->Url("/detached?delay_ms=2000")}));
  ASSERT_FALSE(id.empty());
  // The server has seen the call end by now; the upstream still holds the
  // request.
  absl::SleepFor(absl::Milliseconds(200));

  Streamed refused = FetchAs("", Batch({upstream_->Url("/second")}));
  ExpectOverTheLimit(refused, "--max_active_batches=1");
  EXPECT_TRUE(refused.events.empty());
  v1::BatchSummary running;
  ASSERT_TRUE(GetAs("", id, &running).ok());
  EXPECT_EQ(running.state(), v1::BATCH_STATE_RUNNING);

  const v1::BatchSummary finished = WaitUntilFinished("", id);
  EXPECT_EQ(finished.state(), v1::BATCH_STATE_DONE)
      << finished.ShortDebugString();
  EXPECT_TRUE(EventuallyFetchGets("", grpc::StatusCode::OK));
}

// The same for a resumed batch: the resume is a new run holding a slot.
TEST_F(AuthE2eTest,
       ADetachedResumedBatchWhoseCallerHasGoneCountsTowardTheLimit) {
  StartServerBinary({"--max_active_batches=1"});  // auth off
  v1::FetchBatchRequest request =
      Batch({upstream_->Url("/quick"), upstream_->Url("/held?delay_ms=2000")});
  request.set_batch_id("resumed-detached");
  // First run: the held request times out, so a resume has one to fetch.
  v1::FetchBatchRequest cut = request;
  cut.mutable_timeout()->set_nanos(200'000'000);
  Streamed first = FetchAs("", cut);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  ASSERT_EQ(first.results().size(), 2u);
  ASSERT_EQ(first.results().at(1).outcome(), v1::OUTCOME_TIMEOUT);

  request.set_resume(true);
  ASSERT_EQ(StartDetachedAndLeaveAs("", request), "resumed-detached");
  absl::SleepFor(absl::Milliseconds(200));

  Streamed refused = FetchAs("", Batch({upstream_->Url("/second")}));
  ExpectOverTheLimit(refused, "--max_active_batches=1");
  v1::BatchSummary running;
  ASSERT_TRUE(GetAs("", "resumed-detached", &running).ok());
  EXPECT_EQ(running.state(), v1::BATCH_STATE_RUNNING);

  const v1::BatchSummary finished = WaitUntilFinished("", "resumed-detached");
  EXPECT_EQ(finished.state(), v1::BATCH_STATE_DONE)
      << finished.ShortDebugString();
  EXPECT_EQ(finished.succeeded(), 2u);
  EXPECT_TRUE(EventuallyFetchGets("", grpc::StatusCode::OK));
}

TEST_F(AuthE2eTest, PerCallerLimitCountsADetachedBatchWhoseCallerHasGone) {
  StartWithAuth({"--max_active_batches_per_caller=1"});
  const std::string id = StartDetachedAndLeaveAs(
      kAliceToken, Batch({upstream_->Url("/detached?delay_ms=2000")}));
  ASSERT_FALSE(id.empty());
  absl::SleepFor(absl::Milliseconds(200));

  Streamed refused = FetchAs(kAliceToken, Batch({upstream_->Url("/more")}));
  ExpectOverTheLimit(refused, "--max_active_batches_per_caller=1");
  // Bob's first batch is his own count's.
  Streamed bobs = FetchAs(kBobToken, Batch({upstream_->Url("/bob")}));
  EXPECT_TRUE(bobs.status.ok()) << bobs.status.error_message();
  v1::BatchSummary running;
  ASSERT_TRUE(GetAs(kAliceToken, id, &running).ok());
  EXPECT_EQ(running.state(), v1::BATCH_STATE_RUNNING);

  const v1::BatchSummary finished = WaitUntilFinished(kAliceToken, id);
  EXPECT_EQ(finished.state(), v1::BATCH_STATE_DONE)
      << finished.ShortDebugString();
  EXPECT_TRUE(EventuallyFetchGets(kAliceToken, grpc::StatusCode::OK));
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
  ExpectOverTheLimit(refused, "--max_active_batches_per_caller=1");
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

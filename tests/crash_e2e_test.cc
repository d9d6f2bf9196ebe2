// A server killed with SIGKILL mid-batch, end to end (issue 9, "Crashes"):
// the real binary with --lease_duration=2s, a slow loopback upstream and the
// shared MariaDB. After a restart, the batch the dead server was running is
// marked BATCH_STATE_INTERRUPTED with a reason (by the new process's lease
// sweep), and every result that was streamed before the kill is stored.
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/support/logged_server.h"
#include "tests/support/service_fixture.h"

namespace batchfetch {
namespace e2e {
namespace {

// The server binary with its stderr (the JSON log) appended to one file
// across restarts.
using CrashTest = LoggedServerTest;

TEST_F(CrashTest,
       AfterKillNineTheBatchIsInterruptedAndEveryStreamedResultIsStored) {
  constexpr int kUrls = 200;
  const std::vector<std::string> flags = {"--lease_duration=2s"};
  StartLoggedServer(flags);
  ASSERT_TRUE(absl::StrContains(ReadFile(log_path_),
                                "\"event\":\"lease_keeper_started\""))
      << ReadFile(log_path_);

  // 200 URLs at 8 at a time, 200 ms each: about 5 s for the whole batch.
  std::vector<std::string> urls;
  for (int i = 0; i < kUrls; ++i) {
    urls.push_back(upstream_->Url(absl::StrCat("/slow?delay_ms=200&n=", i)));
  }
  std::string batch_id;
  std::set<uint32_t> streamed;
  {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    auto reader = stub_->FetchBatch(&context, Batch(urls, 8));
    v1::FetchBatchEvent event;
    while (streamed.size() < kUrls / 2 && reader->Read(&event)) {
      if (event.has_accepted()) batch_id = event.accepted().batch_id();
      if (event.has_result()) streamed.insert(event.result().index());
    }
    ASSERT_EQ(streamed.size(), static_cast<size_t>(kUrls / 2));
    ASSERT_FALSE(batch_id.empty());
    // The crash: no drain, no final row, no lease handed back.
    ASSERT_EQ(kill(server_process_->pid(), SIGKILL), 0);
    EXPECT_EQ(server_process_->Wait(), 128 + SIGKILL);
    context.TryCancel();
    reader->Finish();
  }

  // The same database, a new process (a new replica id): its lease sweep
  // finds the dead process's lease expired within about 2 s.
  StartLoggedServer(flags);
  absl::StatusOr<v1::BatchSummary> summary;
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  do {
    summary = GetBatch(batch_id);
    ASSERT_TRUE(summary.ok()) << summary.status();
    if (summary->state() != v1::BATCH_STATE_RUNNING) break;
    absl::SleepFor(absl::Milliseconds(100));
  } while (absl::Now() < give_up);
  EXPECT_EQ(summary->state(), v1::BATCH_STATE_INTERRUPTED)
      << summary->ShortDebugString();
  EXPECT_TRUE(absl::StrContains(summary->state_reason(), "lease of replica"))
      << summary->state_reason();
  EXPECT_TRUE(absl::StrContains(summary->state_reason(), "expired at"))
      << summary->state_reason();

  // Every result the caller saw is durable.
  int pages = 0;
  std::set<uint32_t> stored;
  for (const v1::FetchResult& r : ListAll(batch_id, 1000, &pages)) {
    stored.insert(r.index());
  }
  for (uint32_t index : streamed) {
    EXPECT_EQ(stored.count(index), 1u) << "streamed but not stored: " << index;
  }
  EXPECT_GE(summary->stored(), streamed.size());
  EXPECT_LT(stored.size(), static_cast<size_t>(kUrls));  // it did crash

  // The new process said what it did, once.
  const std::string log = ReadFile(log_path_);
  EXPECT_TRUE(absl::StrContains(
      log, absl::StrCat("\"event\":\"batch_interrupted\",\"batch_id\":\"",
                        batch_id, "\"")))
      << log;
}

}  // namespace
}  // namespace e2e
}  // namespace batchfetch

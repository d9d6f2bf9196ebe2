// Takeover (issue 11, "When a replica dies"), end to end: two real server
// processes (replicas A and B) on one MariaDB with 2 s leases. A detached
// batch runs on A; A is killed with SIGKILL mid-batch; B's lease sweep
// interrupts the batch and B takes it over: it fetches only the requests
// without a stored OK result, under their original indices, and the batch
// ends DONE with every index stored exactly once. A batch that was not
// detached (its caller went with A) is left INTERRUPTED. A replica at its
// --max_active_batches defers the takeover until a slot frees.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/support/logged_server.h"
#include "tests/support/service_fixture.h"

namespace batchfetch::e2e {
namespace {

constexpr int kDetachedTotal = 60;
constexpr int kStreamedTotal = 12;

// One server process with its JSON log (stderr) in a file of its own.
struct Replica {
  std::unique_ptr<Child> process;
  std::string log_path;
  std::unique_ptr<v1::BatchFetcher::Stub> stub;

  std::string Log() const { return ReadFile(log_path); }
  // The log lines of `event`.
  std::vector<std::string> Lines(const std::string& event) const {
    std::vector<std::string> lines;
    for (absl::string_view line : absl::StrSplit(Log(), '\n')) {
      if (absl::StrContains(line, absl::StrCat("\"event\":\"", event, "\""))) {
        lines.emplace_back(line);
      }
    }
    return lines;
  }
};

class TakeoverTest : public BinaryTest {
 protected:
  void TearDown() override {
    for (Replica* replica : {&a_, &b_}) {
      replica->stub.reset();
      replica->process.reset();  // SIGTERM and wait (a killed one: reaped)
      if (!replica->log_path.empty()) unlink(replica->log_path.c_str());
    }
  }

  void StartReplica(Replica* replica, std::vector<std::string> extra = {}) {
    char path[] = "/tmp/batchfetch_takeover_log_XXXXXX";
    const int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    close(fd);
    replica->log_path = path;
    // `exec` keeps the pid, so SIGKILL reaches the server itself.
    std::vector<std::string> args = {
        "/bin/sh",
        "-c",
        absl::StrCat("exec \"$0\" \"$@\" 2>>", replica->log_path),
        BATCHFETCH_SERVER_BINARY,
        "--listen=127.0.0.1:0",
        absl::StrCat("--mysql_port=", db_->port()),
        absl::StrCat("--mysql_database=", database_),
        "--egress_allow_cidr=127.0.0.0/8",
        "--lease_duration=2s"};
    args.insert(args.end(), extra.begin(), extra.end());
    replica->process = std::make_unique<Child>(
        args, std::vector<std::string>{"BATCHFETCH_MYSQL_PASSWORD=" +
                                       db_->password()});
    std::string line;
    ASSERT_TRUE(replica->process->ReadLine(&line)) << replica->Log();
    absl::string_view rest = line;
    ASSERT_TRUE(
        absl::ConsumePrefix(&rest, "batchfetch_server listening on port "))
        << line;
    int port = 0;
    ASSERT_TRUE(absl::SimpleAtoi(rest.substr(0, rest.find(' ')), &port))
        << line;
    replica->stub = v1::BatchFetcher::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }

  // `n` slow URLs (200 ms each), distinct paths under `prefix`.
  v1::FetchBatchRequest SlowBatch(const std::string& prefix, int n,
                                  uint32_t concurrency) {
    std::vector<std::string> urls;
    for (int i = 0; i < n; ++i) {
      urls.push_back(
          upstream_->Url(absl::StrCat("/", prefix, "/", i, "?delay_ms=200")));
    }
    return Batch(urls, concurrency);
  }

  // Starts a detached batch on `stub`, reads `accepted`, then goes away.
  std::string StartDetachedAndLeave(v1::BatchFetcher::Stub* stub,
                                    v1::FetchBatchRequest request) {
    request.set_detach(true);
    grpc::ClientContext context;
    auto reader = stub->FetchBatch(&context, request);
    v1::FetchBatchEvent event;
    EXPECT_TRUE(reader->Read(&event));
    EXPECT_TRUE(event.has_accepted()) << event.ShortDebugString();
    context.TryCancel();
    v1::FetchBatchEvent rest;
    while (reader->Read(&rest)) {
    }
    reader->Finish();
    return event.has_accepted() ? event.accepted().batch_id() : std::string();
  }

  // One number from the database (the first column of the first row).
  int64_t QueryNumber(const std::string& sql) {
    absl::StatusOr<std::string> out = db_->Execute(sql, database_);
    EXPECT_TRUE(out.ok()) << out.status();
    int64_t n = -1;
    if (out.ok()) {
      EXPECT_TRUE(absl::SimpleAtoi(
          absl::StripAsciiWhitespace(out->substr(0, out->find('\t'))), &n))
          << *out;
    }
    return n;
  }

  // B's view of `batch_id` once it is DONE there, or after 15 s its last
  // answer (the caller asserts the state).
  absl::StatusOr<v1::BatchSummary> AwaitDoneOnB(const std::string& batch_id) {
    absl::StatusOr<v1::BatchSummary> summary;
    const absl::Time deadline = absl::Now() + absl::Seconds(15);
    do {
      absl::SleepFor(absl::Milliseconds(100));
      summary = GetBatchVia(b_.stub.get(), batch_id);
    } while ((!summary.ok() || summary->state() != v1::BATCH_STATE_DONE) &&
             absl::Now() < deadline);
    return summary;
  }

  // How many result rows `batch_id` has (-1 when the query fails).
  int64_t ResultRows(const std::string& batch_id) {
    return QueryNumber(
        absl::StrCat("SELECT COUNT(*) FROM fetch_results WHERE batch_id = '",
                     batch_id, "'"));
  }

  // Waits (up to `patience`) until `batch_id` has at least `rows` result
  // rows, then SIGKILLs replica A mid-batch.
  void KillAOnceStored(const std::string& batch_id, int64_t rows,
                       absl::Duration patience) {
    const absl::Time give_up = absl::Now() + patience;
    while (ResultRows(batch_id) < rows && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    ASSERT_GE(ResultRows(batch_id), rows);
    ASSERT_EQ(kill(a_.process->pid(), SIGKILL), 0);
    EXPECT_EQ(a_.process->Wait(), 128 + SIGKILL);
  }

  // The indices of `batch_id` stored with OUTCOME_OK.
  std::set<int> StoredOk(const std::string& batch_id) {
    absl::StatusOr<std::string> out = db_->Execute(
        absl::StrCat("SELECT idx FROM fetch_results WHERE batch_id = '",
                     batch_id,
                     "' AND outcome = ", static_cast<int>(v1::OUTCOME_OK)),
        database_);
    EXPECT_TRUE(out.ok()) << out.status();
    std::set<int> indices;
    if (!out.ok()) return indices;
    for (absl::string_view line :
         absl::StrSplit(*out, '\n', absl::SkipWhitespace())) {
      int index = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &index)) {
        indices.insert(index);
      }
    }
    return indices;
  }

  absl::StatusOr<v1::BatchSummary> GetBatchVia(v1::BatchFetcher::Stub* stub,
                                               const std::string& id) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::GetBatchRequest request;
    request.set_batch_id(id);
    v1::BatchSummary summary;
    grpc::Status status = stub->GetBatch(&context, request, &summary);
    if (!status.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                          status.error_message());
    }
    return summary;
  }

  // Upstream requests from arrival `since` on, by path and query.
  std::map<std::string, int> Hits(size_t since) const {
    std::map<std::string, int> hits;
    const auto arrivals = upstream_->arrivals();
    for (size_t i = since; i < arrivals.size(); ++i) {
      ++hits[arrivals[i].path_and_query];
    }
    return hits;
  }

  // Polls until `replica` has logged `event` (at most `within`); its lines.
  static std::vector<std::string> AwaitLogged(const Replica& replica,
                                              const std::string& event,
                                              absl::Duration within) {
    const absl::Time give_up = absl::Now() + within;
    std::vector<std::string> lines = replica.Lines(event);
    while (lines.empty() && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(50));
      lines = replica.Lines(event);
    }
    return lines;
  }

  static std::string PathOf(const std::string& prefix, int index) {
    return absl::StrCat("/", prefix, "/", index, "?delay_ms=200");
  }

  Replica a_;
  Replica b_;
};

TEST_F(TakeoverTest,
       AnotherReplicaFinishesADetachedBatchFetchingOnlyWhatWasMissing) {
  StartReplica(&a_);
  ASSERT_FALSE(HasFatalFailure());
  StartReplica(&b_);
  ASSERT_FALSE(HasFatalFailure());

  const std::string detached_id = StartDetachedAndLeave(
      a_.stub.get(), SlowBatch("detached", kDetachedTotal, 4));
  ASSERT_FALSE(detached_id.empty());
  // A batch whose caller streams it from A: it dies with A's stream.
  v1::FetchBatchRequest streamed_request =
      SlowBatch("streamed", kStreamedTotal, 1);
  BackgroundFetch streamed(a_.stub.get(), streamed_request);
  ASSERT_TRUE(streamed.WaitReady());

  // About a quarter of the detached batch stored, then A dies.
  ASSERT_NO_FATAL_FAILURE(KillAOnceStored(detached_id, 15, absl::Seconds(20)));
  // Whatever reaches the upstream from here on is B's: A is gone.
  const size_t arrivals_at_kill = upstream_->arrivals().size();
  // A commit A sent just before it died is applied by then; nothing of A's
  // is written after. B cannot start before A's 2 s lease expires.
  absl::SleepFor(absl::Milliseconds(300));
  const std::set<int> stored_before = StoredOk(detached_id);
  ASSERT_GE(stored_before.size(), 15u);
  ASSERT_LT(stored_before.size(), static_cast<size_t>(kDetachedTotal));
  const std::string streamed_id = streamed.Join().batch_id();
  ASSERT_FALSE(streamed_id.empty());

  // B interrupts the batch (lease expired), takes it over, finishes it.
  absl::StatusOr<v1::BatchSummary> summary = AwaitDoneOnB(detached_id);
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_EQ(summary->state(), v1::BATCH_STATE_DONE)
      << summary->ShortDebugString() << "\n"
      << b_.Log();
  EXPECT_EQ(summary->total(), static_cast<uint32_t>(kDetachedTotal));
  EXPECT_EQ(summary->succeeded(), static_cast<uint32_t>(kDetachedTotal));
  EXPECT_EQ(summary->stored(), static_cast<uint32_t>(kDetachedTotal));

  // Every index once, every one OK.
  absl::StatusOr<std::string> counts = db_->Execute(
      absl::StrCat("SELECT COUNT(*), COUNT(DISTINCT idx), MIN(idx), "
                   "MAX(idx), SUM(outcome = ",
                   static_cast<int>(v1::OUTCOME_OK),
                   ") FROM fetch_results WHERE batch_id = '", detached_id, "'"),
      database_);
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ(absl::StripAsciiWhitespace(*counts),
            absl::StrCat(kDetachedTotal, "\t", kDetachedTotal, "\t0\t",
                         kDetachedTotal - 1, "\t", kDetachedTotal));

  // What the design guarantees: a request stored OK before the kill is
  // never fetched again; every other one is fetched by B (once, or twice
  // if A's request was still reaching the upstream at the kill: at most
  // A's concurrency of them).
  const std::map<std::string, int> hits = Hits(arrivals_at_kill);
  int after_kill = 0;
  for (int i = 0; i < kDetachedTotal; ++i) {
    auto it = hits.find(PathOf("detached", i));
    const int n = it == hits.end() ? 0 : it->second;
    after_kill += n;
    if (stored_before.count(i) != 0) {
      EXPECT_EQ(n, 0) << "index " << i << " was stored OK before the kill";
    } else {
      EXPECT_GE(n, 1) << "index " << i << " was missing and never fetched";
    }
  }
  EXPECT_LE(after_kill,
            kDetachedTotal - static_cast<int>(stored_before.size()) + 4);

  // B logged the takeover, naming A's replica id.
  const std::vector<std::string> a_started = a_.Lines("lease_keeper_started");
  ASSERT_EQ(a_started.size(), 1u) << a_.Log();
  const std::vector<std::string> taken = b_.Lines("batch_taken_over");
  ASSERT_EQ(taken.size(), 1u) << b_.Log();
  EXPECT_TRUE(absl::StrContains(taken[0], detached_id)) << taken[0];
  const size_t id_at = a_started[0].find("\"replica_id\":\"");
  ASSERT_NE(id_at, std::string::npos) << a_started[0];
  const std::string a_replica = a_started[0].substr(
      id_at + 14, a_started[0].find('"', id_at + 14) - (id_at + 14));
  EXPECT_TRUE(absl::StrContains(
      taken[0], absl::StrCat("\"previous_replica\":\"", a_replica, "\"")))
      << taken[0];
  EXPECT_TRUE(absl::StrContains(
      taken[0],
      absl::StrCat("\"to_fetch\":", kDetachedTotal - stored_before.size())))
      << taken[0];

  // The streamed batch stays INTERRUPTED: nobody is there to stream it to.
  absl::StatusOr<v1::BatchSummary> left =
      GetBatchVia(b_.stub.get(), streamed_id);
  ASSERT_TRUE(left.ok()) << left.status();
  EXPECT_EQ(left->state(), v1::BATCH_STATE_INTERRUPTED)
      << left->ShortDebugString();
  bool skipped = false;
  for (const std::string& line : b_.Lines("batch_takeover_skipped")) {
    skipped |= absl::StrContains(line, streamed_id) &&
               absl::StrContains(line, "not_detached");
  }
  EXPECT_TRUE(skipped) << b_.Log();
  EXPECT_TRUE(b_.Lines("batch_takeover_failed").empty()) << b_.Log();
}

// B, allowed one active batch, is running one of its own when A dies
// leaving a detached batch: B's sweep interrupts A's batch but has no room
// to take it over (`batch_takeover_deferred`, logged once); once B's own
// batch ends, a later sweep takes it over and it ends DONE.
TEST_F(TakeoverTest, AReplicaAtItsActiveBatchLimitTakesOverOnceASlotFrees) {
  StartReplica(&a_);
  ASSERT_FALSE(HasFatalFailure());
  StartReplica(&b_, {"--max_active_batches=1"});
  ASSERT_FALSE(HasFatalFailure());

  constexpr int kTotal = 20;
  const std::string detached_id =
      StartDetachedAndLeave(a_.stub.get(), SlowBatch("deferred", kTotal, 4));
  ASSERT_FALSE(detached_id.empty());
  // B's one slot: a request the upstream holds far longer than the test;
  // cancelled below.
  v1::FetchBatchRequest own = Batch({upstream_->Url("/b-own?delay_ms=60000")});
  own.set_batch_id("b-own-batch");
  BackgroundFetch own_run(b_.stub.get(), own);
  ASSERT_TRUE(own_run.WaitReady());

  // Some of A's results stored, then A dies mid-batch.
  ASSERT_NO_FATAL_FAILURE(KillAOnceStored(detached_id, 4, absl::Seconds(10)));
  ASSERT_LT(ResultRows(detached_id), kTotal) << "A finished before it died";

  // A's lease expires within 2 s; B's sweep (every 1 s) interrupts the
  // batch and finds no room for it.
  const std::vector<std::string> deferred =
      AwaitLogged(b_, "batch_takeover_deferred", absl::Seconds(10));
  ASSERT_EQ(deferred.size(), 1u) << b_.Log();
  EXPECT_TRUE(absl::StrContains(deferred[0], detached_id)) << deferred[0];
  EXPECT_TRUE(b_.Lines("batch_taken_over").empty()) << b_.Log();
  absl::StatusOr<v1::BatchSummary> waiting =
      GetBatchVia(b_.stub.get(), detached_id);
  ASSERT_TRUE(waiting.ok()) << waiting.status();
  EXPECT_EQ(waiting->state(), v1::BATCH_STATE_INTERRUPTED)
      << waiting->ShortDebugString();
  // Still deferred a sweep later: nothing frees the slot but B's batch.
  absl::SleepFor(absl::Milliseconds(1200));
  EXPECT_TRUE(b_.Lines("batch_taken_over").empty()) << b_.Log();

  // B's own batch ends; its slot frees.
  {
    grpc::ClientContext context;
    v1::CancelBatchRequest cancel;
    cancel.set_batch_id("b-own-batch");
    v1::BatchSummary ignored;
    ASSERT_TRUE(b_.stub->CancelBatch(&context, cancel, &ignored).ok());
  }
  EXPECT_EQ(own_run.Join().status.error_code(), grpc::StatusCode::CANCELLED);

  absl::StatusOr<v1::BatchSummary> summary = AwaitDoneOnB(detached_id);
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_EQ(summary->state(), v1::BATCH_STATE_DONE)
      << summary->ShortDebugString() << "\n"
      << b_.Log();
  EXPECT_EQ(summary->succeeded(), static_cast<uint32_t>(kTotal));
  EXPECT_EQ(summary->stored(), static_cast<uint32_t>(kTotal));
  EXPECT_EQ(StoredOk(detached_id).size(), static_cast<size_t>(kTotal));

  // Taken over once, after B's own batch finished; deferred once although
  // several sweeps retried it.
  const std::vector<std::string> taken = b_.Lines("batch_taken_over");
  ASSERT_EQ(taken.size(), 1u) << b_.Log();
  EXPECT_TRUE(absl::StrContains(taken[0], detached_id)) << taken[0];
  EXPECT_EQ(b_.Lines("batch_takeover_deferred").size(), 1u) << b_.Log();
  const std::string log = b_.Log();
  const size_t own_finished =
      log.find("\"event\":\"batch_finished\",\"batch_id\":\"b-own-batch\"");
  const size_t taken_at = log.find("\"event\":\"batch_taken_over\"");
  ASSERT_NE(own_finished, std::string::npos) << log;
  EXPECT_LT(log.find("\"event\":\"batch_takeover_deferred\""), own_finished)
      << log;
  EXPECT_LT(own_finished, taken_at) << log;
  EXPECT_TRUE(b_.Lines("batch_takeover_failed").empty()) << log;
}

}  // namespace
}  // namespace batchfetch::e2e

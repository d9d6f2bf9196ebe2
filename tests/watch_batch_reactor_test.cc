// WatchBatchReactor's hand-over between live results and store reads, on a
// fake store and an unbound reactor (StartWrite and Finish before a call
// binds it are only recorded by gRPC; the test plays OnWriteDone).
#include "service/api/watch_batch_reactor.h"

#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "service/api/batch_broadcaster.h"
#include "service/api/executor.h"
#include "tests/support/stub_result_store.h"

namespace batchfetch {
namespace {

// A RUNNING batch of `total` rows; ListResults serves `rows` and records
// each call's (from, max rows).
class FakeStore : public testing::StubResultStore {
 public:
  explicit FakeStore(uint32_t total) : total_(total) {}
  absl::StatusOr<v1::BatchSummary> GetBatch(const std::string& id,
                                            const ReadScope&) override {
    v1::BatchSummary summary;
    summary.set_batch_id(id);
    summary.set_total(total_);
    summary.set_state(v1::BATCH_STATE_RUNNING);
    return summary;
  }
  absl::StatusOr<ResultPage> ListResults(const std::string&, const ReadScope&,
                                         uint32_t from,
                                         uint32_t max_rows) override {
    absl::MutexLock lock(&mu_);
    calls_.emplace_back(from, max_rows);
    ResultPage page;
    page.batch_running = true;
    for (auto it = rows_.lower_bound(from); it != rows_.end(); ++it) {
      if (page.results.size() == max_rows) {
        page.next_index = it->first;
        break;
      }
      page.results.push_back(it->second);
    }
    return page;
  }
  void Store(uint32_t index) {
    absl::MutexLock lock(&mu_);
    rows_[index].set_index(index);
  }
  // Waits (up to 10 s) until ListResults was called `n` times.
  bool AwaitCalls(size_t n) {
    absl::MutexLock lock(&mu_);
    want_calls_ = n;
    return mu_.AwaitWithTimeout(absl::Condition(this, &FakeStore::Enough),
                                absl::Seconds(10));
  }
  std::vector<std::pair<uint32_t, uint32_t>> calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }

 private:
  const uint32_t total_;
  absl::Mutex mu_;
  std::map<uint32_t, v1::FetchResult> rows_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<uint32_t, uint32_t>> calls_ ABSL_GUARDED_BY(mu_);
  size_t want_calls_ ABSL_GUARDED_BY(mu_) = 0;
  bool Enough() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return calls_.size() >= want_calls_;
  }
};

class NullObserver : public BatchObserver {
 public:
  void OnAccepted(std::shared_ptr<const v1::FetchBatchEvent>) override {}
  void OnResult(std::shared_ptr<const v1::FetchBatchEvent>) override {}
  void OnFinished(const v1::BatchSummary&, const absl::Status&) override {}
};

class WatchBatchReactorTest : public ::testing::Test {
 protected:
  WatchBatchReactorTest() : store_(1000), executor_(1, 100) {
    broadcaster_ = BatchBroadcaster::Create(&primary_);
    WatchBatchReactor::Deps deps;
    deps.store = &store_;
    deps.executor = &executor_;
    // Live unless a test says it runs elsewhere.
    deps.find_live = [this](const std::string&) {
      return runs_here_ ? broadcaster_ : nullptr;
    };
    deps.min_poll = absl::Milliseconds(1);
    reactor_ = new WatchBatchReactor(std::move(deps), "b", 0, ReadScope{});
  }
  ~WatchBatchReactorTest() override {
    reactor_->OnCancel();
    reactor_->OnWriteDone(false);  // the write in flight fails
    Drain();
    reactor_->OnDone();  // deletes it
    v1::BatchSummary summary;
    broadcaster_->OnFinished(summary, absl::OkStatus());
  }
  // Runs every task queued so far (one executor thread, FIFO).
  void Drain() {
    absl::Notification done;
    ASSERT_TRUE(executor_.Submit([&done] { done.Notify(); }).ok());
    done.WaitForNotification();
  }
  // Starts the watch and makes it live: `accepted` written, an empty
  // first scan done.
  void StartLive() {
    reactor_->Start();
    Drain();
    reactor_->OnWriteDone(true);  // accepted
    Drain();
  }
  static std::shared_ptr<const v1::FetchBatchEvent> Result(uint32_t index) {
    auto event = std::make_shared<v1::FetchBatchEvent>();
    event->mutable_result()->set_index(index);
    return event;
  }

  FakeStore store_;
  Executor executor_;
  NullObserver primary_;
  std::shared_ptr<BatchBroadcaster> broadcaster_;
  WatchBatchReactor* reactor_;
  bool runs_here_ = true;
};

TEST_F(WatchBatchReactorTest, ALiveResultIsLetGoOnceHandedOver) {
  StartLive();
  std::shared_ptr<const v1::FetchBatchEvent> event = Result(0);
  std::weak_ptr<const v1::FetchBatchEvent> held = event;
  broadcaster_->OnResult(std::move(event));  // queued and being written
  // The run's event (an engine-window slot) is not kept by the watcher.
  EXPECT_TRUE(held.expired());
}

TEST_F(WatchBatchReactorTest, ARescanReadsOnlyTheMissedRange) {
  StartLive();
  const size_t kept = WatchBatchReactor::kMaxLiveBacklog;
  // The watcher does not write: the first kMaxLiveBacklog are queued, the
  // next ones missed.
  for (uint32_t i = 0; i < kept + 5; ++i) {
    store_.Store(i);
    broadcaster_->OnResult(Result(i));
  }
  for (uint32_t i = kept + 5; i < 300; ++i) store_.Store(i);  // not reported
  const size_t calls_before = store_.calls().size();
  for (size_t i = 0; i < kept; ++i) reactor_->OnWriteDone(true);
  Drain();
  const auto calls = store_.calls();
  ASSERT_EQ(calls.size(), calls_before + 1);
  EXPECT_EQ(calls.back().first, kept);
  EXPECT_EQ(calls.back().second, 5u);  // the missed range, not a page
}

TEST_F(WatchBatchReactorTest, APollReadsOnlyTheGapsAndTheTailNotSentRows) {
  runs_here_ = false;  // following the store
  for (uint32_t i = 0; i < 10; ++i) {
    if (i != 3) store_.Store(i);
  }
  reactor_->Start();
  Drain();
  reactor_->OnWriteDone(true);  // accepted
  Drain();                      // the first scan: 9 rows
  ASSERT_EQ(store_.calls().size(), 1u);
  store_.Store(3);
  store_.Store(10);
  for (int i = 0; i < 9; ++i) reactor_->OnWriteDone(true);
  // The alarm fires (1 ms) and the poll reads the gap, writes it, then
  // reads the tail.
  ASSERT_TRUE(store_.AwaitCalls(2));
  Drain();
  reactor_->OnWriteDone(true);  // row 3
  Drain();
  const auto calls = store_.calls();
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[1], std::make_pair(3u, 1u));
  EXPECT_EQ(calls[2].first, 10u);
}

}  // namespace
}  // namespace batchfetch

// BatchBroadcaster: the primary observer sees every call, watchers see
// results and the end, a detached watcher sees nothing more, and a finished
// broadcaster takes no new watcher. No server, no threads.
#include "service/api/batch_broadcaster.h"

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace batchfetch {
namespace {

// Appends what it is told to a shared log, prefixed with its name.
class RecordingObserver : public BatchObserver, public LiveWatcher {
 public:
  RecordingObserver(std::string name, std::vector<std::string>* log)
      : name_(std::move(name)), log_(log) {}
  void OnAccepted(std::shared_ptr<const v1::FetchBatchEvent>) override {
    log_->push_back(name_ + ":accepted");
  }
  void OnResult(std::shared_ptr<const v1::FetchBatchEvent> e) override {
    log_->push_back(name_ + ":result" + std::to_string(e->result().index()));
  }
  void OnFinished(const v1::BatchSummary&, const absl::Status&) override {
    log_->push_back(name_ + ":finished");
  }
  void OnLiveResult(std::shared_ptr<const v1::FetchBatchEvent> e) override {
    log_->push_back(name_ + ":live" + std::to_string(e->result().index()));
  }
  void OnLiveFinished(const v1::BatchSummary&) override {
    log_->push_back(name_ + ":live_finished");
  }

 private:
  const std::string name_;
  std::vector<std::string>* const log_;
};

std::shared_ptr<const v1::FetchBatchEvent> Result(uint32_t index) {
  auto event = std::make_shared<v1::FetchBatchEvent>();
  event->mutable_result()->set_index(index);
  return event;
}

TEST(BatchBroadcasterTest, PrimarySeesEverythingWatchersSeeResultsAndTheEnd) {
  std::vector<std::string> log;
  RecordingObserver primary("p", &log);
  RecordingObserver watcher("w", &log);
  std::shared_ptr<BatchBroadcaster> broadcaster =
      BatchBroadcaster::Create(&primary);
  BatchBroadcaster* observer = broadcaster.get();
  observer->OnAccepted(std::make_shared<v1::FetchBatchEvent>());
  observer->OnResult(Result(0));
  ASSERT_TRUE(
      broadcaster->Subscribe(std::make_shared<LiveSubscription>(&watcher)));
  observer->OnResult(Result(1));
  std::weak_ptr<BatchBroadcaster> weak = broadcaster;
  broadcaster.reset();  // it keeps itself alive until OnFinished
  ASSERT_FALSE(weak.expired());
  observer->OnFinished(v1::BatchSummary(), absl::OkStatus());
  EXPECT_TRUE(weak.expired());
  EXPECT_EQ(log, (std::vector<std::string>{"p:accepted", "p:result0", "w:live1",
                                           "p:result1", "w:live_finished",
                                           "p:finished"}));
}

TEST(BatchBroadcasterTest, DetachedWatcherHearsNothingMore) {
  std::vector<std::string> log;
  RecordingObserver primary("p", &log);
  RecordingObserver watcher("w", &log);
  std::shared_ptr<BatchBroadcaster> broadcaster =
      BatchBroadcaster::Create(&primary);
  auto subscription = std::make_shared<LiveSubscription>(&watcher);
  ASSERT_TRUE(broadcaster->Subscribe(subscription));
  broadcaster->OnResult(Result(0));
  subscription->Detach();
  broadcaster->OnResult(Result(1));
  broadcaster->OnFinished(v1::BatchSummary(), absl::OkStatus());
  EXPECT_EQ(log, (std::vector<std::string>{"w:live0", "p:result0", "p:result1",
                                           "p:finished"}));
}

TEST(BatchBroadcasterTest, FinishedBroadcasterRefusesNewWatchers) {
  std::vector<std::string> log;
  RecordingObserver primary("p", &log);
  RecordingObserver watcher("w", &log);
  std::shared_ptr<BatchBroadcaster> broadcaster =
      BatchBroadcaster::Create(&primary);
  broadcaster->OnFinished(v1::BatchSummary(), absl::OkStatus());
  EXPECT_FALSE(
      broadcaster->Subscribe(std::make_shared<LiveSubscription>(&watcher)));
}

}  // namespace
}  // namespace batchfetch

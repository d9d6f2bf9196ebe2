#include "service/api/executor.h"

#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace batchfetch {
namespace {

TEST(Executor, RunsTasksInOrderAndShutdownRunsWhatIsQueued) {
  absl::Mutex mu;
  std::vector<int> ran;
  Executor executor(1, 100);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(executor
                    .Submit([&, i] {
                      absl::MutexLock lock(&mu);
                      ran.push_back(i);
                    })
                    .ok());
  }
  executor.Shutdown();
  ASSERT_EQ(ran.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(ran[i], i);
}

TEST(Executor, RefusesWithResourceExhaustedWhenTheQueueIsFull) {
  Executor executor(2, 3);
  absl::Notification release;
  absl::Notification started[2];
  // Both threads busy.
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(executor
                    .Submit([&, i] {
                      started[i].Notify();
                      release.WaitForNotification();
                    })
                    .ok());
  }
  started[0].WaitForNotification();
  started[1].WaitForNotification();
  std::atomic<int> ran{0};
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(executor.Submit([&] { ++ran; }).ok()) << i;
  }
  EXPECT_EQ(executor.queued(), 3u);
  absl::Status full = executor.Submit([&] { ++ran; });
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  release.Notify();
  executor.Shutdown();
  EXPECT_EQ(ran.load(), 3);  // the refused one never ran
}

TEST(Executor, RefusesAfterShutdown) {
  Executor executor(1, 10);
  executor.Shutdown();
  executor.Shutdown();  // idempotent
  EXPECT_EQ(executor.Submit([] {}).code(), absl::StatusCode::kUnavailable);
}

TEST(Executor, ATaskMaySubmitAnother) {
  absl::Notification done;
  Executor executor(1, 10);
  ASSERT_TRUE(executor
                  .Submit([&] {
                    EXPECT_TRUE(executor.Submit([&] { done.Notify(); }).ok());
                  })
                  .ok());
  done.WaitForNotification();
}

}  // namespace
}  // namespace batchfetch

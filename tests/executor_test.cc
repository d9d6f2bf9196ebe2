#include "service/api/executor.h"

#include <set>
#include <thread>
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

// The server passes the database client's per-thread setup/teardown: each
// pool thread runs on_start before its tasks and on_end after them.
TEST(Executor, RunsTheThreadHooksOnEachPoolThreadAroundItsTasks) {
  absl::Mutex mu;
  std::set<std::thread::id> started, ended;
  std::vector<std::thread::id> task_threads;
  bool task_before_start = false;
  Executor::ThreadHooks hooks;
  hooks.on_start = [&] {
    absl::MutexLock lock(&mu);
    started.insert(std::this_thread::get_id());
  };
  hooks.on_end = [&] {
    absl::MutexLock lock(&mu);
    ended.insert(std::this_thread::get_id());
  };
  Executor executor(3, 100, hooks);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(executor
                    .Submit([&] {
                      absl::MutexLock lock(&mu);
                      if (started.count(std::this_thread::get_id()) == 0) {
                        task_before_start = true;
                      }
                      task_threads.push_back(std::this_thread::get_id());
                    })
                    .ok());
  }
  executor.Shutdown();
  absl::MutexLock lock(&mu);
  EXPECT_FALSE(task_before_start);
  EXPECT_EQ(started.size(), 3u);
  EXPECT_EQ(ended, started);
  EXPECT_EQ(task_threads.size(), 10u);
  EXPECT_EQ(started.count(std::this_thread::get_id()), 0u);
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

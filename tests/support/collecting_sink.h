// A FetchSink for tests of the fetch engine. Header-only, so that
// batchfetch_test_support does not depend on batchfetch_fetch: include it
// only from tests that link batchfetch_fetch (directly or through the
// server library).
#ifndef BATCHFETCH_TESTS_SUPPORT_COLLECTING_SINK_H_
#define BATCHFETCH_TESTS_SUPPORT_COLLECTING_SINK_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "service/fetch/fetch_engine.h"

namespace batchfetch::testing {

// Collects a batch's responses by index. Releases each response at once, so
// the batch's window never fills, unless made with `hold` = true: then it
// keeps them unreleased until ReleaseHeld() (to test the window).
//
// Thread-safety: OnFetched runs on the engine's thread, the rest on the
// test's; all of it may be called concurrently.
class CollectingSink : public FetchSink {
 public:
  explicit CollectingSink(bool hold = false) : hold_(hold) {}

  void OnFetched(FetchedResponse response,
                 const std::shared_ptr<FetchBatchHandle>& batch) override {
    absl::MutexLock lock(&mu_);
    handle_ = batch;
    if (hold_) {
      ++held_;
    } else {
      batch->Release(1);
    }
    responses_[response.index] = std::move(response);
  }

  // Waits until at least `n` responses have arrived; false when `timeout`
  // passed first.
  bool AwaitCount(size_t n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return responses_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }

  // The responses once `n` have arrived; after 30 s, a test failure and
  // those that arrived.
  std::map<uint32_t, FetchedResponse> Await(size_t n) {
    EXPECT_TRUE(AwaitCount(n, absl::Seconds(30)));
    return responses();
  }

  // Releases the responses held so far and stops holding. Only after at
  // least one response arrived.
  void ReleaseHeld() {
    absl::MutexLock lock(&mu_);
    hold_ = false;
    handle_->Release(held_);
    held_ = 0;
  }

  // The responses so far, by index.
  std::map<uint32_t, FetchedResponse> responses() {
    absl::MutexLock lock(&mu_);
    return responses_;
  }

 private:
  absl::Mutex mu_;
  bool hold_ ABSL_GUARDED_BY(mu_);
  int held_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<FetchBatchHandle> handle_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, FetchedResponse> responses_ ABSL_GUARDED_BY(mu_);
};

}  // namespace batchfetch::testing

#endif  // BATCHFETCH_TESTS_SUPPORT_COLLECTING_SINK_H_

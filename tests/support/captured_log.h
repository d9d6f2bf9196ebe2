#ifndef BATCHFETCH_TESTS_SUPPORT_CAPTURED_LOG_H_
#define BATCHFETCH_TESTS_SUPPORT_CAPTURED_LOG_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "service/base/log.h"

namespace batchfetch::testing {

// Captures the process's LogEvent lines while it lives (SetLogSinkForTest;
// the destructor restores stderr). One at a time per process. Thread-safe:
// lines may be logged from any thread while the test reads them.
class CapturedLog {
 public:
  CapturedLog() {
    SetLogSinkForTest([this](std::string_view line) {
      absl::MutexLock lock(&mu_);
      lines_.emplace_back(line);
    });
  }
  ~CapturedLog() { SetLogSinkForTest(nullptr); }
  CapturedLog(const CapturedLog&) = delete;
  CapturedLog& operator=(const CapturedLog&) = delete;

  // Every line so far, in order.
  std::vector<std::string> Lines() const {
    absl::MutexLock lock(&mu_);
    return lines_;
  }
  // The lines whose "event" is `event`.
  std::vector<std::string> Lines(std::string_view event) const {
    const std::string key = "\"event\":\"" + std::string(event) + "\"";
    std::vector<std::string> found;
    absl::MutexLock lock(&mu_);
    for (const std::string& line : lines_) {
      if (line.find(key) != std::string::npos) found.push_back(line);
    }
    return found;
  }
  int Count(std::string_view event) const {
    return static_cast<int>(Lines(event).size());
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};

}  // namespace batchfetch::testing

#endif  // BATCHFETCH_TESTS_SUPPORT_CAPTURED_LOG_H_

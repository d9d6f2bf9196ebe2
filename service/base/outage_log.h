#ifndef BATCHFETCH_SERVICE_BASE_OUTAGE_LOG_H_
#define BATCHFETCH_SERVICE_BASE_OUTAGE_LOG_H_

#include <string>

#include "absl/status/status.h"

namespace batchfetch {

// Logs an outage of an operation that is repeated in rounds (a poll, a
// sweep, a retention pass) once when it starts and once when it ends, never
// once per failed round: `failed_event` (warning, with "error": the status
// message) at the first failure (also when the very first round fails), and
// `recovered_event` (info, no fields) at the first success after failures.
// A round that succeeds while nothing failed logs nothing.
//
// Threading: not thread-safe; one thread records (a keeper's round).
class OutageLog {
 public:
  OutageLog(std::string failed_event, std::string recovered_event);

  // Records one round's outcome, logging as above; returns status.ok().
  bool Record(const absl::Status& status);
  // The last recorded round failed.
  bool failing() const { return failing_; }

 private:
  const std::string failed_event_;
  const std::string recovered_event_;
  bool failing_ = false;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_BASE_OUTAGE_LOG_H_

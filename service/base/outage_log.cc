#include "service/base/outage_log.h"

#include <string_view>
#include <utility>

#include "service/base/log.h"

namespace batchfetch {

OutageLog::OutageLog(std::string failed_event, std::string recovered_event)
    : failed_event_(std::move(failed_event)),
      recovered_event_(std::move(recovered_event)) {}

bool OutageLog::Record(const absl::Status& status) {
  if (!status.ok() && !failing_) {
    LogEvent(LogLevel::kWarning, failed_event_)
        .Add("error", std::string_view(status.message().data(),
                                       status.message().size()));
  } else if (status.ok() && failing_) {
    LogEvent(LogLevel::kInfo, recovered_event_);
  }
  failing_ = !status.ok();
  return status.ok();
}

}  // namespace batchfetch

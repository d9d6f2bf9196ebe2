#ifndef BATCHFETCH_TESTS_SUPPORT_PROC_STATUS_H_
#define BATCHFETCH_TESTS_SUPPORT_PROC_STATUS_H_

#include <sys/types.h>

#include <cstdint>
#include <fstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace batchfetch::testing {

// A "kB" line of /proc/<pid>/status, e.g. key "VmRSS:" or "VmHWM:" (pid 0:
// this process). -1 when absent.
inline int64_t ProcStatusKb(pid_t pid, absl::string_view key) {
  std::ifstream status(pid == 0 ? std::string("/proc/self/status")
                                : absl::StrCat("/proc/", pid, "/status"));
  std::string text;
  while (std::getline(status, text)) {
    absl::string_view line = text;
    if (!absl::ConsumePrefix(&line, key)) continue;
    int64_t kb = -1;
    if (!absl::SimpleAtoi(
            absl::StripSuffix(absl::StripAsciiWhitespace(line), " kB"), &kb)) {
      return -1;
    }
    return kb;
  }
  return -1;
}

}  // namespace batchfetch::testing

#endif  // BATCHFETCH_TESTS_SUPPORT_PROC_STATUS_H_

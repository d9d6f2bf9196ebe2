// Finding the real grpcurl binary for the e2e tests that run it.
#ifndef BATCHFETCH_TESTS_SUPPORT_GRPCURL_H_
#define BATCHFETCH_TESTS_SUPPORT_GRPCURL_H_

#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "tests/support/logged_server.h"

namespace batchfetch {
namespace e2e {

// ../shared/tools/grpcurl next to the checkout (BATCHFETCH_SOURCE_DIR), else
// grpcurl on PATH; empty when neither exists (tests then skip, saying so).
inline std::string FindGrpcurl() {
  const std::string shared =
      absl::StrCat(BATCHFETCH_SOURCE_DIR, "/../shared/tools/grpcurl");
  if (access(shared.c_str(), X_OK) == 0) return shared;
  std::string found;
  if (RunCommand("command -v grpcurl", &found) == 0 && !found.empty()) {
    while (!found.empty() && found.back() == '\n') found.pop_back();
    return found;
  }
  return "";
}

inline constexpr char kNoGrpcurl[] =
    "no grpcurl: put it at ../shared/tools/grpcurl (next to the checkout) or "
    "on PATH to run these tests";

}  // namespace e2e
}  // namespace batchfetch

#endif  // BATCHFETCH_TESTS_SUPPORT_GRPCURL_H_

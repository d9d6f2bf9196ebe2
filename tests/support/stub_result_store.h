#ifndef BATCHFETCH_TESTS_SUPPORT_STUB_RESULT_STORE_H_
#define BATCHFETCH_TESTS_SUPPORT_STUB_RESULT_STORE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "service/store/result_store.h"

namespace batchfetch::testing {

// A ResultStore whose required methods do nothing: CreateBatch succeeds,
// AppendResult and FinishBatch drop their rows (Done is never called),
// GetBatch is NOT_FOUND, ListResults empty. Fakes for the keepers derive
// from it and override only the calls they script. Not thread-safe beyond
// what the overriding fake adds.
class StubResultStore : public ResultStore {
 public:
  absl::Status CreateBatch(const BatchRecord&) override {
    return absl::OkStatus();
  }
  void AppendResult(const std::string&, std::shared_ptr<const v1::FetchResult>,
                    absl::Time, Done) override {}
  void FinishBatch(const BatchRecord&, Done) override {}
  absl::StatusOr<v1::BatchSummary> GetBatch(const std::string&,
                                            const ReadScope&) override {
    return absl::NotFoundError("none");
  }
  absl::StatusOr<ResultPage> ListResults(const std::string&, const ReadScope&,
                                         uint32_t, uint32_t) override {
    return ResultPage();
  }
};

}  // namespace batchfetch::testing

#endif  // BATCHFETCH_TESTS_SUPPORT_STUB_RESULT_STORE_H_

#ifndef BATCHFETCH_TESTS_SUPPORT_FAULT_INJECTING_RESULT_STORE_H_
#define BATCHFETCH_TESTS_SUPPORT_FAULT_INJECTING_RESULT_STORE_H_

#include <atomic>
#include <memory>
#include <string>
#include <utility>

#include "service/store/result_store.h"

namespace batchfetch::testing {

// Wraps a real ResultStore and makes chosen result writes fail as if the
// database had given up on them. Every call still goes through the real
// store, so `done` keeps running on the store's own thread.
class FaultInjectingResultStore : public ResultStore {
 public:
  explicit FaultInjectingResultStore(std::unique_ptr<ResultStore> inner)
      : inner_(std::move(inner)) {}

  // Results whose index is >= `index` report UNAVAILABLE (-1: none).
  void FailAppendsFromIndex(int64_t index) { fail_from_.store(index); }

  absl::Status CreateBatch(const BatchRecord& batch) override {
    return inner_->CreateBatch(batch);
  }
  void AppendResult(const std::string& batch_id,
                    std::shared_ptr<const v1::FetchResult> result,
                    absl::Time fetched_at, Done done) override {
    const int64_t from = fail_from_.load();
    const bool fail = from >= 0 && result->index() >= from;
    inner_->AppendResult(
        batch_id, std::move(result), fetched_at,
        [fail, done = std::move(done)](WriteOutcome outcome) mutable {
          std::move(done)(fail ? absl::UnavailableError("injected write fault")
                               : std::move(outcome));
        });
  }
  void FinishBatch(const BatchRecord& batch, Done done) override {
    inner_->FinishBatch(batch, std::move(done));
  }
  void StartDraining() override { inner_->StartDraining(); }
  absl::Status RenewLeases() override { return inner_->RenewLeases(); }
  absl::StatusOr<std::vector<std::string>> InterruptExpiredLeases() override {
    return inner_->InterruptExpiredLeases();
  }
  absl::StatusOr<RetentionPass> DeleteExpiredBatches(absl::Time ended_before,
                                                     int max_batches) override {
    return inner_->DeleteExpiredBatches(ended_before, max_batches);
  }
  absl::Status Ping() override { return inner_->Ping(); }
  absl::Status RecountStored(const std::string& batch_id) override {
    return inner_->RecountStored(batch_id);
  }
  absl::StatusOr<ResumePlan> BeginResume(
      const std::string& batch_id, const ReadScope& scope,
      const std::string& requests_sha256) override {
    return inner_->BeginResume(batch_id, scope, requests_sha256);
  }
  absl::StatusOr<v1::BatchSummary> GetBatch(const std::string& batch_id,
                                            const ReadScope& scope) override {
    return inner_->GetBatch(batch_id, scope);
  }
  absl::StatusOr<StoredBatch> ReadStoredBatch(
      const std::string& batch_id) override {
    return inner_->ReadStoredBatch(batch_id);
  }
  absl::StatusOr<ResultPage> ListResults(const std::string& batch_id,
                                         const ReadScope& scope,
                                         uint32_t from_index,
                                         uint32_t limit) override {
    return inner_->ListResults(batch_id, scope, from_index, limit);
  }
  absl::Status RequestCancel(const std::string& batch_id,
                             const ReadScope& scope) override {
    return inner_->RequestCancel(batch_id, scope);
  }
  absl::StatusOr<std::vector<std::string>> CancelRequestedBatches() override {
    return inner_->CancelRequestedBatches();
  }
  absl::StatusOr<BatchListPage> ListBatches(
      const ReadScope& scope, const BatchListQuery& query) override {
    return inner_->ListBatches(scope, query);
  }
  absl::StatusOr<std::string> PageTokenKey() override {
    return inner_->PageTokenKey();
  }

 private:
  const std::unique_ptr<ResultStore> inner_;
  std::atomic<int64_t> fail_from_{-1};
};

}  // namespace batchfetch::testing

#endif  // BATCHFETCH_TESTS_SUPPORT_FAULT_INJECTING_RESULT_STORE_H_

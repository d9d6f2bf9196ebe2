#ifndef BATCHFETCH_SERVICE_STORE_RESULT_STORE_H_
#define BATCHFETCH_SERVICE_STORE_RESULT_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "batchfetch/v1/batchfetch.pb.h"

namespace batchfetch {

// A batch row as the service writes it.
struct BatchRecord {
  std::string batch_id;
  // The identity (token name) that created the batch; empty without auth.
  // Written by CreateBatch only; never changes.
  std::string owner;
  v1::BatchState state = v1::BATCH_STATE_RUNNING;
  uint32_t total = 0;
  uint32_t succeeded = 0;
  uint32_t failed = 0;
  uint32_t stored = 0;
  absl::Time created_at;
  absl::Time finished_at = absl::InfinitePast();  // InfinitePast: not yet
};

struct ResultPage {
  std::vector<v1::FetchResult> results;
  // Index to continue from, or -1 when this is the last page.
  int64_t next_index = -1;
};

// Which batches a read may see. With `owner` set, only the batches created
// with that owner: any other batch is answered exactly as an unknown id
// (NOT_FOUND), so a caller cannot learn that it exists. Unset (auth off):
// every batch.
struct ReadScope {
  std::optional<std::string> owner;

  static ReadScope AnyOwner() { return ReadScope{}; }
  static ReadScope OwnedBy(std::string owner) {
    return ReadScope{std::move(owner)};
  }
};

// Where batches and their results are kept. The seam between the service
// and the database: MysqlResultStore is the real one; tests wrap it to inject
// faults.
//
// Thread-safety: every method may be called from any thread.
class ResultStore {
 public:
  // Runs exactly once, on a store-owned thread: OK once the write is
  // committed, an error once the store gave up on it. Must not block.
  using Done = absl::AnyInvocable<void(absl::Status) &&>;

  virtual ~ResultStore() = default;

  // Records a new batch (with its owner). ALREADY_EXISTS when the id is
  // taken, whoever owns it; UNAVAILABLE
  // when the database cannot be reached. Blocks for one round trip.
  virtual absl::Status CreateBatch(const BatchRecord& batch) = 0;

  // Queues one result of `batch_id` for storage; never blocks on I/O.
  // Writing the same (batch_id, index) twice keeps the first.
  virtual void AppendResult(const std::string& batch_id,
                            std::shared_ptr<const v1::FetchResult> result,
                            absl::Time fetched_at, Done done) = 0;

  // Queues the final counters and state of a batch. Commits after every
  // result appended before it.
  virtual void FinishBatch(const BatchRecord& batch, Done done) = 0;

  // NOT_FOUND for an unknown id or one outside `scope`.
  virtual absl::StatusOr<v1::BatchSummary> GetBatch(const std::string& batch_id,
                                                    const ReadScope& scope) = 0;

  // Whether the database answers now: one cheap round trip bounded by a
  // short timeout (the server's background health checker calls it every
  // second or two; never per call). A store without a database (tests'
  // in-memory fakes) is always reachable.
  virtual absl::Status Ping() { return absl::OkStatus(); }

  // The server began draining: from now on the store's remaining write work
  // (queued and still to come) shares about one retry budget in total, so a
  // dead or half-open database cannot stretch the drain to one budget per
  // queued write. A healthy database still gets every write. Idempotent
  // (the first call counts); never blocks. Default: nothing to bound.
  virtual void StartDraining() {}

  // Results with index >= `from_index` in index order, at most `limit`.
  // NOT_FOUND for an unknown batch id or one outside `scope`.
  virtual absl::StatusOr<ResultPage> ListResults(const std::string& batch_id,
                                                 const ReadScope& scope,
                                                 uint32_t from_index,
                                                 uint32_t limit) = 0;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_RESULT_STORE_H_

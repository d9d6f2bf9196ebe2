#ifndef BATCHFETCH_SERVICE_STORE_MYSQL_WRITE_OP_H_
#define BATCHFETCH_SERVICE_STORE_MYSQL_WRITE_OP_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "batchfetch/v1/batchfetch.pb.h"
#include "service/store/result_store.h"

namespace batchfetch {

// One queued write: a result row (ResultStore::AppendResult) or the final row
// of a batch (ResultStore::FinishBatch), with the callback that reports it.
//
// Ownership: owns its `done`, which must run exactly once; whoever holds
// the op (the writer's queue, the writer, a GivenUpHandler) is responsible
// for running or handing it on. Move-only. Not thread-safe.
struct WriteOp {
  enum class Kind { kResult, kFinishBatch };

  static WriteOp Result(std::string batch_id,
                        std::shared_ptr<const v1::FetchResult> result,
                        absl::Time fetched_at, ResultStore::Done done) {
    WriteOp op;
    op.kind = Kind::kResult;
    op.bytes = result->url().size() + result->json().size() +
               result->body().size() + result->error().size() + 128;
    op.batch_id = std::move(batch_id);
    op.result = std::move(result);
    op.fetched_at = fetched_at;
    op.done = std::move(done);
    return op;
  }
  static WriteOp FinishBatch(const BatchRecord& record,
                             ResultStore::Done done) {
    WriteOp op;
    op.kind = Kind::kFinishBatch;
    op.batch_id = record.batch_id;
    op.record = record;
    op.done = std::move(done);
    op.bytes = 128;
    return op;
  }

  bool is_result() const { return kind == Kind::kResult; }

  Kind kind = Kind::kResult;
  std::string batch_id;
  std::shared_ptr<const v1::FetchResult> result;  // kResult
  absl::Time fetched_at;                          // kResult
  BatchRecord record;                             // kFinishBatch
  ResultStore::Done done;
  // Approximate size, for bounding a group.
  size_t bytes = 0;
};

// Receives a group the writer gave up on: the database stayed unreachable
// (or kept deadlocking) for the whole retry budget. The handler owns the
// ops and must eventually run each one's `done`, on any thread. Runs on the
// writer thread and must not block for long: the writer waits for it.
// `status` is UNAVAILABLE with the last error. A spooling decorator can take
// the ops over here instead of failing them.
using GivenUpHandler =
    std::function<void(std::vector<WriteOp>&& group, const absl::Status&)>;

// The default GivenUpHandler: runs every op's `done` with `status`.
inline void FailEachOp(std::vector<WriteOp>&& group,
                       const absl::Status& status) {
  std::vector<WriteOp> ops = std::move(group);
  for (WriteOp& op : ops) std::move(op.done)(status);
}

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_MYSQL_WRITE_OP_H_

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
  // Results held in the local spool, not yet replayed into MySQL.
  uint32_t spooled = 0;
  // Why the batch is in `state`, when that needs saying (INTERRUPTED).
  std::string state_reason;
  // Written by CreateBatch only (empty elsewhere): what the batch was asked
  // to do, for resume and takeover. `request` is the serialized
  // v1::FetchBatchRequest as accepted (shared: it may be large and the
  // record is copied); `requests_sha256` the lower-case hex SHA-256 that
  // identifies its request list (see the resume code for what it covers).
  std::shared_ptr<const std::string> request;
  std::string requests_sha256;
  // CreateBatch only: the batch runs nowhere (a spooled creation replayed
  // after the process that ran it died). Its row gets an already expired
  // lease, so that the next sweep marks it INTERRUPTED (unless its spooled
  // final row arrives first).
  bool orphaned = false;
  absl::Time created_at;
  absl::Time finished_at = absl::InfinitePast();  // InfinitePast: not yet
};

// What BeginResume found and did: the batch may run again.
struct ResumePlan {
  uint32_t total = 0;     // requests in the whole batch
  absl::Time created_at;  // when the batch was first accepted
  v1::BatchState previous_state = v1::BATCH_STATE_UNSPECIFIED;
  // Indices that have a stored OUTCOME_OK result, ascending: only the
  // others are to be fetched.
  std::vector<uint32_t> ok_indices;
};

// What a takeover reads of a batch (ResultStore::ReadStoredBatch).
struct StoredBatch {
  // The serialized v1::FetchBatchRequest CreateBatch stored (as accepted,
  // with its batch_id); empty when none was stored (BatchRecord::request
  // was null: a batch that was not detached).
  std::string request;
  std::string owner;  // BatchRecord::owner: whose batch it is
  // The replica that held its lease last (for an interrupted batch: the one
  // that stopped); empty when none is recorded.
  std::string lease_owner;
  v1::BatchState state = v1::BATCH_STATE_UNSPECIFIED;
  // A CancelBatch reached the batch while it ran (the flag its runner
  // polls): its caller wants it stopped, not finished.
  bool cancel_requested = false;
};

// What one retention pass (ResultStore::DeleteExpiredBatches) deleted.
struct RetentionPass {
  uint64_t batches = 0;  // batch rows
  uint64_t rows = 0;     // their fetch_results and batch_requests rows
  // The pass stopped at its batch limit: more batches may be due now.
  bool more = false;
};

// What ListBatches asks for (newest first: created_at, then batch_id,
// descending).
struct BatchListQuery {
  // Only batches in this state; UNSPECIFIED: any.
  v1::BatchState state = v1::BATCH_STATE_UNSPECIFIED;
  // Only batches created strictly after this time.
  absl::Time created_after = absl::InfinitePast();
  // Keyset paging: only batches after (older than, or as old with a smaller
  // id than) the cursor, the last batch of the previous page.
  bool has_cursor = false;
  absl::Time cursor_created_at;
  std::string cursor_batch_id;
  uint32_t limit = 50;  // >= 1
};

struct BatchListPage {
  std::vector<v1::BatchSummary> batches;
  // More batches match after the last one.
  bool more = false;
};

struct ResultPage {
  std::vector<v1::FetchResult> results;
  // Index to continue from, or -1 when this is the last page.
  int64_t next_index = -1;
  // The batch was RUNNING when the page was read: results not yet stored
  // may appear later (at any index).
  bool batch_running = false;
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
  // Where a write the store took is kept.
  enum class Durability {
    kCommitted,  // committed to MySQL
    // Durable in the local spool (fsynced); replayed into MySQL later.
    kSpooled,
  };
  // A write's end: where it is durable, or why the store gave up on it.
  using WriteOutcome = absl::StatusOr<Durability>;
  // Runs exactly once, on a store-owned thread, once the write is durable
  // (committed or spooled) or the store gave up on it. Must not block.
  using Done = absl::AnyInvocable<void(WriteOutcome) &&>;

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

  // Batch leases (a store shared by replicas; see LeaseKeeper). Every
  // batch CreateBatch records is leased to this replica for the store's
  // lease duration. Both calls block for a round trip or two and use the
  // database's clock only, so clock skew between replicas does not matter.
  // Defaults (stores no other replica shares): nothing to renew or sweep.
  //
  // Extends the lease of every RUNNING batch this replica owns.
  virtual absl::Status RenewLeases() { return absl::OkStatus(); }
  // Marks BATCH_STATE_INTERRUPTED (with a state_reason) every RUNNING batch
  // whose lease has expired and that another replica owns, and returns their
  // ids. Race-free across replicas: each batch is returned by one call only.
  virtual absl::StatusOr<std::vector<std::string>> InterruptExpiredLeases() {
    return std::vector<std::string>();
  }

  // Takes the stored batch `batch_id` up again (FetchBatchRequest.resume),
  // in one transaction: checks it, deletes its stored results whose outcome
  // is not OK (they are fetched and written again, and a write keeps the
  // first row of an index), and marks it RUNNING, leased to this replica.
  // Errors, with nothing changed:
  //   NOT_FOUND            unknown id, or one outside `scope`;
  //   FAILED_PRECONDITION  `requests_sha256` differs from the stored one (or
  //                        none was stored), or the batch is RUNNING and its
  //                        lease has not expired (a live replica runs it);
  //   UNAVAILABLE          the database cannot be reached.
  // Resumable: CANCELLED, FAILED, INTERRUPTED, DONE (whose results are then
  // all OK or are fetched again) and RUNNING with an expired lease.
  // Default: UNIMPLEMENTED (a store that cannot resume).
  virtual absl::StatusOr<ResumePlan> BeginResume(
      const std::string& batch_id, const ReadScope& scope,
      const std::string& requests_sha256) {
    (void)batch_id;
    (void)scope;
    (void)requests_sha256;
    return absl::UnimplementedError("this store cannot resume batches");
  }

  // The stored request of `batch_id` with its owner, last lease owner and
  // state, unscoped: for the service's own takeover of an interrupted
  // batch (BatchFetcherService::TakeOverInterrupted), never a caller's
  // read. NOT_FOUND for an unknown id; a batch stored without its request
  // comes back with an empty `request` (a takeover then finds it was not
  // detached); UNAVAILABLE when the database cannot be reached. Blocks for a
  // round trip or two. Default: UNIMPLEMENTED (a store that cannot resume).
  virtual absl::StatusOr<StoredBatch> ReadStoredBatch(
      const std::string& /*batch_id*/) {
    return absl::UnimplementedError("this store keeps no batch requests");
  }

  // Recomputes the batch row's `stored` (the result rows there are) and
  // lowers `spooled` to at most `total - stored`, after spooled writes of
  // it were replayed. Default: nothing to recount.
  virtual absl::Status RecountStored(const std::string& /*batch_id*/) {
    return absl::OkStatus();
  }

  // Retention (--retention): deletes at most `max_batches` batches that
  // ended before `ended_before`, with their results and stored requests,
  // and reports what went. A batch ended when it reached a final state
  // (DONE, CANCELLED, FAILED: its finished_at; INTERRUPTED: when its lease
  // expired); RUNNING batches, and batches with results still in a spool,
  // are never touched. The rows go in small chunks, each its own short
  // transaction, so no table is locked for long; a batch row goes last, so
  // a pass cut short is finished by the next one. Blocks for many round
  // trips. Default (a store nothing accumulates in): nothing to delete.
  virtual absl::StatusOr<RetentionPass> DeleteExpiredBatches(
      absl::Time /*ended_before*/, int /*max_batches*/) {
    return RetentionPass{};
  }

  // Callers' batch control (CancelBatch, ListBatches; issue 11). Each
  // blocks for a round trip or two.
  //
  // Marks `batch_id` cancel-requested if it is RUNNING (a finished batch is
  // left unchanged); the replica running it notices through
  // CancelRequestedBatches. NOT_FOUND for an unknown id or one outside
  // `scope`. Default: UNIMPLEMENTED (a store no replica shares).
  virtual absl::Status RequestCancel(const std::string& /*batch_id*/,
                                     const ReadScope& /*scope*/) {
    return absl::UnimplementedError("this store cannot carry cancels");
  }
  // The RUNNING batches leased to this replica whose cancel was requested.
  // Default: none.
  virtual absl::StatusOr<std::vector<std::string>> CancelRequestedBatches() {
    return std::vector<std::string>();
  }
  // A page of the batches in `scope` that match `query`, newest first; a
  // RUNNING or INTERRUPTED batch's counters are counted live, as GetBatch
  // does. Default: UNIMPLEMENTED.
  virtual absl::StatusOr<BatchListPage> ListBatches(
      const ReadScope& /*scope*/, const BatchListQuery& /*query*/) {
    return absl::UnimplementedError("this store cannot list batches");
  }
  // A random secret (>= 32 bytes) every replica sharing the store reads
  // the same, created on first use: the key of ListBatches page tokens.
  // Default: UNIMPLEMENTED (the service then uses a per-process key).
  virtual absl::StatusOr<std::string> PageTokenKey() {
    return absl::UnimplementedError("this store keeps no shared secret");
  }

  // Results with index >= `from_index` in index order, at most `limit`.
  // NOT_FOUND for an unknown batch id or one outside `scope`.
  virtual absl::StatusOr<ResultPage> ListResults(const std::string& batch_id,
                                                 const ReadScope& scope,
                                                 uint32_t from_index,
                                                 uint32_t limit) = 0;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_RESULT_STORE_H_

#ifndef BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_BATCH_CONTROL_H_
#define BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_BATCH_CONTROL_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "service/store/mysql/mysql_reader.h"
#include "service/store/result_store.h"

namespace batchfetch {

// The callers' batch control on MySQL (schema migration 8): cancel requests
// carried through `batches.cancel_requested`, listing batches newest first,
// and the shared page-token key in `service_secrets`.
//
// Ownership: borrows `reader`'s connection pool (not owned; must outlive
// this). Threading: every method may be called from any thread; each
// blocks for its round trips (bounded by the sessions' io_timeout).
class MysqlBatchControl {
 public:
  // `replica_id`: this replica's lease_owner (CancelRequested looks only at
  // its batches).
  MysqlBatchControl(MysqlReader* reader, std::string replica_id);

  // ResultStore::RequestCancel: one UPDATE of a RUNNING row in scope, then
  // (nothing updated) a SELECT telling NOT_FOUND from "already finished".
  absl::Status RequestCancel(const std::string& batch_id,
                             const ReadScope& scope);
  // ResultStore::CancelRequestedBatches.
  absl::StatusOr<std::vector<std::string>> CancelRequested();
  // ResultStore::ListBatches: one keyset query (LIMIT limit + 1), plus one
  // count per RUNNING or INTERRUPTED batch on the page.
  absl::StatusOr<BatchListPage> ListBatches(const ReadScope& scope,
                                            const BatchListQuery& query);
  // ResultStore::PageTokenKey: the `list_batches_page_token` row, inserted
  // (32 random bytes from this process) if missing; the first insert wins.
  absl::StatusOr<std::string> PageTokenKey();

 private:
  MysqlReader* const reader_;
  const std::string replica_id_;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_STORE_MYSQL_MYSQL_BATCH_CONTROL_H_

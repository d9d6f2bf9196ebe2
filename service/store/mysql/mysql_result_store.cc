#include "service/store/mysql/mysql_result_store.h"

#include <cppconn/resultset.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <set>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "service/store/mysql/mysql_batch_control.h"
#include "service/store/mysql/mysql_leases.h"
#include "service/store/mysql/mysql_reader.h"
#include "service/store/mysql/mysql_retention.h"
#include "service/store/mysql/mysql_schema.h"
#include "service/store/mysql/mysql_session.h"
#include "service/store/mysql/mysql_writer.h"

namespace batchfetch {

// The parts, in destruction order: the writer drains first, then the read
// pool closes.
class MysqlResultStore::Impl {
 public:
  Impl(std::unique_ptr<MysqlReader> reader, std::unique_ptr<MysqlWriter> writer,
       std::unique_ptr<MysqlLeases> leases,
       std::unique_ptr<MysqlRetention> retention, MysqlSession::Options probe)
      : reader_(std::move(reader)),
        writer_(std::move(writer)),
        leases_(std::move(leases)),
        retention_(std::move(retention)),
        probe_options_(std::move(probe)) {}
  ~Impl() { writer_.reset(); }

  MysqlReader& reader() { return *reader_; }
  MysqlWriter& writer() { return *writer_; }
  MysqlLeases& leases() { return *leases_; }
  // Set by Open() right after construction (it borrows reader_).
  std::unique_ptr<MysqlBatchControl> batch_control;
  MysqlRetention& retention() { return *retention_; }

  // The batches this process runs (created or resumed here, final row not
  // yet acknowledged): the only leases it renews.
  void AddLive(const std::string& batch_id) {
    absl::MutexLock lock(&live_mu_);
    live_.insert(batch_id);
  }
  void RemoveLive(const std::string& batch_id) {
    absl::MutexLock lock(&live_mu_);
    live_.erase(batch_id);
  }
  std::set<std::string> Live() {
    absl::MutexLock lock(&live_mu_);
    return live_;
  }

  absl::Status Ping() {
    absl::MutexLock lock(&probe_mu_);
    if (probe_ == nullptr) {
      auto session = MysqlSession::Connect(probe_options_);
      if (!session.ok()) return session.status();
      probe_ = *std::move(session);
    }
    MysqlStatus pinged = MysqlSession::Guard("pinging the database", [&] {
      std::unique_ptr<sql::ResultSet> rs(probe_->Query("SELECT 1"));
      return absl::OkStatus();
    });
    if (!pinged.ok()) probe_.reset();  // reconnect on the next ping
    return pinged.status;
  }

 private:
  std::unique_ptr<MysqlReader> reader_;
  std::unique_ptr<MysqlWriter> writer_;
  std::unique_ptr<MysqlLeases> leases_;
  std::unique_ptr<MysqlRetention> retention_;
  // Ping()'s own connection (see MysqlResultStore::Ping).
  const MysqlSession::Options probe_options_;
  absl::Mutex probe_mu_;
  std::unique_ptr<MysqlSession> probe_ ABSL_GUARDED_BY(probe_mu_);
  absl::Mutex live_mu_;
  std::set<std::string> live_ ABSL_GUARDED_BY(live_mu_);
};

MysqlResultStore::MysqlResultStore(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

MysqlResultStore::~MysqlResultStore() = default;

int MysqlResultStore::LatestSchemaVersion() {
  return MysqlSchema::LatestVersion();
}

absl::StatusOr<std::unique_ptr<MysqlResultStore>> MysqlResultStore::Open(
    const Options& options) {
  const Clock* clock = options.clock != nullptr ? options.clock : Clock::Real();
  MysqlSession::Options server;
  server.host = options.host;
  server.port = options.port;
  server.user = options.user;
  server.password = options.password;
  server.connect_timeout = options.connect_timeout;
  server.io_timeout = options.io_timeout;

  MysqlSchema schema(server, options.database, clock);
  absl::Status status = schema.WaitForServer(options.startup_wait);
  if (!status.ok()) return status;
  status = schema.Migrate();
  if (!status.ok()) return status;

  MysqlSession::Options with_db = server;
  with_db.database = options.database;

  MysqlReader::Options reader;
  reader.session = with_db;
  reader.max_read_connections = options.max_read_connections;
  const std::string replica_id =
      options.replica_id.empty() ? NewReplicaId() : options.replica_id;
  reader.replica_id = replica_id;
  reader.lease_duration = options.lease_duration;

  MysqlLeases::Options leases;
  leases.session = with_db;
  // A renewal slower than half a lease is as good as none: fail it then.
  leases.session.connect_timeout =
      std::min(options.connect_timeout, options.lease_duration / 2);
  leases.session.io_timeout =
      std::min(options.io_timeout, options.lease_duration / 2);
  leases.replica_id = replica_id;
  leases.lease_duration = options.lease_duration;

  MysqlWriter::Options writer;
  writer.session = with_db;
  writer.max_group_rows = options.max_group_rows;
  writer.max_group_bytes = options.max_group_bytes;
  writer.retry.budget = options.retry_budget;
  writer.retry.drain_budget = options.drain_retry_budget;
  writer.on_group_given_up = options.on_group_given_up;
  writer.stats = options.stats;

  MysqlRetention::Options retention;
  retention.session = with_db;
  retention.result_rows_per_chunk = options.retention_rows_per_chunk;

  MysqlSession::Options probe = with_db;
  probe.connect_timeout = options.ping_timeout;
  probe.io_timeout = options.ping_timeout;

  auto impl = std::make_unique<Impl>(
      std::make_unique<MysqlReader>(std::move(reader)),
      std::make_unique<MysqlWriter>(std::move(writer), clock),
      std::make_unique<MysqlLeases>(std::move(leases)),
      std::make_unique<MysqlRetention>(std::move(retention)), std::move(probe));
  impl->batch_control =
      std::make_unique<MysqlBatchControl>(&impl->reader(), replica_id);
  return std::unique_ptr<MysqlResultStore>(
      new MysqlResultStore(std::move(impl)));
}

absl::Status MysqlResultStore::CreateBatch(const BatchRecord& batch) {
  absl::Status status = impl_->reader().CreateBatch(batch);
  if (status.ok() && !batch.orphaned) impl_->AddLive(batch.batch_id);
  if (absl::IsAlreadyExists(status)) {
    return absl::AlreadyExistsError(
        absl::StrCat("batch_id '", batch.batch_id, "' already exists"));
  }
  return status;
}

void MysqlResultStore::AppendResult(
    const std::string& batch_id, std::shared_ptr<const v1::FetchResult> result,
    absl::Time fetched_at, Done done) {
  impl_->writer().Enqueue(WriteOp::Result(batch_id, std::move(result),
                                          fetched_at, std::move(done)));
}

void MysqlResultStore::FinishBatch(const BatchRecord& batch, Done done) {
  // Whatever becomes of the final row, the batch no longer runs here: its
  // lease is no longer renewed (a row left RUNNING expires and is swept).
  impl_->writer().Enqueue(WriteOp::FinishBatch(
      batch, [impl = impl_.get(), id = batch.batch_id,
              done = std::move(done)](WriteOutcome outcome) mutable {
        impl->RemoveLive(id);
        std::move(done)(std::move(outcome));
      }));
}

absl::StatusOr<v1::BatchSummary> MysqlResultStore::GetBatch(
    const std::string& batch_id, const ReadScope& scope) {
  return impl_->reader().GetBatch(batch_id, scope);
}

absl::Status MysqlResultStore::Ping() { return impl_->Ping(); }

void MysqlResultStore::StartDraining() { impl_->writer().StartDraining(); }

absl::Status MysqlResultStore::RecountStored(const std::string& batch_id) {
  return impl_->reader().RecountStored(batch_id);
}

absl::Status MysqlResultStore::RequestCancel(const std::string& batch_id,
                                             const ReadScope& scope) {
  return impl_->batch_control->RequestCancel(batch_id, scope);
}

absl::StatusOr<std::vector<std::string>>
MysqlResultStore::CancelRequestedBatches() {
  return impl_->batch_control->CancelRequested();
}

absl::StatusOr<BatchListPage> MysqlResultStore::ListBatches(
    const ReadScope& scope, const BatchListQuery& query) {
  return impl_->batch_control->ListBatches(scope, query);
}

absl::StatusOr<std::string> MysqlResultStore::PageTokenKey() {
  return impl_->batch_control->PageTokenKey();
}

absl::Status MysqlResultStore::RenewLeases() {
  const std::set<std::string> live = impl_->Live();
  return impl_->leases().Renew(
      std::vector<std::string>(live.begin(), live.end()));
}

absl::StatusOr<std::vector<std::string>>
MysqlResultStore::InterruptExpiredLeases() {
  return impl_->leases().InterruptExpired(impl_->Live());
}

absl::StatusOr<RetentionPass> MysqlResultStore::DeleteExpiredBatches(
    absl::Time ended_before, int max_batches) {
  return impl_->retention().DeleteExpired(ended_before, max_batches);
}

std::string MysqlResultStore::NewReplicaId() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') {
    std::snprintf(host, sizeof(host), "unknown-host");
  }
  std::random_device random;
  const std::string suffix =
      absl::StrCat("-", getpid(), "-",
                   absl::Hex(random() & 0xffffff, absl::PadSpec::kZeroPad6));
  // Host names are ASCII; keep the unique tail when one is very long.
  std::string id = std::string(host).substr(0, 64 - suffix.size());
  return id + suffix;
}

absl::StatusOr<ResultPage> MysqlResultStore::ListResults(
    const std::string& batch_id, const ReadScope& scope, uint32_t from_index,
    uint32_t limit) {
  return impl_->reader().ListResults(batch_id, scope, from_index, limit);
}

absl::StatusOr<ResumePlan> MysqlResultStore::BeginResume(
    const std::string& batch_id, const ReadScope& scope,
    const std::string& requests_sha256) {
  absl::StatusOr<ResumePlan> plan =
      impl_->reader().BeginResume(batch_id, scope, requests_sha256);
  if (plan.ok()) impl_->AddLive(batch_id);
  return plan;
}

absl::StatusOr<StoredBatch> MysqlResultStore::ReadStoredBatch(
    const std::string& batch_id) {
  return impl_->reader().ReadStoredBatch(batch_id);
}

absl::StatusOr<std::string> MysqlResultStore::ReadRequest(
    const std::string& batch_id) {
  return impl_->reader().ReadRequest(batch_id);
}

}  // namespace batchfetch

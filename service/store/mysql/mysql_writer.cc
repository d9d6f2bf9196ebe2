#include "service/store/mysql/mysql_writer.h"

#include <cppconn/connection.h>
#include <cppconn/datatype.h>
#include <cppconn/prepared_statement.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/time_util.h"
#include "service/store/mysql/mysql_values.h"

namespace batchfetch {

using google::protobuf::util::TimeUtil;

MysqlWriter::MysqlWriter(Options options, const Clock* clock)
    : options_(std::move(options)),
      clock_(clock),
      policy_(options_.retry, clock) {
  thread_ = std::thread([this] { Loop(); });
}

MysqlWriter::~MysqlWriter() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (!draining_) {
      draining_ = true;
      drain_started_at_ = clock_->MonoNow();
    }
  }
  if (thread_.joinable()) thread_.join();
}

void MysqlWriter::StartDraining() {
  absl::MutexLock lock(&mu_);
  if (draining_) return;
  draining_ = true;
  drain_started_at_ = clock_->MonoNow();
}

void MysqlWriter::Enqueue(WriteOp op) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(op));
  if (options_.stats != nullptr) {
    options_.stats->queue_depth.Set(static_cast<int64_t>(queue_.size()));
  }
}

std::string MysqlWriter::InsertSql(int rows) {
  const std::string tuple = absl::StrCat(
      "(", absl::StrJoin(std::vector<std::string>(kResultColumns, "?"), ","),
      ")");
  std::vector<std::string> tuples(rows, tuple);
  return absl::StrCat(
      "INSERT INTO fetch_results (batch_id, idx, url, outcome, http_status, "
      "error, `json`, body, content_type, attempts, elapsed_us, fetched_at, "
      "final_url, dns_us, connect_us, tls_us, first_byte_us, total_us) "
      "VALUES ",
      absl::StrJoin(tuples, ","),
      // A replay after a lost commit finds its rows present: keep them.
      " ON DUPLICATE KEY UPDATE idx = idx");
}

int MysqlWriter::ChunkSize(size_t remaining) {
  for (int size : kChunkSizes) {
    if (remaining >= static_cast<size_t>(size)) return size;
  }
  return 1;
}

std::vector<WriteOp> MysqlWriter::TakeGroup(std::deque<WriteOp>& queue,
                                            int max_rows, int64_t max_bytes) {
  std::vector<WriteOp> group;
  int64_t bytes = 0;
  while (!queue.empty() &&
         (group.empty() ||
          (static_cast<int>(group.size()) < max_rows &&
           bytes + static_cast<int64_t>(queue.front().bytes) <= max_bytes))) {
    bytes += queue.front().bytes;
    group.push_back(std::move(queue.front()));
    queue.pop_front();
  }
  return group;
}

void MysqlWriter::Loop() {
  MysqlSession::ThreadInit();
  while (true) {
    std::vector<WriteOp> group;
    bool draining;
    MonoTime drain_started_at;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](MysqlWriter* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
            return !self->queue_.empty() || self->stopping_;
          },
          this));
      group =
          TakeGroup(queue_, options_.max_group_rows, options_.max_group_bytes);
      if (options_.stats != nullptr) {
        options_.stats->queue_depth.Set(static_cast<int64_t>(queue_.size()));
      }
      draining = draining_;
      drain_started_at = drain_started_at_;
    }
    if (draining) policy_.StartDraining(drain_started_at);
    if (group.empty()) break;  // stopping and drained
    Process(group);
  }
  session_.reset();
  MysqlSession::ThreadEnd();
}

void MysqlWriter::Process(std::vector<WriteOp>& group) {
  MysqlStatus status = WriteWithRetries(group);
  if (status.ok()) {
    for (WriteOp& op : group) {
      std::move(op.done)(ResultStore::Durability::kCommitted);
    }
    return;
  }
  if (IsTransient(status.kind)) {
    GiveUp(std::move(group), status);
    return;
  }
  if (group.size() == 1) {
    std::move(group[0].done)(status.status);
    return;
  }
  // A permanent error: isolate the op that causes it.
  for (WriteOp& op : group) {
    std::vector<WriteOp> single;
    single.push_back(std::move(op));
    MysqlStatus one = WriteWithRetries(single);
    if (one.ok()) {
      std::move(single[0].done)(ResultStore::Durability::kCommitted);
    } else if (IsTransient(one.kind)) {
      GiveUp(std::move(single), one);
    } else {
      std::move(single[0].done)(one.status);
    }
  }
}

void MysqlWriter::GiveUp(std::vector<WriteOp>&& group,
                         const MysqlStatus& last) {
  const absl::Status status =
      absl::IsUnavailable(last.status)
          ? last.status
          : absl::UnavailableError(last.status.message());
  if (options_.on_group_given_up) {
    options_.on_group_given_up(std::move(group), status);
  } else {
    FailEachOp(std::move(group), status);
  }
}

MysqlStatus MysqlWriter::WriteWithRetries(const std::vector<WriteOp>& group) {
  if (policy_.GiveUpWithoutTrying()) {
    return {absl::UnavailableError(
                "not tried: the database was unreachable while the store "
                "was shutting down"),
            MysqlErrorKind::kConnectionLost};
  }
  WriteRetryPolicy::Group tries = policy_.StartGroup();
  while (true) {
    MysqlStatus status;
    if (session_ == nullptr) {
      MysqlSession::Options session_options = options_.session;
      session_options.autocommit = false;
      auto fresh = MysqlSession::Connect(session_options);
      if (fresh.ok()) {
        session_ = *std::move(fresh);
      } else {
        // Whatever stops a reconnect (down, refused, overloaded) is worth
        // retrying within the budget.
        status = {fresh.status(), MysqlErrorKind::kConnectionLost};
      }
    }
    if (session_ != nullptr) {
      const MonoTime started = clock_->MonoNow();
      status = MysqlSession::Guard("storing results", [&] {
        WriteGroup(*session_, group);
        return absl::OkStatus();
      });
      if (status.ok()) {
        tries.Succeeded();
        CountCommitted(group, Since(clock_->MonoNow(), started));
        return status;
      }
      if (status.kind == MysqlErrorKind::kConnectionLost) {
        // Nothing to roll back on a dead connection; talking to it again
        // would only wait for another timeout.
        session_.reset();
      } else {
        MysqlStatus rollback = MysqlSession::Guard("rolling back", [&] {
          session_->Rollback();
          return absl::OkStatus();
        });
        if (!rollback.ok()) session_.reset();
      }
    }
    if (options_.stats != nullptr) options_.stats->errors.Increment();
    std::optional<absl::Duration> delay = tries.NextDelay(status.kind);
    if (!delay.has_value()) return status;
    absl::SleepFor(*delay);
  }
}

void MysqlWriter::CountCommitted(const std::vector<WriteOp>& group,
                                 absl::Duration took) {
  if (options_.stats == nullptr) return;
  uint64_t rows = 0;
  for (const WriteOp& op : group) {
    if (op.is_result()) ++rows;
  }
  options_.stats->rows.Increment(rows);
  options_.stats->commit_seconds.Observe(absl::ToDoubleSeconds(took));
}

void MysqlWriter::WriteGroup(MysqlSession& s,
                             const std::vector<WriteOp>& group) {
  std::vector<const WriteOp*> rows;
  for (const WriteOp& op : group) {
    if (op.is_result()) rows.push_back(&op);
  }
  size_t at = 0;
  while (at < rows.size()) {
    const int chunk = ChunkSize(rows.size() - at);
    sql::PreparedStatement& ps = s.Prepared(InsertSql(chunk));
    for (int i = 0; i < chunk; ++i) {
      const WriteOp& op = *rows[at + i];
      const v1::FetchResult& r = *op.result;
      const unsigned base = static_cast<unsigned>(i * kResultColumns);
      ps.setString(base + 1, op.batch_id);
      ps.setUInt(base + 2, r.index());
      // Every text a caller or upstream controls is cut to fit its column
      // (see mysql_values.h), so no row is ever refused for its size.
      ps.setString(base + 3, FitColumn(r.url(), kMaxStoredUrlBytes));
      ps.setUInt(base + 4, static_cast<uint32_t>(r.outcome()));
      ps.setInt(base + 5, r.http_status());
      ps.setString(base + 6, FitColumn(r.error(), kMaxStoredErrorBytes));
      ps.setString(base + 7, r.json());
      ps.setString(base + 8, r.body());
      ps.setString(base + 9,
                   FitColumn(r.content_type(), kMaxStoredContentTypeBytes));
      ps.setUInt(base + 10, r.attempts());
      ps.setInt64(base + 11, TimeUtil::DurationToMicroseconds(r.elapsed()));
      ps.setDateTime(base + 12, FormatDateTime(op.fetched_at));
      ps.setString(base + 13, FitColumn(r.final_url(), kMaxStoredUrlBytes));
      if (r.has_timings()) {
        const v1::Timings& t = r.timings();
        ps.setInt64(base + 14, TimeUtil::DurationToMicroseconds(t.dns()));
        ps.setInt64(base + 15, TimeUtil::DurationToMicroseconds(t.connect()));
        ps.setInt64(base + 16, TimeUtil::DurationToMicroseconds(t.tls()));
        ps.setInt64(base + 17,
                    TimeUtil::DurationToMicroseconds(t.first_byte()));
        ps.setInt64(base + 18, TimeUtil::DurationToMicroseconds(t.total()));
      } else {
        for (unsigned c = 14; c <= 18; ++c) {
          ps.setNull(base + c, sql::DataType::BIGINT);
        }
      }
    }
    ps.executeUpdate();
    at += chunk;
  }
  for (const WriteOp& op : group) {
    if (op.is_result()) continue;
    const BatchRecord& b = op.record;
    sql::PreparedStatement& ps = s.Prepared(
        "UPDATE batches SET state = ?, succeeded = ?, failed = ?, "
        "`stored` = GREATEST(?, (SELECT COUNT(*) FROM fetch_results WHERE "
        "batch_id = ?)), spooled = LEAST(?, GREATEST(CAST(total AS SIGNED) - "
        "(SELECT COUNT(*) FROM fetch_results WHERE batch_id = ?), 0)), "
        "finished_at = ?, state_reason = ? WHERE batch_id = ?");
    // `stored` and `spooled` from the rows as they are at this commit: the
    // spool's replayer may have committed some of the spooled results
    // already (MysqlReader::RecountStored covers the ones it commits after).
    ps.setUInt(1, static_cast<uint32_t>(b.state));
    ps.setUInt(2, b.succeeded);
    ps.setUInt(3, b.failed);
    ps.setUInt(4, b.stored);
    ps.setString(5, b.batch_id);
    ps.setUInt(6, b.spooled);
    ps.setString(7, b.batch_id);
    if (b.finished_at == absl::InfinitePast()) {
      ps.setNull(8, sql::DataType::TIMESTAMP);
    } else {
      ps.setDateTime(8, FormatDateTime(b.finished_at));
    }
    // Unconditional (no "AND state = RUNNING"): the owner's final row wins
    // over an INTERRUPTED mark another replica made while this one could
    // not renew its lease, and clears that mark's reason.
    ps.setString(9, FitColumn(b.state_reason, 255));
    ps.setString(10, b.batch_id);
    ps.executeUpdate();
  }
  // Checked: only a COMMIT that the server acknowledged lets the caller run
  // the `done`s with OK (see MysqlSession on conn().commit()).
  s.Commit();
}

}  // namespace batchfetch

#include "service/store/mysql/mysql_reader.h"

#include <cppconn/exception.h>
#include <cppconn/prepared_statement.h>
#include <cppconn/resultset.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "service/store/mysql/mysql_values.h"

namespace batchfetch {

using google::protobuf::util::TimeUtil;

MysqlReader::MysqlReader(Options options)
    : options_(std::move(options)),
      max_open_(std::max(1, options_.max_read_connections)) {}

MysqlReader::~MysqlReader() {
  std::vector<std::unique_ptr<MysqlSession>> idle;
  {
    absl::MutexLock lock(&mu_);
    idle.swap(idle_);
    open_ -= static_cast<int>(idle.size());
  }
  // Closed outside the lock.
}

int MysqlReader::open_connections() const {
  absl::MutexLock lock(&mu_);
  return open_;
}

int MysqlReader::peak_open_connections() const {
  absl::MutexLock lock(&mu_);
  return peak_open_;
}

absl::StatusOr<std::unique_ptr<MysqlSession>> MysqlReader::Acquire(bool fresh) {
  std::unique_ptr<MysqlSession> stale;
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](MysqlReader* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
          return !self->idle_.empty() || self->open_ < self->max_open_;
        },
        this));
    if (!idle_.empty() && (!fresh || open_ >= max_open_)) {
      std::unique_ptr<MysqlSession> session = std::move(idle_.back());
      idle_.pop_back();
      if (!fresh) return session;
      stale = std::move(session);  // its slot is reused below
    } else {
      ++open_;
      peak_open_ = std::max(peak_open_, open_);
    }
  }
  stale.reset();  // closed outside the lock
  auto session = MysqlSession::Connect(options_.session);
  if (!session.ok()) {
    absl::MutexLock lock(&mu_);
    --open_;
  }
  return session;
}

void MysqlReader::Release(std::unique_ptr<MysqlSession> session, bool healthy) {
  std::unique_ptr<MysqlSession> dead;  // closed after the lock is released
  absl::MutexLock lock(&mu_);
  if (healthy) {
    idle_.push_back(std::move(session));
  } else {
    --open_;
    dead = std::move(session);
  }
}

template <typename Fn>
absl::Status MysqlReader::WithSession(absl::string_view what, Fn fn) {
  for (int attempt = 0;; ++attempt) {
    auto session = Acquire(/*fresh=*/attempt > 0);
    if (!session.ok()) return session.status();
    MysqlStatus status =
        MysqlSession::Guard(what, [&] { return fn(**session); });
    const bool dead = status.kind == MysqlErrorKind::kConnectionLost;
    Release(*std::move(session), !dead);
    if (dead && attempt == 0) continue;  // retry once on a fresh connection
    return status.status;
  }
}

absl::Status MysqlReader::CreateBatch(const BatchRecord& batch) {
  int tries = 0;
  return WithSession("creating batch", [&](MysqlSession& s) {
    ++tries;
    sql::PreparedStatement& ps = s.Prepared(
        "INSERT INTO batches (batch_id, state, total, created_at, owner) "
        "VALUES (?, ?, ?, ?, ?)");
    ps.setString(1, batch.batch_id);
    ps.setUInt(2, static_cast<uint32_t>(batch.state));
    ps.setUInt(3, batch.total);
    ps.setDateTime(4, FormatDateTime(batch.created_at));
    ps.setString(5, batch.owner);
    try {
      ps.executeUpdate();
    } catch (const sql::SQLException& e) {
      // A retry after a lost connection may find the row the first try
      // committed before its answer was lost: that row is ours, not a
      // taken id, when it is exactly what we inserted.
      if (tries < 2 || e.getErrorCode() != MysqlSession::kErrDupEntry ||
          !IsRowWeInserted(s, batch)) {
        throw;
      }
    }
    return absl::OkStatus();
  });
}

bool MysqlReader::IsRowWeInserted(MysqlSession& s, const BatchRecord& batch) {
  sql::PreparedStatement& ps = s.Prepared(
      "SELECT state, total, created_at, owner FROM batches "
      "WHERE batch_id = ?");
  ps.setString(1, batch.batch_id);
  std::unique_ptr<sql::ResultSet> rs(ps.executeQuery());
  if (!rs->next() ||
      rs->getUInt("state") != static_cast<uint32_t>(batch.state) ||
      rs->getUInt("total") != batch.total ||
      rs->getString("owner").asStdString() != batch.owner) {
    return false;
  }
  absl::StatusOr<absl::Time> created =
      ParseDateTime(rs->getString("created_at").asStdString());
  return created.ok() &&
         absl::ToUnixMicros(*created) == absl::ToUnixMicros(batch.created_at);
}

void MysqlReader::BindScope(sql::PreparedStatement& ps, int first,
                            const ReadScope& scope) {
  ps.setInt(first, scope.owner.has_value() ? 0 : 1);
  ps.setString(first + 1, scope.owner.value_or(""));
}

absl::StatusOr<v1::BatchSummary> MysqlReader::GetBatch(
    const std::string& batch_id, const ReadScope& scope) {
  v1::BatchSummary summary;
  absl::Status status = WithSession("reading batch", [&](MysqlSession& s) {
    summary.Clear();
    sql::PreparedStatement& ps = s.Prepared(absl::StrCat(
        "SELECT state, total, succeeded, failed, `stored`, created_at, "
        "finished_at FROM batches WHERE batch_id = ?",
        kScopeSql));
    ps.setString(1, batch_id);
    BindScope(ps, 2, scope);
    std::unique_ptr<sql::ResultSet> rs(ps.executeQuery());
    if (!rs->next()) {
      return absl::NotFoundError(
          absl::StrCat("no batch with id '", batch_id, "'"));
    }
    summary.set_batch_id(batch_id);
    summary.set_state(static_cast<v1::BatchState>(rs->getUInt("state")));
    summary.set_total(rs->getUInt("total"));
    summary.set_succeeded(rs->getUInt("succeeded"));
    summary.set_failed(rs->getUInt("failed"));
    summary.set_stored(rs->getUInt("stored"));
    // A value that is no valid time (e.g. a zero date) leaves the field
    // unset rather than producing an out-of-range Timestamp.
    auto created_at =
        TimestampFromDateTime(rs->getString("created_at").asStdString());
    if (created_at.ok()) *summary.mutable_created_at() = *created_at;
    if (!rs->isNull("finished_at")) {
      auto finished_at =
          TimestampFromDateTime(rs->getString("finished_at").asStdString());
      if (finished_at.ok()) *summary.mutable_finished_at() = *finished_at;
    }
    if (summary.state() == v1::BATCH_STATE_RUNNING) {
      // Counters are written when the batch ends; count progress live.
      sql::PreparedStatement& count = s.Prepared(kCountResultsSql);
      count.setUInt(1, static_cast<uint32_t>(v1::OUTCOME_OK));
      count.setString(2, batch_id);
      std::unique_ptr<sql::ResultSet> counts(count.executeQuery());
      if (counts->next()) {
        const uint32_t n = counts->getUInt("n");
        const uint32_t ok = counts->getUInt("ok");
        summary.set_stored(n);
        summary.set_succeeded(ok);
        summary.set_failed(n - ok);
      }
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return summary;
}

absl::StatusOr<ResultPage> MysqlReader::ListResults(const std::string& batch_id,
                                                    const ReadScope& scope,
                                                    uint32_t from_index,
                                                    uint32_t limit) {
  ResultPage page;
  absl::Status status = WithSession("listing results", [&](MysqlSession& s) {
    page = ResultPage();
    sql::PreparedStatement& exists = s.Prepared(
        absl::StrCat("SELECT 1 FROM batches WHERE batch_id = ?", kScopeSql));
    exists.setString(1, batch_id);
    BindScope(exists, 2, scope);
    std::unique_ptr<sql::ResultSet> found(exists.executeQuery());
    if (!found->next()) {
      return absl::NotFoundError(
          absl::StrCat("no batch with id '", batch_id, "'"));
    }
    sql::PreparedStatement& ps = s.Prepared(
        "SELECT idx, url, outcome, http_status, error, `json`, body, "
        "content_type, attempts, elapsed_us, final_url, dns_us, connect_us, "
        "tls_us, first_byte_us, total_us FROM fetch_results "
        "WHERE batch_id = ? AND idx >= ? ORDER BY idx LIMIT ?");
    ps.setString(1, batch_id);
    ps.setUInt(2, from_index);
    // One row more than the page, to learn where the next page starts.
    ps.setUInt64(3, static_cast<uint64_t>(limit) + 1);
    std::unique_ptr<sql::ResultSet> rs(ps.executeQuery());
    ResultPageLimiter limiter(limit, kMaxPageBytes);
    while (rs->next()) {
      const uint32_t idx = rs->getUInt("idx");
      if (limiter.full()) {
        page.next_index = idx;
        break;
      }
      v1::FetchResult r;
      r.set_index(idx);
      r.set_url(rs->getString("url").asStdString());
      r.set_outcome(static_cast<v1::Outcome>(rs->getUInt("outcome")));
      r.set_http_status(rs->getInt("http_status"));
      r.set_error(rs->getString("error").asStdString());
      r.set_json(rs->getString("json").asStdString());
      r.set_body(rs->getString("body").asStdString());
      r.set_content_type(rs->getString("content_type").asStdString());
      r.set_attempts(rs->getUInt("attempts"));
      *r.mutable_elapsed() =
          TimeUtil::MicrosecondsToDuration(rs->getInt64("elapsed_us"));
      if (!rs->isNull("final_url")) {
        r.set_final_url(rs->getString("final_url").asStdString());
      }
      if (!rs->isNull("total_us")) {
        v1::Timings* t = r.mutable_timings();
        *t->mutable_dns() =
            TimeUtil::MicrosecondsToDuration(rs->getInt64("dns_us"));
        *t->mutable_connect() =
            TimeUtil::MicrosecondsToDuration(rs->getInt64("connect_us"));
        *t->mutable_tls() =
            TimeUtil::MicrosecondsToDuration(rs->getInt64("tls_us"));
        *t->mutable_first_byte() =
            TimeUtil::MicrosecondsToDuration(rs->getInt64("first_byte_us"));
        *t->mutable_total() =
            TimeUtil::MicrosecondsToDuration(rs->getInt64("total_us"));
      }
      if (!limiter.Add(r.ByteSizeLong())) {
        page.next_index = idx;
        break;
      }
      page.results.push_back(std::move(r));
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return page;
}

}  // namespace batchfetch

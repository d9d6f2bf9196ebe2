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

namespace {

// START TRANSACTION now; ROLLBACK when destroyed uncommitted (an error thrown
// or returned mid-way), so a pooled connection never goes back to the pool
// with a transaction open. A failing ROLLBACK (the connection is lost) is
// ignored: the server rolls back when the connection goes.
class Transaction {
 public:
  explicit Transaction(MysqlSession& s) : s_(s) {
    s_.Execute("START TRANSACTION");
  }
  ~Transaction() {
    if (committed_) return;
    try {
      s_.Rollback();
    } catch (...) {
    }
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  void Commit() {
    s_.Commit();
    committed_ = true;
  }

 private:
  MysqlSession& s_;
  bool committed_ = false;
};

// The longest prefix of `text` of at most `max` bytes that ends on a UTF-8
// character boundary (never splits a multi-byte sequence).
size_t Utf8PrefixLength(const std::string& text, size_t max) {
  if (max >= text.size()) return text.size();
  size_t n = max;
  // Back off continuation bytes (10xxxxxx) so the cut starts a character.
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  return n;
}

}  // namespace

void FitResult(size_t max_bytes, v1::FetchResult* result) {
  // Each pass cuts at least the excess; the length prefixes of the cut
  // fields shrink too, so two passes are plenty (bounded anyway).
  for (int pass = 0; pass < 4; ++pass) {
    const size_t size = result->ByteSizeLong();
    if (size <= max_bytes) return;
    // +2: `truncated` itself (tag and value) once it is set.
    size_t excess = size - max_bytes + (result->truncated() ? 0 : 2);
    result->set_truncated(true);
    std::string* body = result->mutable_body();
    const size_t from_body = std::min(excess, body->size());
    body->resize(body->size() - from_body);
    excess -= from_body;
    if (excess == 0) continue;
    std::string* json = result->mutable_json();
    const size_t keep =
        Utf8PrefixLength(*json, json->size() - std::min(excess, json->size()));
    json->resize(keep);
    if (body->empty() && json->empty()) return;  // nothing more to cut
  }
}

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

absl::Status MysqlReader::RunOnPooledSession(
    absl::string_view what, absl::FunctionRef<absl::Status(MysqlSession&)> fn) {
  return WithSession(what, fn);
}

absl::Status MysqlReader::CreateBatch(const BatchRecord& batch) {
  int tries = 0;
  return WithSession("creating batch", [&](MysqlSession& s) {
    ++tries;
    // The row and its requests commit together, or neither does.
    Transaction transaction(s);
    sql::PreparedStatement& ps = s.Prepared(
        "INSERT INTO batches (batch_id, state, total, created_at, owner, "
        "lease_owner, lease_expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?, NOW(6) + INTERVAL ? MICROSECOND)");
    ps.setString(1, batch.batch_id);
    ps.setUInt(2, static_cast<uint32_t>(batch.state));
    ps.setUInt(3, batch.total);
    ps.setDateTime(4, FormatDateTime(batch.created_at));
    ps.setString(5, batch.owner);
    // The first lease (database time; see MysqlLeases).
    ps.setString(6, options_.replica_id);
    ps.setInt64(7, batch.orphaned
                       ? 0
                       : absl::ToInt64Microseconds(options_.lease_duration));
    bool inserted = false;
    try {
      ps.executeUpdate();
      inserted = true;
    } catch (const sql::SQLException& e) {
      // A retry after a lost connection may find the row the first try
      // committed before its answer was lost: that row is ours, not a
      // taken id, when it is exactly what we inserted (and its requests
      // were committed with it).
      if (tries < 2 || e.getErrorCode() != MysqlSession::kErrDupEntry ||
          !IsRowWeInserted(s, batch)) {
        throw;
      }
    }
    if (inserted) WriteRequests(s, batch);
    transaction.Commit();
    return absl::OkStatus();
  });
}

void MysqlReader::WriteRequests(MysqlSession& s, const BatchRecord& batch) {
  sql::PreparedStatement& hash =
      s.Prepared("UPDATE batches SET requests_sha256 = ? WHERE batch_id = ?");
  hash.setString(1, batch.requests_sha256);
  hash.setString(2, batch.batch_id);
  hash.executeUpdate();
  if (batch.request == nullptr) return;
  const std::string& bytes = *batch.request;
  sql::PreparedStatement& chunk = s.Prepared(
      "INSERT INTO batch_requests (batch_id, chunk, bytes) VALUES (?, ?, ?)");
  uint32_t number = 0;
  for (size_t at = 0; at < bytes.size(); at += kRequestChunkBytes, ++number) {
    chunk.setString(1, batch.batch_id);
    chunk.setUInt(2, number);
    chunk.setString(3, bytes.substr(at, kRequestChunkBytes));
    chunk.executeUpdate();
  }
}

absl::StatusOr<std::string> MysqlReader::ReadRequest(
    const std::string& batch_id) {
  std::string request;
  bool found = false;
  absl::Status status = WithSession("reading request", [&](MysqlSession& s) {
    request.clear();
    found = false;
    sql::PreparedStatement& ps = s.Prepared(
        "SELECT bytes FROM batch_requests WHERE batch_id = ? ORDER BY chunk");
    ps.setString(1, batch_id);
    std::unique_ptr<sql::ResultSet> rs(ps.executeQuery());
    while (rs->next()) {
      found = true;
      request += rs->getString("bytes").asStdString();
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  if (!found) {
    return absl::NotFoundError(
        absl::StrCat("no stored request for batch '", batch_id, "'"));
  }
  return request;
}

absl::StatusOr<StoredBatch> MysqlReader::ReadStoredBatch(
    const std::string& batch_id) {
  StoredBatch stored;
  bool found = false;
  absl::Status status =
      WithSession("reading stored batch", [&](MysqlSession& s) {
        stored = StoredBatch();
        found = false;
        sql::PreparedStatement& row = s.Prepared(
            "SELECT owner, lease_owner, state, cancel_requested FROM batches "
            "WHERE batch_id = ?");
        row.setString(1, batch_id);
        std::unique_ptr<sql::ResultSet> rs(row.executeQuery());
        if (!rs->next()) return absl::OkStatus();
        found = true;
        stored.owner = rs->getString("owner").asStdString();
        stored.lease_owner = rs->getString("lease_owner").asStdString();
        stored.state = static_cast<v1::BatchState>(rs->getUInt("state"));
        stored.cancel_requested = rs->getUInt("cancel_requested") != 0;
        rs.reset();
        sql::PreparedStatement& chunks = s.Prepared(
            "SELECT bytes FROM batch_requests WHERE batch_id = ? "
            "ORDER BY chunk");
        chunks.setString(1, batch_id);
        std::unique_ptr<sql::ResultSet> bytes(chunks.executeQuery());
        while (bytes->next()) {
          stored.request += bytes->getString("bytes").asStdString();
        }
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  if (!found) {
    return absl::NotFoundError(absl::StrCat("no batch '", batch_id, "'"));
  }
  return stored;
}

absl::StatusOr<ResumePlan> MysqlReader::BeginResume(
    const std::string& batch_id, const ReadScope& scope,
    const std::string& requests_sha256) {
  ResumePlan plan;
  int tries = 0;
  absl::Status status = WithSession("resuming batch", [&](MysqlSession& s) {
    ++tries;
    plan = ResumePlan();
    Transaction transaction(s);
    // The row lock serializes resumes (and the lease sweep) of this batch.
    sql::PreparedStatement& lock = s.Prepared(absl::StrCat(
        "SELECT state, total, created_at, requests_sha256, lease_owner, "
        "(lease_expires_at IS NOT NULL AND lease_expires_at > NOW(6)) "
        "AS lease_live FROM batches WHERE batch_id = ?",
        kScopeSql, " FOR UPDATE"));
    lock.setString(1, batch_id);
    BindScope(lock, 2, scope);
    std::unique_ptr<sql::ResultSet> rs(lock.executeQuery());
    if (!rs->next()) {
      return absl::NotFoundError(
          absl::StrCat("no batch with id '", batch_id, "'"));
    }
    plan.previous_state = static_cast<v1::BatchState>(rs->getUInt("state"));
    plan.total = rs->getUInt("total");
    absl::StatusOr<absl::Time> created =
        ParseDateTime(rs->getString("created_at").asStdString());
    if (created.ok()) plan.created_at = *created;
    const std::string stored_sha256 =
        rs->getString("requests_sha256").asStdString();
    const bool ours_already =
        tries > 1 &&
        rs->getString("lease_owner").asStdString() == options_.replica_id;
    if (stored_sha256.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "batch '", batch_id,
          "' was created before batches stored their requests; it cannot "
          "be resumed"));
    }
    if (stored_sha256 != requests_sha256) {
      return absl::FailedPreconditionError(absl::StrCat(
          "requests: the list differs from the one batch '", batch_id,
          "' was created with (resume needs the same requests, in the same "
          "order)"));
    }
    // A retry after a lost connection may find the lease its first try
    // committed: then the batch is ours, not another replica's.
    if (plan.previous_state == v1::BATCH_STATE_RUNNING &&
        rs->getInt("lease_live") != 0 && !ours_already) {
      return absl::FailedPreconditionError(absl::StrCat(
          "batch '", batch_id,
          "' is RUNNING on a live replica (its lease has not expired)"));
    }
    rs.reset();
    sql::PreparedStatement& drop = s.Prepared(
        "DELETE FROM fetch_results WHERE batch_id = ? AND outcome <> ?");
    drop.setString(1, batch_id);
    drop.setUInt(2, static_cast<uint32_t>(v1::OUTCOME_OK));
    drop.executeUpdate();
    sql::PreparedStatement& ok = s.Prepared(
        "SELECT idx FROM fetch_results WHERE batch_id = ? AND outcome = ? "
        "ORDER BY idx");
    ok.setString(1, batch_id);
    ok.setUInt(2, static_cast<uint32_t>(v1::OUTCOME_OK));
    std::unique_ptr<sql::ResultSet> oks(ok.executeQuery());
    while (oks->next()) plan.ok_indices.push_back(oks->getUInt("idx"));
    oks.reset();
    // The final counters are written again when the run finishes; until
    // then GetBatch counts a RUNNING batch's results live.
    sql::PreparedStatement& run = s.Prepared(
        "UPDATE batches SET state = ?, state_reason = '', finished_at = NULL, "
        "cancel_requested = 0, "  // a cancel asked of an earlier run
        "lease_owner = ?, lease_expires_at = NOW(6) + INTERVAL ? MICROSECOND "
        "WHERE batch_id = ?");
    run.setUInt(1, static_cast<uint32_t>(v1::BATCH_STATE_RUNNING));
    run.setString(2, options_.replica_id);
    run.setInt64(3, absl::ToInt64Microseconds(options_.lease_duration));
    run.setString(4, batch_id);
    run.executeUpdate();
    transaction.Commit();
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return plan;
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
        "SELECT state, total, succeeded, failed, `stored`, spooled, "
        "state_reason, created_at, finished_at FROM batches "
        "WHERE batch_id = ?",
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
    summary.set_spooled(rs->getUInt("spooled"));
    summary.set_state_reason(rs->getString("state_reason").asStdString());
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
    if (summary.state() == v1::BATCH_STATE_RUNNING ||
        summary.state() == v1::BATCH_STATE_INTERRUPTED) {
      // Counters are written when the batch ends (an interrupted batch's
      // never were); count what is stored live.
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
    sql::PreparedStatement& exists = s.Prepared(absl::StrCat(
        "SELECT state FROM batches WHERE batch_id = ?", kScopeSql));
    exists.setString(1, batch_id);
    BindScope(exists, 2, scope);
    std::unique_ptr<sql::ResultSet> found(exists.executeQuery());
    if (!found->next()) {
      return absl::NotFoundError(
          absl::StrCat("no batch with id '", batch_id, "'"));
    }
    // Read before the rows: a batch that finishes in between is reported
    // running (harmless), never the other way round.
    page.batch_running = found->getUInt("state") ==
                         static_cast<uint32_t>(v1::BATCH_STATE_RUNNING);
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
      // A row too big for any page is cut, and says so.
      FitResult(kMaxRowBytes, &r);
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

absl::Status MysqlReader::RecountStored(const std::string& batch_id) {
  return WithSession("recounting batch", [&](MysqlSession& s) {
    // Both counts come from subqueries on fetch_results, so the result does
    // not depend on the order MySQL and MariaDB apply SET assignments in.
    sql::PreparedStatement& ps = s.Prepared(
        "UPDATE batches SET `stored` = (SELECT COUNT(*) FROM fetch_results "
        "WHERE batch_id = ?), spooled = LEAST(spooled, "
        "GREATEST(CAST(total AS SIGNED) - (SELECT COUNT(*) FROM fetch_results "
        "WHERE batch_id = ?), 0)) WHERE batch_id = ?");
    ps.setString(1, batch_id);
    ps.setString(2, batch_id);
    ps.setString(3, batch_id);
    ps.executeUpdate();
    return absl::OkStatus();
  });
}

}  // namespace batchfetch

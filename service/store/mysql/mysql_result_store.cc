#include "service/store/mysql/mysql_result_store.h"

#include <cppconn/connection.h>
#include <cppconn/datatype.h>
#include <cppconn/exception.h>
#include <cppconn/prepared_statement.h>
#include <cppconn/resultset.h>
#include <cppconn/statement.h>
#include <mysql_driver.h>

#include <deque>
#include <map>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/util/time_util.h"

namespace batchfetch {
namespace {

using google::protobuf::util::TimeUtil;

// Server error codes we act on (MySQL and MariaDB agree on these).
constexpr int kErrDupEntry = 1062;
constexpr int kErrLockWaitTimeout = 1205;
constexpr int kErrDeadlock = 1213;
constexpr int kErrServerGone = 2006;
constexpr int kErrServerLost = 2013;
constexpr int kErrCantConnect = 2002;
constexpr int kErrConnHostError = 2003;
constexpr int kErrServerLostExtended = 2055;

constexpr size_t kMaxStoredErrorBytes = 4096;
constexpr size_t kMaxPageBytes = 3 << 20;
constexpr size_t kMaxStoredContentTypeBytes = 255;
constexpr int kResultColumns = 18;
// A group of n rows is inserted in chunks of these sizes, so at most this
// many distinct prepared INSERTs exist per connection.
constexpr int kChunkSizes[] = {256, 64, 16, 4, 1};

// Versioned schema. Append only: each entry runs once, in order, and is
// recorded in schema_migrations. Must run on MySQL 8 and MariaDB 10.11.
struct Migration {
  int version;
  const char* description;
  std::vector<const char*> statements;
};
const std::vector<Migration>& Migrations() {
  static const auto* migrations = new std::vector<Migration>{
      {1,
       "batches and fetch_results",
       {R"sql(CREATE TABLE IF NOT EXISTS batches (
  batch_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  state TINYINT UNSIGNED NOT NULL,
  total INT UNSIGNED NOT NULL,
  succeeded INT UNSIGNED NOT NULL DEFAULT 0,
  failed INT UNSIGNED NOT NULL DEFAULT 0,
  `stored` INT UNSIGNED NOT NULL DEFAULT 0,
  created_at DATETIME(6) NOT NULL,
  finished_at DATETIME(6) NULL,
  PRIMARY KEY (batch_id),
  KEY batches_created_at (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin)sql",
        R"sql(CREATE TABLE IF NOT EXISTS fetch_results (
  batch_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  idx INT UNSIGNED NOT NULL,
  url TEXT NOT NULL,
  outcome TINYINT UNSIGNED NOT NULL,
  http_status SMALLINT NOT NULL,
  error TEXT NOT NULL,
  `json` LONGTEXT NOT NULL,
  body LONGBLOB NOT NULL,
  content_type VARCHAR(255) NOT NULL,
  attempts INT UNSIGNED NOT NULL,
  elapsed_us BIGINT NOT NULL,
  fetched_at DATETIME(6) NOT NULL,
  PRIMARY KEY (batch_id, idx)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin)sql"}},
      {2,
       "final URL and timing phases of the last attempt",
       {R"sql(ALTER TABLE fetch_results
  ADD COLUMN final_url TEXT NULL,
  ADD COLUMN dns_us BIGINT NULL,
  ADD COLUMN connect_us BIGINT NULL,
  ADD COLUMN tls_us BIGINT NULL,
  ADD COLUMN first_byte_us BIGINT NULL,
  ADD COLUMN total_us BIGINT NULL)sql"}},
  };
  return *migrations;
}

bool IsConnectionError(int code) {
  return code == kErrServerGone || code == kErrServerLost ||
         code == kErrCantConnect || code == kErrConnHostError ||
         code == kErrServerLostExtended || code == 0;
}

bool IsRetryable(int code) {
  return IsConnectionError(code) || code == kErrDeadlock ||
         code == kErrLockWaitTimeout;
}

absl::Status FromSqlException(const sql::SQLException& e,
                              absl::string_view what) {
  const int code = e.getErrorCode();
  std::string message =
      absl::StrCat(what, ": ", e.what(), " (MySQL error ", code, ")");
  if (IsConnectionError(code)) return absl::UnavailableError(message);
  if (code == kErrDupEntry) return absl::AlreadyExistsError(message);
  return absl::InternalError(message);
}

std::string FormatDateTime(absl::Time t) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%E6S", t, absl::UTCTimeZone());
}

absl::Time ParseDateTime(const std::string& text) {
  absl::Time t;
  std::string err;
  if (!absl::ParseTime("%Y-%m-%d %H:%M:%E*S", text, absl::UTCTimeZone(), &t,
                       &err)) {
    return absl::InfinitePast();
  }
  return t;
}

void SetTimestamp(absl::Time t, google::protobuf::Timestamp* out) {
  *out = TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

std::string Truncated(const std::string& s, size_t max) {
  if (s.size() <= max) return s;
  // Cut on a UTF-8 boundary so the column stays valid text.
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

std::string InsertSql(int rows) {
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

// One queued write.
struct WriteOp {
  bool is_result = true;
  std::string batch_id;
  std::shared_ptr<const v1::FetchResult> result;  // is_result
  absl::Time fetched_at;                          // is_result
  BatchRecord record;                             // !is_result
  ResultStore::Done done;
  size_t bytes = 0;
};

// A Connector/C++ connection with its prepared statements. Not thread-safe:
// used by one thread at a time.
class Session {
 public:
  static absl::StatusOr<std::unique_ptr<Session>> Connect(
      const MysqlResultStore::Options& options, bool use_database) {
    try {
      sql::mysql::MySQL_Driver* driver =
          sql::mysql::get_mysql_driver_instance();
      sql::ConnectOptionsMap props;
      props["hostName"] = sql::SQLString(
          absl::StrCat("tcp://", options.host, ":", options.port));
      props["userName"] = sql::SQLString(options.user);
      props["password"] = sql::SQLString(options.password);
      props["OPT_CONNECT_TIMEOUT"] =
          static_cast<int>(absl::ToInt64Seconds(options.connect_timeout) + 1);
      props["OPT_CHARSET_NAME"] = sql::SQLString("utf8mb4");
      auto session = std::unique_ptr<Session>(new Session);
      session->conn_.reset(driver->connect(props));
      if (use_database) session->conn_->setSchema(options.database);
      std::unique_ptr<sql::Statement> stmt(session->conn_->createStatement());
      stmt->execute("SET SESSION time_zone = '+00:00'");
      return session;
    } catch (const sql::SQLException& e) {
      return FromSqlException(e, absl::StrCat("connecting to MySQL at ",
                                              options.host, ":", options.port));
    }
  }

  sql::Connection& conn() { return *conn_; }

  sql::PreparedStatement& Prepared(const std::string& sql) {
    auto it = prepared_.find(sql);
    if (it == prepared_.end()) {
      it = prepared_
               .emplace(sql, std::unique_ptr<sql::PreparedStatement>(
                                 conn_->prepareStatement(sql)))
               .first;
    }
    return *it->second;
  }

 private:
  Session() = default;
  std::unique_ptr<sql::Connection> conn_;
  std::map<std::string, std::unique_ptr<sql::PreparedStatement>> prepared_;
};

}  // namespace

class MysqlResultStore::Impl {
 public:
  explicit Impl(const Options& options) : options_(options) {}

  absl::Status Start() {
    absl::Status status = WaitForDatabase();
    if (!status.ok()) return status;
    status = Migrate();
    if (!status.ok()) return status;
    writer_ = std::thread([this] { WriterLoop(); });
    return absl::OkStatus();
  }

  ~Impl() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    if (writer_.joinable()) writer_.join();
  }

  void Enqueue(WriteOp op) {
    absl::MutexLock lock(&mu_);
    queue_.push_back(std::move(op));
  }

  absl::Status CreateBatch(const BatchRecord& batch) {
    return WithReadSession("creating batch", [&](Session& s) {
      sql::PreparedStatement& ps = s.Prepared(
          "INSERT INTO batches (batch_id, state, total, created_at) "
          "VALUES (?, ?, ?, ?)");
      ps.setString(1, batch.batch_id);
      ps.setUInt(2, static_cast<uint32_t>(batch.state));
      ps.setUInt(3, batch.total);
      ps.setDateTime(4, FormatDateTime(batch.created_at));
      ps.executeUpdate();
      return absl::OkStatus();
    });
  }

  absl::StatusOr<v1::BatchSummary> GetBatch(const std::string& batch_id) {
    v1::BatchSummary summary;
    absl::Status status = WithReadSession("reading batch", [&](Session& s) {
      sql::PreparedStatement& ps = s.Prepared(
          "SELECT state, total, succeeded, failed, `stored`, created_at, "
          "finished_at FROM batches WHERE batch_id = ?");
      ps.setString(1, batch_id);
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
      SetTimestamp(ParseDateTime(rs->getString("created_at")),
                   summary.mutable_created_at());
      if (!rs->isNull("finished_at")) {
        SetTimestamp(ParseDateTime(rs->getString("finished_at")),
                     summary.mutable_finished_at());
      }
      if (summary.state() == v1::BATCH_STATE_RUNNING) {
        // Counters are written when the batch ends; count progress live.
        sql::PreparedStatement& count = s.Prepared(
            "SELECT COUNT(*) AS n, COALESCE(SUM(outcome = 1), 0) AS ok "
            "FROM fetch_results WHERE batch_id = ?");
        count.setString(1, batch_id);
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

  absl::StatusOr<ResultPage> ListResults(const std::string& batch_id,
                                         uint32_t from_index, uint32_t limit) {
    ResultPage page;
    absl::Status status = WithReadSession("listing results", [&](Session& s) {
      page = ResultPage();
      sql::PreparedStatement& exists =
          s.Prepared("SELECT 1 FROM batches WHERE batch_id = ?");
      exists.setString(1, batch_id);
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
      ps.setUInt(3, limit + 1);
      std::unique_ptr<sql::ResultSet> rs(ps.executeQuery());
      size_t page_bytes = 0;
      while (rs->next()) {
        const uint32_t idx = rs->getUInt("idx");
        if (page.results.size() == limit) {
          page.next_index = idx;
          break;
        }
        v1::FetchResult& r = page.results.emplace_back();
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
        // Bounded in bytes too, so a page of large bodies stays well under
        // common 4 MB receive limits (one row always fits in a page).
        page_bytes += r.ByteSizeLong();
        if (page_bytes > kMaxPageBytes && page.results.size() > 1) {
          page.results.pop_back();
          page.next_index = idx;
          break;
        }
      }
      return absl::OkStatus();
    });
    if (!status.ok()) return status;
    return page;
  }

 private:
  absl::Status WaitForDatabase() {
    const absl::Time give_up = absl::Now() + options_.startup_wait;
    absl::Status last;
    while (true) {
      auto session = Session::Connect(options_, /*use_database=*/false);
      if (session.ok()) {
        try {
          std::unique_ptr<sql::Statement> stmt(
              (*session)->conn().createStatement());
          stmt->execute(absl::StrCat(
              "CREATE DATABASE IF NOT EXISTS `", options_.database,
              "` DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"));
        } catch (const sql::SQLException& e) {
          // Lacking the privilege is fine when the database already exists.
        }
        return absl::OkStatus();
      }
      last = session.status();
      if (absl::Now() >= give_up || !absl::IsUnavailable(last)) return last;
      absl::SleepFor(absl::Milliseconds(500));
    }
  }

  absl::Status Migrate() {
    auto session_or = Session::Connect(options_, /*use_database=*/true);
    if (!session_or.ok()) return session_or.status();
    Session& s = **session_or;
    try {
      std::unique_ptr<sql::Statement> stmt(s.conn().createStatement());
      // Replicas starting together: one migrates, the others wait here.
      std::unique_ptr<sql::ResultSet> lock(stmt->executeQuery(
          "SELECT GET_LOCK('batchfetch.schema_migrations', 120) AS got"));
      if (!lock->next() || lock->getInt("got") != 1) {
        return absl::UnavailableError(
            "timed out waiting for another replica's schema migration");
      }
      stmt->execute(R"sql(CREATE TABLE IF NOT EXISTS schema_migrations (
  version INT NOT NULL PRIMARY KEY,
  description VARCHAR(255) NOT NULL,
  applied_at DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4)sql");
      int current = 0;
      {
        std::unique_ptr<sql::ResultSet> rs(stmt->executeQuery(
            "SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations"));
        if (rs->next()) current = rs->getInt("v");
      }
      if (current > LatestSchemaVersion()) {
        stmt->execute("DO RELEASE_LOCK('batchfetch.schema_migrations')");
        return absl::FailedPreconditionError(absl::StrCat(
            "database schema version ", current,
            " is newer than this build knows (", LatestSchemaVersion(), ")"));
      }
      for (const Migration& m : Migrations()) {
        if (m.version <= current) continue;
        for (const char* sql : m.statements) stmt->execute(sql);
        sql::PreparedStatement& record = s.Prepared(
            "INSERT INTO schema_migrations (version, description, applied_at) "
            "VALUES (?, ?, UTC_TIMESTAMP(6))");
        record.setInt(1, m.version);
        record.setString(2, m.description);
        record.executeUpdate();
      }
      stmt->execute("DO RELEASE_LOCK('batchfetch.schema_migrations')");
      return absl::OkStatus();
    } catch (const sql::SQLException& e) {
      return FromSqlException(e, "migrating schema");
    }
  }

  // Runs `fn` on a pooled connection, retrying once on a fresh connection
  // when the pooled one turns out to be dead.
  template <typename Fn>
  absl::Status WithReadSession(absl::string_view what, Fn fn) {
    for (int attempt = 0;; ++attempt) {
      std::unique_ptr<Session> session;
      {
        absl::MutexLock lock(&pool_mu_);
        if (!pool_.empty()) {
          session = std::move(pool_.back());
          pool_.pop_back();
        }
      }
      if (session == nullptr) {
        auto fresh = Session::Connect(options_, /*use_database=*/true);
        if (!fresh.ok()) return fresh.status();
        session = std::move(*fresh);
      }
      absl::Status status;
      try {
        status = fn(*session);
      } catch (const sql::SQLException& e) {
        status = FromSqlException(e, what);
        if (IsConnectionError(e.getErrorCode())) {
          if (attempt == 0) continue;  // drop the dead session, retry once
          return status;
        }
      }
      absl::MutexLock lock(&pool_mu_);
      if (static_cast<int>(pool_.size()) < options_.max_read_connections) {
        pool_.push_back(std::move(session));
      }
      return status;
    }
  }

  // --- writer thread ------------------------------------------------------
  void WriterLoop() {
    sql::mysql::get_mysql_driver_instance()->threadInit();
    std::unique_ptr<Session> session;
    while (true) {
      std::vector<WriteOp> group;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](Impl* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
              return !self->queue_.empty() || self->stopping_;
            },
            this));
        if (queue_.empty()) break;  // stopping and drained
        int64_t bytes = 0;
        while (!queue_.empty() &&
               static_cast<int>(group.size()) < options_.max_group_rows &&
               (group.empty() ||
                bytes + static_cast<int64_t>(queue_.front().bytes) <=
                    options_.max_group_bytes)) {
          bytes += queue_.front().bytes;
          group.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
      absl::Status status = WriteGroupWithRetries(session, group);
      if (!status.ok() && !absl::IsUnavailable(status) && group.size() > 1) {
        // A permanent error: isolate the op that causes it.
        for (WriteOp& op : group) {
          std::vector<WriteOp> single;
          single.push_back(std::move(op));
          absl::Status one = WriteGroupWithRetries(session, single);
          std::move(single[0].done)(one);
        }
        continue;
      }
      for (WriteOp& op : group) std::move(op.done)(status);
    }
    sql::mysql::get_mysql_driver_instance()->threadEnd();
  }

  absl::Status WriteGroupWithRetries(std::unique_ptr<Session>& session,
                                     std::vector<WriteOp>& group) {
    const absl::Time give_up = absl::Now() + options_.retry_budget;
    absl::Duration backoff = absl::Milliseconds(50);
    while (true) {
      absl::Status status;
      int code = -1;
      if (session == nullptr) {
        auto fresh = Session::Connect(options_, /*use_database=*/true);
        if (fresh.ok()) {
          session = std::move(*fresh);
          try {
            session->conn().setAutoCommit(false);
          } catch (const sql::SQLException& e) {
            session.reset();
            status = FromSqlException(e, "configuring writer connection");
            code = e.getErrorCode();
          }
        } else {
          status = fresh.status();
          code = 0;
        }
      }
      if (session != nullptr) {
        try {
          WriteGroup(*session, group);
          return absl::OkStatus();
        } catch (const sql::SQLException& e) {
          code = e.getErrorCode();
          status = FromSqlException(e, "storing results");
          try {
            session->conn().rollback();
          } catch (const sql::SQLException&) {
          }
          if (IsConnectionError(code)) session.reset();
        }
      }
      if (!IsRetryable(code) || absl::Now() + backoff > give_up) {
        if (IsConnectionError(code)) {
          return absl::UnavailableError(status.message());
        }
        return status;
      }
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Seconds(2));
    }
  }

  // One transaction: every result row, then the batch updates (which must
  // follow their batch's rows).
  void WriteGroup(Session& s, const std::vector<WriteOp>& group) {
    std::vector<const WriteOp*> rows;
    for (const WriteOp& op : group) {
      if (op.is_result) rows.push_back(&op);
    }
    size_t at = 0;
    while (at < rows.size()) {
      int chunk = 1;
      for (int size : kChunkSizes) {
        if (rows.size() - at >= static_cast<size_t>(size)) {
          chunk = size;
          break;
        }
      }
      sql::PreparedStatement& ps = s.Prepared(InsertSql(chunk));
      for (int i = 0; i < chunk; ++i) {
        const WriteOp& op = *rows[at + i];
        const v1::FetchResult& r = *op.result;
        const unsigned base = static_cast<unsigned>(i * kResultColumns);
        ps.setString(base + 1, op.batch_id);
        ps.setUInt(base + 2, r.index());
        ps.setString(base + 3, r.url());
        ps.setUInt(base + 4, static_cast<uint32_t>(r.outcome()));
        ps.setInt(base + 5, r.http_status());
        ps.setString(base + 6, Truncated(r.error(), kMaxStoredErrorBytes));
        ps.setString(base + 7, r.json());
        ps.setString(base + 8, r.body());
        ps.setString(base + 9,
                     Truncated(r.content_type(), kMaxStoredContentTypeBytes));
        ps.setUInt(base + 10, r.attempts());
        ps.setInt64(base + 11, TimeUtil::DurationToMicroseconds(r.elapsed()));
        ps.setDateTime(base + 12, FormatDateTime(op.fetched_at));
        ps.setString(base + 13, r.final_url());
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
      if (op.is_result) continue;
      const BatchRecord& b = op.record;
      sql::PreparedStatement& ps = s.Prepared(
          "UPDATE batches SET state = ?, succeeded = ?, failed = ?, "
          "`stored` = ?, finished_at = ? WHERE batch_id = ?");
      ps.setUInt(1, static_cast<uint32_t>(b.state));
      ps.setUInt(2, b.succeeded);
      ps.setUInt(3, b.failed);
      ps.setUInt(4, b.stored);
      ps.setDateTime(5, FormatDateTime(b.finished_at));
      ps.setString(6, b.batch_id);
      ps.executeUpdate();
    }
    s.conn().commit();
  }

  // Constant after construction.
  const Options options_;
  std::thread writer_;

  absl::Mutex mu_;
  std::deque<WriteOp> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  absl::Mutex pool_mu_;
  std::vector<std::unique_ptr<Session>> pool_ ABSL_GUARDED_BY(pool_mu_);
};

MysqlResultStore::MysqlResultStore(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

MysqlResultStore::~MysqlResultStore() = default;

int MysqlResultStore::LatestSchemaVersion() {
  return Migrations().back().version;
}

absl::StatusOr<std::unique_ptr<MysqlResultStore>> MysqlResultStore::Open(
    const Options& options) {
  auto impl = std::make_unique<Impl>(options);
  absl::Status status = impl->Start();
  if (!status.ok()) return status;
  return std::unique_ptr<MysqlResultStore>(
      new MysqlResultStore(std::move(impl)));
}

absl::Status MysqlResultStore::CreateBatch(const BatchRecord& batch) {
  absl::Status status = impl_->CreateBatch(batch);
  if (absl::IsAlreadyExists(status)) {
    return absl::AlreadyExistsError(
        absl::StrCat("batch_id '", batch.batch_id, "' already exists"));
  }
  return status;
}

void MysqlResultStore::AppendResult(
    const std::string& batch_id, std::shared_ptr<const v1::FetchResult> result,
    absl::Time fetched_at, Done done) {
  WriteOp op;
  op.bytes = result->url().size() + result->json().size() +
             result->body().size() + result->error().size() + 128;
  op.batch_id = batch_id;
  op.result = std::move(result);
  op.fetched_at = fetched_at;
  op.done = std::move(done);
  impl_->Enqueue(std::move(op));
}

void MysqlResultStore::FinishBatch(const BatchRecord& batch, Done done) {
  WriteOp op;
  op.is_result = false;
  op.batch_id = batch.batch_id;
  op.record = batch;
  op.done = std::move(done);
  op.bytes = 128;
  impl_->Enqueue(std::move(op));
}

absl::StatusOr<v1::BatchSummary> MysqlResultStore::GetBatch(
    const std::string& batch_id) {
  return impl_->GetBatch(batch_id);
}

absl::StatusOr<ResultPage> MysqlResultStore::ListResults(
    const std::string& batch_id, uint32_t from_index, uint32_t limit) {
  return impl_->ListResults(batch_id, from_index, limit);
}

}  // namespace batchfetch

// MysqlDedicatedSession (the own connection of MysqlLeases and
// MysqlRetention) against a real private MariaDB: one connection kept
// across calls, a lost one retried once on a new one, other failures not
// retried. Part of the store_test executable (one MariaDB for the process).
#include <cppconn/resultset.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "service/store/mysql/mysql_dedicated_session.h"
#include "tests/support/local_mariadb.h"
#include "tests/support/store_test_support.h"

namespace batchfetch {
namespace {

using testing::LocalMariaDb;
using testing::SharedMariaDb;

class MysqlDedicatedSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = SharedMariaDb();
    options_ = testing::SessionOptions(*db_);
  }

  // CONNECTION_ID() of the session `fn` runs on.
  static std::string ConnectionId(MysqlSession& s) {
    std::unique_ptr<sql::ResultSet> rs(s.Query("SELECT CONNECTION_ID()"));
    return rs->next() ? rs->getString(1).asStdString() : "";
  }

  LocalMariaDb* db_ = nullptr;
  MysqlSession::Options options_;
};

TEST_F(MysqlDedicatedSessionTest, CallsShareOneConnection) {
  MysqlDedicatedSession session(options_);
  std::string first, second;
  ASSERT_TRUE(session
                  .Run("first",
                       [&](MysqlSession& s) {
                         first = ConnectionId(s);
                         return absl::OkStatus();
                       })
                  .ok());
  ASSERT_TRUE(session
                  .Run("second",
                       [&](MysqlSession& s) {
                         second = ConnectionId(s);
                         return absl::OkStatus();
                       })
                  .ok());
  EXPECT_FALSE(first.empty());
  EXPECT_EQ(first, second);
}

TEST_F(MysqlDedicatedSessionTest, ALostConnectionIsRetriedOnceOnANewOne) {
  MysqlDedicatedSession session(options_);
  std::string killed;
  ASSERT_TRUE(session
                  .Run("connecting",
                       [&](MysqlSession& s) {
                         killed = ConnectionId(s);
                         return absl::OkStatus();
                       })
                  .ok());
  ASSERT_TRUE(db_->Execute(absl::StrCat("KILL ", killed)).ok());
  int runs = 0;
  std::string used;
  absl::Status status = session.Run("after the kill", [&](MysqlSession& s) {
    ++runs;
    used = ConnectionId(s);  // throws on the killed connection
    return absl::OkStatus();
  });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(runs, 2);
  EXPECT_NE(used, killed);
}

TEST_F(MysqlDedicatedSessionTest,
       OtherFailuresAreNotRetriedButDropTheConnection) {
  MysqlDedicatedSession session(options_);
  int runs = 0;
  std::string failed_on;
  absl::Status status = session.Run("a bad statement", [&](MysqlSession& s) {
    ++runs;
    failed_on = ConnectionId(s);
    s.Execute("SELEKT 1");
    return absl::OkStatus();
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  EXPECT_NE(status.message().find("a bad statement"), absl::string_view::npos)
      << status;
  EXPECT_EQ(runs, 1);
  std::string next;
  ASSERT_TRUE(session
                  .Run("next",
                       [&](MysqlSession& s) {
                         next = ConnectionId(s);
                         return absl::OkStatus();
                       })
                  .ok());
  EXPECT_NE(next, failed_on);
}

TEST_F(MysqlDedicatedSessionTest, AnUnreachableServerIsUnavailableAndFnNotRun) {
  options_.port = 1;  // nothing listens there
  MysqlDedicatedSession session(options_);
  int runs = 0;
  absl::Status status = session.Run("unreachable", [&](MysqlSession&) {
    ++runs;
    return absl::OkStatus();
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_EQ(runs, 0);
}

}  // namespace
}  // namespace batchfetch

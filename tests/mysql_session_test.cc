// MysqlSession's pure parts: error classification and mapping (no database).
#include "service/store/mysql/mysql_session.h"

#include <stdexcept>

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace batchfetch {
namespace {

using Kind = MysqlErrorKind;

TEST(MysqlSessionClassifyTest, ConnectionErrorCodes) {
  for (int code : {2002, 2003, 2006, 2013, 2055, 1927}) {
    EXPECT_EQ(MysqlSession::Classify(code, "HY000"), Kind::kConnectionLost)
        << code;
  }
}

TEST(MysqlSessionClassifyTest, DeadlockAndLockWaitAreRetryable) {
  EXPECT_EQ(MysqlSession::Classify(1213, "40001"), Kind::kRetryable);
  EXPECT_EQ(MysqlSession::Classify(1205, "HY000"), Kind::kRetryable);
}

TEST(MysqlSessionClassifyTest, DuplicateKey) {
  EXPECT_EQ(MysqlSession::Classify(1062, "23000"), Kind::kDuplicate);
}

TEST(MysqlSessionClassifyTest, OtherCodesArePermanent) {
  for (int code : {1045, 1146, 1406, 1153, 1064, 2020}) {
    EXPECT_EQ(MysqlSession::Classify(code, "HY000"), Kind::kPermanent) << code;
  }
  // A server code keeps its meaning whatever the SQLSTATE says.
  EXPECT_EQ(MysqlSession::Classify(1153, "08S01"), Kind::kPermanent);
}

// Code 0 is a client-side error without a number: it used to count as a
// lost connection whatever it was.
TEST(MysqlSessionClassifyTest, CodeZeroIsClassifiedBySqlState) {
  EXPECT_EQ(MysqlSession::Classify(0, "08S01"), Kind::kConnectionLost);
  EXPECT_EQ(MysqlSession::Classify(0, "08003"), Kind::kConnectionLost);
  EXPECT_EQ(MysqlSession::Classify(0, "08"), Kind::kConnectionLost);
  EXPECT_EQ(MysqlSession::Classify(0, "HY000"), Kind::kPermanent);
  EXPECT_EQ(MysqlSession::Classify(0, ""), Kind::kPermanent);
  EXPECT_EQ(MysqlSession::Classify(0, "0"), Kind::kPermanent);
  EXPECT_EQ(MysqlSession::Classify(0, "42000"), Kind::kPermanent);
}

TEST(MysqlSessionStatusTest, KindsMapToStatusCodes) {
  EXPECT_TRUE(absl::IsUnavailable(
      MysqlSession::ToStatus(Kind::kConnectionLost, 2013, "w", "m")));
  EXPECT_TRUE(absl::IsAlreadyExists(
      MysqlSession::ToStatus(Kind::kDuplicate, 1062, "w", "m")));
  EXPECT_TRUE(absl::IsInternal(
      MysqlSession::ToStatus(Kind::kRetryable, 1213, "w", "m")));
  EXPECT_TRUE(absl::IsInternal(
      MysqlSession::ToStatus(Kind::kPermanent, 1406, "w", "m")));
  EXPECT_TRUE(MysqlSession::ToStatus(Kind::kNone, 0, "w", "m").ok());
  EXPECT_EQ(
      MysqlSession::ToStatus(Kind::kPermanent, 1406, "storing", "too long")
          .message(),
      "storing: too long (MySQL error 1406)");
}

TEST(MysqlSessionStatusTest, FromExceptionUsesCodeAndSqlState) {
  MysqlStatus lost = MysqlSession::FromException(
      sql::SQLException("gone", "HY000", 2006), "reading");
  EXPECT_EQ(lost.kind, Kind::kConnectionLost);
  EXPECT_TRUE(absl::IsUnavailable(lost.status));

  MysqlStatus zero_state_08 = MysqlSession::FromException(
      sql::SQLException("link failure", "08S01", 0), "reading");
  EXPECT_EQ(zero_state_08.kind, Kind::kConnectionLost);

  // What Connector/C++ throws for e.g. "Connection has been closed" or a bad
  // argument: code 0, SQLSTATE HY000.
  MysqlStatus zero = MysqlSession::FromException(
      sql::SQLException("Invalid argument"), "reading");
  EXPECT_EQ(zero.kind, Kind::kPermanent);
  EXPECT_TRUE(absl::IsInternal(zero.status));
}

TEST(MysqlSessionGuardTest, CatchesEveryException) {
  MysqlStatus sql_error = MysqlSession::Guard("w", []() -> absl::Status {
    throw sql::SQLException("deadlock", "40001", 1213);
  });
  EXPECT_EQ(sql_error.kind, Kind::kRetryable);

  MysqlStatus std_error = MysqlSession::Guard(
      "w", []() -> absl::Status { throw std::runtime_error("boom"); });
  EXPECT_EQ(std_error.kind, Kind::kPermanent);
  EXPECT_TRUE(absl::IsInternal(std_error.status));

  MysqlStatus other =
      MysqlSession::Guard("w", []() -> absl::Status { throw 42; });
  EXPECT_TRUE(absl::IsInternal(other.status));

  MysqlStatus returned = MysqlSession::Guard(
      "w", [] { return absl::NotFoundError("no such batch"); });
  EXPECT_TRUE(absl::IsNotFound(returned.status));
  EXPECT_EQ(returned.kind, Kind::kPermanent);

  MysqlStatus ok = MysqlSession::Guard("w", [] { return absl::OkStatus(); });
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.kind, Kind::kNone);
}

TEST(MysqlSessionTimeoutTest, WholeSecondsRoundedUp) {
  EXPECT_EQ(MysqlSession::TimeoutSeconds(absl::Seconds(30)), 30);
  EXPECT_EQ(MysqlSession::TimeoutSeconds(absl::Milliseconds(1500)), 2);
  EXPECT_EQ(MysqlSession::TimeoutSeconds(absl::Milliseconds(1)), 1);
  EXPECT_EQ(MysqlSession::TimeoutSeconds(absl::ZeroDuration()), 0);
  EXPECT_EQ(MysqlSession::TimeoutSeconds(-absl::Seconds(3)), 0);
  EXPECT_EQ(MysqlSession::TimeoutSeconds(absl::InfiniteDuration()), 0);
  EXPECT_EQ(MysqlSession::TimeoutSeconds(absl::Hours(24 * 365 * 1000)),
            INT_MAX);
}

}  // namespace
}  // namespace batchfetch

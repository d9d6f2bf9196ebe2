// MysqlWriter's pure parts: grouping, chunking, the INSERT text and the
// default give-up handler (no database).
#include <deque>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "service/store/mysql/mysql_writer.h"

namespace batchfetch {
namespace {

WriteOp Op(size_t bytes, absl::Status* got = nullptr) {
  WriteOp op;
  op.bytes = bytes;
  op.done = [got](ResultStore::WriteOutcome outcome) {
    if (got != nullptr) *got = outcome.status();
  };
  return op;
}

TEST(MysqlWriterTest, TakeGroupBoundsRowsAndBytes) {
  std::deque<WriteOp> queue;
  for (int i = 0; i < 10; ++i) queue.push_back(Op(100));
  EXPECT_EQ(MysqlWriter::TakeGroup(queue, 4, 1 << 20).size(), 4u);
  EXPECT_EQ(MysqlWriter::TakeGroup(queue, 100, 250).size(), 2u);
  EXPECT_EQ(MysqlWriter::TakeGroup(queue, 100, 1 << 20).size(), 4u);
  EXPECT_TRUE(queue.empty());
  EXPECT_TRUE(MysqlWriter::TakeGroup(queue, 100, 1 << 20).empty());
}

TEST(MysqlWriterTest, TakeGroupAlwaysTakesOneOversizedOp) {
  std::deque<WriteOp> queue;
  queue.push_back(Op(10 << 20));
  queue.push_back(Op(10));
  std::vector<WriteOp> group = MysqlWriter::TakeGroup(queue, 512, 8 << 20);
  ASSERT_EQ(group.size(), 1u);
  EXPECT_EQ(group[0].bytes, size_t{10} << 20);
  EXPECT_EQ(queue.size(), 1u);
}

TEST(MysqlWriterTest, TakeGroupKeepsOrder) {
  std::deque<WriteOp> queue;
  for (size_t i = 1; i <= 5; ++i) queue.push_back(Op(i));
  std::vector<WriteOp> group = MysqlWriter::TakeGroup(queue, 3, 1 << 20);
  ASSERT_EQ(group.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(group[i].bytes, i + 1);
  EXPECT_EQ(queue.front().bytes, 4u);
}

TEST(MysqlWriterTest, ChunkSizesCoverAnyCount) {
  EXPECT_EQ(MysqlWriter::ChunkSize(1), 1);
  EXPECT_EQ(MysqlWriter::ChunkSize(3), 1);
  EXPECT_EQ(MysqlWriter::ChunkSize(4), 4);
  EXPECT_EQ(MysqlWriter::ChunkSize(63), 16);
  EXPECT_EQ(MysqlWriter::ChunkSize(255), 64);
  EXPECT_EQ(MysqlWriter::ChunkSize(512), 256);
  // 300 rows: 256 + 16 + 16 + 4 + 4 + 4 = 300.
  size_t left = 300;
  int statements = 0;
  while (left > 0) {
    left -= static_cast<size_t>(MysqlWriter::ChunkSize(left));
    ++statements;
  }
  EXPECT_EQ(statements, 6);
}

TEST(MysqlWriterTest, InsertSqlHasOneTuplePerRow) {
  const std::string sql = MysqlWriter::InsertSql(3);
  EXPECT_TRUE(absl::StartsWith(sql, "INSERT INTO fetch_results ("));
  EXPECT_TRUE(absl::EndsWith(sql, " ON DUPLICATE KEY UPDATE idx = idx"));
  size_t placeholders = 0;
  for (char c : sql) placeholders += c == '?';
  EXPECT_EQ(placeholders, 3u * MysqlWriter::kResultColumns);
  // As many columns named as bound per tuple.
  const std::string columns =
      sql.substr(sql.find('(') + 1, sql.find(')') - sql.find('(') - 1);
  EXPECT_EQ(std::vector<std::string>(absl::StrSplit(columns, ',')).size(),
            static_cast<size_t>(MysqlWriter::kResultColumns));
}

TEST(MysqlWriterTest, DefaultGivenUpHandlerFailsEveryOp) {
  absl::Status a, b;
  std::vector<WriteOp> group;
  group.push_back(Op(1, &a));
  group.push_back(Op(1, &b));
  FailEachOp(std::move(group), absl::UnavailableError("db down"));
  EXPECT_TRUE(absl::IsUnavailable(a));
  EXPECT_TRUE(absl::IsUnavailable(b));
}

TEST(MysqlWriterTest, WriteOpFactories) {
  auto result = std::make_shared<v1::FetchResult>();
  result->set_url("http://x/");
  result->set_body("12345");
  WriteOp op = WriteOp::Result("b1", result, absl::UnixEpoch(),
                               [](ResultStore::WriteOutcome) {});
  EXPECT_TRUE(op.is_result());
  EXPECT_EQ(op.batch_id, "b1");
  EXPECT_EQ(op.bytes, 9u + 5u + 128u);
  BatchRecord record;
  record.batch_id = "b2";
  WriteOp finish =
      WriteOp::FinishBatch(record, [](ResultStore::WriteOutcome) {});
  EXPECT_FALSE(finish.is_result());
  EXPECT_EQ(finish.batch_id, "b2");
}

}  // namespace
}  // namespace batchfetch

#include "service/batch/batch_id.h"

#include <set>

#include "gtest/gtest.h"

namespace batchfetch {
namespace {

TEST(BatchId, IsUuidV7AndSortsByTime) {
  const std::string a = NewBatchId(absl::FromUnixMillis(1700000000000));
  const std::string b = NewBatchId(absl::FromUnixMillis(1700000000001));
  ASSERT_EQ(a.size(), 36u);
  EXPECT_EQ(a[8], '-');
  EXPECT_EQ(a[14], '7');  // version
  EXPECT_TRUE(a[19] == '8' || a[19] == '9' || a[19] == 'a' || a[19] == 'b');
  EXPECT_LT(a, b);
  EXPECT_TRUE(ValidateBatchId(a).ok());
}

TEST(BatchId, UniqueAcrossManyCalls) {
  std::set<std::string> ids;
  const absl::Time now = absl::Now();
  for (int i = 0; i < 10000; ++i) ids.insert(NewBatchId(now));
  EXPECT_EQ(ids.size(), 10000u);
}

TEST(BatchId, ValidatesCallerChosenIds) {
  EXPECT_TRUE(ValidateBatchId("nightly-2026.11.25:run_1").ok());
  EXPECT_EQ(ValidateBatchId("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateBatchId(std::string(65, 'a')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateBatchId("a b").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateBatchId("x'; DROP TABLE batches;--").code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace batchfetch

// CRC-32C of the spool log against the standard check values.
#include <string>

#include "gtest/gtest.h"
#include "service/store/spool/crc32c.h"

namespace batchfetch {
namespace {

TEST(SpoolCrc32cTest, MatchesTheStandardCheckValue) {
  EXPECT_EQ(crc32c::Value("123456789"), 0xe3069283u);
}

// The vectors of RFC 3720 (iSCSI), section B.4.
TEST(SpoolCrc32cTest, MatchesTheIscsiTestVectors) {
  EXPECT_EQ(crc32c::Value(std::string(32, '\0')), 0x8a9136aau);
  EXPECT_EQ(crc32c::Value(std::string(32, '\xff')), 0x62a8ab43u);
  std::string ascending(32, '\0');
  std::string descending(32, '\0');
  for (int i = 0; i < 32; ++i) {
    ascending[i] = static_cast<char>(i);
    descending[i] = static_cast<char>(31 - i);
  }
  EXPECT_EQ(crc32c::Value(ascending), 0x46dd794eu);
  EXPECT_EQ(crc32c::Value(descending), 0x113fdb5cu);
}

TEST(SpoolCrc32cTest, EmptyInputIsZero) { EXPECT_EQ(crc32c::Value(""), 0u); }

TEST(SpoolCrc32cTest, ExtendEqualsTheValueOfTheConcatenation) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data.push_back(static_cast<char>(i * 7));
  for (size_t split : {0, 1, 7, 8, 9, 500, 999, 1000}) {
    const uint32_t prefix = crc32c::Value(data.data(), split);
    EXPECT_EQ(crc32c::Extend(prefix, data.data() + split, data.size() - split),
              crc32c::Value(data))
        << split;
  }
}

TEST(SpoolCrc32cTest, MaskChangesTheValueAndUnmaskRestoresIt) {
  for (uint32_t crc : {0u, 1u, 0xe3069283u, 0xffffffffu}) {
    EXPECT_NE(crc32c::Mask(crc), crc);
    EXPECT_NE(crc32c::Mask(crc32c::Mask(crc)), crc);
    EXPECT_EQ(crc32c::Unmask(crc32c::Mask(crc)), crc);
  }
}

}  // namespace
}  // namespace batchfetch

// scalar::is_int64_value: the test before an int64 op takes a double parameter as int64.
#include <cmath>
#include <cstdint>
#include <gtest/gtest.h>
#include <limits>

#include "core/int64_scalar.h"

using vgrad::scalar::is_int64_value;

TEST(Int64Scalar, WholeNumbersInRangeOnly) {
  EXPECT_TRUE(is_int64_value(0.0));
  EXPECT_TRUE(is_int64_value(-0.0));
  EXPECT_TRUE(is_int64_value(-7));
  EXPECT_TRUE(is_int64_value(-0x1p63));                      // INT64_MIN is exact in double
  EXPECT_TRUE(is_int64_value(std::nextafter(0x1p63, 0.0)));  // the largest double below 2^63
  EXPECT_FALSE(is_int64_value(0x1p63));                      // INT64_MAX + 1
  EXPECT_FALSE(is_int64_value(std::nextafter(-0x1p63, -INFINITY)));
  EXPECT_FALSE(is_int64_value(1e19));
  EXPECT_FALSE(is_int64_value(0.5));
  EXPECT_FALSE(is_int64_value(-2.25));
  EXPECT_FALSE(is_int64_value(INFINITY));
  EXPECT_FALSE(is_int64_value(-INFINITY));
  EXPECT_FALSE(is_int64_value(std::numeric_limits<double>::quiet_NaN()));
}

// core/scalar_ops.h's element conversion (scalar::convert, saturating_int64): the one rule
// copy and fill use on every device for floating -> int64, checked at its boundaries in
// float, double and both 16-bit formats (the CUDA kernels run the same function; their
// parity is tests/cuda/test_cuda_backend.cpp's). Clean under UBSan: no conversion here is
// out of C++'s range.
#include <cmath>
#include <cstdint>
#include <gtest/gtest.h>
#include <limits>
#include <string>

#include "core/half.h"
#include "core/scalar_ops.h"

namespace vgrad {
namespace {

constexpr double kNan = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kTwoTo63 = 9223372036854775808.0;

TEST(SaturatingInt64, NanIsZeroInfinitiesAndOutOfRangeSaturate) {
  EXPECT_EQ(scalar::saturating_int64(kNan), 0);
  EXPECT_EQ(scalar::saturating_int64(-kNan), 0);
  EXPECT_EQ(scalar::saturating_int64(kInf), INT64_MAX);
  EXPECT_EQ(scalar::saturating_int64(-kInf), INT64_MIN);
  EXPECT_EQ(scalar::saturating_int64(kTwoTo63), INT64_MAX);  // the first double past INT64_MAX
  EXPECT_EQ(scalar::saturating_int64(1e19), INT64_MAX);
  EXPECT_EQ(scalar::saturating_int64(1e300), INT64_MAX);
  EXPECT_EQ(scalar::saturating_int64(-kTwoTo63), INT64_MIN);  // exactly INT64_MIN: in range
  EXPECT_EQ(scalar::saturating_int64(std::nextafter(-kTwoTo63, -kInf)), INT64_MIN);
  EXPECT_EQ(scalar::saturating_int64(-1e300), INT64_MIN);
  // The largest double below 2^63 converts exactly.
  const double below = std::nextafter(kTwoTo63, 0.0);
  EXPECT_EQ(scalar::saturating_int64(below), INT64_MAX - 1023);
  EXPECT_EQ(scalar::saturating_int64(-below), -(INT64_MAX - 1023));
}

TEST(SaturatingInt64, TruncatesTowardZeroInRange) {
  EXPECT_EQ(scalar::saturating_int64(2.7), 2);
  EXPECT_EQ(scalar::saturating_int64(-2.7), -2);
  EXPECT_EQ(scalar::saturating_int64(0.99), 0);
  EXPECT_EQ(scalar::saturating_int64(-0.99), 0);
  EXPECT_EQ(scalar::saturating_int64(-0.0), 0);
  EXPECT_EQ(scalar::saturating_int64(9007199254740993.0), 9007199254740992);  // 2^53 + 1 rounds to 2^53 as a double
  EXPECT_EQ(scalar::saturating_int64(-123456789.5), -123456789);
}

TEST(SaturatingInt64, FloatHasTheSameBounds) {
  const float two_to_63 = 9223372036854775808.0f;  // exact in float
  EXPECT_EQ(scalar::saturating_int64(std::numeric_limits<float>::quiet_NaN()), 0);
  EXPECT_EQ(scalar::saturating_int64(std::numeric_limits<float>::infinity()), INT64_MAX);
  EXPECT_EQ(scalar::saturating_int64(-std::numeric_limits<float>::infinity()), INT64_MIN);
  EXPECT_EQ(scalar::saturating_int64(two_to_63), INT64_MAX);
  EXPECT_EQ(scalar::saturating_int64(-two_to_63), INT64_MIN);
  EXPECT_EQ(scalar::saturating_int64(std::numeric_limits<float>::max()), INT64_MAX);
  const float below = std::nextafter(two_to_63, 0.0f);  // 2^63 - 2^39
  EXPECT_EQ(scalar::saturating_int64(below), INT64_MAX - ((int64_t{1} << 39) - 1));
  EXPECT_EQ(scalar::saturating_int64(-3.75f), -3);
}

TEST(Convert, SixteenBitSourcesGoThroughFloat) {
  EXPECT_EQ(scalar::convert<int64_t>(BFloat16::from_bits(0x7fc0)), 0);          // NaN
  EXPECT_EQ(scalar::convert<int64_t>(BFloat16::from_bits(0xffc1)), 0);          // -NaN with a payload
  EXPECT_EQ(scalar::convert<int64_t>(BFloat16::from_bits(0x7f80)), INT64_MAX);  // +Inf
  EXPECT_EQ(scalar::convert<int64_t>(BFloat16::from_bits(0xff80)), INT64_MIN);  // -Inf
  EXPECT_EQ(scalar::convert<int64_t>(BFloat16::from_bits(0x5f00)), INT64_MAX);  // 2^63
  EXPECT_EQ(scalar::convert<int64_t>(BFloat16::from_bits(0xdf00)), INT64_MIN);  // -2^63
  EXPECT_EQ(scalar::convert<int64_t>(BFloat16::from_bits(0x7f7f)), INT64_MAX);  // bfloat16's max, 3.4e38
  EXPECT_EQ(scalar::convert<int64_t>(BFloat16(-2.75f)), -2);
  EXPECT_EQ(scalar::convert<int64_t>(Float16::from_bits(0x7e00)), 0);          // NaN
  EXPECT_EQ(scalar::convert<int64_t>(Float16::from_bits(0x7c00)), INT64_MAX);  // +Inf
  EXPECT_EQ(scalar::convert<int64_t>(Float16::from_bits(0xfc00)), INT64_MIN);  // -Inf
  EXPECT_EQ(scalar::convert<int64_t>(Float16::from_bits(0x7bff)), 65504);      // float16's max: in range
  EXPECT_EQ(scalar::convert<int64_t>(Float16(-0.5f)), 0);
}

TEST(Convert, OtherPairsAreTheCppConversion) {
  EXPECT_EQ(scalar::convert<double>(int64_t{-7}), -7.0);
  EXPECT_EQ(scalar::convert<float>(INT64_MAX), 9223372036854775808.0f);  // rounds to nearest
  EXPECT_EQ(scalar::convert<int64_t>(int64_t{INT64_MIN}), INT64_MIN);
  EXPECT_TRUE(std::signbit(scalar::convert<float>(-0.0)));
  EXPECT_EQ(scalar::convert<BFloat16>(-0.0).bits, 0x8000);  // the sign of zero survives a 16-bit store
  EXPECT_EQ(scalar::convert<Float16>(-0.0f).bits, 0x8000);
  EXPECT_TRUE(std::isnan(scalar::convert<double>(std::numeric_limits<float>::quiet_NaN())));
}

}  // namespace
}  // namespace vgrad

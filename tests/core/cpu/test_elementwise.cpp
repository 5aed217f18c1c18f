// The CPU elementwise primitives on 16-bit floats (core/cpu/elementwise.cpp through
// strided.h's map1_blocked/map2_blocked, and where): every unary and binary op on
// float16 and bfloat16 gives the bits of computing each element in float32 from its
// exactly widened operands and rounding once, the per-element definition written out
// here with core/half.h's scalar conversions. Contiguous, strided, transposed and
// broadcast operands; lengths and offsets around the block size; every 16-bit pattern
// (NaN, ±Inf, subnormals, ±0) as an input. Then fill and copy in every dtype: -0.0 keeps
// its sign bit, and floating -> int64 follows scalar::convert's rule (NaN -> 0, saturated),
// contiguous and strided.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <gtest/gtest.h>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/cpu/strided.h"
#include "core/half.h"
#include "core/scalar_ops.h"

namespace vgrad::cpu {
namespace {

constexpr uint16_t kGuard = 0x5a5a;  // what the output holds where nothing may be written

// A 2-D strided window on a buffer of 16-bit values (1-D: one row).
struct Layout {
  int64_t offset = 0, rows = 1, cols = 0, row_stride = 0, col_stride = 1;
  int64_t at(int64_t r, int64_t c) const { return offset + r * row_stride + c * col_stride; }
  View view(std::vector<uint16_t>& buffer, DType dtype) const {
    View v;
    v.data = buffer.data() + offset;
    v.dtype = dtype;
    v.ndim = 2;
    v.shape[0] = rows;
    v.shape[1] = cols;
    v.strides[0] = row_stride;
    v.strides[1] = col_stride;
    return v;
  }
};
Layout contiguous(int64_t rows, int64_t cols, int64_t offset = 0) { return {offset, rows, cols, cols, 1}; }

float widen(DType dtype, uint16_t h) {
  return dtype == DType::BFloat16 ? half_bits::bfloat16_to_float(h) : half_bits::float16_to_float(h);
}
uint16_t narrow(DType dtype, float f) {
  return dtype == DType::BFloat16 ? half_bits::bfloat16_from_float(f) : half_bits::float16_from_float(f);
}

// Every 16-bit pattern once in a seeded order, again in another order, ... up to size.
std::vector<uint16_t> every_pattern(uint32_t seed, size_t size = 65536) {
  std::vector<uint16_t> all(65536), out;
  std::iota(all.begin(), all.end(), uint16_t(0));
  std::mt19937 rng(seed);
  while (out.size() < size) {
    std::shuffle(all.begin(), all.end(), rng);
    out.insert(out.end(), all.begin(), all.begin() + int64_t(std::min(all.size(), size - out.size())));
  }
  return out;
}

bool is_nan(DType dtype, uint16_t h) { return widen(dtype, h) != widen(dtype, h); }

// Each element of out (inside its layout) against expected(r, c); the rest of the
// buffer must still hold kGuard. Where nan_in(r, c) (a NaN operand) and the result is NaN,
// a NaN is all that is asked: which NaN's sign and payload a float32 op returns when two
// meet (two operands', or an operand's and one made inside the functor, as gelu_backward's
// Inf·0) depends on the operand order the compiler picks for each loop and build (the
// per-element loops this replaced differ from this file's reference there too). Reports
// the first few mismatches.
template <class Expected, class NanIn>
void expect_bits(const std::string& what, DType dtype, const std::vector<uint16_t>& out, const Layout& layout,
                 Expected expected, NanIn nan_in) {
  std::vector<bool> inside(out.size(), false);
  int mismatches = 0;
  for (int64_t r = 0; r < layout.rows; ++r)
    for (int64_t c = 0; c < layout.cols; ++c) {
      const int64_t i = layout.at(r, c);
      inside[size_t(i)] = true;
      const uint16_t want = expected(r, c);
      const bool same = out[size_t(i)] == want || (nan_in(r, c) && is_nan(dtype, want) && is_nan(dtype, out[size_t(i)]));
      if (!same && ++mismatches <= 3)
        ADD_FAILURE() << what << " at (" << r << ", " << c << "): got 0x" << std::hex << out[size_t(i)] << ", want 0x"
                      << want;
    }
  for (size_t i = 0; i < out.size(); ++i)
    if (!inside[i] && out[i] != kGuard && ++mismatches <= 3) ADD_FAILURE() << what << ": wrote outside the output at " << i;
  EXPECT_EQ(mismatches, 0) << what;
}

// Every op of each enum: op_name names each one and falls back past the last.
std::vector<UnaryOp> all_unary_ops() {
  std::vector<UnaryOp> ops;
  for (int k = 0; std::string(op_name(UnaryOp(k))) != "unary"; ++k) ops.push_back(UnaryOp(k));
  return ops;
}
std::vector<BinaryOp> all_binary_ops() {
  std::vector<BinaryOp> ops;
  for (int k = 0; std::string(op_name(BinaryOp(k))) != "binary"; ++k) ops.push_back(BinaryOp(k));
  return ops;
}

// The ops' scalar parameters: PowScalar's 2 takes its x*x branch, 0.5 pow's.
struct UnaryParams {
  double a, b;
};
std::vector<UnaryParams> params_for(UnaryOp op) {
  switch (op) {
    case UnaryOp::Affine: return {{1.5, -0.25}, {-3.0, 1e-3}};
    case UnaryOp::PowScalar: return {{2.0, 0}, {0.5, 0}, {-1.5, 0}};
    case UnaryOp::RPowScalar: return {{2.0, 0}, {0.3, 0}};
    case UnaryOp::Clamp: return {{-1.0, 2.0}};
    case UnaryOp::LeakyRelu: return {{0.01, 0}};
    default: return {{0, 0}};
  }
}

// out = op(x) through the backend, against the per-element definition.
void check_unary(DType dtype, UnaryOp op, UnaryParams p, std::vector<uint16_t> x, const Layout& in,
                 const Layout& out_layout, size_t out_size, const std::string& where) {
  std::vector<uint16_t> out(out_size, kGuard);
  cpu_backend().unary(op, in.view(x, dtype), out_layout.view(out, dtype), p.a, p.b);
  scalar::visit_unary<float>(op, p.a, p.b, [&](const auto& f) {
    expect_bits(
        std::string(dtype_name(dtype)) + " " + op_name(op) + " " + where, dtype, out, out_layout,
        [&](int64_t r, int64_t c) { return narrow(dtype, f(widen(dtype, x[size_t(in.at(r, c))]))); },
        [](int64_t, int64_t) { return false; });
  });
}

void check_binary(DType dtype, BinaryOp op, std::vector<uint16_t> a, const Layout& a_layout, std::vector<uint16_t> b,
                  const Layout& b_layout, const Layout& out_layout, size_t out_size, const std::string& where) {
  std::vector<uint16_t> out(out_size, kGuard);
  cpu_backend().binary(op, a_layout.view(a, dtype), b_layout.view(b, dtype), out_layout.view(out, dtype));
  scalar::visit_binary<float>(op, [&](const auto& f) {
    expect_bits(
        std::string(dtype_name(dtype)) + " " + op_name(op) + " " + where, dtype, out, out_layout,
        [&](int64_t r, int64_t c) {
          return narrow(dtype, f(widen(dtype, a[size_t(a_layout.at(r, c))]), widen(dtype, b[size_t(b_layout.at(r, c))])));
        },
        [&](int64_t r, int64_t c) {
          return is_nan(dtype, a[size_t(a_layout.at(r, c))]) || is_nan(dtype, b[size_t(b_layout.at(r, c))]);
        });
  });
}

class HalfElementwise : public ::testing::TestWithParam<DType> {};

TEST_P(HalfElementwise, EveryUnaryOpOnEveryPatternMatchesThePerElementDefinition) {
  const DType dtype = GetParam();
  const std::vector<uint16_t> all = every_pattern(1);
  const int64_t n = int64_t(all.size());
  for (UnaryOp op : all_unary_ops())
    for (UnaryParams p : params_for(op)) {
      check_unary(dtype, op, p, all, contiguous(1, n), contiguous(1, n), all.size(), "contiguous");
      // Strided input into a strided output (every other element), and rows of a transposed input.
      check_unary(dtype, op, p, all, {1, 1, n / 3, 0, 3}, {0, 1, n / 3, 0, 2}, size_t(2 * (n / 3)), "strided");
      check_unary(dtype, op, p, all, {0, 256, 255, 1, 256}, contiguous(256, 255), size_t(256 * 255), "transposed");
    }
}

// Lengths around the block (kHalfBlock) and a vector's width, at an odd offset, with
// guards on both sides of the output.
TEST_P(HalfElementwise, UnaryAndBinaryCoverBlockBoundariesAndOddLengths) {
  const DType dtype = GetParam();
  const std::vector<uint16_t> a = every_pattern(2), b = every_pattern(3);
  for (int64_t n : {int64_t(1), int64_t(3), int64_t(17), kHalfBlock - 1, kHalfBlock, kHalfBlock + 1,
                    3 * kHalfBlock + 5}) {
    const std::string where = "length " + std::to_string(n);
    check_unary(dtype, UnaryOp::Relu, {0, 0}, a, contiguous(1, n, 1), contiguous(1, n, 1), size_t(n + 2), where);
    check_unary(dtype, UnaryOp::Exp, {0, 0}, a, contiguous(1, n, 5), contiguous(1, n, 1), size_t(n + 2), where);
    for (BinaryOp op : {BinaryOp::Add, BinaryOp::Mul, BinaryOp::ReluBackward})
      check_binary(dtype, op, a, contiguous(1, n, 1), b, contiguous(1, n, 7), contiguous(1, n, 1), size_t(n + 2), where);
  }
}

TEST_P(HalfElementwise, EveryBinaryOpMatchesThePerElementDefinitionOnEveryLayout) {
  const DType dtype = GetParam();
  const std::vector<uint16_t> a = every_pattern(4), b = every_pattern(5);
  const int64_t n = int64_t(a.size());
  const int64_t rows = 64, cols = 4099;
  const std::vector<uint16_t> wide = every_pattern(6, size_t(rows * cols));
  for (BinaryOp op : all_binary_ops()) {
    // Every pattern against every pattern's shuffle: NaN, ±Inf, subnormal and ±0 operands,
    // results that overflow or fall to subnormals.
    check_binary(dtype, op, a, contiguous(1, n), b, contiguous(1, n), contiguous(1, n), a.size(), "contiguous");
    check_binary(dtype, op, a, {0, 1, n / 3, 0, 3}, b, {2, 1, n / 3, 0, 2}, {1, 1, n / 3, 0, 2}, size_t(2 * (n / 3) + 1),
                 "strided");
    // A broadcast scalar on either side (one per row, rows longer than a block), and a
    // bias row broadcast over rows.
    check_binary(dtype, op, wide, {0, rows, cols, cols, 1}, b, {0, rows, cols, 1, 0}, contiguous(rows, cols),
                 size_t(rows * cols), "scalar second operand per row");
    check_binary(dtype, op, a, {0, rows, cols, 1, 0}, wide, {0, rows, cols, cols, 1}, contiguous(rows, cols),
                 size_t(rows * cols), "scalar first operand per row");
    check_binary(dtype, op, wide, {0, rows, cols, cols, 1}, b, {9, rows, cols, 0, 1}, contiguous(rows, cols),
                 size_t(rows * cols), "broadcast row");
    // A transposed first operand.
    check_binary(dtype, op, a, {0, 255, 256, 1, 255}, b, contiguous(255, 256), contiguous(255, 256), size_t(255 * 256),
                 "transposed");
  }
}

TEST_P(HalfElementwise, InPlaceOpsReadEachBlockBeforeWritingIt) {
  const DType dtype = GetParam();
  const std::vector<uint16_t> a = every_pattern(6);
  std::vector<uint16_t> b = every_pattern(7);
  const int64_t n = int64_t(a.size());
  std::vector<uint16_t> x = a;
  cpu_backend().binary(BinaryOp::Mul, contiguous(1, n).view(x, dtype), contiguous(1, n).view(b, dtype),
                       contiguous(1, n).view(x, dtype));
  std::vector<uint16_t> y = a;
  cpu_backend().unary(UnaryOp::Neg, contiguous(1, n).view(y, dtype), contiguous(1, n).view(y, dtype));
  int mismatches = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const uint16_t product = narrow(dtype, widen(dtype, a[i]) * widen(dtype, b[i]));
    const bool any_nan = is_nan(dtype, a[i]) || is_nan(dtype, b[i]);
    mismatches += any_nan && is_nan(dtype, product) ? !is_nan(dtype, x[i]) : x[i] != product;
    mismatches += y[i] != narrow(dtype, -widen(dtype, a[i]));
  }
  EXPECT_EQ(mismatches, 0);
}

// where selects bits: NaN payloads and -0 survive; a condition is true unless ±0.
TEST_P(HalfElementwise, WhereSelectsBitsAndTreatsOnlyZeroAsFalse) {
  const DType dtype = GetParam();
  const std::vector<uint16_t> cond = every_pattern(8), a = every_pattern(9), b = every_pattern(10);
  const int64_t n = int64_t(cond.size());
  std::vector<uint16_t> c = cond, x = a, y = b, out(cond.size(), kGuard);
  cpu_backend().where(contiguous(1, n).view(c, dtype), contiguous(1, n).view(x, dtype), contiguous(1, n).view(y, dtype),
                      contiguous(1, n).view(out, dtype));
  expect_bits(
      std::string(dtype_name(dtype)) + " where", dtype, out, contiguous(1, n),
      [&](int64_t, int64_t i) { return widen(dtype, cond[size_t(i)]) != 0.0f ? a[size_t(i)] : b[size_t(i)]; },
      [](int64_t, int64_t) { return false; });
  // A broadcast scalar condition of each kind over strided operands.
  for (uint16_t scalar : {uint16_t(0x0000), uint16_t(0x8000), uint16_t(0x0001), uint16_t(0x7fff), uint16_t(0x3c00)}) {
    std::vector<uint16_t> s{scalar}, strided(size_t(n / 2), kGuard);
    const Layout half_n{0, 1, n / 2, 0, 1}, every_other{0, 1, n / 2, 0, 2};
    cpu_backend().where(Layout{0, 1, n / 2, 0, 0}.view(s, dtype), every_other.view(x, dtype),
                        half_n.view(y, dtype), half_n.view(strided, dtype));
    const bool pick_a = widen(dtype, scalar) != 0.0f;
    expect_bits(
        "where on the scalar pattern " + std::to_string(scalar), dtype, strided, half_n,
        [&](int64_t, int64_t i) { return pick_a ? a[size_t(2 * i)] : b[size_t(i)]; },
        [](int64_t, int64_t) { return false; });
  }
}

// ---------------- fill and copy in every dtype ----------------

// A 1-D view of `count` elements, `step` apart, on a buffer of 8-byte words.
View words_view(std::vector<uint64_t>& buffer, DType dtype, int64_t count, int64_t step = 1) {
  View v;
  v.data = buffer.data();
  v.dtype = dtype;
  v.ndim = 1;
  v.shape[0] = count;
  v.strides[0] = step;
  return v;
}

// Element i of a buffer as a double (the sign of zero and NaN kept).
double element(const std::vector<uint64_t>& buffer, DType dtype, int64_t i) {
  const void* base = buffer.data();
  switch (dtype) {
    case DType::Float32:
      return static_cast<const float*>(base)[i];
    case DType::Float64:
      return static_cast<const double*>(base)[i];
    case DType::Int64:
      return double(static_cast<const int64_t*>(base)[i]);
    case DType::BFloat16:
      return static_cast<const BFloat16*>(base)[i];
    case DType::Float16:
      return static_cast<const Float16*>(base)[i];
  }
  return 0;
}

TEST(FillAndCopy, FillWithNegativeZeroKeepsTheSignBitInEveryFloatingDtype) {
  for (DType dtype : {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16}) {
    const std::string name = dtype_name(dtype);
    for (int64_t step : {1, 3}) {  // contiguous, and every third element
      std::vector<uint64_t> buffer(64, ~uint64_t{0});
      cpu_backend().fill(words_view(buffer, dtype, 20, step), -0.0);
      std::vector<uint64_t> inverse(64, 0);
      cpu_backend().unary(UnaryOp::Reciprocal, words_view(buffer, dtype, 20, step),
                          words_view(inverse, dtype, 20, step));
      for (int64_t i = 0; i < 20; ++i) {
        const double v = element(buffer, dtype, i * step);
        ASSERT_TRUE(v == 0.0 && std::signbit(v)) << name << " step " << step << " element " << i << ": " << v;
        ASSERT_EQ(element(inverse, dtype, i * step), -std::numeric_limits<double>::infinity()) << name << " 1/-0";
      }
      if (step == 3) {
        ASSERT_TRUE(std::isnan(element(buffer, dtype, 1))) << name << ": fill wrote between its elements";
      }
    }
  }
  std::vector<uint64_t> ints(4, 7);
  cpu_backend().fill(words_view(ints, DType::Int64, 4), -0.0);
  EXPECT_EQ(ints, std::vector<uint64_t>(4, 0));
}

// The floating values whose int64 conversion C++ leaves undefined, and ordinary ones;
// want: scalar::convert's rule, written out.
struct Int64Case {
  double value;
  int64_t want;
};
std::vector<Int64Case> int64_cases() {
  const double inf = std::numeric_limits<double>::infinity();
  return {{std::numeric_limits<double>::quiet_NaN(), 0},
          {inf, INT64_MAX},
          {-inf, INT64_MIN},
          {9223372036854775808.0, INT64_MAX},   // 2^63
          {-9223372036854775808.0, INT64_MIN},  // -2^63: in range
          {1e19, INT64_MAX},
          {-1e19, INT64_MIN},
          {3e38, INT64_MAX},
          {-2.75, -2},
          {2.5, 2},
          {-0.5, 0},
          {65504, 65504},
          {-0.0, 0}};
}

TEST(FillAndCopy, FloatingToInt64TruncatesSaturatesAndSendsNanToZero) {
  const std::vector<Int64Case> cases = int64_cases();
  const int64_t n = int64_t(cases.size());
  for (DType from : {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16}) {
    std::vector<uint64_t> source(size_t(2 * n), 0);
    std::vector<int64_t> want(cases.size());
    for (int64_t i = 0; i < n; ++i) {
      // Stored at every other element in the source dtype (bfloat16/float16 round 3e38,
      // 1e19, 2^63 and 65504 as they can); want follows the stored value.
      std::vector<uint64_t> one(1, 0);
      cpu_backend().fill(words_view(one, from, 1), cases[size_t(i)].value);
      const double stored = element(one, from, 0);
      std::memcpy(reinterpret_cast<char*>(source.data()) + 2 * i * int64_t(dtype_size(from)), one.data(),
                  dtype_size(from));
      want[size_t(i)] = std::isnan(stored)                ? 0
                        : stored >= 9223372036854775808.0 ? INT64_MAX
                        : stored < -9223372036854775808.0 ? INT64_MIN
                                                          : static_cast<int64_t>(std::trunc(stored));
      if (std::isfinite(cases[size_t(i)].value) && stored == cases[size_t(i)].value) {
        ASSERT_EQ(want[size_t(i)], cases[size_t(i)].want) << cases[size_t(i)].value;
      }
    }
    std::vector<uint64_t> out(size_t(n), 0x5a5a5a5a5a5a5a5a);
    cpu_backend().copy(words_view(source, from, n, 2), words_view(out, DType::Int64, n));
    for (int64_t i = 0; i < n; ++i)
      EXPECT_EQ(int64_t(out[size_t(i)]), want[size_t(i)])
          << dtype_name(from) << " -> int64 of " << cases[size_t(i)].value << " (element " << i << ")";
  }
  // fill of an int64 tensor takes the same rule, contiguous and strided.
  for (const Int64Case& c : cases) {
    std::vector<uint64_t> out(3, 1);
    cpu_backend().fill(words_view(out, DType::Int64, 3), c.value);
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(int64_t(out[i]), c.want) << "int64 fill of " << c.value;
    std::vector<uint64_t> strided(6, 1);
    cpu_backend().fill(words_view(strided, DType::Int64, 3, 2), c.value);
    EXPECT_EQ(int64_t(strided[4]), c.want) << "strided int64 fill of " << c.value;
    EXPECT_EQ(strided[5], 1u) << "strided int64 fill wrote past its elements";
  }
}

INSTANTIATE_TEST_SUITE_P(BothFormats, HalfElementwise, ::testing::Values(DType::Float16, DType::BFloat16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace vgrad::cpu

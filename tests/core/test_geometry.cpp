// Tests of the iteration geometry every device's elementwise and reduction kernels
// use (core/geometry.h): dim merging, offsets against naive index arithmetic on random
// layouts, 32-bit index eligibility, and the reduce plan's coverage.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include "core/geometry.h"
#include "core/shape.h"

namespace {

using namespace vgrad;

TEST(Geometry, MergesContiguousDimsAndDropsOnes) {
  const int64_t shape[4] = {2, 1, 3, 4};
  const int64_t out_strides[4] = {12, 12, 4, 1};
  const int64_t* strides[1] = {out_strides};
  const Geometry<1> g = make_geometry<1>(4, shape, strides);
  EXPECT_EQ(g.ndim, 1);
  EXPECT_EQ(g.shape[0], 24);
  EXPECT_EQ(g.strides[0][0], 1);
  EXPECT_TRUE(g.all_contiguous());
}

TEST(Geometry, KeepsDimsABroadcastOperandSplits) {
  const int64_t shape[3] = {4, 5, 6};
  const int64_t out_strides[3] = {30, 6, 1};
  const int64_t b_strides[3] = {0, 1, 0};  // a (5,) column broadcast over dims 0 and 2
  const int64_t* strides[2] = {out_strides, b_strides};
  const Geometry<2> g = make_geometry<2>(3, shape, strides);
  EXPECT_EQ(g.ndim, 3);
  EXPECT_FALSE(g.all_contiguous());
  int64_t off[2];
  g.offsets(int64_t{37}, off);  // (1, 1, 1)
  EXPECT_EQ(off[0], 37);
  EXPECT_EQ(off[1], 1);
}

TEST(Geometry, ScalarBecomesOneElement) {
  const int64_t* strides[1] = {nullptr};
  const Geometry<1> g = make_geometry<1>(0, nullptr, strides);
  EXPECT_EQ(g.ndim, 1);
  EXPECT_EQ(g.numel(), 1);
  int64_t off[1];
  g.offsets(int64_t{0}, off);
  EXPECT_EQ(off[0], 0);
}

// Random shapes, strides (0 for broadcast, permuted, padded): the collapsed geometry's
// offsets equal the naive ones for every element, with 64- and 32-bit index types.
TEST(Geometry, OffsetsMatchNaiveOnRandomLayouts) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const int ndim = static_cast<int>(rng() % 6);
    int64_t shape[8], s0[8], s1[8], s2[8];
    for (int d = 0; d < ndim; ++d) shape[d] = 1 + static_cast<int64_t>(rng() % 4);
    // operand 0 contiguous, 1 broadcast in random dims, 2 a random permutation with padding
    int64_t running = 1;
    for (int d = ndim - 1; d >= 0; --d) {
      s0[d] = running;
      running *= shape[d];
    }
    for (int d = 0; d < ndim; ++d) s1[d] = (rng() % 3 == 0) ? 0 : s0[d];
    std::vector<int> order(static_cast<size_t>(ndim));
    for (int d = 0; d < ndim; ++d) order[static_cast<size_t>(d)] = d;
    std::shuffle(order.begin(), order.end(), rng);
    running = 1;
    for (int d : order) {
      s2[d] = running;
      running *= shape[d] + static_cast<int64_t>(rng() % 2);  // sometimes padded
    }
    const int64_t* strides[3] = {s0, s1, s2};
    const Geometry<3> g = make_geometry<3>(ndim, shape, strides);
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= shape[d];
    ASSERT_EQ(g.numel(), n);
    ASSERT_TRUE(g.fits_32bit());
    for (int64_t i = 0; i < n; ++i) {
      int64_t naive[3] = {0, 0, 0};
      int64_t rest = i;
      for (int d = ndim - 1; d >= 0; --d) {
        const int64_t c = rest % shape[d];
        rest /= shape[d];
        naive[0] += c * s0[d];
        naive[1] += c * s1[d];
        naive[2] += c * s2[d];
      }
      int64_t off[3];
      g.offsets(i, off);
      uint32_t off32[3];
      g.offsets(static_cast<uint32_t>(i), off32);
      for (int k = 0; k < 3; ++k) {
        ASSERT_EQ(off[k], naive[k]) << "trial " << trial << " element " << i << " operand " << k;
        ASSERT_EQ(static_cast<int64_t>(off32[k]), naive[k]) << "trial " << trial << " (32-bit)";
      }
    }
  }
}

TEST(Geometry, LargeOffsetsNeed64Bits) {
  const int64_t shape[2] = {70000, 40000};
  const int64_t out_strides[2] = {40000, 1};
  const int64_t* strides[1] = {out_strides};
  EXPECT_FALSE(make_geometry<1>(2, shape, strides).fits_32bit());
}

// The reduce plan enumerates, for every output, exactly the input elements that fold into it.
TEST(Geometry, ReducePlanCoversEachOutputsInputs) {
  const int64_t in_shape[3] = {6, 7, 9};
  const int64_t in_strides[3] = {63, 9, 1};
  const std::vector<std::vector<int64_t>> outs = {{1, 7, 9}, {6, 7, 1}, {6, 1, 9}, {1, 7, 1}, {1, 1, 1}, {6, 7, 9}};
  for (const auto& out_shape : outs) {
    const auto out_strides = contiguous_strides(out_shape);
    ReducePlan plan;
    ASSERT_TRUE(make_reduce_plan(3, in_shape, in_strides, out_shape.data(), out_strides.data(), plan));
    std::vector<std::multiset<int64_t>> got(static_cast<size_t>(6 * 7 * 9)), want(got.size());
    for (int64_t k = 0; k < plan.kept_count; ++k) {
      int64_t ko[2];
      plan.kept.offsets(k, ko);
      for (int64_t r = 0; r < plan.reduced_count; ++r) {
        int64_t ro[1];
        plan.reduced.offsets(r, ro);
        got[static_cast<size_t>(ko[1])].insert(ko[0] + ro[0]);
      }
    }
    for (int64_t i = 0; i < 6; ++i)
      for (int64_t j = 0; j < 7; ++j)
        for (int64_t l = 0; l < 9; ++l) {
          const int64_t o = (out_shape[0] == 1 ? 0 : i) * out_strides[0] + (out_shape[1] == 1 ? 0 : j) * out_strides[1] +
                            (out_shape[2] == 1 ? 0 : l) * out_strides[2];
          want[static_cast<size_t>(o)].insert(i * 63 + j * 9 + l);
        }
    EXPECT_EQ(got, want) << "output shape " << out_shape[0] << "x" << out_shape[1] << "x" << out_shape[2];
  }
  // dim 0 reduced, last dim kept: the column layout; last dim reduced: the row layout.
  ReducePlan plan;
  const int64_t cols[3] = {1, 7, 9}, cols_strides[3] = {63, 9, 1};
  ASSERT_TRUE(make_reduce_plan(3, in_shape, in_strides, cols, cols_strides, plan));
  EXPECT_FALSE(plan.inner);
  const int64_t rows[3] = {6, 7, 1}, rows_strides[3] = {7, 1, 1};
  ASSERT_TRUE(make_reduce_plan(3, in_shape, in_strides, rows, rows_strides, plan));
  EXPECT_TRUE(plan.inner);
  const int64_t bad[3] = {6, 2, 1};
  EXPECT_FALSE(make_reduce_plan(3, in_shape, in_strides, bad, rows_strides, plan));
}

}  // namespace

// Helpers shared by the core tests: naive reference computations on plain
// std::vectors (row-major, NumPy broadcasting), seeded inputs and value comparison.
// What every test binary shares is in tests/support.h.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/grad_mode.h"
#include "autograd/ops.h"
#include "core/tensor.h"
#include "support.h"

namespace vt {

using vgrad::DType;
using vgrad::Shape;
using vgrad::Tensor;

using vgrad_test::vals;

// Row-major multi-index of `flat` in `shape`.
inline std::vector<int64_t> unravel(int64_t flat, const Shape& shape) {
  std::vector<int64_t> index(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    index[d] = shape[d] == 0 ? 0 : flat % shape[d];
    flat = shape[d] == 0 ? 0 : flat / shape[d];
  }
  return index;
}

// Flat row-major position in `in` of the element that output index `out_index`
// reads under NumPy broadcasting (trailing dims aligned, size-1 dims repeated).
inline int64_t broadcast_source(const std::vector<int64_t>& out_index, const Shape& in) {
  const size_t lead = out_index.size() - in.size();
  int64_t flat = 0;
  for (size_t d = 0; d < in.size(); ++d) flat = flat * in[d] + (in[d] == 1 ? 0 : out_index[lead + d]);
  return flat;
}

// Naive out[i] = f(a[bcast(i)], b[bcast(i)]).
template <class F>
std::vector<double> broadcast_ref(const std::vector<double>& a, const Shape& sa, const std::vector<double>& b,
                                  const Shape& sb, const Shape& out, F f) {
  std::vector<double> result(static_cast<size_t>(vgrad::numel(out)));
  for (int64_t i = 0; i < vgrad::numel(out); ++i) {
    const auto index = unravel(i, out);
    result[i] = f(a[broadcast_source(index, sa)], b[broadcast_source(index, sb)]);
  }
  return result;
}

// Deterministic test data in [low, high).
inline Tensor rand_tensor(const Shape& shape, uint64_t seed, DType dtype = DType::Float32, double low = -2,
                          double high = 2) {
  vgrad::Generator gen(seed);
  return vgrad::uniform(shape, low, high, {.dtype = dtype}, &gen);
}

inline void expect_all_near(const std::vector<double>& actual, const std::vector<double>& expected, double tol,
                            const std::string& what = "") {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i) {
    if (std::isnan(expected[i])) {
      EXPECT_TRUE(std::isnan(actual[i])) << what << " at " << i;
      continue;
    }
    const double bound = tol * std::max(1.0, std::abs(expected[i]));
    if (!(std::abs(actual[i] - expected[i]) <= bound)) {
      ADD_FAILURE() << what << " at flat index " << i << ": got " << actual[i] << ", expected " << expected[i];
      return;  // one report per comparison is enough
    }
  }
}

inline void expect_tensor_near(const Tensor& actual, const Shape& shape, const std::vector<double>& expected,
                               double tol = 1e-5, const std::string& what = "") {
  EXPECT_EQ(actual.shape(), shape) << what;
  expect_all_near(vals(actual), expected, tol, what);
}

}  // namespace vt

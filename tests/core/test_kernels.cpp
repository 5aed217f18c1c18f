// kernels::index_range: 0..n-1 as int64, cut from one cached range per device, so that the
// ops that need positions every call (one_hot, gather, scatter_add) upload only when it
// grows (on a GPU an upload is a host wait). The other kernels are tested through the ops.
#include <gtest/gtest.h>
#include <numeric>

#include "core/kernels.h"
#include "support.h"
#include "vgrad.h"

namespace {

using namespace vgrad;

std::vector<int64_t> iota_values(int64_t n) {
  std::vector<int64_t> values(static_cast<size_t>(n));
  std::iota(values.begin(), values.end(), int64_t{0});
  return values;
}

TEST(IndexRange, ValuesAndDtype) {
  const Tensor r = kernels::index_range(5, kCPU);
  EXPECT_EQ(r.shape(), (Shape{5}));
  EXPECT_EQ(r.dtype(), DType::Int64);
  EXPECT_TRUE(r.is_contiguous());
  EXPECT_EQ(r.to_vector<int64_t>(), iota_values(5));
  EXPECT_EQ(kernels::index_range(0, kCPU).shape(), (Shape{0}));
  EXPECT_ERROR(kernels::index_range(-1, kCPU), "index_range: negative length -1");
}

TEST(IndexRange, ReusesTheCachedRangeAndGrowsWhenNeeded) {
  const Tensor small = kernels::index_range(3, kCPU);
  const Tensor again = kernels::index_range(2, kCPU);
  EXPECT_EQ(again.storage(), small.storage()) << "a range that fits is a view of the cached one, no new copy";
  EXPECT_EQ(again.data_ptr(), small.data_ptr());
  // Longer than anything asked before in this process: a new, longer cached range.
  const int64_t long_length = 100003;
  const Tensor grown = kernels::index_range(long_length, kCPU);
  EXPECT_NE(grown.storage(), small.storage());
  EXPECT_EQ(grown.to_vector<int64_t>(), iota_values(long_length));
  EXPECT_EQ(kernels::index_range(7, kCPU).storage(), grown.storage());
  // Views of the old range stay valid (they keep its storage).
  EXPECT_EQ(small.to_vector<int64_t>(), iota_values(3));
}

}  // namespace

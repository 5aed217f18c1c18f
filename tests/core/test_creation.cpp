// tensor() from braced lists as LibTorch's torch::tensor (integers int64, floating
// literals float32, always 1-D unless shaped), and comparisons with a number: the
// functions and operators, their mask dtype, and int64 against a fractional number.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "support.h"
#include "vgrad.h"

namespace {

using namespace vgrad;
using vgrad_test::vals;

TEST(Creation, BracedListsAreOneDimensionalWithLibTorchDtypes) {
  EXPECT_EQ(tensor({5.f}).shape(), (Shape{1}));
  EXPECT_EQ(tensor({5.f}).dtype(), DType::Float32);
  EXPECT_EQ(tensor({1, 2, 3}).dtype(), DType::Int64);
  EXPECT_EQ(tensor({1, 2, 3}).to_vector<int64_t>(), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(tensor({7}).shape(), (Shape{1}));
  EXPECT_EQ(tensor({int64_t{1} << 40}).to_vector<int64_t>()[0], int64_t{1} << 40);  // no trip through float
  EXPECT_EQ(tensor({0.5, 1.5}).dtype(), DType::Float32);                             // as torch::tensor({0.5, 1.5})
  EXPECT_EQ(vals(tensor({0.5, 1.5})), (std::vector<double>{0.5, 1.5}));
  EXPECT_EQ(tensor({1, 2, 3, 4}, {2, 2}).shape(), (Shape{2, 2}));
  EXPECT_EQ(tensor({1, 2}, {2}, {.dtype = DType::Float64}).dtype(), DType::Float64);
  EXPECT_EQ(tensor(std::vector<double>{2.5}).shape(), (Shape{1}));  // shape left out: 1-D, as torch.tensor([2.5])
  EXPECT_EQ(scalar_tensor(2.5).dim(), 0);
  EXPECT_ERROR(tensor({1, 2, 3}, {}), "tensor: 3 values do not fill shape [] (1 elements)");
  EXPECT_ERROR(tensor({1, 2, 3}, {2, 2}), "tensor: 3 values do not fill shape [2, 2] (4 elements)");
}

// An empty shape given is a 0-d scalar, as torch.tensor(3.0); the shape left out is 1-D.
TEST(Creation, EmptyShapeGivesAScalar) {
  const Tensor scalar = tensor({3.5f}, {});
  EXPECT_EQ(scalar.dim(), 0);
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_EQ(scalar.item(), 3.5);
  const Shape empty;
  for (const Tensor& t : {tensor(std::vector<float>{-1.5f}, empty), tensor(std::vector<double>{0.25}, {}),
                          tensor(std::vector<int64_t>{7}, {}), tensor({7}, {}), tensor({0.5}, {}, {.dtype = DType::BFloat16})})
    EXPECT_EQ(t.shape(), Shape{}) << t.str();
  EXPECT_EQ(tensor(std::vector<int64_t>{7}, {}).dtype(), DType::Int64);
  EXPECT_EQ(tensor({0.5}, {}, {.dtype = DType::BFloat16}).dtype(), DType::BFloat16);
  EXPECT_EQ(tensor({4.f}).shape(), (Shape{1}));
  EXPECT_EQ(tensor(std::vector<float>{}).shape(), (Shape{0}));
  EXPECT_ERROR(tensor(std::vector<float>{}, {}), "tensor: 0 values do not fill shape [] (1 elements)");
  // A scalar made this way is a 0-d root for backward, as one from scalar_tensor.
  Tensor x = tensor({2.0f}, {}, {.requires_grad = true});
  (x * x * 3.0f).backward();
  EXPECT_EQ(x.grad().dim(), 0);
  EXPECT_EQ(x.grad().item(), 12.0);
}

TEST(Comparisons, WithANumberGiveMasksInTheInputDtype) {
  const Tensor x = tensor({-1.f, 0.f, 0.5f, 2.f});
  EXPECT_EQ(vals(x > 0), (std::vector<double>{0, 0, 1, 1}));
  EXPECT_EQ(vals(gt(x, 0.0)), (std::vector<double>{0, 0, 1, 1}));
  EXPECT_EQ(vals(x >= 0.5), (std::vector<double>{0, 0, 1, 1}));
  EXPECT_EQ(vals(x < 0), (std::vector<double>{1, 0, 0, 0}));
  EXPECT_EQ(vals(x <= 0), (std::vector<double>{1, 1, 0, 0}));
  EXPECT_EQ(vals(x == 0.5), (std::vector<double>{0, 0, 1, 0}));
  EXPECT_EQ(vals(x != 0.5), (std::vector<double>{1, 1, 0, 1}));
  EXPECT_EQ(vals(ge(x, 2.0)), vals(x >= 2));
  EXPECT_EQ(vals(le(x, -1.0)), vals(x <= -1));
  EXPECT_EQ(vals(lt(x, 0.0)), vals(x < 0));
  EXPECT_EQ(vals(eq(x, 2.0)), vals(x == 2));
  EXPECT_EQ(vals(ne(x, 2.0)), vals(x != 2));
  // Number first: 0 < x is x > 0.
  EXPECT_EQ(vals(0 < x), vals(x > 0));
  EXPECT_EQ(vals(0.5 <= x), vals(x >= 0.5));
  EXPECT_EQ(vals(0 > x), vals(x < 0));
  EXPECT_EQ(vals(0 >= x), vals(x <= 0));
  EXPECT_EQ(vals(0.5 == x), vals(x == 0.5));
  EXPECT_EQ(vals(0.5 != x), vals(x != 0.5));
  EXPECT_EQ((x > 0).dtype(), DType::Float32);
  EXPECT_EQ((x.to(DType::Float64) > 0).dtype(), DType::Float64);
  // The number takes x's dtype, as PyTorch does: 0.1f == 0.1 in float32.
  EXPECT_EQ(vals(tensor({0.1f}) == 0.1), (std::vector<double>{1}));
  EXPECT_EQ(vals(x > std::numeric_limits<double>::quiet_NaN()), (std::vector<double>{0, 0, 0, 0}));
}

TEST(Comparisons, Int64AgainstAFractionalNumberIsExact) {
  const Tensor i = tensor({0, 1, 2});
  EXPECT_EQ((i > 0).dtype(), DType::Int64);
  EXPECT_EQ((i > 0).to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 1}));
  // 0.5 must not truncate to 0: i >= 0.5 is {0, 1, 1}, i == 1.0 exact, i < 1.5 is {1, 1, 0}.
  EXPECT_EQ((i >= 0.5).to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 1}));
  EXPECT_EQ((i >= 0.5).dtype(), DType::Int64);
  EXPECT_EQ((i < 1.5).to_vector<int64_t>(), (std::vector<int64_t>{1, 1, 0}));
  EXPECT_EQ((i == 1.0).to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 0}));
  EXPECT_EQ((i < INFINITY).to_vector<int64_t>(), (std::vector<int64_t>{1, 1, 1}));
}

TEST(Comparisons, TensorOperatorsBroadcast) {
  const Tensor a = tensor({1.f, 2.f, 3.f}), b = tensor({2.f});
  EXPECT_EQ(vals(a > b), (std::vector<double>{0, 0, 1}));
  EXPECT_EQ(vals(a == b), (std::vector<double>{0, 1, 0}));
  EXPECT_EQ(vals(a != b), (std::vector<double>{1, 0, 1}));
  EXPECT_EQ(vals(a <= b), (std::vector<double>{1, 1, 0}));
  EXPECT_EQ(vals(a < b), (std::vector<double>{1, 0, 0}));
  EXPECT_EQ(vals(a >= b), (std::vector<double>{0, 1, 1}));
  EXPECT_EQ(vals(where(a > 1.5, a, zeros_like(a))), (std::vector<double>{0, 2, 3}));
}

}  // namespace

// The error list in one place: every kind of bad input raises vgrad::Error
// (also in release builds) whose message names the op, the shapes and the failing
// dimension or value. The other test files check more cases of each.
#include "support.h"

namespace {

using namespace vgrad;

TEST(Errors, ShapeMismatch) {
  EXPECT_ERROR((matmul(zeros({64, 784}), zeros({256, 10}))), "matmul: [64, 784] @ [256, 10]: inner dimensions differ (784 vs 256)");
  EXPECT_ERROR((cat({zeros({2, 3}), zeros({2, 4})}, 0)), "cat", "[2, 4]", "[2, 3]", "dim 1");
  EXPECT_ERROR((zeros({3}).copy_(zeros({2, 3}))), "copy_", "[2, 3]", "[3]");
  EXPECT_ERROR((linear(zeros({4, 5}), zeros({3, 6}))), "linear", "[4, 5]", "5 features, expected 6");
  EXPECT_ERROR((einsum("ij,jk->ik", zeros({3, 4}), zeros({5, 6}))), "einsum", "index 'j' has size 4 in a but 5 in b");
}

TEST(Errors, IncompatibleBroadcast) {
  EXPECT_ERROR((zeros({100, 4}) + zeros({100})), "add: cannot broadcast [100, 4] with [100] (dim 1: 4 vs 100)");
  EXPECT_ERROR((zeros({64, 10}) * zeros({32, 10})), "mul: cannot broadcast [64, 10] with [32, 10] (dim 0: 64 vs 32)");
  EXPECT_ERROR((zeros({3}).expand({2, 4})), "expand: cannot expand [3] to [2, 4] (dim 1: 3 vs 4)");
  EXPECT_ERROR((matmul(zeros({2, 3, 4}), zeros({3, 4, 5}))), "matmul: cannot broadcast [2] with [3] (dim 0: 2 vs 3)");
}

TEST(Errors, BadAxis) {
  const Tensor x = zeros({2, 3});
  EXPECT_ERROR(sum(x, {2}), "sum: axis 2 out of range for a tensor of 2 dims");
  EXPECT_ERROR(mean(x, {-3}), "mean: axis -3 out of range for a tensor of 2 dims");
  EXPECT_ERROR(argmax(x, 5), "argmax: axis 5 out of range");
  EXPECT_ERROR(softmax(x, 2), "softmax: axis 2 out of range");
  EXPECT_ERROR(x.transpose(0, 2), "transpose: axis 2 out of range");
  EXPECT_ERROR(x.squeeze(-3), "squeeze: axis -3 out of range");
  EXPECT_ERROR(cat({x, x}, 2), "cat: axis 2 out of range");
}

TEST(Errors, ReshapeToWrongCount) {
  EXPECT_ERROR((zeros({2, 3}).reshape({4, 2})), "reshape: cannot reshape [2, 3] (6 elements) to [4, 2] (8 elements)");
  EXPECT_ERROR((zeros({2, 3}).reshape({4, -1})), "reshape: cannot reshape [2, 3] (6 elements) to [4, -1]");
  EXPECT_ERROR((zeros({2, 3}).view({7})), "cannot reshape [2, 3] (6 elements) to [7]");  // view() reuses reshape's check
}

TEST(Errors, ItemOfNonScalar) {
  EXPECT_ERROR((zeros({2, 3}).item()), "item: tensor of shape [2, 3] has 6 elements, expected exactly 1");
  EXPECT_ERROR((arange(4).item<int64_t>()), "item: tensor of shape [4] has 4 elements");
}

TEST(Errors, DtypeMismatch) {
  EXPECT_ERROR((matmul(arange(4).reshape({2, 2}), arange(4).reshape({2, 2}))), "matmul: [2, 2] @ [2, 2]",
               "needs float32 or float64", "int64");
  EXPECT_ERROR((exp(arange(3))), "exp: not defined for int64 tensors");
  EXPECT_ERROR((zeros({2}).data<int64_t>()), "data: tensor is float32, asked for int64");
  EXPECT_ERROR((index_select(zeros({3}), 0, zeros({1}))), "index_select: index must be a 1-D int64 tensor", "float32");
}

TEST(Errors, IndexOutOfRange) {
  const Tensor x = zeros({3, 4});
  EXPECT_ERROR((x.index_select(0, tensor(std::vector<int64_t>{0, 3}))),
               "index_select: index 3 out of range for dim 0 of size 3 (position 1)");
  EXPECT_ERROR(x.select(1, 4), "select: index 4 out of range for axis 1 of size 4 (shape [3, 4])");
  EXPECT_ERROR(x[-4], "select: index -4 out of range for axis 0 of size 3");
  EXPECT_ERROR(x.narrow(0, 2, 2), "narrow: range [2, 4) out of bounds for axis 0 of size 3 (shape [3, 4])");
}

TEST(Errors, NoCudaInThisBuild) {
  if (cuda_is_available()) GTEST_SKIP() << "a GPU is present";
  EXPECT_ERROR(zeros({2}).to(cuda_device()), "cuda");
}

}  // namespace

// Mixed dtypes in matmul, linear and einsum promote as elementwise ops do (int64 <
// float32 < float64): values equal the same-dtype product, and each operand's
// gradient comes back in its own dtype (gradcheck in float64 runs through the casts).
#include <gtest/gtest.h>

#include "support.h"
#include "vgrad.h"

namespace {

using namespace vgrad;
using vgrad_test::uniform_tensor;
using vgrad_test::vals;

TEST(Promotion, MatmulFloat32WithFloat64GivesFloat64) {
  const Tensor a = uniform_tensor({3, 4}, 1), b = uniform_tensor({4, 2}, 2, -2, 2, DType::Float64);
  const Tensor out = matmul(a, b);
  EXPECT_EQ(out.dtype(), DType::Float64);
  vgrad_test::expect_near_all(vals(out), vals(matmul(a.to(DType::Float64), b)), 1e-15);
  EXPECT_EQ(matmul(b.t(), a.t()).dtype(), DType::Float64);  // either side, transposed views too
}

TEST(Promotion, MatmulInt64WithFloat32GivesFloat32AndInt64AloneStaysAnError) {
  const Tensor idx = tensor({1, 0, 2, 1}, {2, 2});
  const Tensor w = tensor({0.5f, -1.f, 2.f, 3.f}, {2, 2});
  const Tensor out = matmul(idx, w);
  EXPECT_EQ(out.dtype(), DType::Float32);
  EXPECT_EQ(vals(out), (std::vector<double>{0.5, -1, 3, 1}));  // [1 0; 2 1]·[.5 -1; 2 3]
  EXPECT_ERROR(matmul(idx, idx), "matmul: [2, 2] @ [2, 2]", "needs float32 or float64", "int64");
}

TEST(Promotion, GradientsReturnInEachOperandsDtype) {
  Tensor a = uniform_tensor({3, 4}, 3).requires_grad_();
  Tensor b = uniform_tensor({4, 2}, 4, -2, 2, DType::Float64).requires_grad_();
  matmul(a, b).sum().backward();
  EXPECT_EQ(a.grad().dtype(), DType::Float32);
  EXPECT_EQ(b.grad().dtype(), DType::Float64);
  // da = 1·bᵀ: row sums of b, for every row of a.
  const Tensor expected = sum(b, {1}).to(DType::Float32);
  vgrad_test::expect_near_all(vals(a.grad().select(0, 0)), vals(expected), 1e-6);
}

TEST(Promotion, LinearWithAFloat32LayerOnFloat64InputPromotes) {
  manual_seed(5);
  nn::Linear fc(4, 3);  // float32 parameters
  const Tensor x = uniform_tensor({5, 4}, 6, -2, 2, DType::Float64);
  const Tensor y = fc(x);
  EXPECT_EQ(y.dtype(), DType::Float64);
  const Tensor reference = matmul(x, fc.weight.to(DType::Float64).t()) + fc.bias.to(DType::Float64);
  vgrad_test::expect_near_all(vals(y), vals(reference), 1e-12);
  y.sum().backward();
  EXPECT_EQ(fc.weight.grad().dtype(), DType::Float32);
  // A float64 bias with float32 input and weight promotes the whole product.
  EXPECT_EQ(linear(uniform_tensor({2, 4}, 7), fc.weight.detach(), zeros({3}, {.dtype = DType::Float64})).dtype(),
            DType::Float64);
}

TEST(Promotion, GradcheckThroughMixedDtypeMatmulAndEinsum) {
  // gradcheck hands fn float64 copies; the float32 weight below is mixed in by fn itself.
  const Tensor w32 = uniform_tensor({4, 3}, 8);
  const auto report = autograd::gradcheck(
      [&](const std::vector<Tensor>& in) { return matmul(in[0], w32) + einsum("ij,jk->ik", in[0], w32); },
      {uniform_tensor({2, 4}, 9)});
  EXPECT_TRUE(report.ok) << report.message;
  EXPECT_EQ(einsum("ij,jk->ik", uniform_tensor({2, 4}, 10), uniform_tensor({4, 3}, 11, -2, 2, DType::Float64)).dtype(),
            DType::Float64);
}

}  // namespace

// Tests for matmul, linear and einsum against a naive triple loop: 2-D,
// transposed and sliced operands (views), batched and broadcast batch dims,
// 1-D operands, float64, einsum equations, and the error messages (CPU); their
// gradients on every device (autograd/ops/matmul.cpp).
#include <array>

#include "op_check.h"

namespace {

using namespace vgrad;
using namespace vgrad_test;  // the op tests' shared helpers (op_check.h, support.h)

// Naive batched matmul with NumPy batch broadcasting: a (..., M, K) @ b (..., K, N).
vgrad_test::Shape naive_matmul_shape(const Shape& sa, const Shape& sb) {
  const Shape ba(sa.begin(), sa.end() - 2), bb(sb.begin(), sb.end() - 2);
  Shape out = broadcast_shapes(ba, bb, "naive");
  out.push_back(sa[sa.size() - 2]);
  out.push_back(sb.back());
  return out;
}

std::vector<double> naive_matmul(const std::vector<double>& a, const Shape& sa, const std::vector<double>& b,
                                 const Shape& sb) {
  const int64_t m = sa[sa.size() - 2], k = sa.back(), n = sb.back();
  const Shape out_shape = naive_matmul_shape(sa, sb);
  const Shape batch(out_shape.begin(), out_shape.end() - 2);
  const Shape ba(sa.begin(), sa.end() - 2), bb(sb.begin(), sb.end() - 2);
  std::vector<double> out;
  for (int64_t bi = 0; bi < numel(batch); ++bi) {
    const auto index = vgrad_test::unravel(bi, batch);
    const int64_t a0 = vgrad_test::broadcast_source(index, ba) * m * k, b0 = vgrad_test::broadcast_source(index, bb) * k * n;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t p = 0; p < k; ++p) s += a[a0 + i * k + p] * b[b0 + p * n + j];
        out.push_back(s);
      }
  }
  return out;
}

double tol(DType dtype) { return dtype == DType::Float32 ? 1e-4 : 1e-12; }

class MatmulOp : public vgrad_test::OnEachDevice {
 protected:
  // matmul(a, b) where a and b may be views, against the naive loop on their values, in
  // their dtype and every layout. Gradients: the Gradient* tests (small shapes).
  void check_matmul(const Tensor& a, const Tensor& b, const std::string& what) {
    const Reference naive = [](const std::vector<HostValues>& in) {
      return HostValues{naive_matmul_shape(in[0].shape, in[1].shape),
                        naive_matmul(in[0].values, in[0].shape, in[1].values, in[1].shape)};
    };
    check(what, [](const Inputs& in) { return matmul(in[0], in[1]); }, naive, {a, b},
          {.dtypes = {a.dtype()}, .float32_tol = tol(DType::Float32), .float64_tol = tol(DType::Float64),
           .gradient = false});
  }
};

TEST_P(MatmulOp, TwoDimVsNaive) {
  for (DType dtype : {DType::Float32, DType::Float64}) {
    const std::string d = dtype_name(dtype);
    for (auto [m, k, n] : std::vector<std::array<int64_t, 3>>{{3, 4, 5}, {1, 7, 1}, {6, 1, 4}, {17, 33, 9}, {64, 784, 10}})
      check_matmul(rand_tensor({m, k}, 1, dtype), rand_tensor({k, n}, 2, dtype),
                   d + " " + std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n));
  }
  // Hand-computed.
  const Tensor a = tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3}), b = tensor({7.f, 8.f, 9.f, 10.f, 11.f, 12.f}, {3, 2});
  expect_tensor_near(matmul(a, b), {2, 2}, {58, 64, 139, 154}, 0);
  expect_tensor_near(a.matmul(b), {2, 2}, {58, 64, 139, 154}, 0);
  expect_tensor_near(matmul(a, eye(3)), {2, 3}, {1, 2, 3, 4, 5, 6}, 0);
}

TEST(Matmul, Float64KeepsPrecision) {
  // 1 + 1e-12 is lost in float32 but kept in float64.
  const Tensor a = tensor(std::vector<double>{1, 1e-12}, {1, 2}), b = tensor(std::vector<double>{1, 1}, {2, 1});
  const Tensor c = matmul(a, b);
  EXPECT_EQ(c.dtype(), DType::Float64);
  EXPECT_EQ(c.item(), 1 + 1e-12);
}

TEST_P(MatmulOp, TransposedAndSlicedOperands) {
  for (DType dtype : {DType::Float32, DType::Float64}) {
    const Tensor at = rand_tensor({7, 5}, 3, dtype);  // a = at.t(): (5, 7)
    const Tensor bt = rand_tensor({9, 7}, 4, dtype);  // b = bt.t(): (7, 9)
    const Tensor a = rand_tensor({5, 7}, 5, dtype), b = rand_tensor({7, 9}, 6, dtype);
    ASSERT_FALSE(at.t().is_contiguous());
    check_matmul(at.t(), b, "aT @ b");
    check_matmul(a, bt.t(), "a @ bT");
    check_matmul(at.t(), bt.t(), "aT @ bT");
    check_matmul(b.t(), a.t(), "bT @ aT");
    // Row ranges and column steps (a leading dimension larger than the width, and a copy).
    const Tensor wide = rand_tensor({12, 20}, 7, dtype);
    check_matmul(wide.narrow(0, 2, 5).narrow(1, 3, 7), b, "narrowed a");
    check_matmul(a, wide.narrow(0, 1, 7).narrow(1, 4, 9), "narrowed b");
    check_matmul(wide.slice(1, 0, 14, 2).narrow(0, 0, 5), b, "column-stepped a");
    check_matmul(a, rand_tensor({14, 18}, 8, dtype).slice(0, 0, 14, 2).slice(1, 1, 18, 2), "row- and column-stepped b");
  }
}

TEST_P(MatmulOp, ExpandedOperands) {
  // Stride-0 rows and columns cannot go to BLAS as they are; the values must still be right.
  const Tensor row = rand_tensor({1, 6}, 8, DType::Float64).expand({4, 6});
  const Tensor col = rand_tensor({6, 1}, 9, DType::Float64).expand({6, 3});
  check_matmul(row, col, "expanded both");
  check_matmul(rand_tensor({4, 6}, 10, DType::Float64), col, "expanded b");
}

TEST_P(MatmulOp, BatchedAndBroadcastBatchDims) {
  for (DType dtype : {DType::Float32, DType::Float64}) {
    check_matmul(rand_tensor({4, 3, 5}, 11, dtype), rand_tensor({4, 5, 2}, 12, dtype), "(4,3,5)@(4,5,2)");
    check_matmul(rand_tensor({2, 1, 3, 4}, 13, dtype), rand_tensor({5, 4, 2}, 14, dtype), "(2,1,3,4)@(5,4,2)");
    EXPECT_EQ(matmul(zeros({2, 1, 3, 4}, {.dtype = dtype}), zeros({5, 4, 2}, {.dtype = dtype})).shape(),
              (Shape{2, 5, 3, 2}));
    check_matmul(rand_tensor({2, 3, 4, 5}, 15, dtype), rand_tensor({5, 6}, 16, dtype), "(2,3,4,5)@(5,6) folded");
    check_matmul(rand_tensor({3, 5}, 17, dtype), rand_tensor({4, 5, 6}, 18, dtype), "(3,5)@(4,5,6)");
    check_matmul(rand_tensor({1, 3, 5}, 19, dtype), rand_tensor({4, 5, 6}, 20, dtype), "(1,3,5)@(4,5,6)");
    check_matmul(rand_tensor({3, 1, 2, 5}, 21, dtype), rand_tensor({1, 4, 5, 3}, 22, dtype), "(3,1,2,5)@(1,4,5,3)");
  }
  // Batched views: transposed inner dims, permuted batch, non-contiguous (…, M, K) with a 2-D b.
  const Tensor x = rand_tensor({4, 5, 3}, 23, DType::Float64);
  const Tensor y = rand_tensor({4, 5, 6}, 24, DType::Float64);
  check_matmul(x.transpose(1, 2), y, "batched aT @ b");
  check_matmul(y.transpose(1, 2), x, "batched bT @ a");
  const Tensor z = rand_tensor({3, 4, 5}, 25, DType::Float64).permute({1, 0, 2});  // (4, 3, 5) with a permuted batch
  check_matmul(z, y, "permuted batch");
  check_matmul(z, rand_tensor({5, 2}, 26, DType::Float64), "permuted (…,M,K) @ (K,N)");
  check_matmul(x.transpose(1, 2), rand_tensor({5, 2}, 27, DType::Float64), "transposed (…,M,K) @ (K,N)");
  check_matmul(rand_tensor({2, 5}, 28, DType::Float64).expand({4, 2, 5}), x, "expanded batch a");
  check_matmul(x.transpose(1, 2).slice(0, 0, 4, 2), y.slice(0, 1, 4, 2), "stepped batches");
}

TEST(Matmul, OneDimOperands) {
  const Tensor v = tensor({1.f, 2.f, 3.f}), w = tensor({4.f, 5.f, 6.f});
  const Tensor dot = matmul(v, w);
  EXPECT_EQ(dot.dim(), 0);
  EXPECT_EQ(dot.item(), 32);
  const Tensor m = tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {3, 2});
  expect_tensor_near(matmul(v, m), {2}, {22, 28}, 0);                          // (K) @ (K, N) -> (N)
  expect_tensor_near(matmul(m.t(), v), {2}, {22, 28}, 0);                      // (M, K) @ (K) -> (M)
  const Tensor batch = rand_tensor({4, 3, 2}, 29, DType::Float64);
  const Tensor vd = v.to(DType::Float64);
  const Tensor left = matmul(vd, batch);                                        // (K) @ (B, K, N) -> (B, N)
  EXPECT_EQ(left.shape(), (Shape{4, 2}));
  expect_tensor_near(left, {4, 2}, naive_matmul(vals(vd), {1, 3}, vals(batch), {4, 3, 2}), 1e-12);
  const Tensor right = matmul(batch.transpose(1, 2), vd);                       // (B, M, K) @ (K) -> (B, M)
  expect_tensor_near(right, {4, 2}, naive_matmul(vals(batch.transpose(1, 2)), {4, 2, 3}, vals(vd), {3, 1}), 1e-12);
  EXPECT_ERROR((matmul(v, tensor({1.f, 2.f}))), "matmul", "inner dimensions differ (3 vs 2)");
}

TEST(Matmul, EmptyDims) {
  // K = 0: a sum of nothing, zeros. M = 0 or N = 0: empty results.
  expect_tensor_near(matmul(zeros({2, 0}), zeros({0, 3})), {2, 3}, std::vector<double>(6, 0.0), 0);
  EXPECT_EQ(matmul(zeros({0, 4}), zeros({4, 3})).shape(), (Shape{0, 3}));
  EXPECT_EQ(matmul(zeros({2, 4}), zeros({4, 0})).shape(), (Shape{2, 0}));
  EXPECT_EQ(matmul(zeros({0, 2, 4}), zeros({4, 3})).shape(), (Shape{0, 2, 3}));
}

TEST(Matmul, Errors) {
  EXPECT_ERROR((matmul(zeros({64, 784}), zeros({256, 10}))), "matmul: [64, 784] @ [256, 10]: inner dimensions differ (784 vs 256)");
  EXPECT_ERROR((matmul(zeros({2, 3, 4}), zeros({2, 5, 6}))), "matmul", "[2, 3, 4] @ [2, 5, 6]", "(4 vs 5)");
  EXPECT_ERROR((matmul(zeros({2, 3, 4}), zeros({3, 4, 6}))), "matmul: cannot broadcast [2] with [3]");
  EXPECT_ERROR((matmul(arange(6).reshape({2, 3}), arange(6).reshape({3, 2}))), "matmul", "needs float32 or float64",
               "int64");
  EXPECT_ERROR((matmul(scalar_tensor(1), zeros({3}))), "matmul", "at least 1 dim");
  EXPECT_ERROR((matmul(zeros({3}), scalar_tensor(1))), "matmul", "at least 1 dim");
}

// ---------------- linear ----------------

TEST(Linear, MatchesXWtPlusB) {
  for (DType dtype : {DType::Float32, DType::Float64}) {
    const Tensor x = rand_tensor({8, 5}, 30, dtype), w = rand_tensor({3, 5}, 31, dtype), b = rand_tensor({3}, 32, dtype);
    const auto ref = naive_matmul(vals(x), {8, 5}, vals(w.t()), {5, 3});
    std::vector<double> with_bias = ref;
    const auto vb = vals(b);
    for (size_t i = 0; i < with_bias.size(); ++i) with_bias[i] += vb[i % 3];
    expect_tensor_near(linear(x, w, b), {8, 3}, with_bias, tol(dtype), "linear with bias");
    expect_tensor_near(linear(x, w), {8, 3}, ref, tol(dtype), "linear without bias");
    // Transposed x and w views.
    const Tensor xt = rand_tensor({5, 8}, 33, dtype), wt = rand_tensor({5, 3}, 34, dtype);
    std::vector<double> ref_t = naive_matmul(vals(xt.t()), {8, 5}, vals(wt), {5, 3});
    for (size_t i = 0; i < ref_t.size(); ++i) ref_t[i] += vb[i % 3];
    expect_tensor_near(linear(xt.t(), wt.t(), b), {8, 3}, ref_t, tol(dtype), "linear of views");
    // (…, D_in) input.
    const Tensor x3 = rand_tensor({2, 4, 5}, 35, dtype);
    std::vector<double> ref3 = naive_matmul(vals(x3), {8, 5}, vals(w.t()), {5, 3});
    for (size_t i = 0; i < ref3.size(); ++i) ref3[i] += vb[i % 3];
    expect_tensor_near(linear(x3, w, b), {2, 4, 3}, ref3, tol(dtype), "linear 3-D");
  }
}

TEST(Linear, EmptyDims) {
  // No input features: the output is the bias (or zeros); no rows: an empty output.
  expect_tensor_near(linear(zeros({2, 0}), zeros({3, 0}), tensor({1.f, 2.f, 3.f})), {2, 3}, {1, 2, 3, 1, 2, 3}, 0);
  expect_tensor_near(linear(zeros({2, 0}), zeros({3, 0})), {2, 3}, std::vector<double>(6, 0.0), 0);
  EXPECT_EQ(linear(zeros({0, 4}), zeros({3, 4}), zeros({3})).shape(), (Shape{0, 3}));
  EXPECT_EQ(linear(zeros({2, 4}), zeros({0, 4})).shape(), (Shape{2, 0}));
}

TEST(Linear, Errors) {
  EXPECT_ERROR((linear(zeros({4, 5}), zeros({3, 6}))), "linear: input [4, 5] has 5 features, expected 6");
  EXPECT_ERROR((linear(zeros({4, 5}), zeros({5}))), "linear: weight must be 2-D");
  EXPECT_ERROR((linear(zeros({4, 5}), zeros({3, 5}), zeros({4}))), "linear: bias [4] does not match weight [3, 5]");
}

// ---------------- linear_relu ----------------

// relu(x·wᵀ + b) on the host: x (N, D), w (O, D), b (O) or absent.
HostValues naive_linear_relu(const std::vector<HostValues>& in) {
  const int64_t rows = in[0].shape[0], features = in[0].shape[1], outputs = in[1].shape[0];
  HostValues out{{rows, outputs}, {}};
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < outputs; ++j) {
      double z = in.size() > 2 ? in[2].values[j] : 0.0;
      for (int64_t p = 0; p < features; ++p) z += in[0].values[i * features + p] * in[1].values[j * features + p];
      out.values.push_back(std::max(z, 0.0));
    }
  return out;
}

TEST_P(MatmulOp, LinearReluVsNaive) {
  // Odd sizes (1, 3, 17) and a wide batch; check() also runs non-contiguous copies of the inputs.
  for (const auto& [rows, features, outputs] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {3, 17, 5}, {17, 3, 1000}}) {
    const std::string what = "linear_relu " + std::to_string(rows) + "x" + std::to_string(features) + " -> " +
                              std::to_string(outputs);
    check(what, [](const Inputs& in) { return linear_relu(in[0], in[1], in[2]); }, naive_linear_relu,
          {rand_tensor({rows, features}, 50), rand_tensor({outputs, features}, 51), rand_tensor({outputs}, 52)},
          {.float32_tol = tol(DType::Float32), .float64_tol = tol(DType::Float64), .gradient = false});
    check(what + " without bias", [](const Inputs& in) { return linear_relu(in[0], in[1]); }, naive_linear_relu,
          {rand_tensor({rows, features}, 53), rand_tensor({outputs, features}, 54)},
          {.float32_tol = tol(DType::Float32), .float64_tol = tol(DType::Float64), .gradient = false});
  }
}

TEST_P(MatmulOp, GradientLinearRelu) {
  const auto with_bias = [](const Inputs& in) { return linear_relu(in[0], in[1], in[2]); };
  check_gradient("linear_relu with bias", with_bias, {rnd({4, 3}), rnd({5, 3}), rnd({5})});
  check_gradient("linear_relu without bias", [](const Inputs& in) { return linear_relu(in[0], in[1]); },
                 {rnd({4, 3}), rnd({5, 3})});
  check_gradient("linear_relu 3-D input", with_bias, {rnd({2, 4, 3}), rnd({5, 3}), rnd({5})});
  check_gradient("linear_relu 1-D input", with_bias, {rnd({3}), rnd({5, 3}), rnd({5})});
  check_gradient("linear_relu transposed weight", [](const Inputs& in) { return linear_relu(in[0], in[1].t(), in[2]); },
                 {rnd({4, 3}), rnd({3, 5}), rnd({5})});
  check_gradient("linear_relu transposed input", [](const Inputs& in) { return linear_relu(in[0].t(), in[1], in[2]); },
                 {rnd({3, 4}), rnd({5, 3}), rnd({5})});
}

// The values and every gradient of relu(linear(x, w, b)), bit for bit on the CPU (both run the
// same GEMM, bias and ReLU), including where x·wᵀ + b is exactly 0: there the gradient is 0, as
// PyTorch's relu. Zero rows of x and zero biases make pre-activations exactly 0.
TEST(LinearRelu, IsReluOfLinearValuesAndGradientsIncludingAtZero) {
  for (const DType dtype : {DType::Float32, DType::Float64}) {
    for (const bool with_bias : {true, false}) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + (with_bias ? " with bias" : " without bias"));
      std::vector<double> xv(6 * 4), wv(5 * 4), bv(5), gv(6 * 5);
      for (size_t i = 0; i < xv.size(); ++i) xv[i] = double(int(i * 7 % 5) - 2);
      for (size_t i = 0; i < 4; ++i) xv[i] = xv[3 * 4 + i] = 0.0;  // rows 0 and 3: z = b, 0 where b is
      for (size_t i = 0; i < wv.size(); ++i) wv[i] = double(int(i * 3 % 4) - 1) * 0.5;
      for (size_t i = 0; i < bv.size(); ++i) bv[i] = double(int(i % 3) - 1);
      for (size_t i = 0; i < gv.size(); ++i) gv[i] = 1.0 + double(i % 4);
      auto leaf = [&](const std::vector<double>& v, const Shape& shape) {
        return tensor(v, shape, {.dtype = DType::Float64}).to(dtype).requires_grad_();
      };
      const Tensor upstream = tensor(gv, {6, 5}, {.dtype = DType::Float64}).to(dtype);
      Tensor x1 = leaf(xv, {6, 4}), w1 = leaf(wv, {5, 4}), b1 = leaf(bv, {5});
      Tensor x2 = leaf(xv, {6, 4}), w2 = leaf(wv, {5, 4}), b2 = leaf(bv, {5});
      const Tensor fused = linear_relu(x1, w1, with_bias ? b1 : Tensor());
      const Tensor composed = relu(linear(x2, w2, with_bias ? b2 : Tensor()));
      const Tensor pre = linear(x2, w2, with_bias ? b2 : Tensor()).detach();
      int zeros_at_kink = 0;
      for (double z : vals(pre)) zeros_at_kink += z == 0.0;
      EXPECT_GE(zeros_at_kink, 3) << "the case must reach ReLU's kink";
      EXPECT_EQ(vals(fused), vals(composed));
      (fused * upstream).sum().backward();
      (composed * upstream).sum().backward();
      EXPECT_EQ(vals(x1.grad()), vals(x2.grad()));
      EXPECT_EQ(vals(w1.grad()), vals(w2.grad()));
      if (with_bias) EXPECT_EQ(vals(b1.grad()), vals(b2.grad()));
      else EXPECT_FALSE(b1.grad().defined());
      // At the kink the gradient is 0: db_j = Σ over rows with z > 0 of g (never g at z = 0).
      if (with_bias) {
        const std::vector<double> z = vals(pre);
        for (int64_t j = 0; j < 5; ++j) {
          double expected = 0;
          for (int64_t i = 0; i < 6; ++i) expected += z[i * 5 + j] > 0 ? gv[i * 5 + j] : 0.0;
          EXPECT_EQ(vals(b1.grad())[j], expected) << "bias " << j;
        }
      }
    }
  }
}

TEST(LinearRelu, EmptyDimsAndErrorsNameTheOp) {
  expect_tensor_near(linear_relu(zeros({2, 0}), zeros({3, 0}), tensor({-1.f, 2.f, 0.f})), {2, 3}, {0, 2, 0, 0, 2, 0}, 0);
  EXPECT_EQ(linear_relu(zeros({0, 4}), zeros({3, 4}), zeros({3})).shape(), (Shape{0, 3}));
  EXPECT_ERROR((linear_relu(zeros({4, 5}), zeros({3, 6}))), "linear_relu: input [4, 5] has 5 features, expected 6");
  EXPECT_ERROR((linear_relu(zeros({4, 5}), zeros({5}))), "linear_relu: weight must be 2-D");
  EXPECT_ERROR((linear_relu(zeros({4, 5}), zeros({3, 5}), zeros({4}))),
               "linear_relu: bias [4] does not match weight [3, 5]");
}

// ---------------- einsum ----------------

TEST(Einsum, CommonContractions) {
  const Tensor q = rand_tensor({2, 3, 4}, 40, DType::Float64), k = rand_tensor({2, 5, 4}, 41, DType::Float64);
  // bqd,bkd->bqk: attention scores, q @ kᵀ per batch.
  expect_tensor_near(einsum("bqd,bkd->bqk", q, k), {2, 3, 5},
                     naive_matmul(vals(q), {2, 3, 4}, vals(k.transpose(1, 2)), {2, 4, 5}), 1e-12, "bqd,bkd->bqk");
  const Tensor a = rand_tensor({3, 4}, 42, DType::Float64), b = rand_tensor({4, 5}, 43, DType::Float64);
  const auto ab = naive_matmul(vals(a), {3, 4}, vals(b), {4, 5});
  expect_tensor_near(einsum("ij,jk->ik", a, b), {3, 5}, ab, 1e-12, "ij,jk->ik");
  expect_tensor_near(einsum("ij,jk", a, b), {3, 5}, ab, 1e-12, "implicit output");
  expect_tensor_near(einsum(" ij , jk -> ik ", a, b), {3, 5}, ab, 1e-12, "spaces");
  expect_tensor_near(einsum("ij,jk->ki", a, b), {5, 3}, vals(tensor(ab, {3, 5}).t()), 1e-12, "transposed output");
  // ij,ij->i: row-wise dot products.
  const Tensor c = rand_tensor({3, 4}, 44, DType::Float64);
  std::vector<double> rowdot(3, 0.0);
  const auto va = vals(a), vc = vals(c);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) rowdot[i] += va[i * 4 + j] * vc[i * 4 + j];
  expect_tensor_near(einsum("ij,ij->i", a, c), {3}, rowdot, 1e-12, "ij,ij->i");
  double total = 0;
  for (double r : rowdot) total += r;
  expect_tensor_near(einsum("ij,ij->", a, c), {}, {total}, 1e-12, "ij,ij->");
  // bij,bjk->bik: batched matmul.
  const Tensor x = rand_tensor({3, 2, 4}, 45, DType::Float64), y = rand_tensor({3, 4, 5}, 46, DType::Float64);
  expect_tensor_near(einsum("bij,bjk->bik", x, y), {3, 2, 5}, naive_matmul(vals(x), {3, 2, 4}, vals(y), {3, 4, 5}),
                     1e-12, "bij,bjk->bik");
  // Outer product, matrix-vector, and an index summed out of one operand only.
  const Tensor u = tensor({1.f, 2.f}), v = tensor({3.f, 4.f, 5.f});
  expect_tensor_near(einsum("i,j->ij", u, v), {2, 3}, {3, 4, 5, 6, 8, 10}, 0, "outer");
  expect_tensor_near(einsum("ij,j->i", tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3}), v), {2}, {26, 62}, 0, "matvec");
  expect_tensor_near(einsum("ij,k->i", tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3}), v), {2}, {72, 180}, 0, "sum out");
  // Strided operands.
  expect_tensor_near(einsum("ji,jk->ik", a.t().contiguous(), b), {3, 5}, ab, 1e-12, "ji,jk");
  expect_tensor_near(einsum("ij,jk->ik", a.t().contiguous().t(), b), {3, 5}, ab, 1e-12, "view operand");
}

TEST(Einsum, Errors) {
  const Tensor a = zeros({3, 4}), b = zeros({4, 5});
  EXPECT_ERROR((einsum("ij->ji", a, b)), "einsum", "two operands");
  EXPECT_ERROR((einsum("ijk,jk->ik", a, b)), "einsum", "operand a has 2 dims but 'ijk' names 3");
  EXPECT_ERROR((einsum("ij,ik->jk", a, b)), "einsum", "index 'i' has size 3 in a but 4 in b");
  EXPECT_ERROR((einsum("ij,jk->iz", a, b)), "einsum", "output index 'z' is in no operand");
  EXPECT_ERROR((einsum("i1,jk->ik", a, b)), "einsum", "bad character '1'");
  EXPECT_ERROR((einsum("ii,jk->ik", zeros({3, 3}), b)), "einsum", "repeated index 'i'");
}

// Gradients against central differences (float64), on every device present.
TEST_P(MatmulOp, GradientMatmul2D) {
  check_gradient("(3,4)@(4,5)", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({3, 4}), rnd({4, 5})});
  check_gradient("(1,4)@(4,1)", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({1, 4}), rnd({4, 1})});
  // Transposed operands reach the GEMM as flags.
  check_gradient("aᵀ@b", [](const Inputs& in) { return matmul(in[0].t(), in[1]); }, {rnd({4, 3}), rnd({4, 5})});
  check_gradient("a@bᵀ", [](const Inputs& in) { return in[0].matmul(in[1].t()); }, {rnd({3, 4}), rnd({5, 4})});
  check_gradient("aᵀ@bᵀ", [](const Inputs& in) { return matmul(in[0].t(), in[1].t()); }, {rnd({4, 3}), rnd({5, 4})});
  // A strided (sliced) operand.
  check_gradient("slice@b", [](const Inputs& in) { return matmul(in[0].slice(1, 0, 8, 2), in[1]); }, {rnd({3, 8}), rnd({4, 5})});
}

TEST_P(MatmulOp, GradientMatmulBatched) {
  check_gradient("(2,3,4)@(2,4,5)", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({2, 3, 4}), rnd({2, 4, 5})});
  check_gradient("(2,3,4)@(4,5) folded", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({2, 3, 4}), rnd({4, 5})});
  check_gradient("(3,4)@(2,4,5)", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({3, 4}), rnd({2, 4, 5})});
  check_gradient("(2,1,3,4)@(3,4,5) broadcast batch", [](const Inputs& in) { return matmul(in[0], in[1]); },
        {rnd({2, 1, 3, 4}), rnd({3, 4, 5})});
  check_gradient("(1,3,4)@(2,4,5) broadcast batch", [](const Inputs& in) { return matmul(in[0], in[1]); },
        {rnd({1, 3, 4}), rnd({2, 4, 5})});
  check_gradient("permuted batch", [](const Inputs& in) { return matmul(in[0].permute({1, 0, 2}), in[1]); },
        {rnd({3, 2, 4}), rnd({2, 4, 5})});
  check_gradient("batched transposed", [](const Inputs& in) { return matmul(in[0], in[1].transpose(1, 2)); },
        {rnd({2, 3, 4}), rnd({2, 5, 4})});
  check_gradient("non-contiguous folded", [](const Inputs& in) { return matmul(in[0].transpose(0, 1), in[1]); },
        {rnd({3, 2, 4}), rnd({4, 5})});
}

TEST_P(MatmulOp, GradientMatmul1D) {
  check_gradient("(4)@(4,5)", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({4}), rnd({4, 5})});
  check_gradient("(3,4)@(4)", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({3, 4}), rnd({4})});
  check_gradient("(2,3,4)@(4)", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({2, 3, 4}), rnd({4})});
  check_gradient("(4)@(2,4,5)", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({4}), rnd({2, 4, 5})});
  check_gradient("(4)@(4) dot", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({4}), rnd({4})});
}

TEST_P(MatmulOp, GradientLinear) {
  check_gradient("linear with bias", [](const Inputs& in) { return linear(in[0], in[1], in[2]); }, {rnd({4, 3}), rnd({5, 3}), rnd({5})});
  check_gradient("linear without bias", [](const Inputs& in) { return linear(in[0], in[1]); }, {rnd({4, 3}), rnd({5, 3})});
  check_gradient("linear 3-D input", [](const Inputs& in) { return linear(in[0], in[1], in[2]); },
        {rnd({2, 4, 3}), rnd({5, 3}), rnd({5})});
  check_gradient("linear 1-D input", [](const Inputs& in) { return linear(in[0], in[1], in[2]); }, {rnd({3}), rnd({5, 3}), rnd({5})});
  check_gradient("linear transposed weight", [](const Inputs& in) { return linear(in[0], in[1].t(), in[2]); },
        {rnd({4, 3}), rnd({3, 5}), rnd({5})});
  check_gradient("linear transposed input", [](const Inputs& in) { return linear(in[0].t(), in[1], in[2]); },
        {rnd({3, 4}), rnd({5, 3}), rnd({5})});
}

TEST_P(MatmulOp, GradientEinsum) {
  const std::vector<std::tuple<std::string, Shape, Shape>> cases = {
      {"ij,jk->ik", {3, 4}, {4, 5}},  {"ij,jk", {3, 4}, {4, 5}},       {"bqd,bkd->bqk", {2, 3, 4}, {2, 5, 4}},
      {"i,j->ij", {3}, {4}},          {"ij,ij->i", {3, 4}, {3, 4}},    {"ij,ij->ij", {3, 4}, {3, 4}},
      {"ij,jk->ki", {3, 4}, {4, 5}},  {"ij,k->ik", {3, 4}, {5}},       {"bij,bjk->bik", {2, 3, 4}, {2, 4, 5}},
      {"i,i->", {4}, {4}},            {"ijk,k->ij", {2, 3, 4}, {4}}, {"b i d, b j d -> b i j", {2, 3, 4}, {2, 5, 4}}};
  for (const auto& [equation, sa, sb] : cases) {
    const std::string eq = equation;
    check_gradient("einsum " + eq, [eq](const Inputs& in) { return einsum(eq, in[0], in[1]); }, {rnd(sa), rnd(sb)});
  }
}

INSTANTIATE_ON_EACH_DEVICE(MatmulOp);

}  // namespace

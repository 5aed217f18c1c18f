// core/cpu/norm.cpp: the fused batch norm kernels against a naive float64 loop (values,
// statistics, gradients, with and without weight and bias, 2-D to 4-D input), and the
// checks in front of them (core/backend.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/backend.h"
#include "core/creation.h"
#include "support.h"

namespace {

using namespace vgrad;
using vgrad_test::expect_near_all;
using vgrad_test::uniform_tensor;
using vgrad_test::vals;

View view_or_empty(const Tensor& t) { return t.defined() ? t.view() : View{}; }

// The naive reference, in double, for x (N, C, S): per channel mean, biased var, y; and
// the gradients from dy by the chain rule written out term by term (not the closed form).
struct Reference {
  std::vector<double> mean, var, y, dx, dw, db;
};
Reference reference(const std::vector<double>& x, const std::vector<double>& dy, const std::vector<double>& w,
                    const std::vector<double>& b, int64_t n, int64_t c, int64_t s, double eps) {
  Reference r{std::vector<double>(size_t(c)), std::vector<double>(size_t(c)), std::vector<double>(x.size()),
              std::vector<double>(x.size()), std::vector<double>(size_t(c)), std::vector<double>(size_t(c))};
  const double m = double(n * s);
  auto at = [&](int64_t i, int64_t ch, int64_t j) { return size_t((i * c + ch) * s + j); };
  for (int64_t ch = 0; ch < c; ++ch) {
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < s; ++j) sum += x[at(i, ch, j)];
    const double mu = sum / m;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < s; ++j) sq += (x[at(i, ch, j)] - mu) * (x[at(i, ch, j)] - mu);
    const double var = sq / m, invstd = 1 / std::sqrt(var + eps);
    const double wc = w.empty() ? 1.0 : w[size_t(ch)], bc = b.empty() ? 0.0 : b[size_t(ch)];
    double dxhat_sum = 0, dxhat_xhat = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < s; ++j) {
        const double xhat = (x[at(i, ch, j)] - mu) * invstd, g = dy[at(i, ch, j)];
        r.y[at(i, ch, j)] = xhat * wc + bc;
        r.db[size_t(ch)] += g;
        r.dw[size_t(ch)] += g * xhat;
        dxhat_sum += g * wc;
        dxhat_xhat += g * wc * xhat;
      }
    // dx = (dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂))·invstd: the textbook form.
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < s; ++j) {
        const double xhat = (x[at(i, ch, j)] - mu) * invstd;
        r.dx[at(i, ch, j)] = (dy[at(i, ch, j)] * wc - dxhat_sum / m - xhat * dxhat_xhat / m) * invstd;
      }
    r.mean[size_t(ch)] = mu;
    r.var[size_t(ch)] = var;
  }
  return r;
}

struct Case {
  Shape shape;
  bool affine;
  DType dtype;
  double tol;
};

class FusedBatchNorm : public ::testing::TestWithParam<Case> {};

TEST_P(FusedBatchNorm, MatchesTheNaiveLoop) {
  const Case& k = GetParam();
  const int64_t n = k.shape[0], c = k.shape[1], s = Tensor::empty(k.shape).numel() / (n * c);
  const double eps = 1e-5;
  // Values offset from zero (mean 3) so that a one-pass E[x²] − mean² would lose digits.
  const Tensor x = uniform_tensor(k.shape, 1, 2, 4, k.dtype), dy = uniform_tensor(k.shape, 2, -1, 1, k.dtype);
  const Tensor w = k.affine ? uniform_tensor({c}, 3, 0.5, 1.5, k.dtype) : Tensor();
  const Tensor b = k.affine ? uniform_tensor({c}, 4, -1, 1, k.dtype) : Tensor();
  Tensor y = Tensor::empty(k.shape, k.dtype), mean = Tensor::empty({c}, k.dtype), var = Tensor::empty({c}, k.dtype);
  Backend& cpu = backend_for(kCPU);
  ASSERT_TRUE(cpu.batch_norm(x.view(), view_or_empty(w), view_or_empty(b), eps, y.view(), mean.view(), var.view()));
  const Reference r = reference(vals(x), vals(dy), k.affine ? vals(w) : std::vector<double>{},
                                k.affine ? vals(b) : std::vector<double>{}, n, c, s, eps);
  expect_near_all(vals(mean), r.mean, k.tol, "mean");
  expect_near_all(vals(var), r.var, k.tol, "var");
  expect_near_all(vals(y), r.y, 10 * k.tol, "y");
  Tensor dx = Tensor::empty(k.shape, k.dtype), dw = Tensor::empty({c}, k.dtype), db = Tensor::empty({c}, k.dtype);
  ASSERT_TRUE(cpu.batch_norm_backward(dy.view(), x.view(), mean.view(), var.view(), view_or_empty(w), eps, dx.view(),
                                      dw.view(), db.view()));
  expect_near_all(vals(dx), r.dx, 10 * k.tol, "dx");
  expect_near_all(vals(dw), r.dw, 10 * k.tol * double(n * s), "dweight");
  expect_near_all(vals(db), r.db, 10 * k.tol * double(n * s), "dbias");
}

INSTANTIATE_TEST_SUITE_P(Shapes, FusedBatchNorm,
                         ::testing::Values(Case{{5, 3}, true, DType::Float64, 1e-12},
                                           Case{{4, 3, 7}, false, DType::Float64, 1e-12},
                                           Case{{3, 4, 5, 6}, true, DType::Float64, 1e-12},
                                           Case{{64, 16, 28, 28}, true, DType::Float32, 2e-5},
                                           Case{{2, 5, 3, 17}, false, DType::Float32, 2e-5}));

TEST(FusedBatchNormChecks, BadInputIsRefusedNamingTheOp) {
  Backend& cpu = backend_for(kCPU);
  const Tensor x = zeros({2, 3, 4}), y = zeros({2, 3, 4}), c3 = zeros({3}), c2 = zeros({2});
  EXPECT_ERROR(cpu.batch_norm(x.view(), c2.view(), View{}, 1e-5, y.view(), c3.view(), c3.view()), "batch_norm",
               "weight [2] should have 3 values, one per channel of input [2, 3, 4]");
  EXPECT_ERROR(cpu.batch_norm(x.view(), View{}, View{}, 1e-5, zeros({2, 3}).view(), c3.view(), c3.view()),
               "batch_norm", "output [2, 3] does not match input [2, 3, 4]");
  EXPECT_ERROR(cpu.batch_norm(x.view(), View{}, View{}, 1e-5, y.view(), zeros({3}, {.dtype = DType::Float64}).view(),
                              c3.view()),
               "batch_norm: mean must be float32, got float64");
  EXPECT_ERROR(cpu.batch_norm(zeros({3}).view(), View{}, View{}, 1e-5, zeros({3}).view(), c3.view(), c3.view()),
               "batch_norm: input [3] needs at least 2 dims");
  EXPECT_ERROR(cpu.batch_norm(zeros({0, 3}).view(), View{}, View{}, 1e-5, zeros({0, 3}).view(), c3.view(), c3.view()),
               "batch_norm: input [0, 3] has no values");
  const Tensor t = zeros({4, 3, 2}).transpose(0, 2);  // (2, 3, 4), not contiguous
  EXPECT_ERROR(cpu.batch_norm(t.view(), View{}, View{}, 1e-5, y.view(), c3.view(), c3.view()), "batch_norm",
               "input [2, 3, 4] must be contiguous");
  EXPECT_ERROR(cpu.batch_norm_backward(x.view(), x.view(), c3.view(), c3.view(), View{}, 1e-5, y.view(), c3.view(),
                                       c2.view()),
               "batch_norm backward", "grad_bias [2] should have 3 values");
  // 16-bit data declines (the caller composes it), writing nothing.
  const Tensor h = zeros({2, 3}, {.dtype = DType::BFloat16});
  EXPECT_FALSE(cpu.batch_norm(h.view(), View{}, View{}, 1e-5, h.view(), c3.view(), c3.view()));
}

}  // namespace

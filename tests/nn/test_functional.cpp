// Tests for nn::functional (losses, attention) against naive loops, their gradients
// (closed forms and gradcheck), their input checks, and the nn::init initialisers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "nn/functional.h"
#include "support.h"
#include "nn/init.h"

namespace {

using namespace vgrad;
using nn::F::Reduction;
using vgrad_test::expect_near_all;
using vgrad_test::uniform_tensor;
using vgrad_test::vals;

// Naive per-row log-softmax of a row-major (N, C) buffer, in double.
std::vector<double> log_softmax_ref(const std::vector<double>& x, int64_t rows, int64_t classes) {
  std::vector<double> out(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < classes; ++c) m = std::max(m, x[r * classes + c]);
    double total = 0;
    for (int64_t c = 0; c < classes; ++c) total += std::exp(x[r * classes + c] - m);
    for (int64_t c = 0; c < classes; ++c) out[r * classes + c] = x[r * classes + c] - m - std::log(total);
  }
  return out;
}

// loss_i = −Σ_c q_ic log p_ic with q = (1−s)·onehot + s/C.
std::vector<double> cross_entropy_rows_ref(const std::vector<double>& x, const std::vector<int64_t>& t,
                                           int64_t classes, double smoothing = 0) {
  const int64_t rows = int64_t(t.size());
  const auto lp = log_softmax_ref(x, rows, classes);
  std::vector<double> out(rows);
  for (int64_t r = 0; r < rows; ++r) {
    double uniform = 0;
    for (int64_t c = 0; c < classes; ++c) uniform -= lp[r * classes + c] / double(classes);
    out[r] = (1 - smoothing) * -lp[r * classes + t[r]] + smoothing * uniform;
  }
  return out;
}

double total(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

Tensor labels(const std::vector<int64_t>& v) { return tensor(v, {int64_t(v.size())}); }

autograd::GradcheckReport check(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                                const std::vector<Tensor>& inputs) {
  return autograd::gradcheck(fn, inputs);
}

// ---------------- cross_entropy ----------------

TEST(CrossEntropy, MatchesNaiveLogSoftmaxPlusNll) {
  const int64_t rows = 6, classes = 5;
  const Tensor x = uniform_tensor({rows, classes}, 1, -3, 3);
  const std::vector<int64_t> t = {0, 4, 2, 2, 1, 3};
  const auto ref = cross_entropy_rows_ref(vals(x), t, classes);
  EXPECT_NEAR(nn::cross_entropy(x, labels(t)).item(), total(ref) / rows, 1e-5);
  EXPECT_NEAR(nn::cross_entropy(x, labels(t), Reduction::Sum).item(), total(ref), 1e-5);
  const Tensor none = nn::cross_entropy(x, labels(t), Reduction::None);
  EXPECT_EQ(none.shape(), (Shape{rows}));
  expect_near_all(vals(none), ref, 1e-5);
  // float64 logits compute in float64.
  const Tensor x64 = x.to(DType::Float64);
  const Tensor l64 = nn::cross_entropy(x64, labels(t));
  EXPECT_EQ(l64.dtype(), DType::Float64);
  EXPECT_NEAR(l64.item(), total(ref) / rows, 1e-12);
}

TEST(CrossEntropy, LabelSmoothingMatchesTheFormula) {
  const int64_t rows = 4, classes = 7;
  const Tensor x = uniform_tensor({rows, classes}, 2, -3, 3, DType::Float64);
  const std::vector<int64_t> t = {6, 0, 3, 3};
  for (double s : {0.0, 0.1, 0.25, 1.0}) {
    const auto ref = cross_entropy_rows_ref(vals(x), t, classes, s);
    EXPECT_NEAR(nn::cross_entropy(x, labels(t), Reduction::Mean, s).item(), total(ref) / rows, 1e-12) << s;
    expect_near_all(vals(nn::cross_entropy(x, labels(t), Reduction::None, s)), ref, 1e-12);
  }
  // s = 0.1 by the PyTorch formula: (1−s)·nll + (s/C)·Σ_c −log p_c, row by row.
  const auto lp = log_softmax_ref(vals(x), rows, classes);
  double expect = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double sum_neg_log = 0;
    for (int64_t c = 0; c < classes; ++c) sum_neg_log -= lp[r * classes + c];
    expect += 0.9 * -lp[r * classes + t[r]] + 0.1 / classes * sum_neg_log;
  }
  EXPECT_NEAR(nn::cross_entropy(x, labels(t), Reduction::Sum, 0.1).item(), expect, 1e-12);
  EXPECT_ERROR(nn::cross_entropy(x, labels(t), Reduction::Mean, 1.5), "label_smoothing 1.5 outside [0, 1]");
}

TEST(CrossEntropy, GradientIsSoftmaxMinusOneHotOverN) {
  const int64_t rows = 8, classes = 10;
  Tensor x = uniform_tensor({rows, classes}, 3, -4, 4).requires_grad_();
  const std::vector<int64_t> t = {0, 9, 3, 3, 5, 1, 8, 2};
  nn::cross_entropy(x, labels(t)).backward();
  const auto lp = log_softmax_ref(vals(x), rows, classes);
  std::vector<double> expect(rows * classes);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < classes; ++c)
      expect[r * classes + c] = (std::exp(lp[r * classes + c]) - (c == t[r] ? 1.0 : 0.0)) / double(rows);
  expect_near_all(vals(x.grad()), expect, 1e-6);

  // Sum: no 1/N; an upstream factor multiplies in.
  x.zero_grad();
  (nn::cross_entropy(x, labels(t), Reduction::Sum) * 3.0).backward();
  for (auto& e : expect) e *= 3.0 * rows;
  expect_near_all(vals(x.grad()), expect, 1e-6);

  // None with per-row upstream weights.
  x.zero_grad();
  const Tensor w = uniform_tensor({rows}, 4, 0.5, 2);
  nn::cross_entropy(x, labels(t), Reduction::None).backward(w);
  const auto wv = vals(w);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < classes; ++c)
      ASSERT_NEAR(vals(x.grad())[r * classes + c],
                  wv[r] * (std::exp(lp[r * classes + c]) - (c == t[r] ? 1.0 : 0.0)), 1e-6);
}

TEST(CrossEntropy, NonContiguousLogitsAndTargets) {
  // logits as the transpose of a (C, N) tensor, targets as a strided slice.
  const Tensor base = uniform_tensor({4, 6}, 40, -3, 3);
  Tensor x = base.t().requires_grad_(false);
  ASSERT_FALSE(x.is_contiguous());
  const Tensor all_targets = labels({3, 9, 0, 9, 2, 9, 1, 9, 3, 9, 0, 9});
  const Tensor t = all_targets.slice(0, 0, 12, 2);  // {3, 0, 2, 1, 3, 0}
  ASSERT_EQ(t.to_vector<int64_t>(), (std::vector<int64_t>{3, 0, 2, 1, 3, 0}));
  const auto ref = cross_entropy_rows_ref(vals(x), t.to_vector<int64_t>(), 4);
  expect_near_all(vals(nn::cross_entropy(x, t, Reduction::None)), ref, 1e-5);
  const Tensor leaf = base.detach().requires_grad_();
  nn::cross_entropy(leaf.t(), t).backward();
  const auto lp = log_softmax_ref(vals(x), 6, 4);
  const auto tv = t.to_vector<int64_t>();
  const auto g = vals(leaf.grad());  // (4, 6): g[c, n]
  for (int64_t n = 0; n < 6; ++n)
    for (int64_t c = 0; c < 4; ++c)
      EXPECT_NEAR(g[c * 6 + n], (std::exp(lp[n * 4 + c]) - (c == tv[n] ? 1.0 : 0.0)) / 6.0, 1e-6);
}

TEST(CrossEntropy, StableForHugeLogits) {
  const Tensor x = tensor({1000.0f, 0.0f, -1000.0f, 1000.0f, 1000.0f, 0.0f}, {2, 3}).requires_grad_();
  const Tensor loss = nn::cross_entropy(x, labels({0, 2}), Reduction::None);
  const auto l = vals(loss);
  ASSERT_TRUE(std::isfinite(l[0]) && std::isfinite(l[1]));
  EXPECT_NEAR(l[0], 0.0, 1e-6);                 // the right class by a margin of 1000
  EXPECT_NEAR(l[1], 1000.0 + std::log(2.0), 1e-3);  // log(2·e^1000) − 0
  sum(loss).backward();
  const auto g = vals(x.grad());
  for (double v : g) ASSERT_TRUE(std::isfinite(v));
  expect_near_all(g, {0, 0, 0, 0.5, 0.5, -1}, 1e-6);
  // Label smoothing with a −1000 logit stays finite too.
  EXPECT_TRUE(std::isfinite(nn::cross_entropy(x, labels({0, 2}), Reduction::Mean, 0.1).item()));
}

// A class masked with a -inf logit: PyTorch's values (torch 1.13), on each device. Without
// smoothing the masked class costs nothing; with it the loss is +inf (it puts s/C on that
// class); a -inf target class is +inf; a row of -inf is NaN.
TEST(CrossEntropy, MinusInfinityLogitsMaskClassesAsInPyTorch) {
  const double inf = std::numeric_limits<double>::infinity();
  for (const Device device : vgrad_test::cpu_and_gpu())
    for (const DType dtype : {DType::Float32, DType::Float64}) {
      SCOPED_TRACE(device.str() + " " + dtype_name(dtype));
      const Tensor x = tensor(std::vector<double>{0, -inf, 1, -inf, 2, -inf, 0, -inf, 1, -inf, -inf, -inf}, {4, 3})
                           .to(dtype)
                           .to(device)
                           .requires_grad_();
      const Tensor target = labels({0, 1, 1, 0}).to(device);
      const std::vector<double> loss = vals(nn::cross_entropy(x, target, Reduction::None));
      EXPECT_NEAR(loss[0], std::log1p(std::exp(1.0)), 1e-6);
      EXPECT_EQ(loss[1], 0.0);
      EXPECT_EQ(loss[2], inf);
      EXPECT_TRUE(std::isnan(loss[3]));
      const std::vector<double> smoothed = vals(nn::cross_entropy(x, target, Reduction::None, 0.1));
      EXPECT_EQ(smoothed[0], inf);
      EXPECT_EQ(smoothed[1], inf);
      nn::cross_entropy(x.narrow(0, 0, 2), target.narrow(0, 0, 2), Reduction::Sum).backward();
      const double p = 1 / (1 + std::exp(1.0));  // softmax of row 0's class 0
      expect_near_all(vals(x.grad()), {p - 1, 0, 1 - p, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 1e-6);
    }
}

TEST(CrossEntropy, RejectsOutOfRangeTargetsNamingTheRow) {
  const Tensor x = zeros({5, 10});
  EXPECT_ERROR(nn::cross_entropy(x, labels({1, 2, 3, 12, 4})),
                   "cross_entropy: target 12 out of range for 10 classes (row 3)");
  EXPECT_ERROR(nn::cross_entropy(x, labels({0, -1, 3, 5, 4})), "target -1 out of range for 10 classes (row 1)");
  EXPECT_ERROR(nn::cross_entropy(x, labels({0, 1, 2, 3, 10})), "target 10 out of range for 10 classes (row 4)");
  EXPECT_NO_THROW(nn::cross_entropy(x, labels({0, 1, 2, 3, 9})));
}

TEST(CrossEntropy, RejectsBadTargetsAndShapes) {
  const Tensor x = zeros({3, 4});
  EXPECT_ERROR(nn::cross_entropy(x, tensor({0.0f, 1.0f, 2.0f})), "targets must be int64");
  EXPECT_ERROR(nn::cross_entropy(x, labels({0, 1})), "do not match input [3, 4]");
  EXPECT_ERROR(nn::cross_entropy(zeros({3}), labels({0, 1, 2})), "expects input (N, C)");
  EXPECT_ERROR(nn::cross_entropy(zeros({2, 3}, {.dtype = DType::Int64}), labels({0, 1})), "floating point");
}

TEST(CrossEntropy, Gradcheck) {
  const Tensor x = uniform_tensor({5, 4}, 5, -2, 2, DType::Float64);
  const Tensor t = labels({3, 0, 1, 1, 2});
  for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None})
    for (double s : {0.0, 0.2}) {
      const auto report = check([&](const std::vector<Tensor>& in) { return nn::cross_entropy(in[0], in[1], r, s); },
                                {x, t});
      EXPECT_TRUE(report.ok) << report.message << " (reduction " << int(r) << ", smoothing " << s << ")";
    }
}

// ---------------- nll_loss, mse_loss, bce ----------------

TEST(NllLoss, MatchesNaiveAndEqualsCrossEntropyOfLogSoftmax) {
  const Tensor x = uniform_tensor({4, 3}, 6, -2, 2);
  const std::vector<int64_t> t = {2, 0, 1, 2};
  const Tensor lp = log_softmax(x, 1);
  const auto lpv = vals(lp);
  double sum_ref = 0;
  std::vector<double> rows(4);
  for (int r = 0; r < 4; ++r) sum_ref += rows[r] = -lpv[r * 3 + t[r]];
  EXPECT_NEAR(nn::F::nll_loss(lp, labels(t)).item(), sum_ref / 4, 1e-6);
  EXPECT_NEAR(nn::F::nll_loss(lp, labels(t), Reduction::Sum).item(), sum_ref, 1e-6);
  expect_near_all(vals(nn::F::nll_loss(lp, labels(t), Reduction::None)), rows, 1e-6);
  EXPECT_NEAR(nn::F::nll_loss(lp, labels(t)).item(), nn::cross_entropy(x, labels(t)).item(), 1e-6);
  EXPECT_ERROR(nn::F::nll_loss(lp, labels({0, 1, 3, 0})), "nll_loss: target 3 out of range for 3 classes (row 2)");
  EXPECT_ERROR(nn::F::nll_loss(lp, tensor({0.0f, 1.0f, 1.0f, 0.0f})), "int64");
  // Its gradient: −onehot/N on the log-probabilities.
  const Tensor leaf = lp.detach().requires_grad_();
  nn::F::nll_loss(leaf, labels(t)).backward();
  std::vector<double> expect(12, 0.0);
  for (int r = 0; r < 4; ++r) expect[r * 3 + t[r]] = -0.25;
  expect_near_all(vals(leaf.grad()), expect, 1e-7);
  const auto report = check([](const std::vector<Tensor>& in) { return nn::F::nll_loss(log_softmax(in[0], 1), in[1]); },
                            {x.to(DType::Float64), labels(t)});
  EXPECT_TRUE(report.ok) << report.message;
}

TEST(MseLoss, MatchesNaiveAndGradchecks) {
  const Tensor a = uniform_tensor({3, 5}, 7), b = uniform_tensor({3, 5}, 8);
  const auto av = vals(a), bv = vals(b);
  std::vector<double> sq(av.size());
  for (size_t i = 0; i < av.size(); ++i) sq[i] = (av[i] - bv[i]) * (av[i] - bv[i]);
  EXPECT_NEAR(nn::F::mse_loss(a, b).item(), total(sq) / 15, 1e-5);
  EXPECT_NEAR(nn::F::mse_loss(a, b, Reduction::Sum).item(), total(sq), 1e-4);
  expect_near_all(vals(nn::F::mse_loss(a, b, Reduction::None)), sq, 1e-5);
  const Tensor leaf = a.detach().requires_grad_();
  nn::F::mse_loss(leaf, b).backward();
  for (size_t i = 0; i < av.size(); ++i) EXPECT_NEAR(vals(leaf.grad())[i], 2 * (av[i] - bv[i]) / 15, 1e-6);
  EXPECT_ERROR(nn::F::mse_loss(a, zeros({5, 3})), "differ in shape");
  const auto report = check([](const std::vector<Tensor>& in) { return nn::F::mse_loss(in[0], in[1]); },
                            {a.to(DType::Float64), b.to(DType::Float64)});
  EXPECT_TRUE(report.ok) << report.message;
}

TEST(BceWithLogits, ValueAndGradientMatchNaive) {
  const Tensor x = uniform_tensor({4, 6}, 9, -6, 6);
  const Tensor y = uniform_tensor({4, 6}, 10, 0, 1);
  const auto xv = vals(x), yv = vals(y);
  std::vector<double> ref(xv.size()), grad(xv.size());
  for (size_t i = 0; i < xv.size(); ++i) {
    const double s = 1 / (1 + std::exp(-xv[i]));
    ref[i] = -(yv[i] * std::log(s) + (1 - yv[i]) * std::log(1 - s));
    grad[i] = (s - yv[i]) / double(xv.size());
  }
  expect_near_all(vals(nn::F::binary_cross_entropy_with_logits(x, y, Reduction::None)), ref, 1e-5);
  EXPECT_NEAR(nn::F::binary_cross_entropy_with_logits(x, y).item(), total(ref) / 24, 1e-5);
  EXPECT_NEAR(nn::F::binary_cross_entropy_with_logits(x, y, Reduction::Sum).item(), total(ref), 1e-4);
  const Tensor xl = x.detach().requires_grad_(), yl = y.detach().requires_grad_();
  nn::F::binary_cross_entropy_with_logits(xl, yl).backward();
  expect_near_all(vals(xl.grad()), grad, 1e-5);
  for (size_t i = 0; i < xv.size(); ++i) EXPECT_NEAR(vals(yl.grad())[i], -xv[i] / 24, 1e-6);
  // Stable far out: e^1000 would overflow a naive formula.
  const Tensor big = tensor({1000.0f, -1000.0f}), target = tensor({0.0f, 0.0f});
  expect_near_all(vals(nn::F::binary_cross_entropy_with_logits(big, target, Reduction::None)), {1000.0, 0.0}, 1e-6);
  EXPECT_ERROR(nn::F::binary_cross_entropy_with_logits(x, zeros({6, 4})), "differ in shape");
}

TEST(BceWithLogits, Gradcheck) {
  const Tensor x = uniform_tensor({3, 4}, 11, -3, 3, DType::Float64);
  const Tensor y = uniform_tensor({3, 4}, 12, 0, 1, DType::Float64);
  for (Reduction r : {Reduction::Mean, Reduction::None}) {
    const auto report = check(
        [r](const std::vector<Tensor>& in) { return nn::F::binary_cross_entropy_with_logits(in[0], in[1], r); }, {x, y});
    EXPECT_TRUE(report.ok) << report.message;
  }
}

TEST(OneHot, Values) {
  const Tensor h = nn::F::one_hot(labels({2, 0, 1}), 4);
  EXPECT_EQ(h.shape(), (Shape{3, 4}));
  EXPECT_EQ(h.dtype(), DType::Float32);
  EXPECT_EQ(vals(h), (std::vector<double>{0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0}));
}

// The class range is cut from one cached range per device (kernels::index_range): a
// larger count after a smaller one, and a smaller one again, each see their own 0..n-1.
TEST(OneHot, EachClassCountKeepsItsOwnRange) {
  const Tensor t = labels({1, 0, 2});
  for (int round = 0; round < 2; ++round) {
    EXPECT_EQ(vals(nn::F::one_hot(t, 3)), (std::vector<double>{0, 1, 0, 1, 0, 0, 0, 0, 1})) << round;
    EXPECT_EQ(vals(nn::F::one_hot(t, 5, DType::Int64)),
              (std::vector<double>{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0}))
        << round;
  }
  EXPECT_ERROR(nn::F::one_hot(labels({1}), -1), "one_hot: classes must be >= 0, got -1");
}

// As PyTorch ("Class values must be smaller than num_classes"): a class outside [0, classes)
// is refused, naming it and its position in row-major order (it made an all-zero row).
TEST(OneHot, AClassOutOfRangeIsRefused) {
  EXPECT_ERROR(nn::F::one_hot(labels({1, 7}), 2), "one_hot: target 7 out of range for 2 classes (row 1)");
  EXPECT_ERROR(nn::F::one_hot(labels({0, 1, 1, -1}).reshape({2, 2}), 2), "one_hot: target -1 out of range", "(row 3)");
  EXPECT_EQ(nn::F::one_hot(labels({0, 1, 1, 0}).reshape({2, 2}), 2).shape(), (Shape{2, 2, 2}));
}

TEST(CrossEntropy, EmptyBatchMeanIsRefusedLikeMeanSumIsZero) {
  // Mean over no rows used to return 0; mean() of an empty tensor throws, and so does
  // every loss now. Sum is 0 with an empty gradient; None is empty.
  EXPECT_ERROR(mean(zeros({0})), "empty axis");
  const Tensor x = zeros({0, 10}).requires_grad_();
  const Tensor none = Tensor::empty({0}, DType::Int64);
  EXPECT_ERROR(nn::cross_entropy(x, none), "cross_entropy: empty batch (input [0, 10])", "Reduction::Sum gives 0");
  EXPECT_ERROR(nn::F::nll_loss(x, none), "nll_loss: empty batch");
  EXPECT_ERROR(nn::F::mse_loss(zeros({0, 3}), zeros({0, 3})), "mse_loss: empty batch");
  EXPECT_ERROR(nn::F::binary_cross_entropy_with_logits(zeros({0}), zeros({0})),
               "binary_cross_entropy_with_logits: empty batch");
  const Tensor total = nn::cross_entropy(x, none, Reduction::Sum);
  EXPECT_EQ(total.item(), 0.0);
  total.backward();
  EXPECT_EQ(x.grad().shape(), (Shape{0, 10}));
  EXPECT_EQ(nn::cross_entropy(x, none, Reduction::None).shape(), (Shape{0}));
  EXPECT_EQ(nn::F::nll_loss(x, none, Reduction::Sum).item(), 0.0);
}

// ---------------- masked classes, ignore_index, class weights ----------------

constexpr int64_t kIgnore = nn::kPyTorchIgnoreIndex;  // passed where a test ignores rows

// A class masked with a -inf log-probability that is not the target: PyTorch (2.15) gives
// 0.40760594606399536. nll_loss picked the target by a product with one_hot, and -inf·0 made NaN.
TEST(NllLoss, MinusInfinityOfAnotherClassDoesNotMakeNaN) {
  const double inf = std::numeric_limits<double>::infinity();
  for (const Device device : vgrad_test::cpu_and_gpu())
    for (const DType dtype : {DType::Float32, DType::Float64}) {
      SCOPED_TRACE(device.str() + " " + dtype_name(dtype));
      const Tensor lp = log_softmax(tensor(std::vector<double>{-inf, 0, 1, 2}, {1, 4}).to(dtype).to(device), 1)
                            .detach()
                            .requires_grad_();
      const Tensor loss = nn::nll_loss(lp, labels({3}).to(device));
      EXPECT_NEAR(loss.item(), 0.40760594606399536, 1e-6);
      loss.backward();
      EXPECT_EQ(vals(lp.grad()), (std::vector<double>{0, 0, 0, -1})) << "the gradient reaches the target only";
      const Tensor weighted = nn::nll_loss(lp, labels({3}).to(device), Reduction::Sum, full({4}, 2.0).to(device));
      EXPECT_NEAR(weighted.item(), 2 * 0.40760594606399536, 1e-6);
    }
}

// Rows whose target is ignore_index add nothing: not to the sum, not to the mean's count. An
// ignored value is never range-checked; every other bad target still is, naming its row.
// ignore_index is opt-in (nn::kPyTorchIgnoreIndex is PyTorch's default): without it -100 is a
// bad target like any other.
TEST(CrossEntropy, IgnoredRowsAddNothingAndOtherBadTargetsAreStillRefused) {
  const Tensor x = uniform_tensor({4, 3}, 30, -2, 2, DType::Float64);
  const Tensor w = tensor(std::vector<double>{0.5, 2.0, 1.5});
  const auto rows = vals(nn::cross_entropy(x, labels({2, 0, 1, 1}), Reduction::None));
  for (const Device device : vgrad_test::cpu_and_gpu()) {
    SCOPED_TRACE(device.str());
    const Tensor xd = x.to(device), wd = w.to(device), target = labels({2, -100, 1, -100}).to(device);
    // Without weight (the fused kernel, masked) and with one.
    EXPECT_NEAR(nn::cross_entropy(xd, target, Reduction::Mean, 0.0, Tensor(), kIgnore).item(), (rows[0] + rows[2]) / 2,
                1e-12);
    EXPECT_NEAR(nn::cross_entropy(xd, target, Reduction::Sum, 0.0, Tensor(), kIgnore).item(), rows[0] + rows[2], 1e-12);
    EXPECT_EQ(vals(nn::cross_entropy(xd, target, Reduction::None, 0.0, Tensor(), kIgnore)),
              (std::vector<double>{rows[0], 0, rows[2], 0}));
    EXPECT_NEAR(nn::cross_entropy(xd, target, Reduction::Mean, 0.0, wd, kIgnore).item(),
                (1.5 * rows[0] + 2.0 * rows[2]) / (1.5 + 2.0), 1e-12);
    EXPECT_NEAR(nn::nll_loss(log_softmax(xd, 1), target, Reduction::Mean, wd, kIgnore).item(),
                (1.5 * rows[0] + 2.0 * rows[2]) / (1.5 + 2.0), 1e-12);
    // Another ignore_index: 7 (above C) is skipped, -100 is then an ordinary bad target.
    EXPECT_NEAR(nn::cross_entropy(xd, labels({2, 7, 1, 7}).to(device), Reduction::Sum, 0.0, Tensor(), 7).item(),
                rows[0] + rows[2], 1e-12);
    if (device.is_cpu()) {  // a GPU reports these at the next host read (tests/cuda/test_host_waits.cpp)
      EXPECT_ERROR(nn::cross_entropy(xd, target), "cross_entropy: target -100 out of range for 3 classes (row 1)");
      EXPECT_ERROR(nn::nll_loss(xd, target, Reduction::Mean, wd), "nll_loss: target -100 out of range");
      EXPECT_ERROR(nn::cross_entropy(xd, labels({2, -100, 3, 1}), Reduction::Mean, 0.0, Tensor(), kIgnore),
                   "cross_entropy: target 3 out of range for 3 classes (row 2)");
      EXPECT_ERROR(nn::cross_entropy(xd, labels({2, -100, 1, -1}), Reduction::Mean, 0.0, wd, kIgnore),
                   "cross_entropy: target -1 out of range for 3 classes (row 3)");
      EXPECT_ERROR(nn::nll_loss(xd, labels({-100, 5, 1, 1}), Reduction::Mean, Tensor(), kIgnore),
                   "nll_loss: target 5 out of range for 3 classes (row 1)");
      EXPECT_ERROR(nn::cross_entropy(xd, target, Reduction::Sum, 0.0, Tensor(), 7),
                   "cross_entropy: target -100 out of range for 3 classes (row 1)");
    }
  }
}

// PyTorch (2.15): with every row ignored, mean is NaN (0/0) and the gradient zero; sum is 0.
// We match it rather than refuse: refusing would need the targets' values on the host, a wait
// on a GPU.
TEST(CrossEntropy, EveryRowIgnoredGivesNaNMeanAndZeroGradient) {
  const Tensor target = labels({-100, -100, -100});
  const Tensor w = tensor(std::vector<double>{1, 2, 3, 4});
  for (const Device device : vgrad_test::cpu_and_gpu()) {
    SCOPED_TRACE(device.str());
    const Tensor t = target.to(device), wd = w.to(device);
    const std::vector<std::function<Tensor(const Tensor&)>> losses = {
        [&](const Tensor& x) { return nn::cross_entropy(x, t, Reduction::Mean, 0.0, Tensor(), kIgnore); },
        [&](const Tensor& x) { return nn::cross_entropy(x, t, Reduction::Mean, 0.1, wd, kIgnore); },
        [&](const Tensor& x) { return nn::nll_loss(x, t, Reduction::Mean, Tensor(), kIgnore); },
        [&](const Tensor& x) { return nn::nll_loss(x, t, Reduction::Mean, wd, kIgnore); }};
    for (size_t i = 0; i < losses.size(); ++i) {
      const Tensor x = uniform_tensor({3, 4}, 31, -2, 2, DType::Float64).to(device).requires_grad_();
      const Tensor loss = losses[i](x);
      EXPECT_TRUE(std::isnan(loss.item())) << i;
      loss.backward();
      EXPECT_EQ(vals(x.grad()), std::vector<double>(12, 0.0)) << i;
    }
    const Tensor x = zeros({3, 4}, {.device = device});
    EXPECT_EQ(nn::cross_entropy(x, t, Reduction::Sum, 0.0, Tensor(), kIgnore).item(), 0.0);
    EXPECT_EQ(vals(nn::cross_entropy(x, t, Reduction::None, 0.0, wd.to(DType::Float32), kIgnore)),
              std::vector<double>(3, 0.0));
  }
}

// A weighted row beside a masked (-inf) class, and an ignored row with -inf at class 0 (the
// class an ignored row is checked as): PyTorch (2.15) gives 0.40760594606399536 and these
// gradients, with and without weights.
TEST(CrossEntropy, IgnoredAndWeightedRowsBesideMinusInfinityStayFinite) {
  const double inf = std::numeric_limits<double>::infinity();
  const Tensor x = tensor(std::vector<double>{-inf, 0, 1, 2, -inf, 1, 2, 3}, {2, 4}).requires_grad_();
  const Tensor w = tensor(std::vector<double>{1, 1, 1, 2});
  const Tensor loss = nn::cross_entropy(x, labels({3, -100}), Reduction::Mean, 0.0, w, kIgnore);
  EXPECT_NEAR(loss.item(), 0.40760594606399536, 1e-7);
  loss.backward();
  expect_near_all(vals(x.grad()), {0, 0.09003058075904846, 0.24472849071025848, -0.334758996963501, 0, 0, 0, 0}, 1e-7);
  EXPECT_NEAR(nn::cross_entropy(x, labels({3, -100}), Reduction::Mean, 0.0, Tensor(), kIgnore).item(),
              0.40760594606399536, 1e-7)
      << "the masked fused path";
}

TEST(CrossEntropy, Float64GradcheckWithWeightsIgnoreIndexAndSmoothing) {
  const Tensor x = uniform_tensor({5, 4}, 32, -2, 2, DType::Float64);
  const Tensor t = labels({3, -100, 1, 0, 2});
  const Tensor w = tensor(std::vector<double>{0.5, 2.0, 1.0, 3.0});
  for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None})
    for (double s : {0.0, 0.2}) {
      const auto weighted = check(
          [&](const std::vector<Tensor>& in) { return nn::cross_entropy(in[0], in[1], r, s, w, kIgnore); }, {x, t});
      EXPECT_TRUE(weighted.ok) << weighted.message << " (reduction " << int(r) << ", smoothing " << s << ")";
      const auto masked =
          check([&](const std::vector<Tensor>& in) { return nn::cross_entropy(in[0], in[1], r, s, Tensor(), kIgnore); },
                {x, t});
      EXPECT_TRUE(masked.ok) << masked.message << " (reduction " << int(r) << ", smoothing " << s << ")";
    }
  const auto nll = check(
      [&](const std::vector<Tensor>& in) { return nn::nll_loss(log_softmax(in[0], 1), in[1], Reduction::Mean, w, 1); },
      {x, labels({3, 1, 1, 0, 2})});
  EXPECT_TRUE(nll.ok) << nll.message;
}

// Logits (N, C, d1, d2) with targets (N, d1, d2), as a segmentation model's: PyTorch (2.15,
// float64) with x = 2·sin(0.37·i) shaped (2, 3, 2, 2), weights, ignore_index and smoothing 0.1.
TEST(CrossEntropy, PerPositionOverExtraDimsAsPyTorch) {
  std::vector<double> values(24);
  for (size_t i = 0; i < values.size(); ++i) values[i] = std::sin(double(i) * 0.37) * 2;
  for (const Device device : vgrad_test::cpu_and_gpu()) {
    SCOPED_TRACE(device.str());
    const Tensor x = tensor(values, {2, 3, 2, 2}).to(device).requires_grad_();
    const Tensor t = labels({0, 2, 1, 1, 2, -100, 0, 1}).reshape({2, 2, 2}).to(device);
    const Tensor w = tensor(std::vector<double>{0.5, 2.0, 1.5}).to(device);
    const Tensor mean = nn::cross_entropy(x, t, Reduction::Mean, 0.1, w, kIgnore);
    EXPECT_NEAR(mean.item(), 1.2612154555225543, 1e-12);
    EXPECT_NEAR(nn::cross_entropy(x, t, Reduction::Sum, 0.1, w, kIgnore).item(), 12.612154555225546, 1e-12);
    const Tensor none = nn::cross_entropy(x, t, Reduction::None, 0.1, w, kIgnore);
    EXPECT_EQ(none.shape(), (Shape{2, 2, 2}));
    expect_near_all(vals(none),
                    {1.1783676703382866, 3.7371443808735796, 1.3297357174825157, 2.3528087721973883,
                     0.37814140621634723, 0.0, 1.9742175257029002, 1.6617390824145284},
                    1e-12);
    mean.backward();
    expect_near_all(vals(x.grad()), {-0.040692016454034724, 0.030222989939076662,
                                     0.08001107874855108,   0.12644037220445392,
                                     0.03711815602134796,   0.09913870128272298,
                                     -0.08235985252189718,  -0.12574691402372867,
                                     0.0035738604326867687, -0.12936169122179964,
                                     0.0023487737733461325, -0.0006934581807252203,
                                     0.0015728102902402596, 0.0,
                                     -0.04558751828403275,  0.003947011692574162,
                                     0.004259566659638227,  0.0,
                                     0.006761957701029932,  -0.10337943946329912,
                                     -0.005832376949878488, 0.0,
                                     0.03882556058300282,   0.09943242777072499},
                    1e-12);
    const Tensor plain = labels({0, 2, 1, 1, 2, 1, 0, 1}).reshape({2, 2, 2}).to(device);
    EXPECT_NEAR(nn::cross_entropy(x, plain).item(), 1.717880797325518, 1e-12) << "the fused kernel per position";
    EXPECT_NEAR(nn::nll_loss(log_softmax(x, 1), plain, Reduction::Sum).item(), 13.743046378604143, 1e-12);
    if (device.is_cpu()) {
      EXPECT_ERROR(nn::cross_entropy(x, labels({0, 1}).to(device)),
                   "cross_entropy: targets [2] do not match input [2, 3, 2, 2] (expected [2, 2, 2]: the input "
                   "without its class dim 1)");
      EXPECT_ERROR(nn::nll_loss(x, plain.reshape({2, 4})), "nll_loss: targets [2, 4] do not match input");
      EXPECT_ERROR(nn::cross_entropy(x, labels({0, 2, 1, 1, 2, 3, 0, 1}).reshape({2, 2, 2})),
                   "cross_entropy: target 3 out of range for 3 classes (row 5)");
      EXPECT_ERROR(nn::cross_entropy(zeros({3}), labels({0})),
                   "cross_entropy: expects input (N, C) or (N, C, d1, ...)");
    }
  }
}

TEST(CrossEntropy, RejectsBadWeightsZeroClassesAndBatchMean) {
  const Tensor x = zeros({3, 4});
  const Tensor t = labels({0, 1, 2});
  EXPECT_ERROR(nn::cross_entropy(x, t, Reduction::Mean, 0.0, zeros({3})),
               "cross_entropy: weight [3] should be [4], one per class of input [3, 4]");
  EXPECT_ERROR(nn::nll_loss(x, t, Reduction::Mean, zeros({1, 4})), "nll_loss: weight [1, 4] should be [4]");
  EXPECT_ERROR(nn::cross_entropy(x, t, Reduction::Mean, 0.0, zeros({4}, {.dtype = DType::Int64})),
               "cross_entropy: weight must be floating point, got int64");
  // (2, 0) said "empty batch"; the batch is not empty, its classes are.
  EXPECT_ERROR(nn::cross_entropy(zeros({2, 0}), labels({0, 0})),
               "cross_entropy: input [2, 0] has no classes (C = 0): no target can name a class");
  EXPECT_ERROR(nn::nll_loss(zeros({2, 0}), labels({0, 0}), Reduction::Sum), "nll_loss: input [2, 0] has no classes");
  EXPECT_ERROR(nn::cross_entropy(x, t, Reduction::BatchMean), "cross_entropy: Reduction::BatchMean is kl_div's alone");
  EXPECT_ERROR(nn::mse_loss(x, x, Reduction::BatchMean), "mse_loss: Reduction::BatchMean is kl_div's alone");
}

// ---------------- binary_cross_entropy_with_logits at infinity ----------------

// PyTorch (2.15) with y = 0.25, 0.25, 0, 1: x = +inf gives inf, x = -inf NaN (its formula's
// -inf + inf); the gradient sigmoid(x) − y stays finite. vgrad had them the other way round.
TEST(BceWithLogits, InfiniteLogitsGivePyTorchsInfinityAndNaN) {
  const double inf = std::numeric_limits<double>::infinity();
  for (const Device device : vgrad_test::cpu_and_gpu())
    for (const DType dtype : {DType::Float32, DType::Float64}) {
      SCOPED_TRACE(device.str() + " " + dtype_name(dtype));
      const Tensor x = tensor(std::vector<double>{inf, -inf, inf, -inf}).to(dtype).to(device).requires_grad_();
      const Tensor y = tensor(std::vector<double>{0.25, 0.25, 0, 1}).to(dtype).to(device);
      const Tensor loss = nn::binary_cross_entropy_with_logits(x, y, Reduction::None);
      const auto v = vals(loss);
      EXPECT_EQ(v[0], inf);
      EXPECT_TRUE(std::isnan(v[1]));
      EXPECT_EQ(v[2], inf);
      EXPECT_TRUE(std::isnan(v[3]));
      sum(loss).backward();
      EXPECT_EQ(vals(x.grad()), (std::vector<double>{0.75, -0.25, 1, -1}));
    }
}

// ---------------- l1, smooth_l1, huber ----------------

TEST(L1Losses, MatchTheirFormulasAndBetaZeroIsL1) {
  const Tensor a = uniform_tensor({4, 5}, 33), b = uniform_tensor({4, 5}, 34);
  const auto av = vals(a), bv = vals(b);
  std::vector<double> l1(av.size()), smooth(av.size()), huber(av.size());
  for (size_t i = 0; i < av.size(); ++i) {
    const double d = std::abs(av[i] - bv[i]);
    l1[i] = d;
    smooth[i] = d < 0.8 ? 0.5 * d * d / 0.8 : d - 0.4;
    huber[i] = d < 0.8 ? 0.5 * d * d : 0.8 * (d - 0.4);
  }
  expect_near_all(vals(nn::l1_loss(a, b, Reduction::None)), l1, 1e-6);
  expect_near_all(vals(nn::smooth_l1_loss(a, b, Reduction::None, 0.8)), smooth, 1e-6);
  expect_near_all(vals(nn::huber_loss(a, b, Reduction::None, 0.8)), huber, 1e-6);
  EXPECT_NEAR(nn::huber_loss(a, b, Reduction::Sum, 0.8).item(), total(huber), 1e-5);
  EXPECT_NEAR(nn::smooth_l1_loss(a, b, Reduction::Mean, 0.8).item(), total(smooth) / 20, 1e-6);
  EXPECT_EQ(vals(nn::smooth_l1_loss(a, b, Reduction::None, 0.0)), vals(nn::l1_loss(a, b, Reduction::None)));
  EXPECT_ERROR(nn::smooth_l1_loss(a, b, Reduction::Mean, -1), "smooth_l1_loss: beta -1 must be >= 0");
  EXPECT_ERROR(nn::huber_loss(a, b, Reduction::Mean, 0), "huber_loss: delta 0 must be > 0");
  EXPECT_ERROR(nn::l1_loss(a, zeros({5, 4})), "l1_loss: input [4, 5] and target [5, 4] differ in shape");
  EXPECT_ERROR(nn::huber_loss(zeros({0}), zeros({0})), "huber_loss: empty batch");
  // l1's subgradient is 0 where input equals target (PyTorch's sign(0)).
  const Tensor x = tensor(std::vector<double>{1, 2, 3}).requires_grad_();
  nn::l1_loss(x, tensor(std::vector<double>{0, 2, 4}), Reduction::Sum).backward();
  EXPECT_EQ(vals(x.grad()), (std::vector<double>{1, 0, -1}));
}

// PyTorch (2.15) at infinite inputs: the linear branch's gradient ±1 (±delta for huber), where
// the unpicked quadratic branch's 0 times 2·Inf had made NaN.
TEST(L1Losses, SmoothL1AndHuberGradientsAtInfinityAsPyTorch) {
  const Tensor target = zeros({4}, {.dtype = DType::Float64});
  Tensor x = tensor(std::vector<double>{INFINITY, -INFINITY, 3, 0.5}).requires_grad_();
  nn::smooth_l1_loss(x, target, Reduction::Sum, 1.0).backward();
  EXPECT_EQ(vals(x.grad()), (std::vector<double>{1, -1, 1, 0.5}));
  x.zero_grad();
  nn::huber_loss(x, target, Reduction::Sum, 2.0).backward();
  EXPECT_EQ(vals(x.grad()), (std::vector<double>{2, -2, 2, 0.5}));
}

TEST(L1Losses, Float64Gradcheck) {
  // |x − y| kept away from 0 and from beta/delta = 0.7 (the kinks).
  const Tensor x = tensor(std::vector<double>{0.1, -1.2, 2.0, 0.5, -0.3, 1.7}, {2, 3});
  const Tensor y = tensor(std::vector<double>{0.4, 0.3, 0.9, 0.6, 0.9, -0.2}, {2, 3});
  for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
    const auto l1 = check([r](const std::vector<Tensor>& in) { return nn::l1_loss(in[0], in[1], r); }, {x, y});
    const auto smooth =
        check([r](const std::vector<Tensor>& in) { return nn::smooth_l1_loss(in[0], in[1], r, 0.7); }, {x, y});
    const auto huber =
        check([r](const std::vector<Tensor>& in) { return nn::huber_loss(in[0], in[1], r, 0.7); }, {x, y});
    EXPECT_TRUE(l1.ok && smooth.ok && huber.ok) << l1.message << smooth.message << huber.message;
  }
}

// ---------------- binary_cross_entropy on probabilities ----------------

// PyTorch (2.15) at the ends: each log is clamped at -100, and the gradient's denominator
// x·(1 − x) at 1e-12: x = 0, 0, 1, 1, 0.5 with y = 0, 1, 0, 1, 0.3.
TEST(BinaryCrossEntropy, ClampsTheLogsAtTheEndsAsPyTorch) {
  const Tensor x = tensor(std::vector<double>{0, 0, 1, 1, 0.5}).requires_grad_();
  const Tensor y = tensor(std::vector<double>{0, 1, 0, 1, 0.3});
  const Tensor loss = nn::binary_cross_entropy(x, y, Reduction::None);
  expect_near_all(vals(loss), {0, 100, 100, 0, std::log(2.0)}, 1e-12);
  sum(loss).backward();
  expect_near_all(vals(x.grad()), {0, -1e12, 1e12, 0, 0.8}, 1e-3);
  const auto report =
      check([](const std::vector<Tensor>& in) { return nn::binary_cross_entropy(in[0], in[1]); },
            {uniform_tensor({3, 4}, 35, 0.05, 0.95, DType::Float64), uniform_tensor({3, 4}, 36, 0, 1, DType::Float64)});
  EXPECT_TRUE(report.ok) << report.message;
}

// PyTorch refuses an input outside [0, 1]; so do we, naming the first bad element (NaN too).
TEST(BinaryCrossEntropy, RefusesInputsOutsideTheUnitInterval) {
  const Tensor y = zeros({2, 2});
  EXPECT_ERROR(nn::binary_cross_entropy(tensor(std::vector<double>{0.5, 1, 1.5, -0.1}, {2, 2}), y),
               "binary_cross_entropy: input element 2 (flat index) is outside [0, 1]",
               "binary_cross_entropy_with_logits");
  EXPECT_ERROR(nn::binary_cross_entropy(tensor(std::vector<double>{0.5, std::nan(""), 0, 1}, {2, 2}), y),
               "input element 1 (flat index) is outside [0, 1]");
  EXPECT_ERROR(nn::binary_cross_entropy(tensor(std::vector<double>{0.5, 0.5, 0.5, 0.5}), y), "differ in shape");
  EXPECT_NO_THROW(nn::binary_cross_entropy(tensor(std::vector<double>{0, 1, 0.5, 1}, {2, 2}), y));
}

// ---------------- kl_div ----------------

TEST(KlDiv, MatchesTheFormulaWithZeroTargetsAndItsReductions) {
  const Tensor x = log_softmax(uniform_tensor({3, 4}, 37, -2, 2, DType::Float64), 1);
  Tensor t = softmax(uniform_tensor({3, 4}, 38, -2, 2, DType::Float64), 1);
  std::vector<double> tv = vals(t);
  tv[1] = 0;  // 0·log 0 = 0
  t = tensor(tv, {3, 4});
  const auto xv = vals(x);
  std::vector<double> ref(12);
  for (size_t i = 0; i < 12; ++i) ref[i] = tv[i] == 0 ? 0 : tv[i] * (std::log(tv[i]) - xv[i]);
  expect_near_all(vals(nn::kl_div(x, t, Reduction::None)), ref, 1e-12);
  EXPECT_NEAR(nn::kl_div(x, t, Reduction::BatchMean).item(), total(ref) / 3, 1e-12);
  EXPECT_NEAR(nn::kl_div(x, t).item(), total(ref) / 12, 1e-12) << "Mean is PyTorch's elementwise mean";
  EXPECT_NEAR(nn::kl_div(x, log(t + 1e-300), Reduction::Sum, true).item(), total(ref), 1e-9);
  // A negative target has no log: NaN, as PyTorch (2.15) gives.
  EXPECT_TRUE(std::isnan(vals(nn::kl_div(x, -t, Reduction::None))[0]));
  for (Reduction r : {Reduction::BatchMean, Reduction::None})
    for (bool log_target : {false, true}) {
      const auto report = check([&](const std::vector<Tensor>& in) { return nn::kl_div(in[0], in[1], r, log_target); },
                                {x, log_target ? log(softmax(uniform_tensor({3, 4}, 39, -2, 2, DType::Float64), 1))
                                               : softmax(uniform_tensor({3, 4}, 39, -2, 2, DType::Float64), 1)});
      EXPECT_TRUE(report.ok) << report.message;
    }
  EXPECT_ERROR(nn::kl_div(x, zeros({4, 3})), "kl_div: input [3, 4] and target [4, 3] differ in shape");
  EXPECT_ERROR(nn::kl_div(zeros({0, 3}), zeros({0, 3}), Reduction::BatchMean), "kl_div: empty batch");
}

// ---------------- attention ----------------

// Naive softmax(q·kᵀ/√d + mask)·v for q (B, L, d), k (B, S, d), v (B, S, dv), mask (L, S) or empty.
std::vector<double> attention_ref(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<double>& mask) {
  const int64_t B = q.shape()[0], L = q.shape()[1], d = q.shape()[2], S = k.shape()[1], dv = v.shape()[2];
  const auto qv = vals(q), kv = vals(k), vv = vals(v);
  std::vector<double> out(B * L * dv, 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t l = 0; l < L; ++l) {
      std::vector<double> score(S);
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t s = 0; s < S; ++s) {
        double dot = 0;
        for (int64_t i = 0; i < d; ++i) dot += qv[(b * L + l) * d + i] * kv[(b * S + s) * d + i];
        score[s] = mask.empty() || mask[l * S + s] != 0 ? dot / std::sqrt(double(d))
                                                        : -std::numeric_limits<double>::infinity();
        m = std::max(m, score[s]);
      }
      double z = 0;
      for (int64_t s = 0; s < S; ++s) z += score[s] = std::exp(score[s] - m);
      for (int64_t s = 0; s < S; ++s)
        for (int64_t j = 0; j < dv; ++j) out[(b * L + l) * dv + j] += score[s] / z * vv[(b * S + s) * dv + j];
    }
  return out;
}

TEST(Attention, MatchesNaiveLoop) {
  const Tensor q = uniform_tensor({2, 3, 4}, 20), k = uniform_tensor({2, 5, 4}, 21), v = uniform_tensor({2, 5, 6}, 22);
  const Tensor out = nn::F::scaled_dot_product_attention(q, k, v);
  EXPECT_EQ(out.shape(), (Shape{2, 3, 6}));
  expect_near_all(vals(out), attention_ref(q, k, v, {}), 1e-5);
}

TEST(Attention, FourDimensionalHeadsMatchTheLoop) {
  // (B, H, L, d) with a (L, S) mask broadcast over batch and heads.
  const Tensor q = uniform_tensor({2, 3, 4, 5}, 30), k = uniform_tensor({2, 3, 6, 5}, 31),
               v = uniform_tensor({2, 3, 6, 2}, 32);
  std::vector<double> m(24);
  for (int l = 0; l < 4; ++l)
    for (int s = 0; s < 6; ++s) m[l * 6 + s] = (l + s) % 4 != 1;
  const Tensor out = nn::F::scaled_dot_product_attention(q, k, v, tensor(m, {4, 6}));
  EXPECT_EQ(out.shape(), (Shape{2, 3, 4, 2}));
  const auto ref = attention_ref(q.reshape({6, 4, 5}), k.reshape({6, 6, 5}), v.reshape({6, 6, 2}), m);
  expect_near_all(vals(out), ref, 1e-5);
}

TEST(Attention, MaskRemovesPositions) {
  const Tensor q = uniform_tensor({2, 4, 3}, 23), k = uniform_tensor({2, 4, 3}, 24), v = uniform_tensor({2, 4, 2}, 25);
  // Causal mask (L, S), broadcast over the batch.
  std::vector<double> causal(16);
  for (int l = 0; l < 4; ++l)
    for (int s = 0; s < 4; ++s) causal[l * 4 + s] = s <= l ? 1 : 0;
  const Tensor mask = tensor(causal, {4, 4});
  const Tensor out = nn::F::scaled_dot_product_attention(q, k, v, mask);
  const auto ref = attention_ref(q, k, v, causal);
  expect_near_all(vals(out), ref, 1e-5);
  // Row 0 attends only to position 0: its output is v[:, 0].
  const auto vv = vals(v), ov = vals(out);
  for (int b = 0; b < 2; ++b)
    for (int j = 0; j < 2; ++j) EXPECT_NEAR(ov[(b * 4 + 0) * 2 + j], vv[(b * 4 + 0) * 2 + j], 1e-6);
  // A mask changes the answer (so the comparison above is not vacuous).
  EXPECT_GT(std::abs(vals(nn::F::scaled_dot_product_attention(q, k, v))[0] - ov[0]), 1e-4);
  // An int64 (boolean-like) mask works the same.
  const Tensor int_mask = mask.to(DType::Int64);
  expect_near_all(vals(nn::F::scaled_dot_product_attention(q, k, v, int_mask)), ref, 1e-5);
}

TEST(Attention, Gradcheck) {
  const Tensor q = uniform_tensor({2, 3, 4}, 26, -1, 1, DType::Float64);
  const Tensor k = uniform_tensor({2, 5, 4}, 27, -1, 1, DType::Float64);
  const Tensor v = uniform_tensor({2, 5, 3}, 28, -1, 1, DType::Float64);
  auto report = check(
      [](const std::vector<Tensor>& in) { return nn::F::scaled_dot_product_attention(in[0], in[1], in[2]); },
      {q, k, v});
  EXPECT_TRUE(report.ok) << report.message;
  // With a mask (int64, so gradcheck passes it through) that leaves every row something.
  std::vector<int64_t> m(15);
  for (int l = 0; l < 3; ++l)
    for (int s = 0; s < 5; ++s) m[l * 5 + s] = (s + l) % 3 != 0 || s == l;
  const Tensor mask = tensor(m, {3, 5});
  report = check(
      [](const std::vector<Tensor>& in) {
        return nn::F::scaled_dot_product_attention(in[0], in[1], in[2], in[3]);
      },
      {q, k, v, mask});
  EXPECT_TRUE(report.ok) << report.message;
  // The masked positions get no gradient in k and v.
  const Tensor kl = k.detach().requires_grad_(), vl = v.detach().requires_grad_();
  const Tensor single_mask = tensor(std::vector<int64_t>{1, 1, 0, 1, 0}, {1, 5});
  sum(nn::F::scaled_dot_product_attention(q, kl, vl, single_mask)).backward();
  const auto gk = vals(kl.grad()), gv = vals(vl.grad());
  for (int b = 0; b < 2; ++b)
    for (int s : {2, 4}) {
      for (int i = 0; i < 4; ++i) EXPECT_EQ(gk[(b * 5 + s) * 4 + i], 0.0);
      for (int j = 0; j < 3; ++j) EXPECT_EQ(gv[(b * 5 + s) * 3 + j], 0.0);
    }
  EXPECT_NE(gv[0], 0.0);
}

TEST(Attention, FullyMaskedRowGivesZerosAndFiniteGradients) {
  // Query row 1 may attend to no key. It used to give NaN, and its NaN gradient
  // reached every value row, the ones used by rows 0 and 2 too. PyTorch gives zeros.
  const Tensor q = uniform_tensor({2, 3, 4}, 40, -1, 1, DType::Float64);
  const Tensor k = uniform_tensor({2, 5, 4}, 41, -1, 1, DType::Float64);
  const Tensor v = uniform_tensor({2, 5, 3}, 42, -1, 1, DType::Float64);
  const std::vector<int64_t> m = {1, 0, 1, 1, 0,  //
                                  0, 0, 0, 0, 0,  //
                                  0, 1, 1, 0, 1};
  const Tensor mask = tensor(m, {3, 5});
  for (const DType dtype : {DType::Float64, DType::Float32}) {
    const Tensor out = nn::F::scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), mask);
    const auto got = vals(out);
    const auto ref = attention_ref(q, k, v, std::vector<double>(m.begin(), m.end()));
    for (int b = 0; b < 2; ++b)
      for (int l = 0; l < 3; ++l)
        for (int j = 0; j < 3; ++j) {
          const size_t at = (b * 3 + l) * 3 + j;
          if (l == 1) EXPECT_EQ(got[at], 0.0) << "masked row, element " << at;
          else EXPECT_NEAR(got[at], ref[at], 1e-5) << "element " << at;
        }
  }

  const Tensor ql = q.detach().requires_grad_(), kl = k.detach().requires_grad_(), vl = v.detach().requires_grad_();
  sum(mul(nn::F::scaled_dot_product_attention(ql, kl, vl, mask), uniform_tensor({2, 3, 3}, 43, -1, 1, DType::Float64)))
      .backward();
  for (const Tensor* leaf : {&ql, &kl, &vl})
    for (double g : vals(leaf->grad())) ASSERT_TRUE(std::isfinite(g));
  const auto gq = vals(ql.grad());
  for (int b = 0; b < 2; ++b)
    for (int i = 0; i < 4; ++i) EXPECT_EQ(gq[(b * 3 + 1) * 4 + i], 0.0);
  // Value row 2 is used by rows 0 and 2 only: its gradient is real, not zeroed.
  EXPECT_NE(vals(vl.grad())[2 * 3], 0.0);

  const auto report = check(
      [](const std::vector<Tensor>& in) { return nn::F::scaled_dot_product_attention(in[0], in[1], in[2], in[3]); },
      {q, k, v, mask});
  EXPECT_TRUE(report.ok) << report.message;
}

TEST(Attention, RejectsTooFewDims) {
  EXPECT_ERROR(nn::F::scaled_dot_product_attention(zeros({3}), zeros({3, 3}), zeros({3, 3})), "at least 2 dims");
}

// ---------------- init ----------------

struct Moments {
  double mean = 0, var = 0, min = 0, max = 0;
};
Moments moments(const Tensor& t) {
  const auto v = vals(t);
  Moments m{0, 0, v[0], v[0]};
  for (double x : v) {
    m.mean += x;
    m.min = std::min(m.min, x);
    m.max = std::max(m.max, x);
  }
  m.mean /= double(v.size());
  for (double x : v) m.var += (x - m.mean) * (x - m.mean);
  m.var /= double(v.size());
  return m;
}

void expect_uniform(const Tensor& t, double bound, const char* what) {
  const Moments m = moments(t);
  EXPECT_GE(m.min, -bound) << what;
  EXPECT_LE(m.max, bound) << what;
  EXPECT_LT(m.min, -0.98 * bound) << what;
  EXPECT_GT(m.max, 0.98 * bound) << what;
  EXPECT_NEAR(m.mean, 0.0, 0.02 * bound) << what;
  EXPECT_NEAR(m.var, bound * bound / 3, 0.03 * bound * bound / 3) << what;
}

void expect_normal(const Tensor& t, double stddev, const char* what) {
  const Moments m = moments(t);
  EXPECT_NEAR(m.mean, 0.0, 0.02 * stddev) << what;
  EXPECT_NEAR(std::sqrt(m.var), stddev, 0.02 * stddev) << what;
  EXPECT_GT(m.max, 3 * stddev) << what;  // a normal's tail, not a uniform's cut-off
}

TEST(Init, FansAndGains) {
  EXPECT_EQ(nn::init::fans(Tensor::empty({30, 20})), (std::pair<int64_t, int64_t>{20, 30}));
  EXPECT_EQ(nn::init::fans(Tensor::empty({8, 4, 3, 3})), (std::pair<int64_t, int64_t>{36, 72}));
  EXPECT_ERROR(nn::init::fans(Tensor::empty({5})), "at least 2 dims");
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain("linear"), 1.0);
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain("sigmoid"), 1.0);
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain("tanh"), 5.0 / 3.0);
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain("relu"), std::sqrt(2.0));
  EXPECT_DOUBLE_EQ(nn::init::calculate_gain("leaky_relu", 0.2), std::sqrt(2.0 / 1.04));
  EXPECT_ERROR(nn::init::calculate_gain("swish"), "unknown nonlinearity 'swish'");
}

TEST(Init, XavierUniformAndNormal) {
  Generator gen(1);
  Tensor w = Tensor::empty({300, 200});
  nn::init::xavier_uniform_(w, 1.0, &gen);
  expect_uniform(w, std::sqrt(6.0 / 500.0), "xavier_uniform");
  nn::init::xavier_uniform_(w, 2.0, &gen);
  expect_uniform(w, 2.0 * std::sqrt(6.0 / 500.0), "xavier_uniform gain 2");
  nn::init::xavier_normal_(w, 1.0, &gen);
  expect_normal(w, std::sqrt(2.0 / 500.0), "xavier_normal");
}

TEST(Init, KaimingUniformAndNormal) {
  Generator gen(2);
  Tensor w = Tensor::empty({400, 100});
  nn::init::kaiming_uniform_(w, 0.0, nn::init::FanMode::FanIn, "relu", &gen);
  expect_uniform(w, std::sqrt(6.0 / 100.0), "kaiming_uniform relu fan_in");
  nn::init::kaiming_uniform_(w, 0.0, nn::init::FanMode::FanOut, "relu", &gen);
  expect_uniform(w, std::sqrt(6.0 / 400.0), "kaiming_uniform relu fan_out");
  nn::init::kaiming_uniform_(w, std::sqrt(5.0), nn::init::FanMode::FanIn, "leaky_relu", &gen);
  expect_uniform(w, 1.0 / std::sqrt(100.0), "kaiming_uniform a=sqrt(5) (Linear's default)");
  nn::init::kaiming_normal_(w, 0.0, nn::init::FanMode::FanIn, "relu", &gen);
  expect_normal(w, std::sqrt(2.0 / 100.0), "kaiming_normal relu");
  nn::init::kaiming_normal_(w, 0.0, nn::init::FanMode::FanOut, "linear", &gen);
  expect_normal(w, std::sqrt(1.0 / 400.0), "kaiming_normal linear fan_out");
}

TEST(Init, SeededReproducibility) {
  Tensor a = Tensor::empty({20, 10}), b = Tensor::empty({20, 10});
  Generator g1(9), g2(9);
  nn::init::kaiming_normal_(a, 0.0, nn::init::FanMode::FanIn, "relu", &g1);
  nn::init::kaiming_normal_(b, 0.0, nn::init::FanMode::FanIn, "relu", &g2);
  EXPECT_EQ(vals(a), vals(b));
  manual_seed(5);
  nn::init::xavier_uniform_(a);
  manual_seed(5);
  nn::init::xavier_uniform_(b);
  EXPECT_EQ(vals(a), vals(b));
  nn::init::xavier_uniform_(b);
  EXPECT_NE(vals(a), vals(b));
}

TEST(Init, ZerosAndConstantOnAParameter) {
  Tensor w = ones({3, 4}).requires_grad_();
  nn::init::constant_(w, 0.25);
  for (double v : vals(w)) EXPECT_EQ(v, 0.25);
  EXPECT_TRUE(w.requires_grad());
  EXPECT_TRUE(w.is_leaf());
  nn::init::zeros_(w);
  for (double v : vals(w)) EXPECT_EQ(v, 0.0);
  // Initialising a parameter in place is allowed and records nothing.
  Generator gen(3);
  nn::init::kaiming_uniform_(w, 0.0, nn::init::FanMode::FanIn, "relu", &gen);
  EXPECT_TRUE(w.is_leaf());
  EXPECT_GT(moments(w).max, 0.0);
}

// Training-mode batch_norm runs the CPU's fused kernel: its values and gradients
// against the same op composed from mean/var/pow (the path other devices take), and a
// float64 gradcheck of it over 2-D to 4-D input, with and without weight and bias.
Tensor composed_batch_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  std::vector<int64_t> axes{0};
  Shape per_channel(size_t(x.dim() - 1), 1);
  per_channel[0] = x.shape()[1];
  for (int64_t d = 2; d < x.dim(); ++d) axes.push_back(d);
  Tensor y = (x - mean(x, axes, true)) * pow(var(x, axes, 0, true) + eps, -0.5);
  if (w.defined()) y = y * w.reshape(per_channel);
  return b.defined() ? y + b.reshape(per_channel) : y;
}

TEST(BatchNormFused, MatchesTheComposedOpInValuesAndGradients) {
  for (DType dtype : {DType::Float32, DType::Float64}) {
    const double tol = dtype == DType::Float32 ? 2e-4 : 1e-10;
    const Tensor x0 = uniform_tensor({16, 8, 9, 9}, 11, -1, 5, dtype);
    const Tensor w0 = uniform_tensor({8}, 12, 0.5, 1.5, dtype), b0 = uniform_tensor({8}, 13, -1, 1, dtype);
    const Tensor g = uniform_tensor({16, 8, 9, 9}, 14, -1, 1, dtype);
    std::vector<std::vector<double>> results[2];
    for (int composed = 0; composed < 2; ++composed) {
      Tensor x = x0.clone().requires_grad_(), w = w0.clone().requires_grad_(), b = b0.clone().requires_grad_();
      const Tensor y = composed ? composed_batch_norm(x, w, b, 1e-5)
                                : nn::F::batch_norm(x, Tensor(), Tensor(), w, b, true, 0.1, 1e-5);
      const auto grads = autograd::grad({y}, {x, w, b}, {g});
      results[composed] = {vals(y), vals(grads[0]), vals(grads[1]), vals(grads[2])};
    }
    const char* what[] = {"y", "dx", "dweight", "dbias"};
    for (size_t i = 0; i < 4; ++i)
      expect_near_all(results[0][i], results[1][i], i < 2 ? tol : tol * 100, what[i]);
  }
}

TEST(BatchNormFused, GradchecksInFloat64) {
  const std::vector<Shape> shapes{{6, 3}, {4, 2, 5}, {3, 2, 4, 3}};
  for (const Shape& shape : shapes) {
    for (int affine = 0; affine < 3; ++affine) {  // none, weight only, weight and bias
      const int64_t c = shape[1];
      const Tensor x = uniform_tensor(shape, 21, -2, 2, DType::Float64);
      const Tensor w = uniform_tensor({c}, 22, 0.5, 1.5, DType::Float64), b = uniform_tensor({c}, 23, -1, 1, DType::Float64);
      std::vector<Tensor> inputs{x};
      if (affine >= 1) inputs.push_back(w);
      if (affine == 2) inputs.push_back(b);
      const auto report = autograd::gradcheck(
          [affine](const std::vector<Tensor>& in) {
            return nn::F::batch_norm(in[0], Tensor(), Tensor(), affine >= 1 ? in[1] : Tensor(),
                                     affine == 2 ? in[2] : Tensor(), true, 0.1, 1e-5) *
                   in[0];  // not a plain sum: Σ of a batch norm's output has zero gradient in x
          },
          inputs);
      EXPECT_TRUE(report.ok) << shape_str(shape) << " affine " << affine << ": " << report.message;
    }
  }
}

}  // namespace

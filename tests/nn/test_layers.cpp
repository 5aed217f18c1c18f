// Tests for the built-in layers: Linear (values, init, seeding, width errors),
// the activations against naive formulas, Dropout, Flatten, Softmax/LogSoftmax.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "support.h"
#include "nn/layers.h"

namespace {

using namespace vgrad;
using vgrad_test::expect_near_all;
using vgrad_test::uniform_tensor;
using vgrad_test::vals;

TEST(Linear, ForwardMatchesNaiveLoop) {
  nn::Linear fc(5, 3);
  EXPECT_EQ(fc.weight.shape(), (Shape{3, 5}));
  EXPECT_EQ(fc.bias.shape(), (Shape{3}));
  EXPECT_EQ(fc.describe(), "Linear 5->3");
  const Tensor x = uniform_tensor({7, 5}, 1);
  const Tensor y = fc(x);
  ASSERT_EQ(y.shape(), (Shape{7, 3}));
  const auto xv = vals(x), w = vals(fc.weight), b = vals(fc.bias);
  std::vector<double> expect(7 * 3);
  for (int n = 0; n < 7; ++n)
    for (int o = 0; o < 3; ++o) {
      double acc = b[o];
      for (int i = 0; i < 5; ++i) acc += xv[n * 5 + i] * w[o * 5 + i];
      expect[n * 3 + o] = acc;
    }
  expect_near_all(vals(y), expect, 1e-5);
}

TEST(Linear, WithoutBiasAndBatchedInput) {
  nn::Linear fc(4, 2, /*bias=*/false);
  EXPECT_FALSE(fc.bias.defined());
  EXPECT_EQ(fc.parameters().size(), 1u);
  const Tensor x = uniform_tensor({2, 3, 4}, 2);  // leading dims broadcast like torch
  const Tensor y = fc(x);
  ASSERT_EQ(y.shape(), (Shape{2, 3, 2}));
  const auto xv = vals(x), w = vals(fc.weight);
  for (int r = 0; r < 6; ++r)
    for (int o = 0; o < 2; ++o) {
      double acc = 0;
      for (int i = 0; i < 4; ++i) acc += xv[r * 4 + i] * w[o * 4 + i];
      EXPECT_NEAR(vals(y)[r * 2 + o], acc, 1e-5);
    }
}

TEST(Linear, BackwardIsTheBatchGemm) {
  nn::Linear fc(3, 2);
  const Tensor x = uniform_tensor({4, 3}, 3).requires_grad_();
  const Tensor delta = uniform_tensor({4, 2}, 4);
  fc(x).backward(delta);
  // dW = Δᵀ·X, db = Σ_rows Δ, dX = Δ·W.
  const auto d = vals(delta), xv = vals(x), w = vals(fc.weight);
  for (int o = 0; o < 2; ++o) {
    double db = 0;
    for (int n = 0; n < 4; ++n) db += d[n * 2 + o];
    EXPECT_NEAR(vals(fc.bias.grad())[o], db, 1e-5);
    for (int i = 0; i < 3; ++i) {
      double dw = 0;
      for (int n = 0; n < 4; ++n) dw += d[n * 2 + o] * xv[n * 3 + i];
      EXPECT_NEAR(vals(fc.weight.grad())[o * 3 + i], dw, 1e-5);
    }
  }
  for (int n = 0; n < 4; ++n)
    for (int i = 0; i < 3; ++i) {
      double dx = 0;
      for (int o = 0; o < 2; ++o) dx += d[n * 2 + o] * w[o * 3 + i];
      EXPECT_NEAR(vals(x.grad())[n * 3 + i], dx, 1e-5);
    }
}

// LinearReLU is Sequential{Linear, ReLU} as one op: Linear's parameters, names and init (the
// same draws from the same seed), relu(Linear)'s values and gradients, errors naming itself.
TEST(LinearReLU, IsLinearThenReluWithLinearsParameters) {
  manual_seed(11);
  nn::Linear plain(5, 3);
  manual_seed(11);
  nn::LinearReLU fused(5, 3);
  EXPECT_EQ(fused.describe(), "LinearReLU 5->3");
  EXPECT_EQ(vals(fused.weight), vals(plain.weight));
  EXPECT_EQ(vals(fused.bias), vals(plain.bias));
  std::vector<std::string> names;
  for (const auto& [name, parameter] : fused.named_parameters()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"weight", "bias"}));
  const Tensor x = uniform_tensor({7, 5}, 5);
  const Tensor delta = uniform_tensor({7, 3}, 6);
  const Tensor y = fused(x);
  EXPECT_EQ(vals(y), vals(relu(plain(x))));
  int cut = 0;
  for (double v : vals(y)) cut += v == 0.0;
  EXPECT_GT(cut, 0) << "some outputs must be cut by the ReLU";
  y.backward(delta);
  relu(plain(x)).backward(delta);
  EXPECT_EQ(vals(fused.weight.grad()), vals(plain.weight.grad()));
  EXPECT_EQ(vals(fused.bias.grad()), vals(plain.bias.grad()));
  EXPECT_ERROR(fused(zeros({2, 4})), "LinearReLU 5->3: input has 4 features, expected 5");
}

TEST(Linear, DefaultInitIsWithinPyTorchBounds) {
  manual_seed(3);
  nn::Linear fc(256, 64);
  const double bound = 1.0 / std::sqrt(256.0);
  const auto w = vals(fc.weight), b = vals(fc.bias);
  double max_abs = 0, mean = 0, sq = 0;
  for (double v : w) {
    ASSERT_LE(std::abs(v), bound);
    max_abs = std::max(max_abs, std::abs(v));
    mean += v;
    sq += v * v;
  }
  mean /= double(w.size());
  sq /= double(w.size());
  // U(±bound): fills the range, mean 0, variance bound²/3.
  EXPECT_GT(max_abs, 0.99 * bound);
  EXPECT_NEAR(mean, 0.0, 0.05 * bound);
  EXPECT_NEAR(sq, bound * bound / 3, 0.05 * bound * bound / 3);
  for (double v : b) ASSERT_LE(std::abs(v), bound);
  EXPECT_GT(*std::max_element(b.begin(), b.end()) - *std::min_element(b.begin(), b.end()), bound);
}

TEST(Linear, InitIsSeededByManualSeedAndGenerators) {
  manual_seed(42);
  nn::Linear a(10, 6);
  manual_seed(42);
  nn::Linear b(10, 6);
  manual_seed(43);
  nn::Linear c(10, 6);
  EXPECT_EQ(vals(a.weight), vals(b.weight));
  EXPECT_EQ(vals(a.bias), vals(b.bias));
  EXPECT_NE(vals(a.weight), vals(c.weight));
  // Weight and bias draw different numbers.
  EXPECT_NE(vals(a.weight)[0], vals(a.bias)[0]);

  Generator g1(7), g2(7);
  nn::Linear d(10, 6, true, &g1), e(10, 6, true, &g2);
  EXPECT_EQ(vals(d.weight), vals(e.weight));
  EXPECT_EQ(vals(d.bias), vals(e.bias));
}

TEST(Linear, InputWidthErrorNamesTheModulePath) {
  // Build "net.fc2" the way a user would: a module "net" holding "fc1" and "fc2".
  struct Net : nn::Module {
    Net() {
      fc1 = register_module("fc1", std::make_shared<nn::Linear>(784, 256));
      fc2 = register_module("fc2", std::make_shared<nn::Linear>(256, 10));
    }
    Tensor forward(const Tensor& x) override { return (*fc2)(relu((*fc1)(x))); }
    std::shared_ptr<nn::Linear> fc1, fc2;
  };
  struct Root : nn::Module {
    Root() { net = register_module("net", std::make_shared<Net>()); }
    std::shared_ptr<Net> net;
  } root;
  EXPECT_ERROR((*root.net->fc2)(zeros({4, 128})),
                   "net.fc2 (Linear 256->10): input has 128 features, expected 256");
  EXPECT_ERROR((*root.net->fc2)(zeros({4, 128})), "[4, 128]");
  EXPECT_ERROR((*root.net)(zeros({4, 100})), "net.fc1 (Linear 784->256): input has 100 features, expected 784");
  // A standalone layer names itself.
  nn::Linear fc(3, 2);
  EXPECT_ERROR(fc(zeros({2, 4})), "Linear 3->2: input has 4 features, expected 3");
  EXPECT_ERROR(nn::Linear(0, 3), "sizes must be positive");
}

double gelu_ref(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }

TEST(Activations, MatchNaiveFormulas) {
  const Tensor x = uniform_tensor({6, 7}, 8, -4, 4);
  const auto xv = vals(x);
  auto check = [&](nn::Module& m, double (*f)(double), const char* name) {
    const Tensor y = m(x);
    ASSERT_EQ(y.shape(), x.shape()) << name;
    const auto yv = vals(y);
    for (size_t i = 0; i < xv.size(); ++i) ASSERT_NEAR(yv[i], f(xv[i]), 1e-6) << name << " at x=" << xv[i];
  };
  nn::ReLU relu_layer;
  nn::Sigmoid sigmoid_layer;
  nn::Tanh tanh_layer;
  nn::GELU gelu_layer;
  check(relu_layer, [](double v) { return v > 0 ? v : 0.0; }, "ReLU");
  check(sigmoid_layer, [](double v) { return 1 / (1 + std::exp(-v)); }, "Sigmoid");
  check(tanh_layer, [](double v) { return std::tanh(v); }, "Tanh");
  check(gelu_layer, gelu_ref, "GELU");
  nn::LeakyReLU leaky_default;
  check(leaky_default, [](double v) { return v > 0 ? v : 0.01 * v; }, "LeakyReLU(0.01)");
  nn::LeakyReLU leaky(0.2);
  check(leaky, [](double v) { return v > 0 ? v : 0.2 * v; }, "LeakyReLU(0.2)");
}

TEST(Activations, GradientsMatchNaiveDerivatives) {
  Tensor x = uniform_tensor({50}, 9, -3, 3).requires_grad_();
  const auto xv = vals(x);
  sum(gelu(x)).backward();
  for (size_t i = 0; i < xv.size(); ++i) {
    const double v = xv[i];
    const double pdf = std::exp(-v * v / 2) / std::sqrt(2 * M_PI);
    EXPECT_NEAR(vals(x.grad())[i], 0.5 * (1 + std::erf(v / std::sqrt(2.0))) + v * pdf, 1e-5);
  }
  x.zero_grad();
  sum(leaky_relu(x, 0.1)).backward();
  for (size_t i = 0; i < xv.size(); ++i) EXPECT_FLOAT_EQ(vals(x.grad())[i], xv[i] > 0 ? 1.0 : 0.1);
}

TEST(Dropout, ZeroFractionAndScaling) {
  const double p = 0.3;
  Generator gen(5);
  nn::Dropout dropout(p, &gen);
  EXPECT_TRUE(dropout.is_training());
  const Tensor x = uniform_tensor({200, 500}, 10, 1, 2);  // no zeros in the input
  const auto xv = vals(x), yv = vals(dropout(x));
  int64_t zeros_count = 0;
  for (size_t i = 0; i < xv.size(); ++i) {
    if (yv[i] == 0) {
      ++zeros_count;
    } else {
      ASSERT_NEAR(yv[i], xv[i] / (1 - p), 1e-5) << i;
    }
  }
  const double fraction = double(zeros_count) / double(xv.size());
  // 100000 Bernoulli(0.3) draws: the standard deviation of the fraction is ~0.0015.
  EXPECT_NEAR(fraction, p, 0.01);
  // The expectation is preserved: mean(y) ≈ mean(x).
  double mx = 0, my = 0;
  for (size_t i = 0; i < xv.size(); ++i) mx += xv[i], my += yv[i];
  EXPECT_NEAR(my / mx, 1.0, 0.01);
}

TEST(Dropout, SeededAndAdvancing) {
  const Tensor x = ones({1000});
  Generator g1(21), g2(21);
  nn::Dropout a(0.5, &g1), b(0.5, &g2);
  const auto first = vals(a(x));
  EXPECT_EQ(first, vals(b(x)));   // same seed, same mask
  EXPECT_NE(first, vals(a(x)));   // the generator advances: a new mask per call
  manual_seed(4);
  nn::Dropout c(0.5);
  const auto from_default = vals(c(x));
  manual_seed(4);
  EXPECT_EQ(from_default, vals(c(x)));
}

TEST(Dropout, GradientIsTheMask) {
  Generator gen(3);
  nn::Dropout dropout(0.5, &gen);
  const Tensor x = uniform_tensor({64}, 11, 1, 2).requires_grad_();
  const Tensor y = dropout(x);
  sum(y).backward();
  const auto xv = vals(x), yv = vals(y), g = vals(x.grad());
  for (size_t i = 0; i < xv.size(); ++i) EXPECT_NEAR(g[i], yv[i] == 0 ? 0.0 : 2.0, 1e-6);
}

TEST(Dropout, IdentityInEvalAndEdgeProbabilities) {
  nn::Dropout dropout(0.9);
  dropout.eval();
  const Tensor x = uniform_tensor({10, 10}, 12);
  EXPECT_EQ(vals(dropout(x)), vals(x));
  nn::Dropout none(0.0);
  EXPECT_EQ(vals(none(x)), vals(x));
  nn::Dropout all(1.0);
  for (double v : vals(all(x))) EXPECT_EQ(v, 0.0);
  EXPECT_ERROR(nn::Dropout(1.5), "probability 1.5 outside [0, 1]");
  EXPECT_ERROR(nn::Dropout(-0.1), "outside [0, 1]");
}

TEST(Flatten, CollapsesDims) {
  const Tensor x = uniform_tensor({2, 3, 4, 5}, 13);
  nn::Flatten flatten;
  const Tensor y = flatten(x);
  EXPECT_EQ(y.shape(), (Shape{2, 60}));
  EXPECT_EQ(vals(y), vals(x));  // row-major order is kept
  nn::Flatten middle(1, 2);
  EXPECT_EQ(middle(x).shape(), (Shape{2, 12, 5}));
  nn::Flatten all(0);
  EXPECT_EQ(all(x).shape(), (Shape{120}));
  // Flatten of a non-contiguous input keeps logical order.
  const Tensor t = x.transpose(1, 3);  // (2, 5, 4, 3)
  const auto flat = vals(flatten(t));
  const auto xv = vals(x);
  EXPECT_EQ(flat.size(), 120u);
  // t[n, a, b, c] = x[n, c, b, a]
  for (int n = 0; n < 2; ++n)
    for (int a = 0; a < 5; ++a)
      for (int b = 0; b < 4; ++b)
        for (int c = 0; c < 3; ++c)
          ASSERT_EQ(flat[n * 60 + a * 12 + b * 3 + c], xv[n * 60 + c * 20 + b * 5 + a]);
}

TEST(SoftmaxModules, MatchNaive) {
  const Tensor x = uniform_tensor({4, 6}, 14, -5, 5);
  const auto xv = vals(x);
  nn::Softmax softmax_layer;
  nn::LogSoftmax log_softmax_layer;
  const auto p = vals(softmax_layer(x)), lp = vals(log_softmax_layer(x));
  for (int r = 0; r < 4; ++r) {
    double total = 0;
    for (int c = 0; c < 6; ++c) total += std::exp(xv[r * 6 + c]);
    for (int c = 0; c < 6; ++c) {
      EXPECT_NEAR(p[r * 6 + c], std::exp(xv[r * 6 + c]) / total, 1e-6);
      EXPECT_NEAR(lp[r * 6 + c], xv[r * 6 + c] - std::log(total), 1e-5);
    }
  }
  // Over axis 0: columns sum to one.
  nn::Softmax columns(0);
  const auto pc = vals(columns(x));
  for (int c = 0; c < 6; ++c) {
    double total = 0;
    for (int r = 0; r < 4; ++r) total += pc[r * 6 + c];
    EXPECT_NEAR(total, 1.0, 1e-6);
  }
  nn::LogSoftmax log_columns(0);
  const auto lpc = vals(log_columns(x));
  for (size_t i = 0; i < pc.size(); ++i) EXPECT_NEAR(lpc[i], std::log(pc[i]), 1e-5);
}

// The parameterless layers share Activation/AxisActivation and the dropouts DropoutBase:
// each still names itself, keeps its own settings and its own errors.
TEST(LayerNames, EachLayerDescribesItself) {
  EXPECT_EQ(nn::ReLU().describe(), "ReLU");
  EXPECT_EQ(nn::Sigmoid().describe(), "Sigmoid");
  EXPECT_EQ(nn::Tanh().describe(), "Tanh");
  EXPECT_EQ(nn::GELU().describe(), "GELU");
  EXPECT_EQ(nn::Softmax().describe(), "Softmax");
  EXPECT_EQ(nn::LogSoftmax(0).describe(), "LogSoftmax");
  EXPECT_EQ(nn::Softmax().axis, -1);
  EXPECT_EQ(nn::LogSoftmax(0).axis, 0);
  EXPECT_EQ(nn::Dropout(0.25).describe(), "Dropout p=0.25");
  EXPECT_EQ(nn::Dropout2d(0.5).describe(), "Dropout2d p=0.5");
  EXPECT_ERROR(nn::Dropout2d(1.5), "Dropout2d: probability 1.5 outside [0, 1]");
  EXPECT_ERROR(nn::Dropout(-0.1), "Dropout: probability -0.1 outside [0, 1]");
}

}  // namespace

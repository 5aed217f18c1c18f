// The CNN layers: PyTorch's parameter names, shapes and init bounds (so state_dicts
// match torch.nn), BatchNorm's running statistics in train and eval, LayerNorm and
// GroupNorm against direct formulas with gradchecks, Embedding's padding row, Dropout2d.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "autograd/gradcheck.h"
#include "core/grad_mode.h"
#include "nn/layers.h"
#include "support.h"

namespace {

using namespace vgrad;
using vgrad_test::expect_near_all;
using vgrad_test::uniform_tensor;
using vgrad_test::vals;

std::vector<std::string> keys(const nn::Module& m) {
  std::vector<std::string> out;
  for (const auto& [name, t] : m.state_dict()) out.push_back(name);
  return out;
}

TEST(Conv2dLayer, TorchNamesShapesAndInitBounds) {
  Generator gen(1);
  nn::Conv2d conv(6, 8, 3, {.padding = {1, 1}, .groups = 2}, &gen);
  EXPECT_EQ(keys(conv), (std::vector<std::string>{"bias", "weight"}));
  EXPECT_EQ(conv.weight.shape(), (Shape{8, 3, 3, 3}));
  const double bound = 1.0 / std::sqrt(3.0 * 9.0);  // fan_in = in/groups·KH·KW
  for (const Tensor& t : {conv.weight, conv.bias}) {
    const auto v = vals(t);
    double lo = 0, hi = 0;
    for (double e : v) lo = std::min(lo, e), hi = std::max(hi, e);
    EXPECT_LE(hi, bound);
    EXPECT_GE(lo, -bound);
    EXPECT_GT(hi, 0.5 * bound);  // spread over the range, not a constant
  }
  EXPECT_EQ(conv(zeros({2, 6, 5, 5})).shape(), (Shape{2, 8, 5, 5}));
  EXPECT_ERROR(conv(zeros({2, 3, 5, 5})), "Conv2d 6->8 3x3", "input [2, 3, 5, 5] should be (N, 6, H, W)");
  nn::Conv2d no_bias(1, 2, {3, 5}, {.bias = false});
  EXPECT_EQ(keys(no_bias), (std::vector<std::string>{"weight"}));
  EXPECT_EQ(no_bias.weight.shape(), (Shape{2, 1, 3, 5}));
}

TEST(Conv1dLayer, ShapesAndForward) {
  nn::Conv1d conv(4, 6, 3, {.padding = 1});
  EXPECT_EQ(conv.weight.shape(), (Shape{6, 4, 3}));
  EXPECT_EQ(conv(zeros({2, 4, 10})).shape(), (Shape{2, 6, 10}));
}

TEST(PoolLayers, ForwardShapes) {
  const Tensor x = uniform_tensor({2, 3, 8, 8}, 1);
  EXPECT_EQ(nn::MaxPool2d(2)(x).shape(), (Shape{2, 3, 4, 4}));
  EXPECT_EQ(nn::AvgPool2d({3, 3}, {1, 1}, {1, 1})(x).shape(), (Shape{2, 3, 8, 8}));
  EXPECT_EQ(nn::AdaptiveAvgPool2d(1)(x).shape(), (Shape{2, 3, 1, 1}));
}

// Batch statistics per channel over (N, H, W); running stats follow PyTorch's update
// with the unbiased variance; eval() normalizes with the running ones.
TEST(BatchNorm2dLayer, TrainUpdatesRunningStatsEvalUsesThem) {
  nn::BatchNorm2d bn(2, 1e-5, 0.1);
  EXPECT_EQ(keys(bn), (std::vector<std::string>{"bias", "num_batches_tracked", "running_mean", "running_var", "weight"}));
  EXPECT_EQ(bn.parameters().size(), 2u);  // buffers are not trained
  const Tensor x = uniform_tensor({4, 2, 3, 3}, 2, -1, 3, DType::Float32);
  const Tensor y = bn(x);
  const auto xv = vals(x);
  const int64_t n = 4 * 9;
  for (int64_t c = 0; c < 2; ++c) {
    double s = 0, ss = 0;
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 9; ++j) s += xv[size_t((i * 2 + c) * 9 + j)];
    const double mu = s / n;
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 9; ++j) ss += std::pow(xv[size_t((i * 2 + c) * 9 + j)] - mu, 2);
    const double biased = ss / n, unbiased = ss / (n - 1);
    EXPECT_NEAR(vals(bn.running_mean)[size_t(c)], 0.1 * mu, 1e-6);
    EXPECT_NEAR(vals(bn.running_var)[size_t(c)], 0.9 + 0.1 * unbiased, 1e-6);
    const double y0 = vals(y)[size_t(c * 9)];
    EXPECT_NEAR(y0, (xv[size_t(c * 9)] - mu) / std::sqrt(biased + 1e-5), 1e-5);
  }
  EXPECT_EQ(bn.num_batches_tracked.item<int64_t>(), 1);
  bn.eval();
  const Tensor z = bn(x);
  const double rm = vals(bn.running_mean)[0], rv = vals(bn.running_var)[0];
  EXPECT_NEAR(vals(z)[0], (xv[0] - rm) / std::sqrt(rv + 1e-5), 1e-5);
  EXPECT_EQ(bn.num_batches_tracked.item<int64_t>(), 1);  // eval does not count
  EXPECT_ERROR(bn(zeros({4, 3, 2, 2})), "BatchNorm2d 2", "input [4, 3, 2, 2] should be (N, 2, H, W)");
}

TEST(BatchNorm1dLayer, GradcheckTrainingAndStateDictRoundTrip) {
  const Tensor x = uniform_tensor({5, 3}, 3, -1, 1, DType::Float64);
  const Tensor w = uniform_tensor({3}, 4, 0.5, 1.5, DType::Float64), b = uniform_tensor({3}, 5, -1, 1, DType::Float64);
  const auto report = autograd::gradcheck(
      [](const std::vector<Tensor>& in) {
        return nn::F::batch_norm(in[0], Tensor(), Tensor(), in[1], in[2], true);
      },
      {x, w, b});
  EXPECT_TRUE(report.ok) << report.message;
  nn::BatchNorm1d a(3), c(3);
  a(uniform_tensor({5, 3, 4}, 6));
  c.load_state_dict(a.state_dict());
  expect_near_all(vals(c.running_var), vals(a.running_var), 0, "running_var loaded");
  EXPECT_EQ(c.num_batches_tracked.item<int64_t>(), 1);
}

TEST(LayerNormLayer, MatchesFormulaAndGradchecks) {
  nn::LayerNorm ln({4});
  const Tensor x = uniform_tensor({3, 4}, 7, -2, 2, DType::Float32);
  const auto y = vals(ln(x)), xv = vals(x);
  for (int64_t r = 0; r < 3; ++r) {
    double mu = 0, var = 0;
    for (int64_t j = 0; j < 4; ++j) mu += xv[size_t(r * 4 + j)] / 4;
    for (int64_t j = 0; j < 4; ++j) var += std::pow(xv[size_t(r * 4 + j)] - mu, 2) / 4;
    for (int64_t j = 0; j < 4; ++j)
      EXPECT_NEAR(y[size_t(r * 4 + j)], (xv[size_t(r * 4 + j)] - mu) / std::sqrt(var + 1e-5), 1e-5);
  }
  const auto report = autograd::gradcheck(
      [](const std::vector<Tensor>& in) { return nn::F::layer_norm(in[0], 2, in[1], in[2]); },
      {uniform_tensor({2, 3, 4}, 8, -1, 1, DType::Float64), uniform_tensor({3, 4}, 9, 0.5, 1.5, DType::Float64),
       uniform_tensor({3, 4}, 10, -1, 1, DType::Float64)});
  EXPECT_TRUE(report.ok) << report.message;
  EXPECT_ERROR(ln(zeros({3, 5})), "does not end in the normalized shape [4]");
}

TEST(GroupNormLayer, MatchesLayerNormPerGroupAndGradchecks) {
  const Tensor x = uniform_tensor({2, 4, 3, 3}, 11, -1, 1, DType::Float64);
  // Two groups of two channels = layer norm over (C/2, H, W) of the regrouped input.
  const Tensor want = nn::F::layer_norm(x.reshape({2, 2, 2, 3, 3}), 3, Tensor(), Tensor()).reshape({2, 4, 3, 3});
  expect_near_all(vals(nn::F::group_norm(x, 2, Tensor(), Tensor())), vals(want), 1e-12, "group_norm");
  const auto report = autograd::gradcheck(
      [](const std::vector<Tensor>& in) { return nn::F::group_norm(in[0], 2, in[1], in[2]); },
      {x, uniform_tensor({4}, 12, 0.5, 1.5, DType::Float64), uniform_tensor({4}, 13, -1, 1, DType::Float64)});
  EXPECT_TRUE(report.ok) << report.message;
  EXPECT_ERROR(nn::GroupNorm(3, 4), "GroupNorm: 3 groups must divide 4 channels");
}

TEST(EmbeddingLayer, LooksUpRowsAccumulatesRepeatsAndSkipsThePaddingRow) {
  nn::Embedding emb(5, 3, /*padding_idx=*/1);
  expect_near_all(vals(emb.weight.select(0, 1)), {0, 0, 0}, 0, "padding row starts at zero");
  const Tensor idx = tensor(std::vector<int64_t>{2, 1, 2, 4, 0, 2}, {2, 3});
  const Tensor out = emb(idx);
  ASSERT_EQ(out.shape(), (Shape{2, 3, 3}));
  expect_near_all(vals(out.select(0, 0).select(0, 0)), vals(emb.weight.select(0, 2)), 0, "row 2");
  out.sum().backward();
  // Row 2 appears 3 times, rows 0 and 4 once, row 1 is padding, row 3 unused.
  vgrad_test::expect_values(emb.weight.grad().sum({1}), {3, 0, 9, 0, 3});
  EXPECT_ERROR(emb(tensor(std::vector<int64_t>{5})), "index_select: index 5 out of range");
}

TEST(Dropout2dLayer, ZeroesWholeChannelsAndScalesTheRest) {
  Generator gen(3);
  nn::Dropout2d drop(0.5, &gen);
  const Tensor y = drop(ones({8, 16, 3, 3}));
  const auto v = vals(y);
  int zeroed = 0;
  for (int64_t ch = 0; ch < 8 * 16; ++ch) {
    const double first = v[size_t(ch * 9)];
    EXPECT_TRUE(first == 0.0 || first == 2.0);
    for (int64_t j = 1; j < 9; ++j) EXPECT_EQ(v[size_t(ch * 9 + j)], first) << "channel " << ch;
    zeroed += first == 0.0;
  }
  EXPECT_GT(zeroed, 32);
  EXPECT_LT(zeroed, 96);
  drop.eval();
  vgrad_test::expect_values(drop(ones({1, 2, 1, 1})), {1, 1});
}

}  // namespace

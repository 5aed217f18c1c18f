// Custom differentiable ops (autograd::Function), the way a user writes one:
// a forward and a backward in one struct, checked with gradcheck, used in a graph.
// Examples: Swish (the one in function.h), Swish with a β kept in ctx.values,
// a straight-through clamp, and a two-input op whose input is broadcast.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "vgrad.h"
#include "support.h"

namespace {

using vgrad_test::error_of;
using vgrad_test::expect_values;

using namespace vgrad;
using autograd::Context;
using autograd::Function;
using Inputs = std::vector<Tensor>;

// swish(x) = x * sigmoid(x);  d/dx = s + x * s * (1 - s)
// Saves x (ctx.save_for_backward) and recomputes s in backward: a tensor saved for
// backward is version-checked, so changing x in place before backward is an error.
struct Swish : Function<Swish> {
  static const char* name() { return "swish"; }
  static Tensor forward(Context& ctx, const Tensor& x) {
    ctx.save_for_backward({x});
    return x * sigmoid(x);
  }
  static std::vector<Tensor> backward(Context& ctx, const Tensor& grad) {
    const Tensor x = ctx.saved(0), s = sigmoid(x);
    return {grad * (s + x * s * (1.0 - s))};
  }
};

// swish_β(x) = x * sigmoid(β x);  d/dx = s + β x s (1 - s). β is a scalar argument:
// scalars go in ctx.values (non-tensor arguments get no gradient).
struct BetaSwish : Function<BetaSwish> {
  static const char* name() { return "beta_swish"; }
  static Tensor forward(Context& ctx, const Tensor& x, double beta) {
    ctx.values["beta"] = beta;
    const Tensor s = sigmoid(x * beta);
    ctx.save_for_backward({x, s});  // save s too: backward need not recompute it
    return x * s;
  }
  static std::vector<Tensor> backward(Context& ctx, const Tensor& grad) {
    const double beta = ctx.values.at("beta");
    const Tensor x = ctx.saved(0), s = ctx.saved(1);
    return {grad * (s + x * s * (1.0 - s) * beta)};
  }
};

// Straight-through clamp: forward clamps to [lo, hi]; backward passes the gradient
// through unchanged, as if the op were the identity (quantization-aware training).
// Inside [lo, hi] that is the true derivative; outside it is deliberately not.
struct StraightThroughClamp : Function<StraightThroughClamp> {
  static const char* name() { return "straight_through_clamp"; }
  static Tensor forward(Context& ctx, const Tensor& x, double lo, double hi) {
    ctx.values["lo"] = lo;
    ctx.values["hi"] = hi;
    return clamp(x, lo, hi);
  }
  static std::vector<Tensor> backward(Context&, const Tensor& grad) { return {grad}; }
};

// scaled_add(x, w) = x * w + x with w (D) broadcast over x (N, D). The rule returns
// gradients of the output's shape; the engine sums dw back to (D). It skips the
// work for an input that needs no gradient (ctx.needs_input_grad).
struct ScaledAdd : Function<ScaledAdd> {
  static inline int weight_grads_computed = 0;
  static const char* name() { return "scaled_add"; }
  static Tensor forward(Context& ctx, const Tensor& x, const Tensor& w) {
    ctx.save_for_backward({x, w});
    return x * w + x;
  }
  static std::vector<Tensor> backward(Context& ctx, const Tensor& grad) {
    const Tensor x = ctx.saved(0), w = ctx.saved(1);
    Tensor dw;
    if (ctx.needs_input_grad(1)) {
      ++weight_grads_computed;
      dw = grad * x;
    }
    return {ctx.needs_input_grad(0) ? grad * (w + 1.0) : Tensor(), dw};
  }
};

// An op that returns its input object itself: record() must hand out a new tensor,
// or the input would become its own grad_fn's output (and stop being a leaf).
struct Identity : Function<Identity> {
  static Tensor forward(Context&, const Tensor& x) { return x; }
  static std::vector<Tensor> backward(Context&, const Tensor& grad) { return {grad}; }
};

struct TooFewGradients : Function<TooFewGradients> {
  static const char* name() { return "too_few"; }
  static Tensor forward(Context&, const Tensor& a, const Tensor& b) { return a + b; }
  static std::vector<Tensor> backward(Context&, const Tensor& grad) { return {grad}; }
};

struct BadShapeGradient : Function<BadShapeGradient> {
  static const char* name() { return "bad_shape"; }
  static Tensor forward(Context&, const Tensor& x) { return x * 2.0; }
  static std::vector<Tensor> backward(Context&, const Tensor& grad) { return {zeros({1, 7}, {.dtype = grad.dtype()})}; }
};

Generator& generator() {
  static Generator gen(777);
  return gen;
}
Tensor rnd(const Shape& shape) { return randn(shape, {.dtype = DType::Float64}, &generator()); }
Tensor leaf(const std::vector<double>& values, const Shape& shape) {
  return tensor(values, shape, {.dtype = DType::Float64, .requires_grad = true});
}



double sigmoid_of(double x) { return 1.0 / (1.0 + std::exp(-x)); }

TEST(CustomOp, SwishValuesAndGradient) {
  Tensor x = leaf({-1.5, 0.0, 2.0}, {3});
  const Tensor y = Swish::apply(x);
  ASSERT_NE(y.grad_fn(), nullptr);
  EXPECT_EQ(y.grad_fn()->name(), "swish");
  EXPECT_TRUE(x.is_leaf());
  y.sum().backward();
  std::vector<double> expected_y, expected_grad;
  for (double v : {-1.5, 0.0, 2.0}) {
    const double s = sigmoid_of(v);
    expected_y.push_back(v * s);
    expected_grad.push_back(s + v * s * (1 - s));
  }
  expect_values(y, expected_y);
  expect_values(x.grad(), expected_grad);
}

TEST(CustomOp, SwishPassesGradcheck) {
  const auto report = autograd::gradcheck([](const Inputs& in) { return Swish::apply(in[0]); }, {rnd({4, 3}) * 2.0});
  EXPECT_TRUE(report.ok) << report.message;
}

TEST(CustomOp, SwishInASmallGraph) {
  // linear -> swish -> linear -> mean: the custom op composes with the built-in rules.
  const auto report = autograd::gradcheck(
      [](const Inputs& in) { return linear(Swish::apply(linear(in[0], in[1], in[2])), in[3]).mean({0}); },
      {rnd({5, 4}), rnd({6, 4}), rnd({6}), rnd({2, 6})});
  EXPECT_TRUE(report.ok) << report.message;

  // And it trains: a few SGD steps on swish(x * w) towards a target lower the loss.
  Tensor w = leaf({0.1, -0.2, 0.3}, {3});
  const Tensor x = rnd({8, 3}), target = rnd({8, 3});
  auto loss_of = [&] { return square(Swish::apply(x * w) - target).mean(); };
  const double first = loss_of().item();
  for (int step = 0; step < 20; ++step) {
    w.zero_grad();
    loss_of().backward();
    NoGradGuard no_grad;
    w.add_(w.grad(), -0.5);
  }
  EXPECT_LT(loss_of().item(), first);
}

TEST(CustomOp, ScalarArgumentsLiveInCtxValues) {
  for (double beta : {0.5, 1.0, 3.0}) {
    const auto report = autograd::gradcheck([beta](const Inputs& in) { return BetaSwish::apply(in[0], beta); },
                                            {rnd({3, 4})});
    EXPECT_TRUE(report.ok) << "beta " << beta << ": " << report.message;
  }
  // β = 1 is plain swish.
  Tensor x = leaf({0.3, -0.8}, {2}), x2 = leaf({0.3, -0.8}, {2});
  BetaSwish::apply(x, 1.0).sum().backward();
  Swish::apply(x2).sum().backward();
  expect_values(x.grad(), x2.grad().to_vector<double>());
}

TEST(CustomOp, StraightThroughClamp) {
  // Inside the range the straight-through gradient is the true one: gradcheck agrees.
  const Tensor inside = uniform({3, 4}, -0.9, 0.9, {.dtype = DType::Float64}, &generator());
  auto fn = [](const Inputs& in) { return StraightThroughClamp::apply(in[0] * in[1], -1.0, 1.0) * 3.0; };
  const auto report = autograd::gradcheck(fn, {inside, ones({4}, {.dtype = DType::Float64})});
  EXPECT_TRUE(report.ok) << report.message;

  // Outside it, forward clamps but the gradient still flows (1 where clamp would give 0).
  Tensor x = leaf({-3.0, 0.5, 4.0}, {3});
  const Tensor y = StraightThroughClamp::apply(x, -1.0, 1.0);
  expect_values(y, {-1.0, 0.5, 1.0});
  (y * 2.0).sum().backward();
  expect_values(x.grad(), {2, 2, 2});
  // ... which gradcheck reports as a mismatch against the true (zero) derivative there.
  const auto outside = autograd::gradcheck(
      [](const Inputs& in) { return StraightThroughClamp::apply(in[0], -1.0, 1.0); },
      {tensor(std::vector<double>{-3.0, 0.5, 4.0}, {3})});
  EXPECT_FALSE(outside.ok);
  EXPECT_NE(outside.worst_element, 1);  // the element inside the range is fine
  EXPECT_EQ(outside.numeric, 0.0);
}

TEST(CustomOp, TwoInputsWithBroadcastAndNeedsInputGrad) {
  const auto report = autograd::gradcheck([](const Inputs& in) { return ScaledAdd::apply(in[0], in[1]); },
                                          {rnd({4, 3}), rnd({3})});
  EXPECT_TRUE(report.ok) << report.message;

  // w needs no gradient: the rule skips it, and x's gradient is still right.
  Tensor x = leaf({1, 2, 3, 4}, {2, 2});
  const Tensor w = tensor(std::vector<double>{10, 20}, {2});
  ScaledAdd::weight_grads_computed = 0;
  ScaledAdd::apply(x, w).sum().backward();
  EXPECT_EQ(ScaledAdd::weight_grads_computed, 0);
  expect_values(x.grad(), {11, 21, 11, 21});

  // Both need one: dw (N, D) is summed to (D) by the engine.
  Tensor w2 = leaf({10, 20}, {2});
  ScaledAdd::apply(x, w2).sum().backward();
  EXPECT_EQ(ScaledAdd::weight_grads_computed, 1);
  EXPECT_EQ(w2.grad().shape(), Shape({2}));
  expect_values(w2.grad(), {1 + 3, 2 + 4});
}

TEST(CustomOp, SavedTensorsAreVersionChecked) {
  Tensor x = leaf({1, 2}, {2});
  Tensor h = x * 1.0;
  const Tensor y = Swish::apply(h);
  h.detach().mul_(2.0);  // changes the tensor Swish saved (h itself refuses in-place while recording)
  const std::string message = error_of([&] { y.sum().backward(); });
  EXPECT_NE(message.find("swish"), std::string::npos) << message;
  EXPECT_NE(message.find("modified in place"), std::string::npos) << message;
}

TEST(CustomOp, SavedTensorsAreFreedAfterBackward) {
  Tensor x = leaf({1, 2}, {2});
  Tensor h = x * 3.0;
  const std::weak_ptr<Storage> saved = h.storage();
  const Tensor y = BetaSwish::apply(h, 2.0);
  h = Tensor();
  EXPECT_FALSE(saved.expired());
  y.sum().backward();
  EXPECT_TRUE(saved.expired());  // released with the node, while y lives on
  EXPECT_TRUE(y.grad_fn()->released());
  const std::string message = error_of([&] { y.sum().backward(); });
  EXPECT_NE(message.find("beta_swish"), std::string::npos) << message;
}

TEST(CustomOp, ForwardRunsWithoutRecordingAndNeedsNoGradInputs) {
  Tensor x = leaf({1, 2}, {2});
  const Tensor y = Swish::apply(x);
  // forward's own x * sigmoid(x) was not recorded: the only node is the custom one.
  ASSERT_NE(y.grad_fn(), nullptr);
  ASSERT_EQ(y.grad_fn()->edges().size(), 1u);
  EXPECT_EQ(y.grad_fn()->edges()[0].node, nullptr);
  EXPECT_EQ(y.grad_fn()->edges()[0].leaf, x.impl_shared());

  const Tensor c = Swish::apply(tensor(std::vector<double>{1, 2}, {2}));  // nothing requires grad
  EXPECT_FALSE(c.requires_grad());
  EXPECT_EQ(c.grad_fn(), nullptr);
  NoGradGuard no_grad;
  EXPECT_EQ(Swish::apply(x).grad_fn(), nullptr);
}

TEST(CustomOp, ReturningTheInputKeepsItALeaf) {
  Tensor x = leaf({1, 2}, {2});
  const Tensor y = Identity::apply(x);
  EXPECT_FALSE(y.is_same(x));
  EXPECT_TRUE(x.is_leaf());
  EXPECT_FALSE(y.is_leaf());
  EXPECT_EQ(y.data_ptr(), x.data_ptr());  // still a view of the same data
  (y * 3.0).sum().backward();
  expect_values(x.grad(), {3, 3});
}

TEST(CustomOp, BadBackwardsAreClearErrors) {
  Tensor a = leaf({1, 2}, {2}), b = leaf({3, 4}, {2});
  std::string message = error_of([&] { TooFewGradients::apply(a, b).sum().backward(); });
  EXPECT_NE(message.find("too_few: backward returned 1 gradients for 2 inputs"), std::string::npos) << message;

  Tensor x = leaf({1, 2, 3}, {1, 3});
  message = error_of([&] { BadShapeGradient::apply(x).sum().backward(); });
  EXPECT_NE(message.find("bad_shape"), std::string::npos) << message;
  EXPECT_NE(message.find("[1, 7]"), std::string::npos) << message;
}

}  // namespace

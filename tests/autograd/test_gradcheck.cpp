// gradcheck itself: that it passes a whole small MLP, catches a wrong rule, names the
// input, raises, and leaves the caller's tensors alone. Each op's own gradient check
// is in tests/autograd/ops/test_<family>.cpp, run on every device.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "support.h"
#include "vgrad.h"

namespace {

using namespace vgrad;
using autograd::GradcheckOptions;
using autograd::GradcheckReport;
using Inputs = std::vector<Tensor>;
using Fn = std::function<Tensor(const Inputs&)>;

Generator& generator() {
  static Generator gen(20240521);
  return gen;
}
constexpr TensorOptions kF64{.dtype = DType::Float64};

Tensor rnd(const Shape& shape) { return randn(shape, kF64, &generator()); }
Tensor indices(const std::vector<int64_t>& values) { return tensor(values); }

void check(const std::string& what, const Fn& fn, const Inputs& inputs, GradcheckOptions options = {}) {
  const GradcheckReport report = autograd::gradcheck(fn, inputs, options);
  EXPECT_TRUE(report.ok) << what << ": " << report.message;
}

// ---------------------------------------------------------------- a whole small MLP

// linear -> relu -> linear -> log_softmax -> nll, the loss a classifier trains on.
Tensor mlp_logits(const Inputs& in) {
  const Tensor hidden = relu(linear(in[0], in[1], in[2]));
  return linear(hidden, in[3], in[4]);
}

TEST(Gradcheck, SmallMlpWithNllByIndex) {
  const int64_t n = 4, classes = 3;
  const Inputs inputs = {rnd({n, 5}), rnd({6, 5}), rnd({6}), rnd({classes, 6}), rnd({classes}), indices({2, 0, 1, 2})};
  check("mlp nll via index_select",
        [n, classes](const Inputs& in) {
          const Tensor log_probs = log_softmax(mlp_logits(in), 1);
          // The target's log-probability per row: flat index row * C + target.
          const Tensor flat_index = in[5] + arange(n) * double(classes);
          return -mean(index_select(log_probs.reshape({-1}), 0, flat_index));
        },
        inputs);
}

TEST(Gradcheck, SmallMlpWithNllByOneHotSum) {
  const Tensor one_hot = tensor(std::vector<double>{0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1}, {4, 3});
  check("mlp nll via one-hot sum",
        [one_hot](const Inputs& in) { return -(log_softmax(mlp_logits(in), 1) * one_hot).sum() / 4.0; },
        {rnd({4, 5}), rnd({6, 5}), rnd({6}), rnd({3, 6}), rnd({3})});
  // The same network written with matmul and a broadcast bias.
  check("mlp via matmul + bias",
        [one_hot](const Inputs& in) {
          const Tensor hidden = tanh(matmul(in[0], in[1].t()) + in[2]);
          return -(log_softmax(matmul(hidden, in[3].t()) + in[4], -1) * one_hot).sum();
        },
        {rnd({4, 5}), rnd({6, 5}), rnd({6}), rnd({3, 6}), rnd({3})});
}

// ---------------------------------------------------------------- gradcheck itself

// x² with a deliberately wrong backward (x instead of 2x).
struct WrongSquare : autograd::Function<WrongSquare> {
  static const char* name() { return "wrong_square"; }
  static Tensor forward(autograd::Context& ctx, const Tensor& x) {
    ctx.save_for_backward({x});
    return x * x;
  }
  static std::vector<Tensor> backward(autograd::Context& ctx, const Tensor& grad_output) {
    return {grad_output * ctx.saved(0)};
  }
};

// softmax with a zero backward: right for sum(softmax(x)) (which is constant), wrong otherwise.
struct ZeroGradSoftmax : autograd::Function<ZeroGradSoftmax> {
  static Tensor forward(autograd::Context&, const Tensor& x) { return softmax(x, -1); }
  static std::vector<Tensor> backward(autograd::Context&, const Tensor& grad_output) {
    return {zeros_like(grad_output)};
  }
};

TEST(GradcheckApi, DetectsAWrongGradientAndNamesTheInput) {
  // Input 0 is int64 (passed through), input 1 is right, input 2 goes through the wrong rule.
  const Tensor b = tensor(std::vector<double>{0.5, -1.0, 2.0}, {3});
  const GradcheckReport report = autograd::gradcheck(
      [](const Inputs& in) { return index_select(in[1], 0, in[0]) * 2.0 + WrongSquare::apply(in[2]); },
      {indices({2, 0, 1}), rnd({3}), b});
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.worst_input, 2u);
  // The worst element is where |x| is largest: b[2] = 2, gradient 2x vs x (weighted by R).
  EXPECT_EQ(report.worst_element, 2);
  EXPECT_NEAR(report.numeric, 2 * report.analytic, 1e-6 * std::abs(report.numeric) + 1e-8);
  EXPECT_NEAR(report.abs_error, std::abs(report.analytic - report.numeric), 1e-12);
  EXPECT_NEAR(report.rel_error, 0.5, 1e-6);
  EXPECT_NE(report.message.find("gradcheck: input 2 element 2"), std::string::npos) << report.message;
  EXPECT_NE(report.message.find("exceeds"), std::string::npos) << report.message;
}

TEST(GradcheckApi, RandomWeightingChecksTheWholeJacobian) {
  // Checking only sum(y) would miss the broken rule; the random weighting R does not.
  EXPECT_TRUE(autograd::gradcheck([](const Inputs& in) { return ZeroGradSoftmax::apply(in[0]).sum(); }, {rnd({2, 4})}).ok);
  const GradcheckReport report = autograd::gradcheck([](const Inputs& in) { return ZeroGradSoftmax::apply(in[0]); }, {rnd({2, 4})});
  EXPECT_FALSE(report.ok) << report.message;
  EXPECT_EQ(report.analytic, 0.0);
}

TEST(GradcheckApi, RaiseThrowsTheMessage) {
  const Fn wrong = [](const Inputs& in) { return in[0] + WrongSquare::apply(in[1]); };
  const Inputs inputs = {rnd({2}), tensor(std::vector<double>{1.5, -0.7}, {2})};
  const GradcheckReport report = autograd::gradcheck(wrong, inputs);
  ASSERT_FALSE(report.ok);
  try {
    autograd::gradcheck(wrong, inputs, {.raise = true});
    ADD_FAILURE() << "raise = true did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), report.message);
    EXPECT_NE(std::string(e.what()).find("gradcheck: input 1"), std::string::npos) << e.what();
  }
  // A passing check does not throw.
  EXPECT_NO_THROW(autograd::gradcheck([](const Inputs& in) { return in[0] * in[0]; }, {rnd({3})}, {.raise = true}));
}

TEST(GradcheckApi, ReportOnSuccess) {
  const GradcheckReport report = autograd::gradcheck([](const Inputs& in) { return exp(in[0]) * in[1]; },
                                                     {rnd({2, 3}), rnd({3})});
  EXPECT_TRUE(report.ok);
  EXPECT_LT(report.worst_input, 2u);
  EXPECT_LE(report.abs_error, 1e-5);
  EXPECT_NE(report.message.find("within"), std::string::npos) << report.message;
}

TEST(GradcheckApi, LeavesTheCallersInputsAlone) {
  Tensor x = tensor({0.5f, -1.0f, 2.0f}, {3}, {.requires_grad = true});  // float32: checked in a float64 copy
  const std::vector<float> before = x.to_vector<float>();
  const auto report = autograd::gradcheck([](const Inputs& in) {
    EXPECT_EQ(in[0].dtype(), DType::Float64);
    return sigmoid(in[0]);
  }, {x});
  EXPECT_TRUE(report.ok) << report.message;
  EXPECT_EQ(x.to_vector<float>(), before);
  EXPECT_FALSE(x.grad().defined());
  EXPECT_EQ(x.dtype(), DType::Float32);
  EXPECT_TRUE(x.requires_grad());
}

TEST(GradcheckApi, OutputIndependentOfTheInputs) {
  const auto report = autograd::gradcheck([](const Inputs&) { return ones({2, 2}, kF64); }, {rnd({3})});
  EXPECT_TRUE(report.ok) << report.message;
  EXPECT_EQ(report.analytic, 0.0);
  EXPECT_EQ(report.numeric, 0.0);
}

TEST(GradcheckApi, Errors) {
  using vgrad_test::error_of;
  auto message_of = [](const Fn& fn, const Inputs& inputs) { return error_of([&] { autograd::gradcheck(fn, inputs); }); };
  std::string message = message_of([](const Inputs& in) { return argmax(in[0], 0); }, {rnd({3})});
  EXPECT_CONTAINS(message, "int64");
  EXPECT_CONTAINS(message, "floating point");
  EXPECT_CONTAINS(message_of([](const Inputs& in) { return in[0].to(DType::Float32); }, {indices({1, 2})}),
                  "nothing to check");
  EXPECT_CONTAINS(message_of([](const Inputs&) { return Tensor(); }, {rnd({3})}), "undefined");
}

}  // namespace

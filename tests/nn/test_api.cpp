// The module API a LibTorch user reaches for: Module::to(DType), nn::gradcheck on a
// module with a Linear (inputs and parameters, in float64, the model left as it was),
// modules with several inputs (x, mask) called through operator(), with named
// parameters and a state_dict, and every loss reachable as nn::<loss>.
#include <gtest/gtest.h>

#include <memory>

#include "support.h"
#include "vgrad.h"

namespace {

using namespace vgrad;
using vgrad_test::expect_values;
using vgrad_test::vals;

// ---------------- Module::to(DType) ----------------

TEST(ModuleTo, DTypeConvertsParametersAndGradientsInPlace) {
  manual_seed(1);
  vgrad_test::Mlp model(3, 4, 2);
  const std::vector<double> before = vals(model.fc1->weight);
  const Tensor held = model.fc1->weight;  // a handle held elsewhere (an optimizer's) follows
  model(vgrad_test::uniform_tensor({2, 3}, 2)).sum().backward();
  model.to(DType::Float64);
  for (const auto& [name, p] : model.named_parameters()) {
    EXPECT_EQ(p.dtype(), DType::Float64) << name;
    EXPECT_EQ(p.grad().dtype(), DType::Float64) << name;
    EXPECT_TRUE(p.requires_grad()) << name;
  }
  EXPECT_EQ(held.dtype(), DType::Float64);
  EXPECT_EQ(vals(held), before);  // float32 values are exact in float64
  EXPECT_EQ(model(vgrad_test::uniform_tensor({2, 3}, 2, -2, 2, DType::Float64)).dtype(), DType::Float64);
  model.to(DType::Float32);
  EXPECT_EQ(model.fc2->bias.dtype(), DType::Float32);
  EXPECT_EQ(vals(model.fc1->weight), before);
  EXPECT_ERROR(model.to(DType::Int64), "to(int64): parameters must stay floating point");
}

// ---------------- gradcheck on modules ----------------

// Linear -> tanh -> Linear with a learned scale: every parameter gets a nonzero gradient.
struct Block : nn::Module {
  Block()
      : fc1(register_module("fc1", std::make_shared<nn::Linear>(4, 5))),
        fc2(register_module("fc2", std::make_shared<nn::Linear>(5, 3))),
        scale(register_parameter("scale", full({3}, 0.7))) {}
  Tensor forward(const Tensor& x) override { return (*fc2)(vgrad::tanh((*fc1)(x))) * scale; }
  std::shared_ptr<nn::Linear> fc1, fc2;
  Tensor scale;
};

TEST(ModuleGradcheck, ChecksInputsAndEveryParameterOfAFloat32ModuleInFloat64) {
  manual_seed(3);
  Block block;
  const std::vector<double> weight_before = vals(block.fc1->weight);
  const auto report = nn::gradcheck(block, vgrad_test::uniform_tensor({6, 4}, 4));
  EXPECT_TRUE(report.ok) << report.message;
  // The model is float32 again, with the same values and no gradients from the check.
  for (const auto& [name, p] : block.named_parameters()) {
    EXPECT_EQ(p.dtype(), DType::Float32) << name;
    EXPECT_FALSE(p.grad().defined()) << name;
  }
  EXPECT_EQ(vals(block.fc1->weight), weight_before);
}

// A backward rule that is wrong for one parameter only is caught, and the message names it.
struct WrongScale : autograd::Function<WrongScale> {
  static const char* name() { return "wrong_scale"; }
  static Tensor forward(autograd::Context& ctx, const Tensor& x, const Tensor& s) {
    ctx.save_for_backward({x, s});
    return x * s;
  }
  static std::vector<Tensor> backward(autograd::Context& ctx, const Tensor& g) {
    return {g * ctx.saved(1), 2.0 * g * ctx.saved(0)};  // ds should be g·x: twice too large
  }
};
struct BrokenBlock : nn::Module {
  BrokenBlock()
      : fc(register_module("fc", std::make_shared<nn::Linear>(3, 2))), gain(register_parameter("gain", full({2}, 1.5))) {}
  Tensor forward(const Tensor& x) override { return WrongScale::apply((*fc)(x), gain); }
  std::shared_ptr<nn::Linear> fc;
  Tensor gain;
};

TEST(ModuleGradcheck, AWrongParameterGradientFailsAndIsNamed) {
  manual_seed(5);
  BrokenBlock broken;
  const Tensor x = vgrad_test::uniform_tensor({4, 3}, 6);
  const auto report = nn::gradcheck(broken, x);
  EXPECT_FALSE(report.ok);
  EXPECT_CONTAINS(report.message, "gradcheck: parameter gain element");
  EXPECT_EQ(report.worst_input, 1u);  // after the 1 input, in named_parameters order: gain, fc.weight, fc.bias
  EXPECT_ERROR(nn::gradcheck(broken, x, {.raise = true}), "parameter gain");
  EXPECT_EQ(broken.gain.dtype(), DType::Float32);  // restored after the throw too
}

TEST(ModuleGradcheck, ParametersMustBeFloat64LeavesForTheLowLevelCheck) {
  nn::Linear fc(2, 2);
  EXPECT_ERROR(autograd::gradcheck([&](const std::vector<Tensor>& in) { return fc(in[0]); },
                                   {vgrad_test::uniform_tensor({1, 2}, 7)}, {}, fc.named_parameters()),
               "parameter 'weight' must be a contiguous float64 leaf", "float32", "nn::gradcheck");
}

// ---------------- modules with several inputs ----------------

// y = mean over the positions where mask is 1 of proj(x):  x (N, L, D), mask (N, L) -> (N, D_out)
struct MaskedPool : nn::MultiInput<MaskedPool> {
  MaskedPool(int64_t d, int64_t d_out) : proj(register_module("proj", std::make_shared<nn::Linear>(d, d_out))) {}
  Tensor forward(const Tensor& x, const Tensor& mask) {
    const Tensor m = mask.unsqueeze(-1);
    return sum((*proj)(x) * m, {1}) / sum(m, {1});
  }
  // An overload with another signature: every position counts.
  Tensor forward(const Tensor& x) { return forward(x, ones({x.shape()[0], x.shape()[1]})); }
  std::shared_ptr<nn::Linear> proj;
};

// A model using it with a plain Module around it: named children and state_dict go through.
struct Classifier : nn::MultiInput<Classifier> {
  using MultiInput::forward;  // as nn/module.h advises: no -Woverloaded-virtual
  Classifier()
      : pool(register_module("pool", std::make_shared<MaskedPool>(3, 4))),
        head(register_module("head", std::make_shared<nn::Linear>(4, 2))) {}
  Tensor forward(const Tensor& x, const Tensor& mask) { return (*head)((*pool)(x, mask)); }
  std::shared_ptr<MaskedPool> pool;
  std::shared_ptr<nn::Linear> head;
};

TEST(MultiInputModule, ForwardWithAMaskIsCalledThroughOperatorCall) {
  manual_seed(8);
  MaskedPool pool(3, 2);
  const Tensor x = vgrad_test::uniform_tensor({2, 3, 3}, 9);
  const Tensor mask = tensor({1.f, 1.f, 0.f, 0.f, 1.f, 0.f}, {2, 3});
  const Tensor y = pool(x, mask);
  EXPECT_EQ(y.shape(), (Shape{2, 2}));
  // By hand: row 0 averages positions 0 and 1, row 1 is position 1 alone.
  const Tensor p = (*pool.proj)(x);
  expect_values(y.select(0, 0), vals((p.select(0, 0).select(0, 0) + p.select(0, 0).select(0, 1)) / 2.0), 1e-6);
  expect_values(y.select(0, 1), vals(p.select(0, 1).select(0, 1)), 1e-6);
  // The one-argument overload: everything unmasked.
  expect_values(pool(x), vals(mean(p, {1})), 1e-6);
  // Gradients reach the parameters through operator().
  pool(x, mask).sum().backward();
  EXPECT_TRUE(pool.proj->weight.grad().defined());
}

TEST(MultiInputModule, NamedParametersStateDictAndGradcheck) {
  manual_seed(10);
  Classifier model;
  std::vector<std::string> names;
  for (const auto& [name, p] : model.named_parameters()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"pool.proj.weight", "pool.proj.bias", "head.weight", "head.bias"}));
  EXPECT_EQ(model.pool->proj->path(), "pool.proj");

  Classifier copy;
  copy.load_state_dict(model.state_dict());
  const Tensor x = vgrad_test::uniform_tensor({2, 3, 3}, 11);
  const Tensor mask = tensor({1.f, 0.f, 1.f, 1.f, 1.f, 0.f}, {2, 3});
  EXPECT_EQ(vals(copy(x, mask)), vals(model(x, mask)));

  const auto report = nn::gradcheck(model, [&](const std::vector<Tensor>& in) { return model(in[0], in[1]); },
                                    {x, mask});
  EXPECT_TRUE(report.ok) << report.message;
}

// Sequential calls forward(const Tensor&): MaskedPool's one-tensor overload serves there;
// Classifier has none, and the error names it and says how to call it.
TEST(MultiInputModule, InSequentialOnlyWithAOneTensorForward) {
  manual_seed(12);
  auto pool = std::make_shared<MaskedPool>(3, 2);
  nn::Sequential seq{std::make_shared<nn::Linear>(3, 3), pool};
  const Tensor x = vgrad_test::uniform_tensor({2, 4, 3}, 13);
  EXPECT_EQ(vals(seq(x)), vals((*pool)((*std::dynamic_pointer_cast<nn::Linear>(seq[0]))(x))));

  nn::Sequential wrong{std::make_shared<nn::Linear>(3, 3), std::make_shared<Classifier>()};
  EXPECT_ERROR(wrong(x), "1 (Module): forward() is not implemented for one tensor", "call it as module(args...)");
}

// ---------------- losses in one namespace ----------------

TEST(Losses, EveryLossIsReachableAsNnLoss) {
  const Tensor logits = tensor({0.5f, -1.f, 2.f, 0.f}, {2, 2});
  const Tensor target = tensor({1, 0});
  const Tensor probs = tensor({1.f, 0.f, 0.f, 1.f}, {2, 2});
  EXPECT_EQ(nn::cross_entropy(logits, target).item(), nn::F::cross_entropy(logits, target).item());
  EXPECT_EQ(nn::nll_loss(log_softmax(logits, 1), target).item(), nn::F::nll_loss(log_softmax(logits, 1), target).item());
  // mse: ((0.5-1)² + 1 + 4 + 1) / 4
  EXPECT_NEAR(nn::mse_loss(logits, probs).item(), (0.25 + 1 + 4 + 1) / 4, 1e-6);
  EXPECT_NEAR(nn::mse_loss(logits, probs, nn::Reduction::Sum).item(), 6.25, 1e-6);
  EXPECT_EQ(nn::binary_cross_entropy_with_logits(logits, probs).item(),
            nn::F::binary_cross_entropy_with_logits(logits, probs).item());
  EXPECT_EQ(vals(nn::one_hot(target, 2)), (std::vector<double>{0, 1, 1, 0}));
}

}  // namespace

// The backward engine: graph state, accumulation, unbroadcasting, grad mode,
// freed graphs, the version counter, error messages and graph lifetime.
// Gradients of the individual ops are checked in test_gradcheck.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "vgrad.h"
#include "support.h"

namespace {

using vgrad_test::contains;
using vgrad_test::error_of;
using vgrad_test::expect_values;

using namespace vgrad;
using autograd::Node;

// An empty shape means 0-d here (tensor() reads it as 1-D; scalar_tensor makes 0-d).
Tensor leaf(const std::vector<double>& values, const Shape& shape) {
  const TensorOptions options{.dtype = DType::Float64, .requires_grad = true};
  return shape.empty() && values.size() == 1 ? scalar_tensor(values[0], options) : tensor(values, shape, options);
}
Tensor constant(const std::vector<double>& values, const Shape& shape) { return tensor(values, shape); }



TEST(Engine, LeafAndNodeState) {
  Tensor x = leaf({1, 2, 3}, {3});
  const Tensor c = constant({10, 20, 30}, {3});
  EXPECT_TRUE(x.requires_grad());
  EXPECT_TRUE(x.is_leaf());
  EXPECT_EQ(x.grad_fn(), nullptr);
  EXPECT_FALSE(x.grad().defined());

  const Tensor y = x * 2.0 + c;
  EXPECT_TRUE(y.requires_grad());
  EXPECT_FALSE(y.is_leaf());
  ASSERT_NE(y.grad_fn(), nullptr);
  EXPECT_EQ(y.grad_fn()->name(), "add");
  ASSERT_EQ(y.grad_fn()->edges().size(), 2u);
  ASSERT_NE(y.grad_fn()->edges()[0].node, nullptr);  // x * 2 was recorded
  EXPECT_EQ(y.grad_fn()->edges()[0].node->name(), "affine");
  EXPECT_FALSE(y.grad_fn()->edges()[1].active());  // c needs no gradient

  const Tensor z = c * 2.0;  // nothing requires grad: nothing recorded
  EXPECT_FALSE(z.requires_grad());
  EXPECT_TRUE(z.is_leaf());
  EXPECT_EQ(z.grad_fn(), nullptr);

  y.sum().backward();
  expect_values(x.grad(), {2, 2, 2});
  EXPECT_FALSE(x.grad().requires_grad());
  EXPECT_EQ(x.grad().grad_fn(), nullptr);
  EXPECT_EQ(x.grad().shape(), x.shape());
  EXPECT_EQ(x.grad().dtype(), DType::Float64);
  EXPECT_FALSE(c.grad().defined());
  EXPECT_FALSE(y.grad().defined());  // only leaves keep .grad
}

TEST(Engine, BackwardOnScalar) {
  Tensor x = leaf({1, -2, 3, 0.5}, {2, 2});
  (x * x * x).sum().backward();  // d/dx sum(x³) = 3x²
  expect_values(x.grad(), {3, 12, 27, 0.75});

  Tensor w = leaf({1, 2, 3, 4}, {4});
  w.mean().backward();
  expect_values(w.grad(), {0.25, 0.25, 0.25, 0.25});

  Tensor s = leaf({3}, {});
  s.backward();  // a leaf root gets d s/d s = 1
  expect_values(s.grad(), {1});
}

TEST(Engine, BackwardWithGradientOnNonScalar) {
  Tensor x = leaf({1, 2, 3}, {3});
  const Tensor y = x * x;
  y.backward(constant({1, 10, 100}, {3}));  // vector-Jacobian product: 2x * g
  expect_values(x.grad(), {2, 40, 600});
}

TEST(Engine, SeveralRootsAddUp) {
  Tensor x = leaf({1, 2}, {2});
  const Tensor a = (x * 3.0).sum(), b = (x * x).sum();
  autograd::backward({a, b});
  expect_values(x.grad(), {3 + 2, 3 + 4});
  x.zero_grad();
  const Tensor y = x * x;  // two roots on the same node: seeds add before it runs
  autograd::backward({y, y}, {constant({1, 1}, {2}), constant({2, 3}, {2})});
  expect_values(x.grad(), {2 * 1 * 3, 2 * 2 * 4});
  x.zero_grad();
  const Tensor h = x * 2.0, loss = (h * h).sum();  // one root feeds the other
  autograd::backward({h, loss}, {constant({1, 1}, {2}), Tensor()});
  expect_values(x.grad(), {2 + 8 * 1, 2 + 8 * 2});  // d(2x)/dx + d(4x²)/dx
}

TEST(Engine, TensorUsedTwiceGetsBothContributions) {
  Tensor x = leaf({1, 2, 3}, {3});
  (x * x).sum().backward();  // both operands are x: 2x
  expect_values(x.grad(), {2, 4, 6});

  Tensor u = leaf({0, 1}, {2});
  (u * 3.0 + exp(u)).sum().backward();  // two branches: 3 + eˣ
  expect_values(u.grad(), {3 + 1, 3 + std::exp(1.0)}, 1e-12);

  Tensor v = leaf({1, 2}, {2});
  const Tensor h = v * 2.0;  // a diamond: y = h² + h, dy/dv = (2h + 1) * 2
  (h * h + h).sum().backward();
  expect_values(v.grad(), {(2 * 2 + 1) * 2, (2 * 4 + 1) * 2});
}

TEST(Engine, GradientsAccumulateUntilZeroGrad) {
  Tensor x = leaf({1, 2, 3}, {3});
  x.zero_grad();  // no .grad yet: nothing to do
  EXPECT_FALSE(x.grad().defined());
  for (int i = 0; i < 3; ++i) (x * x).sum().backward();
  expect_values(x.grad(), {6, 12, 18});

  // zero_grad() drops .grad (set_to_none); the next backward starts afresh.
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
  (x * x).sum().backward();
  (x * 3.0).sum().backward();
  expect_values(x.grad(), {2 + 3, 4 + 3, 6 + 3});

  // zero_grad(false) zeros the buffer in place and keeps it for the next accumulation.
  const void* buffer = x.grad().data_ptr();
  x.zero_grad(/*set_to_none=*/false);
  expect_values(x.grad(), {0, 0, 0});
  EXPECT_EQ(x.grad().data_ptr(), buffer);
  (x * x).sum().backward();
  expect_values(x.grad(), {2, 4, 6});
  EXPECT_EQ(x.grad().data_ptr(), buffer);
}

TEST(Engine, LeafGradientsDoNotAliasEachOtherOrTheSeed) {
  Tensor a = leaf({1, 2}, {2}), b = leaf({3, 4}, {2});
  const Tensor seed = constant({5, 7}, {2}).to(DType::Float64);
  (a + b).backward(seed);  // add hands the same g to both inputs
  EXPECT_NE(a.grad().data_ptr(), b.grad().data_ptr());
  EXPECT_NE(a.grad().data_ptr(), seed.data_ptr());
  (a + b).backward(seed);
  expect_values(a.grad(), {10, 14});
  expect_values(b.grad(), {10, 14});
  expect_values(seed, {5, 7});  // the seed was never accumulated into

  Tensor s = leaf({1, 2}, {2});
  Tensor g = constant({3, 4}, {2}).to(DType::Float64);
  s.backward(g);
  g.fill_(0);
  expect_values(s.grad(), {3, 4});  // a copy, not the caller's tensor
}

TEST(Engine, SetGradIsCheckedAndAccumulatedInto) {
  Tensor x = leaf({1, 2}, {2});
  EXPECT_TRUE(contains(error_of([&] { x.set_grad(zeros({3}, {.dtype = DType::Float64})); }), "set_grad"));
  x.set_grad(constant({10, 20}, {2}).to(DType::Float64));
  (x * 3.0).sum().backward();
  expect_values(x.grad(), {13, 23});
}

TEST(Engine, UnbroadcastSumsGradientsBackToInputShapes) {
  // (N, D) + (D,): the bias gradient is the sum over the batch.
  Tensor x = leaf({1, 2, 3, 4, 5, 6}, {3, 2}), b = leaf({0.5, -0.5}, {2});
  const Tensor g = constant({1, 2, 3, 4, 5, 6}, {3, 2}).to(DType::Float64);
  (x + b).backward(g);
  EXPECT_EQ(b.grad().shape(), Shape({2}));
  expect_values(b.grad(), {1 + 3 + 5, 2 + 4 + 6});
  expect_values(x.grad(), {1, 2, 3, 4, 5, 6});

  // (N, 1) * (1, D) -> (N, D)
  Tensor u = leaf({1, 2, 3}, {3, 1}), v = leaf({10, 20}, {1, 2});
  (u * v).backward(g);
  EXPECT_EQ(u.grad().shape(), Shape({3, 1}));
  EXPECT_EQ(v.grad().shape(), Shape({1, 2}));
  expect_values(u.grad(), {1 * 10 + 2 * 20, 3 * 10 + 4 * 20, 5 * 10 + 6 * 20});
  expect_values(v.grad(), {1 * 1 + 3 * 2 + 5 * 3, 2 * 1 + 4 * 2 + 6 * 3});

  // a 0-d tensor broadcast everywhere
  Tensor s = leaf({2}, {});
  (x * s).backward(g);
  EXPECT_EQ(s.grad().shape(), Shape({}));
  expect_values(s.grad(), {1 * 1 + 2 * 2 + 3 * 3 + 4 * 4 + 5 * 5 + 6 * 6});
}

TEST(Engine, LinearGradientsAreTheBatchFormulas) {
  // Z = X·Wᵀ + b;  dW = Δᵀ·X,  db = Σ_rows Δ,  dX = Δ·W
  Tensor x = leaf({1, 2, 3, 4, 5, 6}, {3, 2});         // N = 3, D_in = 2
  Tensor w = leaf({1, 0, -1, 2, 0.5, 0.5}, {3, 2});   // D_out = 3
  Tensor b = leaf({0.1, 0.2, 0.3}, {3});
  const Tensor delta = constant({1, 0, 2, 0, 1, 0, 3, 1, 1}, {3, 3}).to(DType::Float64);
  linear(x, w, b).backward(delta);
  expect_values(b.grad(), {4, 2, 3});
  // dW[o][i] = Σ_n Δ[n][o] X[n][i]
  expect_values(w.grad(), {1 * 1 + 0 * 3 + 3 * 5, 1 * 2 + 0 * 4 + 3 * 6,  //
                           0 * 1 + 1 * 3 + 1 * 5, 0 * 2 + 1 * 4 + 1 * 6,  //
                           2 * 1 + 0 * 3 + 1 * 5, 2 * 2 + 0 * 4 + 1 * 6});
  // dX[n][i] = Σ_o Δ[n][o] W[o][i]
  expect_values(x.grad(), {1 * 1 + 0 * -1 + 2 * 0.5, 1 * 0 + 0 * 2 + 2 * 0.5,  //
                           0 * 1 + 1 * -1 + 0 * 0.5, 0 * 0 + 1 * 2 + 0 * 0.5,  //
                           3 * 1 + 1 * -1 + 1 * 0.5, 3 * 0 + 1 * 2 + 1 * 0.5});
}

TEST(Engine, GradientDTypeFollowsTheInput) {
  Tensor x = tensor({1.0f, 2.0f}, {2}, {.requires_grad = true});  // float32
  (x.to(DType::Float64) * 3.0).sum().backward();
  EXPECT_EQ(x.grad().dtype(), DType::Float32);
  expect_values(x.grad(), {3, 3});

  Tensor h = tensor({1.0f, 2.0f}, {2}, {.requires_grad = true});
  Tensor d = leaf({0.5, 0.25}, {2});
  (h * d).sum().backward();  // float32 * float64 promotes; each gradient comes back in its input's dtype
  EXPECT_EQ(h.grad().dtype(), DType::Float32);
  EXPECT_EQ(d.grad().dtype(), DType::Float64);
  expect_values(h.grad(), {0.5, 0.25});
  expect_values(d.grad(), {1, 2});
}

TEST(Engine, NoGradAndEnableGradGuards) {
  Tensor x = leaf({1, 2}, {2});
  EXPECT_TRUE(autograd::GradMode::is_enabled());
  {
    NoGradGuard no_grad;
    EXPECT_FALSE(autograd::GradMode::is_enabled());
    const Tensor y = x * 2.0;
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(y.grad_fn(), nullptr);
    {
      EnableGradGuard enable;
      EXPECT_TRUE(autograd::GradMode::is_enabled());
      const Tensor z = x * 2.0;
      EXPECT_TRUE(z.requires_grad());
      EXPECT_NE(z.grad_fn(), nullptr);
    }
    EXPECT_FALSE(autograd::GradMode::is_enabled());
    x.mul_(1.0);  // in place on a leaf is allowed with recording off (an optimizer step)
  }
  EXPECT_TRUE(autograd::GradMode::is_enabled());
  EXPECT_TRUE(contains(error_of([&] { x.mul_(2.0); }), "in place"));
  expect_values(x, {1, 2});
}

TEST(Engine, DetachSharesStorageButCutsTheGraph) {
  Tensor x = leaf({1, 2, 3}, {3});
  const Tensor d = x.detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(d.is_leaf());
  EXPECT_EQ(d.data_ptr(), x.data_ptr());
  (x * x.detach()).sum().backward();  // the detached factor is a constant: grad = x, not 2x
  expect_values(x.grad(), {1, 2, 3});
  const Tensor y = (x * 2.0).detach();
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.grad_fn(), nullptr);
}

TEST(Engine, SecondBackwardThroughAFreedGraphIsAnError) {
  Tensor x = leaf({1, 2}, {2});
  const Tensor loss = (x * x).sum();
  loss.backward();
  const std::string message = error_of([&] { loss.backward(); });
  EXPECT_TRUE(contains(message, "already freed")) << message;
  EXPECT_TRUE(contains(message, "retain_graph")) << message;
  expect_values(x.grad(), {2, 4});  // the failed pass added nothing

  // An intermediate whose node ran once cannot be backpropagated through again.
  const Tensor h = exp(x);
  h.sum().backward();
  const std::string again = error_of([&] { (h * 2.0).sum().backward(); });
  EXPECT_TRUE(contains(again, "exp")) << again;
}

TEST(Engine, RetainGraphAllowsASecondBackward) {
  Tensor x = leaf({1, 2}, {2});
  const Tensor loss = (x * x).sum();
  loss.backward(Tensor(), /*retain_graph=*/true);
  loss.backward();
  expect_values(x.grad(), {4, 8});
  EXPECT_TRUE(contains(error_of([&] { loss.backward(); }), "retain_graph"));
}

TEST(Engine, InPlaceChangeOfASavedTensorFailsBackward) {
  // While recording, in place on a tensor that requires grad is refused outright
  // (InPlaceChangeOfARecordedNonLeafIsAnError); these changes go around that check.
  {  // exp saves its output, changed here under NoGradGuard
    Tensor x = leaf({0, 1}, {2});
    Tensor y = exp(x);
    {
      NoGradGuard no_grad;
      y.mul_(2.0);
    }
    const std::string message = error_of([&] { y.sum().backward(); });
    EXPECT_TRUE(contains(message, "exp")) << message;
    EXPECT_TRUE(contains(message, "modified in place")) << message;
    EXPECT_FALSE(x.grad().defined());
  }
  {  // mul saves its operands; here the one that needs no gradient
    Tensor x = leaf({1, 2}, {2});
    Tensor w = constant({3, 4}, {2}).to(DType::Float64);
    const Tensor y = x * w;
    w.add_(ones({2}, {.dtype = DType::Float64}));
    const std::string message = error_of([&] { y.sum().backward(); });
    EXPECT_TRUE(contains(message, "mul")) << message;
  }
  {  // a write through another view of the same storage counts too
    Tensor x = leaf({1, 2}, {2});
    Tensor w = constant({3, 4}, {2}).to(DType::Float64);
    const Tensor y = x * w;
    w.narrow(0, 1, 1).fill_(5.0);
    EXPECT_TRUE(contains(error_of([&] { y.sum().backward(); }), "mul"));
  }
  {  // a parameter updated (an optimizer step) between forward and backward
    Tensor x = leaf({1, 2}, {2});
    const Tensor y = x * x;
    {
      NoGradGuard no_grad;
      x.add_(ones({2}, {.dtype = DType::Float64}), -0.1);
    }
    EXPECT_TRUE(contains(error_of([&] { y.sum().backward(); }), "mul"));
  }
  {  // a write through detach(), which shares the storage
    Tensor x = leaf({1, 2}, {2});
    const Tensor y = sigmoid(x);
    y.detach().fill_(0.5);
    EXPECT_TRUE(contains(error_of([&] { y.sum().backward(); }), "sigmoid"));
  }
  {  // add saves nothing: changing its operand afterwards is fine
    Tensor x = leaf({1, 2}, {2});
    Tensor w = constant({3, 4}, {2}).to(DType::Float64);
    const Tensor y = x + w;
    w.fill_(0.0);
    y.sum().backward();
    expect_values(x.grad(), {1, 1});
  }
}

TEST(Engine, InPlaceChangeOfARecordedNonLeafIsAnError) {
  // In-place ops are not recorded: y.mul_(2) after y = x + 1 would leave dL/dx = 1
  // instead of 2 with nothing saved to catch it. So it is refused while recording.
  Tensor x = leaf({1, 2}, {2});
  Tensor y = x + 1.0;
  const std::string message = error_of([&] { y.mul_(2.0); });
  EXPECT_TRUE(contains(message, "mul_")) << message;
  EXPECT_TRUE(contains(message, "requires grad")) << message;
  EXPECT_TRUE(contains(error_of([&] { y.narrow(0, 0, 1).fill_(0.0); }), "fill_"));
  EXPECT_TRUE(contains(error_of([&] { y.add_(ones({2}, {.dtype = DType::Float64})); }), "add_"));
  EXPECT_TRUE(contains(error_of([&] { y.copy_(zeros({2}, {.dtype = DType::Float64})); }), "copy_"));
  expect_values(y, {2, 3});
  y.sum().backward();
  expect_values(x.grad(), {1, 1});
  {
    NoGradGuard no_grad;  // with recording off it is allowed (the caller opts out)
    y.mul_(2.0);
  }
  y.detach().add_(ones({2}, {.dtype = DType::Float64}));  // and through detach()
  expect_values(y, {5, 7});
}

TEST(Engine, ErrorMessages) {
  Tensor x = leaf({1, 2, 3}, {3});
  const Tensor y = x * 2.0;
  std::string message = error_of([&] { y.backward(); });
  EXPECT_TRUE(contains(message, "one-element")) << message;
  EXPECT_TRUE(contains(message, "[3]")) << message;

  message = error_of([&] { y.backward(ones({4}, {.dtype = DType::Float64})); });
  EXPECT_TRUE(contains(message, "gradient shape [4]")) << message;

  message = error_of([&] { y.backward(ones({3}, {.dtype = DType::Float32})); });
  EXPECT_TRUE(contains(message, "dtype")) << message;

  message = error_of([&] { autograd::backward({y.sum(), y.sum()}, {ones({})}); });
  EXPECT_TRUE(contains(message, "2 outputs")) << message;

  message = error_of([&] { constant({1, 2}, {2}).sum().backward(); });
  EXPECT_TRUE(contains(message, "does not require grad")) << message;

  Tensor index = tensor(std::vector<int64_t>{1, 2});
  message = error_of([&] { index.requires_grad_(); });
  EXPECT_TRUE(contains(message, "int64")) << message;
  EXPECT_TRUE(contains(error_of([&] { zeros({2}, {.dtype = DType::Int64, .requires_grad = true}); }), "int64"));

  message = error_of([&] { x.to(DType::Int64); });
  EXPECT_TRUE(contains(message, "cut the gradient")) << message;

  message = error_of([&] { autograd::grad({y.sum()}, {y}); });
  EXPECT_TRUE(contains(message, "leaf")) << message;

  EXPECT_FALSE(x.grad().defined());  // none of the failures left a gradient behind
}

TEST(Engine, GradReturnsGradientsWithoutAccumulating) {
  Tensor x = leaf({1, 2}, {2}), b = leaf({0.5}, {1});
  const Tensor y = (x * x + b).sum();
  const auto grads = autograd::grad({y}, {x, b});
  ASSERT_EQ(grads.size(), 2u);
  expect_values(grads[0], {2, 4});
  EXPECT_EQ(grads[1].shape(), Shape({1}));  // unbroadcast as for backward()
  expect_values(grads[1], {2});
  EXPECT_FALSE(x.grad().defined());
  EXPECT_FALSE(b.grad().defined());
}

// As in PyTorch: an input outside the graph is an error unless allow_unused, which gives an undefined tensor.
TEST(Engine, GradForAnInputNotInTheGraph) {
  Tensor x = leaf({1, 2}, {2}), unused = leaf({7}, {1});
  EXPECT_ERROR(autograd::grad({(x * x).sum()}, {x, unused}), "grad: input 1 [1] was not used to compute the outputs",
               "allow_unused=true");
  const auto grads = autograd::grad({(x * x).sum()}, {x, unused}, {}, false, /*allow_unused=*/true);
  ASSERT_EQ(grads.size(), 2u);
  expect_values(grads[0], {2, 4});
  EXPECT_FALSE(grads[1].defined());
}

// A weak handle on a tensor's storage, to see when the last owner lets go.
std::weak_ptr<Storage> watch(const Tensor& t) { return t.storage(); }

TEST(Engine, NoGraphKeptAliveAfterBackward) {
  Tensor x = leaf({0.5, -1, 2}, {3});
  std::weak_ptr<Node> root, inner;
  {
    const Tensor loss = (exp(x) * x).sum();
    root = loss.grad_fn();
    inner = loss.grad_fn()->edges()[0].node;
    loss.backward();
    EXPECT_FALSE(root.expired());  // loss still holds its node
    EXPECT_TRUE(root.lock()->released());
  }
  EXPECT_TRUE(root.expired());
  EXPECT_TRUE(inner.expired());
  EXPECT_EQ(x.impl_shared().use_count(), 1);  // no edge holds the leaf any more
  EXPECT_EQ(x.grad().grad_fn(), nullptr);     // and .grad holds no graph

  // Backward without retain_graph frees the saved tensors right away, while the output lives on.
  Tensor t = x * 2.0;
  const Tensor y = t * x;  // mul saves t
  const std::weak_ptr<Storage> t_storage = watch(t);
  t = Tensor();
  EXPECT_FALSE(t_storage.expired());
  y.sum().backward();
  EXPECT_TRUE(t_storage.expired());
}

TEST(Engine, SavedOutputsDoNotCreateCycles) {
  // Ops that save their own output must save it detached; otherwise output -> node ->
  // saved output -> node would keep the graph alive forever (a leak).
  Tensor x = leaf({0.5, 0.25, 0.75, 0.1}, {2, 2});
  const std::vector<std::pair<std::string, std::function<Tensor(const Tensor&)>>> ops = {
      {"exp", [](const Tensor& t) { return exp(t); }},
      {"sqrt", [](const Tensor& t) { return sqrt(t); }},
      {"sigmoid", [](const Tensor& t) { return sigmoid(t); }},
      {"tanh", [](const Tensor& t) { return tanh(t); }},
      {"pow base", [](const Tensor& t) { return pow(2.0, t); }},
      {"pow tensor", [](const Tensor& t) { return pow(t, t); }},
      {"amax", [](const Tensor& t) { return amax(t, {1}); }},
      {"amin", [](const Tensor& t) { return amin(t); }},
      {"softmax", [](const Tensor& t) { return softmax(t, 0); }},
      {"log_softmax", [](const Tensor& t) { return log_softmax(t, 1); }},
  };
  for (const auto& [name, op] : ops) {
    std::weak_ptr<Node> node;
    std::weak_ptr<Storage> storage;
    {
      const Tensor y = op(x);
      ASSERT_NE(y.grad_fn(), nullptr) << name;
      node = y.grad_fn();
      storage = watch(y);
    }
    EXPECT_TRUE(node.expired()) << name << ": the graph outlived its output";
    EXPECT_TRUE(storage.expired()) << name << ": the output's storage outlived it";
  }
  EXPECT_EQ(x.impl_shared().use_count(), 1);
}

// A custom op that records whether grad mode was on while its backward ran.
struct ProbeGradMode : autograd::Function<ProbeGradMode> {
  static inline bool recording_seen = true;
  static Tensor forward(autograd::Context&, const Tensor& x) { return x * 1.0; }
  static std::vector<Tensor> backward(autograd::Context&, const Tensor& grad_output) {
    recording_seen = autograd::GradMode::is_enabled();
    return {grad_output};
  }
};

TEST(Engine, NothingIsRecordedWhileBackwardRuns) {
  Tensor x = leaf({1, 2}, {2});
  ProbeGradMode::recording_seen = true;
  (ProbeGradMode::apply(x) * x).sum().backward();
  EXPECT_FALSE(ProbeGradMode::recording_seen);
  EXPECT_TRUE(autograd::GradMode::is_enabled());  // and it is back on afterwards
  expect_values(x.grad(), {2, 4});
  EXPECT_FALSE(x.grad().requires_grad());
}

}  // namespace

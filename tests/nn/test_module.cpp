// Tests for nn::Module: parameter registration and dotted names, traversal order,
// train/eval, zero_grad, state dicts (and their errors), to(kCPU), and a custom layer.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "nn/functional.h"
#include "support.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "optim/optimizer.h"

namespace {

using namespace vgrad;
using vgrad_test::vals;

// y = x * gamma, gamma (D) broadcast over (N, D): the custom layer from DESIGN.md.
struct Scale : nn::Module {
  explicit Scale(int64_t d) : gamma(register_parameter("gamma", ones({d}))) {}
  Tensor forward(const Tensor& x) override { return x * gamma; }
  Tensor gamma;
};

// A model with nested modules: root { fc1, block { scale, fc }, head (Sequential) }.
struct Block : nn::Module {
  Block() {
    scale = register_module("scale", std::make_shared<Scale>(3));
    fc = register_module("fc", std::make_shared<nn::Linear>(3, 2));
  }
  Tensor forward(const Tensor& x) override { return (*fc)((*scale)(x)); }
  std::shared_ptr<Scale> scale;
  std::shared_ptr<nn::Linear> fc;
};

struct Net : nn::Module {
  Net() {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(4, 3));
    block = register_module("block", std::make_shared<Block>());
    head = register_module("head", std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
                                        std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(2, 2, false),
                                        std::make_shared<nn::Dropout>(0.5)}));
    offset = register_parameter("offset", zeros({2}));
  }
  Tensor forward(const Tensor& x) override { return (*head)((*block)(relu((*fc1)(x)))) + offset; }
  std::shared_ptr<nn::Linear> fc1;
  std::shared_ptr<Block> block;
  std::shared_ptr<nn::Sequential> head;
  Tensor offset;
};

std::vector<std::string> names_of(const nn::Module& m) {
  std::vector<std::string> out;
  for (const auto& [name, t] : m.named_parameters()) out.push_back(name);
  return out;
}

TEST(Module, NamedParametersUseDottedNamesInRegistrationOrder) {
  Net net;
  // Own parameters first, then children in registration order (depth first).
  const std::vector<std::string> expected = {"offset",         "fc1.weight", "fc1.bias",    "block.scale.gamma",
                                             "block.fc.weight", "block.fc.bias", "head.1.weight"};
  EXPECT_EQ(names_of(net), expected);

  const auto named = net.named_parameters();
  const auto plain = net.parameters();
  ASSERT_EQ(plain.size(), named.size());
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_TRUE(plain[i].is_same(named[i].second)) << named[i].first;
  // Handles, not copies: the same impl as the members.
  EXPECT_TRUE(named[1].second.is_same(net.fc1->weight));
  EXPECT_TRUE(named[3].second.is_same(net.block->scale->gamma));
  EXPECT_EQ(named[1].second.shape(), (Shape{3, 4}));
  EXPECT_EQ(named[2].second.shape(), (Shape{3}));
  for (const auto& [name, t] : named) EXPECT_TRUE(t.requires_grad()) << name;
}

TEST(Module, PathsOfNestedModules) {
  Net net;
  EXPECT_EQ(net.path(), "");
  EXPECT_EQ(net.fc1->path(), "fc1");
  EXPECT_EQ(net.block->path(), "block");
  EXPECT_EQ(net.block->scale->path(), "block.scale");
  EXPECT_EQ(net.block->fc->path(), "block.fc");
  EXPECT_EQ((*net.head)[1]->path(), "head.1");
  const auto children = net.named_children();
  ASSERT_EQ(children.size(), 3u);
  EXPECT_EQ(children[0].first, "fc1");
  EXPECT_EQ(children[1].first, "block");
  EXPECT_EQ(children[2].first, "head");
}

TEST(Module, SequentialNamesItsModulesByIndex) {
  nn::Sequential seq{std::make_shared<nn::Linear>(5, 4), std::make_shared<nn::Tanh>(),
                     std::make_shared<nn::Linear>(4, 3)};
  seq.push_back(std::make_shared<nn::Linear>(3, 2, false));
  EXPECT_EQ(seq.size(), 4u);
  const std::vector<std::string> expected = {"0.weight", "0.bias", "2.weight", "2.bias", "3.weight"};
  EXPECT_EQ(names_of(seq), expected);
  EXPECT_EQ(seq[3]->path(), "3");

  // A Sequential nested under a name prefixes its children's paths.
  struct Wrapper : nn::Module {
    Wrapper() { net = register_module("net", std::make_shared<nn::Sequential>()); }
    std::shared_ptr<nn::Sequential> net;
  } wrapper;
  wrapper.net->push_back(std::make_shared<nn::Linear>(2, 2));
  EXPECT_EQ(wrapper.net->operator[](0)->path(), "net.0");
  EXPECT_EQ(names_of(wrapper), (std::vector<std::string>{"net.0.weight", "net.0.bias"}));
}

TEST(Module, SequentialForwardChainsModules) {
  auto fc = std::make_shared<nn::Linear>(3, 2);
  nn::Sequential seq{fc, std::make_shared<nn::ReLU>()};
  const Tensor x = vgrad_test::uniform_tensor({4, 3}, 1);
  const auto got = vals(seq(x));
  const auto want = vals(relu(linear(x, fc->weight, fc->bias)));
  vgrad_test::expect_near_all(got, want, 1e-6);
}

TEST(Module, TiedParametersAreListedAndSteppedOnce) {
  // Weight tying: the decoder reuses the encoder's weight (transposed use, one tensor).
  struct Tied : nn::Module {
    Tied() {
      enc = register_module("enc", std::make_shared<nn::Linear>(4, 3, false));
      dec_weight = register_parameter("dec_weight", enc->weight);
    }
    Tensor forward(const Tensor& x) override { return matmul((*enc)(x), dec_weight); }
    std::shared_ptr<nn::Linear> enc;
    Tensor dec_weight;
  } tied;
  // As in PyTorch: parameters()/named_parameters() list a shared tensor once (first name);
  // state_dict() keeps every name.
  EXPECT_EQ(names_of(tied), (std::vector<std::string>{"dec_weight"}));
  EXPECT_EQ(tied.parameters().size(), 1u);
  const auto state = tied.state_dict();
  EXPECT_EQ(state.size(), 2u);
  EXPECT_EQ(state.count("enc.weight"), 1u);
  EXPECT_EQ(state.count("dec_weight"), 1u);
  tied.load_state_dict(state);  // both keys are expected
  // One SGD step moves the weight by lr·grad once (the gradient has both uses summed in).
  const Tensor x = vgrad_test::uniform_tensor({5, 4}, 9);
  optim::SGD sgd(tied.parameters(), {.lr = 0.1});
  sum(tied(x)).backward();
  const auto w = vals(tied.enc->weight), g = vals(tied.enc->weight.grad());
  sgd.step();
  const auto after = vals(tied.enc->weight);
  for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(after[i], w[i] - 0.1 * g[i], 1e-6);
}

TEST(Module, RegistrationErrors) {
  struct Bad : nn::Module {
    void twice_param() {
      register_parameter("w", zeros({1}));
      register_parameter("w", zeros({1}));
    }
    void dotted() { register_parameter("a.b", zeros({1})); }
    void twice_module() {
      register_module("m", std::make_shared<nn::ReLU>());
      register_module("m", std::make_shared<nn::ReLU>());
    }
    void null_module() { register_module("n", std::shared_ptr<nn::ReLU>()); }
  };
  Bad a, b, c, d;
  EXPECT_ERROR(a.twice_param(), "'w' registered twice");
  EXPECT_ERROR(b.dotted(), "bad name 'a.b'");
  EXPECT_ERROR(c.twice_module(), "'m' registered twice");
  EXPECT_ERROR(d.null_module(), "'n' is null");
}

TEST(Module, BaseForwardIsAnError) {
  nn::Module m;
  EXPECT_ERROR(m(zeros({1})), "forward() is not implemented");
}

TEST(Module, TrainEvalRecurse) {
  Net net;
  auto dropout = (*net.head)[2];
  EXPECT_TRUE(net.is_training());
  EXPECT_TRUE(net.block->scale->is_training());
  EXPECT_TRUE(dropout->is_training());
  net.eval();
  EXPECT_FALSE(net.is_training());
  EXPECT_FALSE(net.fc1->is_training());
  EXPECT_FALSE(net.block->is_training());
  EXPECT_FALSE(net.block->scale->is_training());
  EXPECT_FALSE(dropout->is_training());
  // In eval the model is deterministic (dropout is off).
  const Tensor x = vgrad_test::uniform_tensor({8, 4}, 2);
  EXPECT_EQ(vals(net(x)), vals(net(x)));
  net.train();
  EXPECT_TRUE(dropout->is_training());
  EXPECT_TRUE(net.block->fc->is_training());
}

TEST(Module, ZeroGradClearsEveryParameterGrad) {
  Net net;
  net.eval();  // no dropout: the same gradient every time
  const Tensor x = vgrad_test::uniform_tensor({8, 4}, 3);
  auto backward_once = [&] { sum(square(net(x))).backward(); };
  backward_once();
  std::vector<std::vector<double>> single;
  std::vector<const void*> buffers;
  double total = 0;
  for (const auto& [name, p] : net.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    single.push_back(vals(p.grad()));
    buffers.push_back(p.grad().data_ptr());
    for (double v : single.back()) total += std::abs(v);
  }
  EXPECT_GT(total, 0);

  // Without zero_grad, gradients add up.
  backward_once();
  size_t i = 0;
  for (const auto& [name, p] : net.named_parameters()) {
    const auto g = vals(p.grad());
    for (size_t j = 0; j < g.size(); ++j) ASSERT_NEAR(g[j], 2 * single[i][j], 1e-5 * (1 + std::abs(g[j]))) << name;
    ++i;
  }

  // zero_grad(false): zeros in place, keeping the buffers.
  net.zero_grad(false);
  i = 0;
  for (const auto& [name, p] : net.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    for (double v : vals(p.grad())) EXPECT_EQ(v, 0.0) << name;
    EXPECT_EQ(p.grad().data_ptr(), buffers[i++]) << name << ": zero_grad(false) must keep the buffer";
  }
  backward_once();
  i = 0;
  for (const auto& [name, p] : net.named_parameters()) EXPECT_EQ(vals(p.grad()), single[i++]) << name;

  // zero_grad(): drops the gradients (set_to_none); the next backward starts afresh.
  net.zero_grad();
  for (const auto& [name, p] : net.named_parameters()) EXPECT_FALSE(p.grad().defined()) << name;
  backward_once();
  i = 0;
  for (const auto& [name, p] : net.named_parameters()) EXPECT_EQ(vals(p.grad()), single[i++]) << name;
}

TEST(Module, StateDictRoundTrip) {
  manual_seed(11);
  Net a;
  manual_seed(12);
  Net b;
  ASSERT_NE(vals(a.fc1->weight), vals(b.fc1->weight));
  const auto state = a.state_dict();
  ASSERT_EQ(state.size(), 7u);
  EXPECT_EQ(state.count("block.scale.gamma"), 1u);
  EXPECT_FALSE(state.at("fc1.weight").requires_grad());
  b.load_state_dict(state);
  for (const auto& [name, p] : a.named_parameters()) {
    const auto other = b.state_dict().at(name);
    EXPECT_EQ(vals(p), vals(other)) << name;
  }
  // Loading copies values into b's own tensors (the handles stay b's, and still train).
  EXPECT_FALSE(b.fc1->weight.is_same(a.fc1->weight));
  EXPECT_NE(b.fc1->weight.data_ptr(), a.fc1->weight.data_ptr());
  EXPECT_TRUE(b.fc1->weight.requires_grad());
  a.fc1->weight.detach().fill_(5.0);
  EXPECT_NE(vals(b.fc1->weight)[0], 5.0);
  // The state dict shares storage with the parameters (like PyTorch).
  EXPECT_EQ(a.state_dict().at("fc1.weight").data_ptr(), a.fc1->weight.data_ptr());
}

TEST(Module, LoadStateDictConvertsDtype) {
  nn::Linear fc(2, 2);
  std::map<std::string, Tensor> state = {{"weight", tensor(std::vector<double>{1, 2, 3, 4}, {2, 2})},
                                         {"bias", tensor(std::vector<double>{-1, -2}, {2})}};
  fc.load_state_dict(state);
  EXPECT_EQ(fc.weight.dtype(), DType::Float32);
  EXPECT_EQ(vals(fc.weight), (std::vector<double>{1, 2, 3, 4}));
  EXPECT_EQ(vals(fc.bias), (std::vector<double>{-1, -2}));
}

TEST(Module, LoadStateDictStrictErrorsNameTheKey) {
  Net net;
  auto state = net.state_dict();

  auto missing = state;
  missing.erase("block.fc.bias");
  EXPECT_ERROR(net.load_state_dict(missing), "missing key 'block.fc.bias'");
  EXPECT_ERROR(net.load_state_dict(missing), "[2]");
  // Non-strict: the missing key is skipped, the rest is loaded.
  auto partial = missing;
  partial["fc1.bias"] = full({3}, 7.0);
  net.load_state_dict(partial, false);
  EXPECT_EQ(vals(net.fc1->bias), (std::vector<double>{7, 7, 7}));

  auto unexpected = state;
  unexpected["block.extra"] = zeros({5});
  EXPECT_ERROR(net.load_state_dict(unexpected), "unexpected key 'block.extra'");
  EXPECT_NO_THROW(net.load_state_dict(unexpected, false));

  auto wrong_shape = state;
  wrong_shape["fc1.weight"] = zeros({4, 3});
  EXPECT_ERROR(net.load_state_dict(wrong_shape), "key 'fc1.weight' has shape [4, 3], the model expects [3, 4]");
  // A shape mismatch is an error even when not strict.
  EXPECT_ERROR(net.load_state_dict(wrong_shape, false), "'fc1.weight'");
}

TEST(Module, ToCpuIsANoOpThatKeepsHandles) {
  Net net;
  const Tensor x = vgrad_test::uniform_tensor({2, 4}, 5);
  sum(net(x)).backward();
  std::vector<Tensor> before = net.parameters();
  std::vector<const void*> data, grads;
  for (const Tensor& p : before) {
    data.push_back(p.data_ptr());
    grads.push_back(p.grad().data_ptr());
  }
  const auto values = vals(net.fc1->weight);
  nn::Module& same = net.to(kCPU);
  EXPECT_EQ(&same, &net);
  const auto after = net.parameters();
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_TRUE(after[i].is_same(before[i]));
    EXPECT_EQ(after[i].data_ptr(), data[i]);
    EXPECT_EQ(after[i].grad().data_ptr(), grads[i]);
    EXPECT_TRUE(after[i].device().is_cpu());
  }
  EXPECT_EQ(vals(net.fc1->weight), values);
  // An optimizer built before to() still updates the member tensors.
  optim::SGD sgd(net.parameters(), {.lr = 0.1});
  net.to(kCPU);
  sgd.step();
  EXPECT_NE(vals(net.fc1->weight), values);
}

TEST(Module, CustomScaleLayerTrains) {
  // Fit y = x * [2, -3, 0.5] with a Scale layer: gamma must converge to the factors.
  Scale scale(3);
  EXPECT_EQ(names_of(scale), (std::vector<std::string>{"gamma"}));
  EXPECT_EQ(vals(scale.gamma), (std::vector<double>{1, 1, 1}));
  const Tensor x = vgrad_test::uniform_tensor({32, 3}, 6, -1, 1);
  const Tensor y = x * tensor({2.0f, -3.0f, 0.5f});
  optim::SGD sgd(scale.parameters(), {.lr = 0.5});
  double first_loss = 0, last_loss = 0;
  for (int step = 0; step < 200; ++step) {
    sgd.zero_grad();
    Tensor loss = nn::F::mse_loss(scale(x), y);
    if (step == 0) first_loss = loss.item();
    last_loss = loss.item();
    loss.backward();
    sgd.step();
  }
  EXPECT_GT(first_loss, 0.5);
  EXPECT_LT(last_loss, 1e-8);
  vgrad_test::expect_near_all(vals(scale.gamma), {2, -3, 0.5}, 1e-4);
  // Its gradient is the batch reduction of x·(dL/dy): check one step by hand.
  scale.zero_grad();
  nn::F::mse_loss(scale(x), zeros({32, 3})).backward();
  const auto xv = vals(x), g = vals(scale.gamma);
  for (int64_t d = 0; d < 3; ++d) {
    double expect = 0;
    for (int64_t n = 0; n < 32; ++n) expect += 2.0 * xv[n * 3 + d] * xv[n * 3 + d] * g[d] / (32 * 3);
    EXPECT_NEAR(vals(scale.gamma.grad())[d], expect, 1e-5);
  }
}

}  // namespace

// Tests for optimizer checkpoints: SGD/Adam/AdamW state round trips (the next
// steps match), the state's layout, and refusing another optimizer's or shape's state.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "nn/checkpoint.h"
#include "nn/functional.h"
#include "optim/checkpoint.h"
#include "support.h"

namespace {

using namespace vgrad;
using vgrad_test::uniform_tensor;
using vgrad_test::vals;
using Mlp = vgrad_test::Mlp;
using Checkpoint = vgrad_test::TempDirTest;

// Trains `steps` steps of model with optimizer on fixed data.
void train(Mlp& model, optim::Optimizer& opt, int steps, uint64_t seed) {
  for (int s = 0; s < steps; ++s) {
    const Tensor x = uniform_tensor({8, 4}, seed + s);
    const Tensor y = tensor(std::vector<int64_t>{0, 1, 1, 0, 1, 0, 0, 1}, {8});
    opt.zero_grad();
    nn::cross_entropy(model(x), y).backward();
    opt.step();
  }
}

template <class Opt, class Options>
void optimizer_round_trip(const std::string& model_path, const std::string& opt_path, Options options) {
  manual_seed(7);
  Mlp a(4, 6, 2);
  Opt opt_a(a.parameters(), options);
  train(a, opt_a, 3, 100);
  nn::save(a, model_path);
  optim::save(opt_a, opt_path);

  manual_seed(8);
  Mlp b(4, 6, 2);
  Opt opt_b(b.parameters(), options);
  nn::load(b, model_path);
  optim::load(opt_b, opt_path);
  EXPECT_EQ(opt_b.lr(), opt_a.lr());

  // Both take the same next steps: identical parameters after each.
  train(a, opt_a, 2, 200);
  train(b, opt_b, 2, 200);
  for (const auto& [name, p] : a.named_parameters()) EXPECT_EQ(vals(p), vals(b.state_dict().at(name))) << name;

  // Without the optimizer state the next steps differ (the state matters).
  manual_seed(9);
  Mlp c(4, 6, 2);
  Opt opt_c(c.parameters(), options);
  nn::load(c, model_path);
  train(c, opt_c, 2, 200);
  EXPECT_NE(vals(a.fc1->weight), vals(c.fc1->weight));
}

TEST_F(Checkpoint, SgdMomentumStateRoundTrip) {
  optimizer_round_trip<optim::SGD>(path("m.safetensors"), path("o.safetensors"),
                                   optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-3});
  const auto state = nn::load_tensors(path("o.safetensors"));
  EXPECT_EQ(state.count("state.0.momentum_buffer"), 1u);
  EXPECT_EQ(state.at("state.0.momentum_buffer").shape(), (Shape{6, 4}));
  EXPECT_EQ(state.size(), 4u);
}

TEST_F(Checkpoint, AdamStateRoundTrip) {
  optimizer_round_trip<optim::Adam>(path("m.safetensors"), path("o.safetensors"),
                                    optim::AdamOptions{.lr = 0.01, .weight_decay = 0.01});
  const auto state = nn::load_tensors(path("o.safetensors"));
  EXPECT_EQ(state.at("state.0.step").item<int64_t>(), 3);  // per parameter, as PyTorch
  EXPECT_EQ(state.at("state.3.step").item<int64_t>(), 3);
  EXPECT_EQ(state.at("state.3.exp_avg_sq").shape(), (Shape{2}));
}

TEST_F(Checkpoint, AdamWStateRoundTrip) {
  optimizer_round_trip<optim::AdamW>(path("m.safetensors"), path("o.safetensors"),
                                     optim::AdamOptions{.lr = 0.01, .weight_decay = 0.1});
}

TEST_F(Checkpoint, OptimizerKindAndShapeMismatch) {
  Mlp model(4, 6, 2);
  optim::SGD sgd(model.parameters(), {.lr = 0.1, .momentum = 0.9});
  train(model, sgd, 1, 1);
  optim::save(sgd, path("sgd.safetensors"));
  optim::Adam adam(model.parameters(), {});
  EXPECT_ERROR(optim::load(adam, path("sgd.safetensors")), "holds state of optimizer 'SGD', not Adam");
  Mlp other(4, 5, 2);
  optim::SGD sgd_other(other.parameters(), {.lr = 0.1, .momentum = 0.9});
  EXPECT_ERROR(optim::load(sgd_other, path("sgd.safetensors")), "'state.0.momentum_buffer' has shape [6, 4]");
}

}  // namespace

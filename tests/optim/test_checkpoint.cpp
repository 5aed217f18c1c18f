// Tests for optimizer checkpoints: SGD/Adam/AdamW state round trips (the next
// steps match), the state's layout, and refusing another optimizer's or shape's state.
#include <cstdint>
#include <gtest/gtest.h>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "core/safetensors.h"
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

// A copy of the optimizer file at `from`, with `change` applied to its tensors and metadata.
template <class Change> void write_changed(const std::string& from, const std::string& to, Change&& change) {
  std::map<std::string, Tensor> tensors = nn::load_tensors(from);
  std::map<std::string, std::string> metadata = safetensors::load(from).metadata;
  change(tensors, metadata);
  nn::save_tensors(to, tensors, metadata);
}

// What a refused load must leave alone: the lr and the whole state.
struct OptimizerSnapshot {
  double lr;
  std::map<std::string, std::vector<double>> state;
  bool operator==(const OptimizerSnapshot&) const = default;
};
OptimizerSnapshot snapshot(const optim::Optimizer& opt) {
  OptimizerSnapshot out{opt.lr(), {}};
  for (const auto& [key, t] : opt.state_dict()) out.state[key] = vals(t);
  return out;
}

// optim::load checks the whole state before it sets the lr, parses the lr strictly, and
// refuses a state name it does not keep (a typo would silently restart momentum).
TEST_F(Checkpoint, SgdLoadIsAllOrNothingAndParsesStrictly) {
  manual_seed(4);
  Mlp model(4, 6, 2);
  optim::SGD saved(model.parameters(), {.lr = 0.5, .momentum = 0.9});
  train(model, saved, 2, 10);
  optim::save(saved, path("sgd.safetensors"));

  optim::SGD sgd(model.parameters(), {.lr = 0.1, .momentum = 0.9});
  train(model, sgd, 1, 20);
  const OptimizerSnapshot before = snapshot(sgd);
  auto refused = [&](const std::string& name, auto&& change, const std::string& expected) {
    write_changed(path("sgd.safetensors"), path(name), change);
    EXPECT_ERROR(optim::load(sgd, path(name)), path(name), expected);
    EXPECT_EQ(snapshot(sgd), before) << name;
  };
  using Tensors = std::map<std::string, Tensor>;
  using Metadata = std::map<std::string, std::string>;
  refused(
      "bad_state.safetensors", [](Tensors& t, Metadata&) { t["state.3.momentum_buffer"] = zeros({3}); },
      "'state.3.momentum_buffer' has shape [3], parameter is [2]");
  refused(
      "typo.safetensors",
      [](Tensors& t, Metadata&) {
        t["state.1.momentum_bufer"] = t.at("state.1.momentum_buffer");
        t.erase("state.1.momentum_buffer");
      },
      "checkpoint key 'state.1.momentum_bufer': unknown state 'momentum_bufer' (SGD keeps momentum_buffer)");
  refused(
      "index.safetensors", [](Tensors& t, Metadata&) { t["state.4.momentum_buffer"] = zeros({2}); },
      "'state.4.momentum_buffer' is not state.<parameter index>.<buffer> for one of its 4 parameters");
  refused(
      "int_buffer.safetensors",
      [](Tensors& t, Metadata&) { t["state.3.momentum_buffer"] = zeros({2}, {.dtype = DType::Int64}); },
      "'state.3.momentum_buffer' is int64, not floating point");
  refused(
      "lr_text.safetensors", [](Tensors&, Metadata& m) { m["lr"] = "fast"; },
      "metadata key 'lr' is 'fast', not a number");
  refused(
      "lr_junk.safetensors", [](Tensors&, Metadata& m) { m["lr"] = "0.5junk"; }, "'lr' is '0.5junk', not a number");
  refused(
      "lr_huge.safetensors", [](Tensors&, Metadata& m) { m["lr"] = "1e999"; }, "'lr' is '1e999', not a number");
  refused(
      "lr_nan.safetensors", [](Tensors&, Metadata& m) { m["lr"] = "nan"; }, "learning rate nan is not a finite");
  refused(
      "lr_long.safetensors", [](Tensors&, Metadata& m) { m["lr"] = std::string(100000, '9') + "x"; },
      "(100001 characters)");

  // The good file still loads, lr included.
  optim::load(sgd, path("sgd.safetensors"));
  EXPECT_EQ(snapshot(sgd), snapshot(saved));
}

// Adam's exp_avg, exp_avg_sq and step come together, and the step is a whole number from 1 to
// 2^63 - 2 (the next step adds one); a refused file changes nothing.
TEST_F(Checkpoint, AdamStateIsCheckedWholeBeforeAnythingChanges) {
  manual_seed(5);
  Mlp model(4, 6, 2);
  optim::Adam saved(model.parameters(), {.lr = 0.02});
  train(model, saved, 3, 10);
  optim::save(saved, path("adam.safetensors"));

  optim::Adam adam(model.parameters(), {.lr = 0.01});
  train(model, adam, 1, 20);
  const OptimizerSnapshot before = snapshot(adam);
  using Tensors = std::map<std::string, Tensor>;
  using Metadata = std::map<std::string, std::string>;
  auto refused = [&](const std::string& name, auto&& change, const std::string& expected) {
    write_changed(path("adam.safetensors"), path(name), [&](Tensors& t, Metadata&) { change(t); });
    EXPECT_ERROR(optim::load(adam, path(name)), path(name), expected);
    EXPECT_EQ(snapshot(adam), before) << name;
  };
  auto step = [](Tensor value) { return [value](Tensors& t) { t["state.2.step"] = value; }; };
  const int64_t max = std::numeric_limits<int64_t>::max();
  refused("two.safetensors", step(tensor(std::vector<int64_t>{3, 3}, {2})),
          "'state.2.step' has shape [2]: a step count is one number");
  refused("zero.safetensors", step(scalar_tensor(0, {.dtype = DType::Int64})), "'state.2.step' is step 0");
  refused("minus.safetensors", step(scalar_tensor(-1, {.dtype = DType::Int64})), "'state.2.step' is step -1");
  refused("max.safetensors", step(tensor(std::vector<int64_t>{max}, Shape{})),
          "'state.2.step' is step 9223372036854775807: a step count with moments is a whole number in [1, "
          "9223372036854775806]");
  refused("huge.safetensors", step(scalar_tensor(1e300, {.dtype = DType::Float64})), "is step 1e+300");
  refused("half.safetensors", step(scalar_tensor(2.5, {.dtype = DType::Float32})), "is step 2.5");
  refused("nan.safetensors", step(scalar_tensor(std::nan(""), {.dtype = DType::Float64})), "is step nan");
  refused(
      "no_sq.safetensors", [](Tensors& t) { t.erase("state.1.exp_avg_sq"); },
      "no 'state.1.exp_avg_sq' (exp_avg, exp_avg_sq and step go together)");
  refused(
      "no_step.safetensors", [](Tensors& t) { t.erase("state.0.step"); }, "no 'state.0.step'");
  refused(
      "no_moments.safetensors",  // a count of 1000 with fresh zero moments: 2.5x the lr on the first step
      [](Tensors& t) {
        t.erase("state.3.exp_avg");
        t.erase("state.3.exp_avg_sq");
        t["state.3.step"] = scalar_tensor(1000, {.dtype = DType::Int64});
      },
      "no 'state.3.exp_avg'");
  refused(
      "unknown.safetensors",
      [](Tensors& t) {
        t["state.0.momentum_buffer"] = zeros({6, 4});
      },
      "unknown state 'momentum_buffer' (Adam keeps exp_avg, exp_avg_sq, step)");

  // The first format's one global "step": with moments it is their count; before the first
  // step the file held step 0 and no moments, which loads as no state.
  const auto drop_state = [](Tensors& t) {
    std::erase_if(t, [](const auto& kv) { return kv.first.rfind("state.", 0) == 0; });
  };
  refused(
      "global_five.safetensors",
      [&](Tensors& t) {
        drop_state(t);
        t["step"] = scalar_tensor(5, {.dtype = DType::Int64});
      },
      "checkpoint key 'step' is [] int64 with no moments: a file saved before the first step holds step 0");
  write_changed(path("adam.safetensors"), path("global_step.safetensors"), [](Tensors& t, Metadata&) {
    for (int i = 0; i < 4; ++i) t.erase("state." + std::to_string(i) + ".step");
    t["step"] = scalar_tensor(3, {.dtype = DType::Int64});
  });
  optim::load(adam, path("global_step.safetensors"));
  EXPECT_EQ(snapshot(adam), snapshot(saved));
  write_changed(path("adam.safetensors"), path("global_zero.safetensors"), [&](Tensors& t, Metadata&) {
    drop_state(t);
    t["step"] = scalar_tensor(0, {.dtype = DType::Int64});
  });
  optim::load(adam, path("global_zero.safetensors"));
  EXPECT_EQ(adam.state_dict().count("state.0.exp_avg"), 0u) << "no state before the first step";

  // PyTorch stores the step as a float32 tensor: a whole one loads as the count.
  write_changed(path("adam.safetensors"), path("float_step.safetensors"), [](Tensors& t, Metadata&) {
    for (int i = 0; i < 4; ++i)
      t["state." + std::to_string(i) + ".step"] = scalar_tensor(3.0, {.dtype = DType::Float32});
  });
  optim::load(adam, path("float_step.safetensors"));
  EXPECT_EQ(snapshot(adam), snapshot(saved));
  EXPECT_EQ(adam.state_dict().at("state.2.step").dtype(), DType::Int64);
}

}  // namespace

// The CNN ops and the losses against PyTorch's own numbers: values and gradients of
// L = Σ out·R on the float64 cases stored in tests/reference/{conv,loss}_reference.json by
// tests/reference/make_{conv,loss}_reference.py (run with torch; CI needs no PyTorch).
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nn/functional.h"
#include "support.h"

namespace {

using namespace vgrad;
using json = nlohmann::json;
using vgrad_test::expect_near_all;
using vgrad_test::vals;

constexpr double kTolerance = 1e-10;  // float64 on both sides; only the summation order differs

json load_reference(const std::string& name) {
  const std::string path = std::string(VGRAD_REFERENCE_DIR) + "/" + name + "_reference.json";
  std::ifstream in(path);
  if (!in)
    throw std::runtime_error("cannot open " + path + " (make it with tests/reference/make_" + name + "_reference.py)");
  return json::parse(in);
}

const json& reference() {
  static const json data = load_reference("conv");
  return data;
}

const json& loss_reference() {
  static const json data = load_reference("loss");
  return data;
}

Tensor tensor_of(const json& entry) {
  return tensor(entry["values"].get<std::vector<double>>(), entry["shape"].get<std::vector<int64_t>>());
}

Pair2 pair_of(const json& v) { return {v[0].get<int64_t>(), v[1].get<int64_t>()}; }

// Loads the case's inputs (requiring grad where torch took one), runs fn, and checks
// the output and the gradients of Σ out·R.
void check_case(const std::string& name, const std::function<Tensor(std::map<std::string, Tensor>&)>& fn,
                const json& file = reference()) {
  SCOPED_TRACE(name);
  const json& c = file["cases"][name];
  std::map<std::string, Tensor> in;
  for (auto& [key, entry] : c["inputs"].items()) in[key] = tensor_of(entry);
  for (auto& [key, entry] : c["grads"].items()) in[key].requires_grad_();
  if (c.contains("indices"))
    for (auto& [key, list] : c["indices"].items())
      in[key] = tensor(list.get<std::vector<int64_t>>(), c["index_shapes"][key].get<std::vector<int64_t>>());
  const Tensor out = fn(in);
  ASSERT_EQ(out.shape(), c["output"]["shape"].get<std::vector<int64_t>>());
  expect_near_all(vals(out), c["output"]["values"].get<std::vector<double>>(), kTolerance, "output");
  (out * tensor_of(c["weighting"])).sum().backward();
  for (auto& [key, entry] : c["grads"].items())
    expect_near_all(vals(in[key].grad()), entry["values"].get<std::vector<double>>(), kTolerance, key.c_str());
}

TEST(TorchReference, GeneratedByTorch) {
  EXPECT_EQ(reference()["generator"].get<std::string>().rfind("torch ", 0), 0u);
  EXPECT_EQ(loss_reference()["generator"].get<std::string>().rfind("torch ", 0), 0u);
}

TEST(TorchReference, Conv2d) {
  for (int i = 0; i < 5; ++i) {
    const json& p = reference()["cases"]["conv2d_" + std::to_string(i)]["params"];
    check_case("conv2d_" + std::to_string(i), [&](auto& in) {
      return conv2d(in["x"], in["weight"], in["bias"], pair_of(p["stride"]), pair_of(p["padding"]),
                    pair_of(p["dilation"]), p["groups"].get<int64_t>());
    });
  }
}

TEST(TorchReference, Conv1d) {
  check_case("conv1d", [](auto& in) { return conv1d(in["x"], in["weight"], in["bias"], 2, 1, 2); });
}

TEST(TorchReference, Pooling) {
  check_case("max_pool2d", [](auto& in) { return max_pool2d(in["x"], {3, 3}, {2, 1}, {1, 1}); });
  check_case("avg_pool2d", [](auto& in) { return avg_pool2d(in["x"], {3, 3}, {2, 2}, {1, 1}); });
  check_case("adaptive_avg_pool2d", [](auto& in) { return adaptive_avg_pool2d(in["x"], {3, 4}); });
}

TEST(TorchReference, BatchNorm2dTrainingStepRunningStatsAndEval) {
  const json& c = reference()["cases"]["batch_norm2d"];
  Tensor running_mean = zeros({3}, {.dtype = DType::Float64}), running_var = ones({3}, {.dtype = DType::Float64});
  check_case("batch_norm2d", [&](auto& in) {
    return nn::F::batch_norm(in["x"], running_mean, running_var, in["weight"], in["bias"], true, 0.1, 1e-5);
  });
  expect_near_all(vals(running_mean), c["running_mean"]["values"].get<std::vector<double>>(), kTolerance, "mean");
  expect_near_all(vals(running_var), c["running_var"]["values"].get<std::vector<double>>(), kTolerance, "var");
  const Tensor eval = nn::F::batch_norm(tensor_of(c["inputs"]["x"]), running_mean, running_var,
                                        tensor_of(c["inputs"]["weight"]), tensor_of(c["inputs"]["bias"]), false);
  expect_near_all(vals(eval), c["eval_output"]["values"].get<std::vector<double>>(), kTolerance, "eval");
}

TEST(TorchReference, LayerNormGroupNormEmbedding) {
  check_case("layer_norm", [](auto& in) { return nn::F::layer_norm(in["x"], 2, in["weight"], in["bias"]); });
  check_case("group_norm", [](auto& in) { return nn::F::group_norm(in["x"], 2, in["weight"], in["bias"]); });
  check_case("embedding", [](auto& in) { return embedding(in["weight"], in["idx"], 1); });
}

// ---- losses (loss_reference.json) ----

using nn::F::Reduction;

struct NamedReduction {
  const char* name;
  Reduction reduction;
};
constexpr NamedReduction kReductions[] = {
    {"mean", Reduction::Mean}, {"sum", Reduction::Sum}, {"none", Reduction::None}};

void check_loss(const std::string& name, const std::function<Tensor(std::map<std::string, Tensor>&)>& fn) {
  check_case(name, fn, loss_reference());
}

// Targets 1, -100, 4, 0, 1, 3, -100 over 5 classes: rows 1 and 6 carry the default ignore_index.
TEST(TorchReference, CrossEntropyWithWeightsIgnoreIndexAndSmoothing) {
  for (const auto& [name, reduction] : kReductions)
    for (const int tenths : {0, 2}) {
      const std::string suffix = std::string(name) + "_s" + std::to_string(tenths);
      check_loss("ce_weight_ignore_" + suffix,
                 [&](auto& in) { return nn::cross_entropy(in["x"], in["t"], reduction, tenths / 10.0, in["w"]); });
      check_loss("ce_ignore_" + suffix,
                 [&](auto& in) { return nn::cross_entropy(in["x"], in["t"], reduction, tenths / 10.0); });
    }
  check_loss("ce_ignore_class2_mean",
             [](auto& in) { return nn::cross_entropy(in["x"], in["t"], Reduction::Mean, 0.0, Tensor(), 2); });
  check_loss("ce_weight_ignore_class2_mean_s1",
             [](auto& in) { return nn::cross_entropy(in["x"], in["t"], Reduction::Mean, 0.1, in["w"], 2); });
}

TEST(TorchReference, NllLossWithWeightsAndIgnoreIndex) {
  for (const auto& [name, reduction] : kReductions)
    check_loss(std::string("nll_weight_ignore_") + name,
               [&](auto& in) { return nn::nll_loss(log_softmax(in["x"], 1), in["t"], reduction, in["w"]); });
}

TEST(TorchReference, L1SmoothL1AndHuber) {
  for (const auto& [name, reduction] : kReductions) {
    check_loss(std::string("l1_") + name, [&](auto& in) { return nn::l1_loss(in["x"], in["y"], reduction); });
    check_loss(std::string("smooth_l1_") + name,
               [&](auto& in) { return nn::smooth_l1_loss(in["x"], in["y"], reduction, 0.7); });
    check_loss(std::string("huber_") + name,
               [&](auto& in) { return nn::huber_loss(in["x"], in["y"], reduction, 0.7); });
  }
  check_loss("smooth_l1_beta0_mean",
             [](auto& in) { return nn::smooth_l1_loss(in["x"], in["y"], Reduction::Mean, 0.0); });
}

TEST(TorchReference, BinaryCrossEntropyOnProbabilities) {
  for (const auto& [name, reduction] : kReductions)
    check_loss(std::string("bce_") + name,
               [&](auto& in) { return nn::binary_cross_entropy(in["x"], in["t"], reduction); });
}

TEST(TorchReference, KlDiv) {
  for (const auto& [name, reduction] : {NamedReduction{"mean", Reduction::Mean},
                                        {"sum", Reduction::Sum},
                                        {"none", Reduction::None},
                                        {"batchmean", Reduction::BatchMean}})
    check_loss(std::string("kl_") + name, [&](auto& in) { return nn::kl_div(in["x"], in["t"], reduction); });
  check_loss("kl_target_grad_batchmean", [](auto& in) { return nn::kl_div(in["x"], in["t"], Reduction::BatchMean); });
  check_loss("kl_log_target_batchmean",
             [](auto& in) { return nn::kl_div(in["x"], in["t"], Reduction::BatchMean, true); });
}

}  // namespace

// Mixed precision on the GPU against the CPU: amp::Autocast's op lists on cuda:0 (output
// dtype, values next to the CPU's autocast result and to float32), a training step whose
// gradients reach float32 master weights, and amp::GradScaler's sequence of scales on
// forced overflows (PyTorch's, as tests/amp/test_grad_scaler.cpp checks on the CPU), also
// with the forward and backward captured in a CUDA graph (PyTorch's recipe).
// Without a GPU they report SKIPPED (failing under VGRAD_REQUIRE_GPU=1).
#include <cmath>
#include <gtest/gtest.h>
#include <string>
#include <utility>
#include <vector>

#include "amp/autocast.h"
#include "amp/grad_scaler.h"
#include "amp/grad_scaler_reference.h"
#include "amp/low_precision.h"
#include "core/cuda_graph.h"
#include "core/grad_mode.h"
#include "nn/functional.h"
#include "nn/layers.h"
#include "optim/optimizer.h"
#include "support.h"

namespace {

using namespace vgrad;
using vgrad_test::expect_near_all;
using vgrad_test::uniform_tensor;
using vgrad_test::vals;

using vgrad_test::kLowTypes;
const auto tolerance = vgrad_test::low_precision_tolerance;

// The low list on each device: matmul, linear, einsum, attention, conv2d (cuDNN where built).
std::vector<std::pair<std::string, Tensor>> low_list(Device device, DType low) {
  auto on = [device](const Tensor& t) { return t.to(device); };
  const Tensor a = on(uniform_tensor({16, 64}, 1)), b = on(uniform_tensor({64, 8}, 2));
  const Tensor w = on(uniform_tensor({8, 64}, 3)), bias = on(uniform_tensor({8}, 4));
  const Tensor q = on(uniform_tensor({2, 5, 16}, 5)), k = on(uniform_tensor({2, 6, 16}, 6));
  const Tensor v = on(uniform_tensor({2, 6, 16}, 7));
  const Tensor x = on(uniform_tensor({2, 4, 7, 6}, 13, -1, 1)), cw = on(uniform_tensor({6, 2, 3, 3}, 15, -0.5, 0.5));
  amp::Autocast autocast(low);
  return {{"matmul", matmul(a, b)},
          {"linear", linear(a, w, bias)},
          {"einsum", einsum("ik,kj->ij", a, b)},
          {"attention", nn::functional::scaled_dot_product_attention(q, k, v)},
          {"conv2d", conv2d(x, cw, Tensor(), {2, 1}, {1, 1}, {1, 1}, 2)}};
}

TEST(CudaAutocast, LowListRunsInTheLowDtypeAndMatchesTheCpu) {
  REQUIRE_GPU();
  for (DType low : kLowTypes) {
    const auto gpu = low_list(cuda_device(0), low), cpu = low_list(kCPU, low);
    ASSERT_EQ(gpu.size(), cpu.size());
    for (size_t i = 0; i < gpu.size(); ++i) {
      const std::string what = gpu[i].first + " " + dtype_name(low);
      EXPECT_EQ(gpu[i].second.dtype(), low) << what;
      EXPECT_TRUE(gpu[i].second.device() == cuda_device(0)) << what;
      // Both round the same 16-bit inputs and accumulate in float32: they differ only by
      // the summation order and the one final rounding.
      expect_near_all(vals(gpu[i].second.to(kCPU)), vals(cpu[i].second), tolerance(low), what.c_str());
    }
  }
}

TEST(CudaAutocast, Float32ListWidensSixteenBitInputs) {
  REQUIRE_GPU();
  for (DType low : kLowTypes) {
    const Tensor x_cpu = uniform_tensor({6, 10}, 8, 0.5, 2).to(low);
    const Tensor x = x_cpu.to(cuda_device(0)), x_exact = x_cpu.to(DType::Float32);
    const Tensor target = tensor(std::vector<int64_t>{0, 3, 9, 2, 1, 5});
    amp::Autocast autocast(low);
    const std::vector<std::pair<const char*, std::pair<Tensor, Tensor>>> cases = {
        {"softmax", {softmax(x, 1), softmax(x_exact, 1)}},
        {"log_softmax", {log_softmax(x, 1), log_softmax(x_exact, 1)}},
        {"cross_entropy", {nn::cross_entropy(x, target.to(cuda_device(0))), nn::cross_entropy(x_exact, target)}},
        {"exp", {exp(x), exp(x_exact)}},
        {"log", {log(x), log(x_exact)}},
        {"sum", {sum(x, {1}), sum(x_exact, {1})}},
        {"mean", {x.mean(), x_exact.mean()}},
    };
    for (const auto& [name, pair] : cases) {
      EXPECT_EQ(pair.first.dtype(), DType::Float32) << name;
      expect_near_all(vals(pair.first.to(kCPU)), vals(pair.second), 1e-5, name);  // float32 on both devices
    }
  }
}

// One step of a Linear-ReLU-Linear model under autocast on each device: the loss, and the
// float32 gradients of the float32 master weights, agree.
TEST(CudaAutocast, TrainingStepGradientsReachFloat32MastersAsOnTheCpu) {
  REQUIRE_GPU();
  for (DType low : kLowTypes) {
    std::vector<std::vector<double>> grads[2];
    double losses[2] = {0, 0};
    const Device devices[2] = {kCPU, cuda_device(0)};
    for (int d = 0; d < 2; ++d) {
      Generator gen(3);
      nn::Sequential model;
      model.push_back(std::make_shared<nn::Linear>(32, 64, true, &gen));
      model.push_back(std::make_shared<nn::ReLU>());
      model.push_back(std::make_shared<nn::Linear>(64, 10, true, &gen));
      model.to(devices[d]);
      const Tensor x = uniform_tensor({16, 32}, 21).to(devices[d]);
      const Tensor y = tensor(std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5}).to(devices[d]);
      Tensor loss;
      {
        amp::Autocast autocast(low);
        loss = nn::cross_entropy(model(x), y);
      }
      loss.backward();
      losses[d] = loss.item();
      for (const Tensor& p : model.parameters()) {
        EXPECT_EQ(p.grad().dtype(), DType::Float32) << dtype_name(low);
        grads[d].push_back(vals(p.grad().to(kCPU)));
      }
    }
    EXPECT_NEAR(losses[1], losses[0], tolerance(low) * (1 + std::abs(losses[0]))) << dtype_name(low);
    ASSERT_EQ(grads[1].size(), grads[0].size());
    for (size_t i = 0; i < grads[0].size(); ++i)
      expect_near_all(grads[1][i], grads[0][i], tolerance(low), ("gradient " + std::to_string(i)).c_str());
  }
}

// PyTorch's scales and growth tracker on forced Inf/NaN steps, with the weights on the GPU:
// skipped steps leave them untouched, clean steps apply the unscaled gradient exactly.
TEST(CudaGradScaler, MatchesPyTorchsScalesOnForcedOverflows) {
  REQUIRE_GPU();
  const Device gpu = cuda_device(0);
  Tensor w = tensor({0.0f, 0.0f, 0.0f}).to(gpu).requires_grad_();
  optim::SGD sgd({w}, {.lr = 1.0});
  amp::GradScaler scaler({.init_scale = 65536.0, .growth_interval = kInterval3GrowthInterval});
  for (size_t i = 0; i < std::size(kInterval3); ++i) {
    const bool overflow = kInterval3[i].overflow != 0;
    const std::vector<double> before = vals(w.to(kCPU));
    const Tensor c = tensor({1.0f, -2.0f, overflow ? float(i % 2 ? NAN : INFINITY) : 0.5f}).to(gpu);
    scaler.scale(sum(w * c)).backward();
    const bool stepped = scaler.step(sgd);
    scaler.update();
    sgd.zero_grad();
    EXPECT_EQ(stepped, !overflow) << "step " << i;
    EXPECT_EQ(scaler.get_scale(), kInterval3[i].scale) << "step " << i;
    EXPECT_EQ(scaler.growth_tracker(), kInterval3[i].tracker) << "step " << i;
    const std::vector<double> after = vals(w.to(kCPU));
    if (stepped) {
      EXPECT_EQ(after, (std::vector<double>{before[0] - 1, before[1] + 2, before[2] - 0.5})) << "step " << i;
    } else {
      EXPECT_EQ(after, before) << "skipped step " << i << " changed the weights";
    }
  }
}

// PyTorch's recipe for float16 training with CUDA graphs: the forward, scale(loss) and
// backward captured, unscale_/step/update eagerly after each replay. An autocast MLP with an
// Inf forced into its static input on chosen steps takes the skips, scales and weights of the
// same steps run eagerly, bit for bit; the scale backs off and grows between replays, which
// read it from its device tensor (a scale fixed at capture would unscale the gradients wrong).
struct ScalerTrace {
  std::vector<int> stepped;
  std::vector<double> scales;
  std::vector<std::vector<double>> weights;
};

ScalerTrace train_with_scaler(bool graphed) {
  const Device gpu = cuda_device(0);
  Generator gen(5);
  nn::Sequential model;
  model.push_back(std::make_shared<nn::Linear>(16, 32, true, &gen));
  model.push_back(std::make_shared<nn::ReLU>());
  model.push_back(std::make_shared<nn::Linear>(32, 4, true, &gen));
  model.to(gpu);
  optim::SGD sgd(model.parameters(), {.lr = 0.01, .momentum = 0.9});
  amp::GradScaler scaler({.init_scale = 1024.0, .growth_interval = 3});
  const Tensor inputs = uniform_tensor({16, 16}, 31).to(gpu);
  std::vector<int64_t> labels(16);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = int64_t(i % 4);
  Tensor x = inputs.clone();  // the static input
  const Tensor y = tensor(labels).to(gpu);
  auto forward_backward = [&] {
    sgd.zero_grad();
    Tensor loss;
    {
      amp::Autocast autocast(DType::Float16);
      loss = nn::cross_entropy(model(x), y);
    }
    scaler.scale(loss).backward();
  };
  forward_backward();  // the warm-up: momentum buffers, the scale's tensor, cuBLAS
  scaler.step(sgd);
  scaler.update();
  cuda::Graph graph;
  if (graphed) graph.capture(forward_backward);
  ScalerTrace trace;
  for (int i = 0; i < 10; ++i) {
    {
      NoGradGuard no_grad;
      x.copy_(inputs);
      if (i == 1 || i == 2 || i == 6) x.narrow(0, 3, 1).fill_(INFINITY);  // NaN loss, NaN gradients
    }
    if (graphed) {
      graph.replay();
    } else {
      forward_backward();
    }
    trace.stepped.push_back(scaler.step(sgd) ? 1 : 0);
    scaler.update();
    trace.scales.push_back(scaler.get_scale());
  }
  for (const Tensor& p : model.parameters()) trace.weights.push_back(vals(p));
  return trace;
}

TEST(CudaGradScaler, ACapturedForwardAndBackwardReplaysWithTheCurrentScale) {
  REQUIRE_GPU();
  const ScalerTrace eager = train_with_scaler(false), graphed = train_with_scaler(true);
  // Interval 3 from a clean warm-up: back off at 1 and 2, grow after 3-5, back off at 6, grow after 7-9.
  const std::vector<double> scales = {1024, 512, 256, 256, 256, 512, 256, 256, 256, 512};
  EXPECT_EQ(eager.scales, scales);
  EXPECT_EQ(graphed.scales, scales);
  EXPECT_EQ(graphed.stepped, (std::vector<int>{1, 0, 0, 1, 1, 1, 0, 1, 1, 1}));
  EXPECT_EQ(graphed.stepped, eager.stepped);
  ASSERT_EQ(graphed.weights.size(), eager.weights.size());
  for (size_t i = 0; i < eager.weights.size(); ++i) {
    EXPECT_EQ(graphed.weights[i], eager.weights[i]) << "parameter " << i << ": replays and eager steps differ";
    for (double w : graphed.weights[i]) ASSERT_TRUE(std::isfinite(w)) << "parameter " << i;
  }
}

}  // namespace

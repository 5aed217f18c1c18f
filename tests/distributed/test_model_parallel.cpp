// Model parallelism: fc1 on the CPU, fc2 on the GPU, activations and gradients crossing
// through to(); the gradients equal those of the same model on the CPU alone.
// Skipped without a GPU (failing under VGRAD_REQUIRE_GPU=1). examples/model_parallel.cpp trains one.
#include "nn/functional.h"
#include "support.h"

namespace {

using namespace vgrad;

TEST(ModelParallel, CpuAndGpuLayersGiveTheSingleDeviceGradients) {
  REQUIRE_GPU();
  const Device gpu(DeviceType::CUDA, 0);
  auto gradients = [&](bool split) {
    manual_seed(4);
    vgrad_test::Mlp model(5, 7, 3);
    if (split) model.fc2->to(gpu);
    Generator gen(9);
    const Tensor x = normal({8, 5}, 0, 1, {}, &gen);
    const Tensor y = tensor(std::vector<int64_t>{0, 1, 2, 0, 1, 2, 0, 1}, {8});
    Tensor hidden = relu((*model.fc1)(x));
    if (split) hidden = hidden.to(gpu);
    nn::cross_entropy((*model.fc2)(hidden), split ? y.to(gpu) : y).backward();
    std::vector<std::vector<double>> grads;
    for (const Tensor& p : model.parameters()) {
      EXPECT_EQ(p.grad().device(), p.device());  // each gradient stays on its parameter's device
      grads.push_back(p.grad().to(kCPU).to_vector<double>());
    }
    return grads;
  };
  const auto split = gradients(true), single = gradients(false);
  ASSERT_EQ(split.size(), single.size());
  for (size_t i = 0; i < split.size(); ++i) vgrad_test::expect_near_all(split[i], single[i], 1e-5, "gradient");
}

}  // namespace

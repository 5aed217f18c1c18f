// The CNN ops on the GPU against the CPU: conv2d (strides, padding, dilation, groups),
// conv1d, pooling, norms, embedding; values and every gradient, float32 and float64.
// Without a GPU they report SKIPPED (failing under VGRAD_REQUIRE_GPU=1).
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "nn/functional.h"
#include "support.h"

namespace {

using namespace vgrad;
using vgrad_test::expect_near_all;
using vgrad_test::uniform_tensor;
using vgrad_test::vals;

#define REQUIRE_GPU_FOR_CONV()                                                                \
  do {                                                                                        \
    if (!vgrad::cuda::is_available()) {                                                       \
      const char* required = std::getenv("VGRAD_REQUIRE_GPU");                                \
      if (required != nullptr && std::string(required) != "" && std::string(required) != "0") \
        FAIL() << "no CUDA device, and VGRAD_REQUIRE_GPU=" << required << " requires one";    \
      GTEST_SKIP() << "no CUDA device: GPU parity tests skipped";                             \
    }                                                                                         \
  } while (0)

// Runs fn on CPU copies and on cuda:0 copies of `inputs` (floating ones require grad),
// and compares the outputs and the gradients of Σ out·R.
void expect_parity(const std::function<Tensor(const std::vector<Tensor>&)>& fn, const std::vector<Tensor>& inputs,
                   double tol) {
  std::vector<std::vector<double>> results[2];
  for (int d = 0; d < 2; ++d) {
    const Device device = d == 0 ? kCPU : cuda_device(0);
    std::vector<Tensor> in;
    for (const Tensor& t : inputs) {
      Tensor copy = t.to(device);
      if (is_floating(t.dtype())) copy.requires_grad_();
      in.push_back(copy);
    }
    const Tensor out = fn(in);
    const Tensor r = uniform_tensor(out.shape(), 99, -1, 1, out.dtype()).to(device);
    (out * r).sum().backward();
    results[d].push_back(vals(out.to(kCPU)));
    for (const Tensor& t : in)
      if (is_floating(t.dtype())) results[d].push_back(vals(t.grad().to(kCPU)));
  }
  for (size_t i = 0; i < results[0].size(); ++i)
    expect_near_all(results[1][i], results[0][i], tol, i == 0 ? "output" : "gradient");
}

TEST(CudaConv, Conv2dAllOptionsBothDtypes) {
  REQUIRE_GPU_FOR_CONV();
  for (DType dtype : {DType::Float32, DType::Float64}) {
    const double tol = dtype == DType::Float32 ? 1e-4 : 1e-10;
    const auto x = uniform_tensor({3, 4, 9, 8}, 1, -1, 1, dtype), b = uniform_tensor({6}, 3, -1, 1, dtype);
    expect_parity([](const auto& in) { return conv2d(in[0], in[1], in[2], {1, 1}, {1, 1}); },
                  {x, uniform_tensor({6, 4, 3, 3}, 2, -1, 1, dtype), b}, tol);
    expect_parity([](const auto& in) { return conv2d(in[0], in[1], in[2], {2, 1}, {2, 0}, {2, 1}, 2); },
                  {x, uniform_tensor({6, 2, 3, 2}, 4, -1, 1, dtype), b}, tol);
    expect_parity([](const auto& in) { return conv1d(in[0], in[1], Tensor(), 2, 1); },
                  {uniform_tensor({2, 3, 12}, 5, -1, 1, dtype), uniform_tensor({4, 3, 3}, 6, -1, 1, dtype)}, tol);
  }
}

TEST(CudaConv, PoolingNormsEmbedding) {
  REQUIRE_GPU_FOR_CONV();
  const double tol = 1e-4;
  const auto x = uniform_tensor({2, 4, 7, 6}, 7, -1, 1);
  expect_parity([](const auto& in) { return max_pool2d(in[0], {3, 3}, {2, 1}, {1, 1}); }, {x}, tol);
  expect_parity([](const auto& in) { return avg_pool2d(in[0], {3, 3}, {2, 2}, {1, 1}); }, {x}, tol);
  expect_parity([](const auto& in) { return adaptive_avg_pool2d(in[0], {3, 4}); }, {x}, tol);
  const auto w = uniform_tensor({4}, 8, 0.5, 1.5), b = uniform_tensor({4}, 9, -1, 1);
  expect_parity([](const auto& in) { return nn::F::batch_norm(in[0], Tensor(), Tensor(), in[1], in[2], true); },
                {x, w, b}, tol);
  expect_parity([](const auto& in) { return nn::F::group_norm(in[0], 2, in[1], in[2]); }, {x, w, b}, tol);
  expect_parity([](const auto& in) { return nn::F::layer_norm(in[0], 1, Tensor(), Tensor()); }, {x}, tol);
  expect_parity([](const auto& in) { return embedding(in[0], in[1], 1); },
                {uniform_tensor({5, 3}, 10), tensor(std::vector<int64_t>{2, 1, 2, 4, 0, 2}, {2, 3})}, tol);
}

}  // namespace

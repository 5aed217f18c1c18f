// The many-parameter optimizer steps on the GPU (cuda/optim.cu's one launch per dtype):
// bit-identical parameters and states to one per-parameter kernel each, over several steps,
// for SGD (plain, weight decay, momentum with dampening, Nesterov) and Adam/AdamW, with
// hundreds of parameters of odd sizes in float32 and float64 (and bfloat16, which takes the
// per-parameter path) and one parameter of more chunks than the launch has blocks; and the
// optimizers, which now step through it, against per-parameter updates; capturable optimizers
// (lr and step counts read from device memory) against the same optimizers without it.
// SKIPPED without a GPU.
#include <cstdint>
#include <gtest/gtest.h>
#include <memory>
#include <string>
#include <vector>

#include "capturable_check.h"
#include "core/backend.h"
#include "optim/optimizer.h"
#include "support.h"
#include "update_many_check.h"

namespace {

using namespace vgrad;
using vgrad_test::bytes_of;

// 300 parameters of odd sizes (1 to ~5000, several over one 2048-element chunk), then one of
// 5,000,003 elements: 2442 chunks, more than the 8 blocks per SM of a launch on any GPU up to
// 300 SMs, so blocks loop over chunks.
std::vector<int64_t> many_odd_sizes() {
  std::vector<int64_t> sizes;
  for (int64_t j = 0; j < 300; ++j) sizes.push_back(1 + (j * 7919) % 5003);
  sizes.push_back(5'000'003);
  return sizes;
}

const std::vector<DType> kWide{DType::Float32, DType::Float64};
const std::vector<DType> kWideAndHalf{DType::Float32, DType::Float64, DType::BFloat16};

TEST(CudaOptimMany, SgdGivesThePerParameterBitsForEveryVariant) {
  REQUIRE_GPU();
  const Device gpu = cuda_device(0);
  const struct {
    SgdParams params;
    const char* what;
  } variants[] = {{{0.1, 0, 0, 0, false, true}, "plain"},
                  {{0.05, 0, 0, 1e-2, false, true}, "weight decay"},
                  {{0.1, 0.9, 0.3, 1e-3, false, true}, "momentum, dampening, weight decay"},
                  {{0.1, 0.9, 0, 1e-3, true, true}, "Nesterov, weight decay"}};
  for (const auto& v : variants) {
    vgrad_test::expect_sgd_many_matches_one(gpu, many_odd_sizes(), kWide, v.params, 4, std::string("SGD ") + v.what);
    vgrad_test::expect_sgd_many_matches_one(gpu, {3, 2049, 17, 4096}, kWideAndHalf, v.params, 3,
                                            std::string("SGD with bfloat16 ") + v.what);
  }
}

TEST(CudaOptimMany, AdamAndAdamWGiveThePerParameterBits) {
  REQUIRE_GPU();
  const Device gpu = cuda_device(0);
  for (const bool decoupled : {false, true})
    for (const double weight_decay : {0.0, 0.05}) {
      const AdamParams p{1e-2, 0.9, 0.999, 1e-8, weight_decay, decoupled, 1};
      const std::string what =
          std::string(decoupled ? "AdamW" : "Adam") + " weight decay " + std::to_string(weight_decay);
      vgrad_test::expect_adam_many_matches_one(gpu, many_odd_sizes(), kWide, p, 4, what);
      vgrad_test::expect_adam_many_matches_one(gpu, {5, 2047, 2048, 2049}, kWideAndHalf, p, 3, what + " with bfloat16");
    }
}

// The optimizers step every CUDA parameter through the many form: the same bits as one
// per-parameter kernel each, on a model's worth of float32 parameters.
TEST(CudaOptimMany, OptimizersMatchPerParameterSteps) {
  REQUIRE_GPU();
  const Device gpu = cuda_device(0);
  const std::vector<int64_t> sizes{784 * 257, 257, 257 * 129, 129, 129 * 10, 10};
  for (const char* kind : {"SGD", "Adam", "AdamW"}) {
    const vgrad_test::ParamSet start = vgrad_test::random_params(sizes, {DType::Float32}, gpu, 5);
    std::vector<Tensor> params, reference;
    for (const Tensor& p : start.param) {
      params.push_back(p.clone().requires_grad_());
      reference.push_back(p.clone());
    }
    std::unique_ptr<optim::Optimizer> optimizer;
    const std::string name = kind;
    if (name == "SGD")
      optimizer = std::make_unique<optim::SGD>(params, optim::SGDOptions{0.1, 0.9, 0, 1e-3, true});
    else
      optimizer =
          std::make_unique<optim::Adam>(params, optim::AdamOptions{1e-2, 0.9, 0.999, 1e-8, 0.01}, name == "AdamW");
    std::vector<Tensor> buffers, second;
    for (int64_t s = 0; s < 3; ++s) {
      const vgrad_test::ParamSet grads = vgrad_test::random_params(sizes, {DType::Float32}, gpu, 50 + s, false);
      for (size_t j = 0; j < sizes.size(); ++j) {
        params[j].set_grad(grads.param[j]);
        if (s == 0) {
          buffers.push_back(zeros({sizes[j]}, {.device = gpu}));
          second.push_back(zeros({sizes[j]}, {.device = gpu}));
        }
        if (name == "SGD")
          backend_for(gpu).sgd_update(reference[j].view(), grads.param[j].view(), buffers[j].view(),
                                      {0.1, 0.9, 0, 1e-3, true, s == 0});
        else
          backend_for(gpu).adam_update(reference[j].view(), grads.param[j].view(), buffers[j].view(), second[j].view(),
                                       {1e-2, 0.9, 0.999, 1e-8, 0.01, name == "AdamW", s + 1});
      }
      optimizer->step();
    }
    for (size_t j = 0; j < sizes.size(); ++j) {
      EXPECT_EQ(bytes_of(params[j]), bytes_of(reference[j])) << kind << " parameter " << j;
      EXPECT_NE(bytes_of(params[j]), bytes_of(start.param[j])) << kind << " parameter " << j << " did not move";
    }
  }
}

// The device table is kept while the parameter set stays (here: the same gradient tensors
// every step), and the per-step scalars are kernel arguments: a new lr each step must be the
// one used, never one baked into a kept table.
TEST(CudaOptimMany, AChangedLearningRateIsUsedWithAKeptTable) {
  REQUIRE_GPU();
  const Device gpu = cuda_device(0);
  const std::vector<int64_t> sizes{3000, 17, 2049};
  const vgrad_test::ParamSet start = vgrad_test::random_params(sizes, {DType::Float32, DType::Float64}, gpu, 21);
  const vgrad_test::ParamSet grads = vgrad_test::random_params(sizes, {DType::Float32, DType::Float64}, gpu, 22, false);
  std::vector<Tensor> params, reference, buffers;
  for (size_t j = 0; j < sizes.size(); ++j) {
    params.push_back(start.param[j].clone().requires_grad_());
    params.back().set_grad(grads.param[j]);
    reference.push_back(start.param[j].clone());
    buffers.push_back(zeros({sizes[j]}, {.dtype = start.param[j].dtype(), .device = gpu}));
  }
  optim::SGD sgd(params, {.lr = 0.1, .momentum = 0.9});
  const double rates[] = {0.1, 0.5, 0.02, 0.3};
  for (int s = 0; s < 4; ++s) {
    sgd.set_lr(rates[s]);
    sgd.step();
    for (size_t j = 0; j < sizes.size(); ++j)
      backend_for(gpu).sgd_update(reference[j].view(), grads.param[j].view(), buffers[j].view(),
                                  {rates[s], 0.9, 0, 0, false, s == 0});
    for (size_t j = 0; j < sizes.size(); ++j)
      EXPECT_EQ(bytes_of(params[j]), bytes_of(reference[j])) << "step " << s << ", parameter " << j;
  }
}

// A parameter that joins later (its first gradient on step 2: a new parameter set, and a
// step count of its own) gets a new table and its own bias correction; the others keep
// theirs.
TEST(CudaOptimMany, AParameterJoiningLaterRebuildsTheTable) {
  REQUIRE_GPU();
  const Device gpu = cuda_device(0);
  const std::vector<int64_t> sizes{513, 4096, 7, 2500};
  const vgrad_test::ParamSet start = vgrad_test::random_params(sizes, {DType::Float32}, gpu, 31);
  std::vector<Tensor> params, reference, exp_avg, exp_avg_sq;
  for (size_t j = 0; j < sizes.size(); ++j) {
    params.push_back(start.param[j].clone().requires_grad_());
    reference.push_back(start.param[j].clone());
    exp_avg.push_back(zeros({sizes[j]}, {.device = gpu}));
    exp_avg_sq.push_back(zeros({sizes[j]}, {.device = gpu}));
  }
  optim::Adam adam(params, {.lr = 1e-2, .weight_decay = 0.01});
  std::vector<int64_t> steps(sizes.size(), 0);
  for (int s = 0; s < 4; ++s) {
    const vgrad_test::ParamSet grads = vgrad_test::random_params(sizes, {DType::Float32}, gpu, 40 + s, false);
    const size_t joined = s < 2 ? sizes.size() - 1 : sizes.size();  // the last joins on step 2
    for (size_t j = 0; j < joined; ++j) {
      params[j].set_grad(grads.param[j]);
      backend_for(gpu).adam_update(reference[j].view(), grads.param[j].view(), exp_avg[j].view(), exp_avg_sq[j].view(),
                                   {1e-2, 0.9, 0.999, 1e-8, 0.01, false, ++steps[j]});
    }
    adam.step();
    for (size_t j = 0; j < sizes.size(); ++j)
      EXPECT_EQ(bytes_of(params[j]), bytes_of(reference[j])) << "step " << s << ", parameter " << j;
  }
  EXPECT_NE(bytes_of(params.back()), bytes_of(start.param.back())) << "the late parameter moved";
}

// Capturable steps read lr and the step counts on the device, the rest of the launch alike.
// SGD rounds the read double lr to T as the host does: the same bits. Adam computes its bias
// corrections in double on the device, whose pow may differ from the host's in the last bit
// or two of a double; rounded to float32 that can move a scalar by one ulp, so parameters
// agree to ~1e-7 relative per step (float64: ~1e-15; bfloat16: a bfloat16 ulp or two), not
// bit for bit. The step counts agree exactly.
TEST(CudaOptimMany, CapturableStepsMatchStepsWithoutIt) {
  REQUIRE_GPU();
  const Device gpu = cuda_device(0);
  const optim::SGDOptions sgd_variants[] = {{.lr = 0.1, .weight_decay = 1e-2},
                                            {.lr = 0.1, .momentum = 0.9, .dampening = 0.3, .weight_decay = 1e-3},
                                            {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-3, .nesterov = true}};
  // bfloat16 takes the one-parameter path (float32 copies), capturable or not.
  const DType dtypes[] = {DType::Float32, DType::Float64, DType::BFloat16};
  for (const optim::SGDOptions& options : sgd_variants)
    for (const DType dtype : dtypes) {
      const vgrad_test::MakeOptimizer make = [options](std::vector<Tensor> params, bool capturable) {
        optim::SGDOptions o = options;
        o.capturable = capturable;
        return std::unique_ptr<optim::Optimizer>(std::make_unique<optim::SGD>(std::move(params), o));
      };
      const std::string what =
          std::string("SGD momentum ") + std::to_string(options.momentum) + " " + dtype_name(dtype);
      const vgrad_test::OptimizerRun plain = vgrad_test::run_optimizer(gpu, dtype, make, false);
      const vgrad_test::OptimizerRun capturable = vgrad_test::run_optimizer(gpu, dtype, make, true);
      for (size_t j = 0; j < plain.params.size(); ++j)
        EXPECT_EQ(bytes_of(capturable.params[j]), bytes_of(plain.params[j])) << what << ": parameter " << j;
      ASSERT_EQ(capturable.state.size(), plain.state.size()) << what;
      for (const auto& [key, value] : plain.state)
        EXPECT_EQ(bytes_of(capturable.state.at(key)), bytes_of(value)) << what << ": " << key;
    }
  for (const bool decoupled : {false, true})
    for (const DType dtype : dtypes) {
      const vgrad_test::MakeOptimizer make = [decoupled](std::vector<Tensor> params, bool capturable) {
        return std::unique_ptr<optim::Optimizer>(std::make_unique<optim::Adam>(
            std::move(params), optim::AdamOptions{.lr = 1e-2, .weight_decay = 0.01, .capturable = capturable},
            decoupled));
      };
      const std::string what = std::string(decoupled ? "AdamW " : "Adam ") + dtype_name(dtype);
      // bfloat16: a float32 scalar one ulp apart can round a parameter to the next bfloat16
      // (2^-8 relative), and later steps carry it.
      const double tolerance = dtype == DType::Float32 ? 1e-6 : dtype == DType::Float64 ? 1e-13 : 2e-2;
      const vgrad_test::OptimizerRun plain = vgrad_test::run_optimizer(gpu, dtype, make, false);
      const vgrad_test::OptimizerRun capturable = vgrad_test::run_optimizer(gpu, dtype, make, true);
      for (size_t j = 0; j < plain.params.size(); ++j)
        vgrad_test::expect_all_near(vgrad_test::vals(capturable.params[j]), vgrad_test::vals(plain.params[j]),
                                    tolerance, what + ": parameter " + std::to_string(j));
      ASSERT_EQ(capturable.state.size(), plain.state.size()) << what;
      for (const auto& [key, value] : plain.state)
        vgrad_test::expect_all_near(vgrad_test::vals(capturable.state.at(key)), vgrad_test::vals(value), tolerance,
                                    what + ": " + key);
      EXPECT_EQ(capturable.state.at("state.0.step").item<int64_t>(), 5) << what;
      EXPECT_EQ(capturable.state.at("state.2.step").item<int64_t>(), 3) << what << ": the late parameter's own count";
    }
}

}  // namespace

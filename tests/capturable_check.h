// The check behind capturable optimizers (optim/optimizer.h) on any device: two copies of
// the same parameters stepped with the same gradients and the same changing lr, by one
// optimizer made with capturable = true and one without, several steps, with a parameter
// that joins late (its own step count). Used by tests/optim/test_optimizer.cpp (the CPU:
// the same bits) and tests/cuda/test_optim_cuda.cpp (the GPU).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "optim/optimizer.h"
#include "support.h"

namespace vgrad_test {

// An optimizer over `params`, capturable or not, otherwise alike.
using MakeOptimizer =
    std::function<std::unique_ptr<vgrad::optim::Optimizer>(std::vector<vgrad::Tensor> params, bool capturable)>;

struct OptimizerRun {
  std::vector<vgrad::Tensor> params;
  std::map<std::string, vgrad::Tensor> state;  // state_dict() after the last step
};

// Sizes: small, one over the CPU's threaded split (64K floats), one over a GPU chunk.
inline const std::vector<int64_t> kCapturableSizes{3, 70001, 5, 2049};
constexpr size_t kLateParameter = 2;  // has no gradient on steps 0 and 1
inline const std::vector<double> kLearningRates{0.1, 0.05, 0.2, 0.01, 0.07};

inline OptimizerRun run_optimizer(vgrad::Device device, vgrad::DType dtype, const MakeOptimizer& make,
                                  bool capturable) {
  OptimizerRun run;
  for (size_t j = 0; j < kCapturableSizes.size(); ++j)
    run.params.push_back(uniform_tensor({kCapturableSizes[j]}, 100 + j, -1, 1, dtype).to(device).requires_grad_());
  const std::unique_ptr<vgrad::optim::Optimizer> optimizer = make(run.params, capturable);
  EXPECT_EQ(optimizer->capturable(), capturable);
  for (size_t s = 0; s < kLearningRates.size(); ++s) {
    optimizer->set_lr(kLearningRates[s]);
    for (size_t j = 0; j < kCapturableSizes.size(); ++j) {
      if (j == kLateParameter && s < 2) {
        run.params[j].set_grad(vgrad::Tensor());
        continue;
      }
      run.params[j].set_grad(uniform_tensor({kCapturableSizes[j]}, 1000 * s + j, -1, 1, dtype).to(device));
    }
    optimizer->step();
  }
  run.state = optimizer->state_dict();
  return run;
}

}  // namespace vgrad_test

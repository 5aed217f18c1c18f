// A small float16 training loop under GradScaler, shared by the tests of what one step
// leaves for the next (tests/amp/test_grad_scaler.cpp: the gradients' blocks and the GPU's
// table writes; tests/cuda/test_optim_table.cpp: the table cache over those blocks): an
// Mlp(32, 64, 10) under autocast, SGD with momentum, zero_grad() dropping the gradients.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "amp/autocast.h"
#include "amp/grad_scaler.h"
#include "nn/functional.h"
#include "optim/optimizer.h"
#include "support.h"

namespace vgrad_test {

// Runs `steps` steps on `device`, calling `after_backward(step, parameters)` while the
// step's gradients are in place, before GradScaler unscales and steps. Every step steps
// (a scale of 256 never overflows here).
inline void grad_scaler_loop(vgrad::Device device, int steps,
                             const std::function<void(int, const std::vector<Tensor>&)>& after_backward) {
  Mlp model(32, 64, 10);
  model.to(device);
  const std::vector<Tensor> params = model.parameters();
  vgrad::optim::SGD sgd(params, {.lr = 0.01, .momentum = 0.9});
  vgrad::amp::GradScaler scaler({.init_scale = 256.0});
  const Tensor x = uniform_tensor({16, 32}, 8).to(device);
  const Tensor y = vgrad::tensor(std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5}).to(device);
  for (int step = 0; step < steps; ++step) {
    Tensor loss;
    {
      vgrad::amp::Autocast autocast(DType::Float16);
      loss = vgrad::nn::cross_entropy(model(x), y);
    }
    scaler.scale(loss).backward();
    after_backward(step, params);
    EXPECT_TRUE(scaler.step(sgd)) << device.str() << " step " << step;
    scaler.update();
    sgd.zero_grad();
  }
}

}  // namespace vgrad_test

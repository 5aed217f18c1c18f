// Parameter initialisers, in place and seedable (nullptr = the default generator,
// seeded by vgrad::manual_seed). Same formulas as torch.nn.init.
#pragma once
#include <string>

#include "autograd/ops.h"

namespace vgrad::nn::init {

enum class FanMode { FanIn, FanOut };
// gain for "linear", "relu", "leaky_relu" (with slope a), "tanh", "sigmoid".
double calculate_gain(const std::string& nonlinearity, double a = 0.0);
// (fan_in, fan_out) of a weight (out, in, ...).
std::pair<int64_t, int64_t> fans(const Tensor& weight);

using vgrad::normal_;   // (t, mean, stddev, gen)
using vgrad::uniform_;  // (t, low, high, gen)
Tensor& zeros_(Tensor& t);
Tensor& constant_(Tensor& t, double value);
Tensor& xavier_uniform_(Tensor& t, double gain = 1.0, Generator* gen = nullptr);
Tensor& xavier_normal_(Tensor& t, double gain = 1.0, Generator* gen = nullptr);
Tensor& kaiming_uniform_(Tensor& t, double a = 0.0, FanMode mode = FanMode::FanIn,
                         const std::string& nonlinearity = "leaky_relu", Generator* gen = nullptr);
Tensor& kaiming_normal_(Tensor& t, double a = 0.0, FanMode mode = FanMode::FanIn,
                        const std::string& nonlinearity = "leaky_relu", Generator* gen = nullptr);

}  // namespace vgrad::nn::init

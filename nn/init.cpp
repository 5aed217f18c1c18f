// Initialisers: bounds from fans and gains, as torch.nn.init computes them.
#include "nn/init.h"

#include <cmath>

#include "core/grad_mode.h"
#include "core/error.h"

namespace vgrad::nn::init {

double calculate_gain(const std::string& nonlinearity, double a) {
  if (nonlinearity == "linear" || nonlinearity == "sigmoid") return 1.0;
  if (nonlinearity == "tanh") return 5.0 / 3.0;
  if (nonlinearity == "relu") return std::sqrt(2.0);
  if (nonlinearity == "leaky_relu") return std::sqrt(2.0 / (1.0 + a * a));
  fail("calculate_gain: unknown nonlinearity '{}'", nonlinearity);
}

std::pair<int64_t, int64_t> fans(const Tensor& weight) {
  if (weight.dim() < 2) fail("init: fan in/out need a weight of at least 2 dims, got {}", shape_str(weight.shape()));
  int64_t receptive = 1;
  for (int64_t d = 2; d < weight.dim(); ++d) receptive *= weight.shape()[d];
  return {weight.shape()[1] * receptive, weight.shape()[0] * receptive};
}

Tensor& constant_(Tensor& t, double value) {
  NoGradGuard no_grad;
  t.detach().fill_(value);
  return t;
}
Tensor& zeros_(Tensor& t) { return constant_(t, 0.0); }

Tensor& xavier_uniform_(Tensor& t, double gain, Generator* gen) {
  const auto [fan_in, fan_out] = fans(t);
  const double bound = gain * std::sqrt(6.0 / double(fan_in + fan_out));
  return uniform_(t, -bound, bound, gen);
}
Tensor& xavier_normal_(Tensor& t, double gain, Generator* gen) {
  const auto [fan_in, fan_out] = fans(t);
  return normal_(t, 0.0, gain * std::sqrt(2.0 / double(fan_in + fan_out)), gen);
}

static double kaiming_std(const Tensor& t, double a, FanMode mode, const std::string& nonlinearity) {
  const auto [fan_in, fan_out] = fans(t);
  const int64_t fan = mode == FanMode::FanIn ? fan_in : fan_out;
  if (fan == 0) fail("kaiming init: weight {} has a zero fan", shape_str(t.shape()));
  return calculate_gain(nonlinearity, a) / std::sqrt(double(fan));
}
Tensor& kaiming_uniform_(Tensor& t, double a, FanMode mode, const std::string& nonlinearity, Generator* gen) {
  const double bound = std::sqrt(3.0) * kaiming_std(t, a, mode, nonlinearity);
  return uniform_(t, -bound, bound, gen);
}
Tensor& kaiming_normal_(Tensor& t, double a, FanMode mode, const std::string& nonlinearity, Generator* gen) {
  return normal_(t, 0.0, kaiming_std(t, a, mode, nonlinearity), gen);
}

}  // namespace vgrad::nn::init

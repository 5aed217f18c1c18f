// Layer constructors and the forwards that need more than one line.
#include "nn/layers.h"

#include <cmath>

#include "core/error.h"
#include "nn/init.h"

namespace vgrad::nn {

Linear::Linear(int64_t in, int64_t out, bool with_bias, Generator* gen) : in_features(in), out_features(out) {
  if (in <= 0 || out <= 0) fail("Linear: sizes must be positive, got {} -> {}", in, out);
  weight = register_parameter("weight", Tensor::empty({out, in}));
  init::kaiming_uniform_(weight, std::sqrt(5.0), init::FanMode::FanIn, "leaky_relu", gen);
  if (with_bias) {
    bias = register_parameter("bias", Tensor::empty({out}));
    const double bound = 1.0 / std::sqrt(double(in));
    init::uniform_(bias, -bound, bound, gen);
  }
}

std::string Linear::describe() const { return fmt::format("Linear {}->{}", in_features, out_features); }

Tensor Linear::forward(const Tensor& x) {
  if (x.dim() == 0 || x.shape()[x.dim() - 1] != in_features)
    fail("{}: input has {} features, expected {} (input shape {})", where(), x.dim() ? x.shape()[x.dim() - 1] : 0,
         in_features, shape_str(x.shape()));
  return linear(x, weight, bias);
}

Dropout::Dropout(double probability, Generator* gen) : p(probability), gen_(gen) {
  if (p < 0 || p > 1) fail("Dropout: probability {} outside [0, 1]", p);
}
std::string Dropout::describe() const { return fmt::format("Dropout p={}", p); }

Sequential::Sequential(std::initializer_list<std::shared_ptr<Module>> modules) {
  for (const auto& m : modules) push_back(m);
}

void Sequential::push_back(std::shared_ptr<Module> module) {
  register_module(std::to_string(modules_.size()), module);
  modules_.push_back(std::move(module));
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& m : modules_) h = m->forward(h);
  return h;
}

}  // namespace vgrad::nn

// Layer constructors and the forwards that need more than one line.
#include "nn/layers.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/grad_mode.h"
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

void Linear::check_input(const Tensor& x) const {
  if (x.dim() == 0 || x.shape()[x.dim() - 1] != in_features)
    fail("{}: input has {} features, expected {} (input shape {})", where(), x.dim() ? x.shape()[x.dim() - 1] : 0,
         in_features, shape_str(x.shape()));
}

Tensor Linear::forward(const Tensor& x) {
  check_input(x);
  return linear(x, weight, bias);
}

std::string LinearReLU::describe() const { return fmt::format("LinearReLU {}->{}", in_features, out_features); }

Tensor LinearReLU::forward(const Tensor& x) {
  check_input(x);
  return linear_relu(x, weight, bias);
}

namespace {

// PyTorch's conv init: kaiming_uniform(a=√5) gives U(±1/√fan_in), and the bias U(±1/√fan_in).
void init_conv(Tensor& weight, Tensor& bias, Generator* gen) {
  init::kaiming_uniform_(weight, std::sqrt(5.0), init::FanMode::FanIn, "leaky_relu", gen);
  if (bias.defined()) {
    const double bound = 1.0 / std::sqrt(double(init::fans(weight).first));
    init::uniform_(bias, -bound, bound, gen);
  }
}

void check_conv_sizes(const char* layer, int64_t in, int64_t out, int64_t groups) {
  if (in <= 0 || out <= 0) fail("{}: channels must be positive, got {} -> {}", layer, in, out);
  if (groups < 1 || in % groups != 0 || out % groups != 0)
    fail("{}: groups {} must divide both {} in and {} out channels", layer, groups, in, out);
}

}  // namespace

Conv2d::Conv2d(int64_t in, int64_t out, Pair2 kernel, Options opts, Generator* gen)
    : in_channels(in), out_channels(out), kernel_size(kernel), options(opts) {
  check_conv_sizes("Conv2d", in, out, opts.groups);
  if (kernel[0] < 1 || kernel[1] < 1) fail("Conv2d: kernel {}x{} must be >= 1", kernel[0], kernel[1]);
  weight = register_parameter("weight", Tensor::empty({out, in / opts.groups, kernel[0], kernel[1]}));
  if (opts.bias) bias = register_parameter("bias", Tensor::empty({out}));
  init_conv(weight, bias, gen);
}

std::string Conv2d::describe() const {
  return fmt::format("Conv2d {}->{} {}x{}", in_channels, out_channels, kernel_size[0], kernel_size[1]);
}

Tensor Conv2d::forward(const Tensor& x) {
  if (x.dim() != 4 || x.shape()[1] != in_channels)
    fail("{}: input {} should be (N, {}, H, W)", where(), shape_str(x.shape()), in_channels);
  return conv2d(x, weight, bias, options.stride, options.padding, options.dilation, options.groups);
}

Conv1d::Conv1d(int64_t in, int64_t out, int64_t kernel, Options opts, Generator* gen)
    : in_channels(in), out_channels(out), kernel_size(kernel), options(opts) {
  check_conv_sizes("Conv1d", in, out, opts.groups);
  if (kernel < 1) fail("Conv1d: kernel {} must be >= 1", kernel);
  weight = register_parameter("weight", Tensor::empty({out, in / opts.groups, kernel}));
  if (opts.bias) bias = register_parameter("bias", Tensor::empty({out}));
  init_conv(weight, bias, gen);
}

std::string Conv1d::describe() const {
  return fmt::format("Conv1d {}->{} k={}", in_channels, out_channels, kernel_size);
}

Tensor Conv1d::forward(const Tensor& x) {
  if (x.dim() != 3 || x.shape()[1] != in_channels)
    fail("{}: input {} should be (N, {}, L)", where(), shape_str(x.shape()), in_channels);
  return conv1d(x, weight, bias, options.stride, options.padding, options.dilation, options.groups);
}

BatchNorm::BatchNorm(int64_t features, double eps_, double momentum_, bool affine, int spatial_dims)
    : num_features(features), eps(eps_), momentum(momentum_), spatial_dims_(spatial_dims) {
  if (features <= 0) fail("BatchNorm{}d: num_features must be positive, got {}", spatial_dims, features);
  if (affine) {
    weight = register_parameter("weight", ones({features}));
    bias = register_parameter("bias", zeros({features}));
  }
  running_mean = register_buffer("running_mean", zeros({features}));
  running_var = register_buffer("running_var", ones({features}));
  num_batches_tracked = register_buffer("num_batches_tracked", zeros({}, {.dtype = DType::Int64}));
}

std::string BatchNorm::describe() const { return fmt::format("BatchNorm{}d {}", spatial_dims_, num_features); }

Tensor BatchNorm::forward(const Tensor& x) {
  const bool shape_ok = spatial_dims_ == 2 ? x.dim() == 4 : (x.dim() == 2 || x.dim() == 3);
  if (!shape_ok || x.shape()[1] != num_features)
    fail("{}: input {} should be {}", where(), shape_str(x.shape()),
         spatial_dims_ == 2 ? fmt::format("(N, {}, H, W)", num_features)
                            : fmt::format("(N, {}) or (N, {}, L)", num_features, num_features));
  if (is_training()) {
    NoGradGuard no_grad;
    num_batches_tracked.add_(ones({}, {.dtype = DType::Int64, .device = x.device()}));
  }
  return functional::batch_norm(x, running_mean, running_var, weight, bias, is_training(), momentum, eps);
}

LayerNorm::LayerNorm(Shape shape, double eps_, bool affine) : normalized_shape(std::move(shape)), eps(eps_) {
  if (normalized_shape.empty()) fail("LayerNorm: normalized_shape is empty");
  if (affine) {
    weight = register_parameter("weight", ones(normalized_shape));
    bias = register_parameter("bias", zeros(normalized_shape));
  }
}

Tensor LayerNorm::forward(const Tensor& x) {
  const int64_t k = int64_t(normalized_shape.size());
  if (x.dim() < k || !std::equal(normalized_shape.begin(), normalized_shape.end(), x.shape().end() - k))
    fail("{}: input {} does not end in the normalized shape {}", where(), shape_str(x.shape()),
         shape_str(normalized_shape));
  return functional::layer_norm(x, k, weight, bias, eps);
}

GroupNorm::GroupNorm(int64_t groups, int64_t channels, double eps_, bool affine)
    : num_groups(groups), num_channels(channels), eps(eps_) {
  if (groups < 1 || channels < 1 || channels % groups != 0)
    fail("GroupNorm: {} groups must divide {} channels", groups, channels);
  if (affine) {
    weight = register_parameter("weight", ones({channels}));
    bias = register_parameter("bias", zeros({channels}));
  }
}

Embedding::Embedding(int64_t num, int64_t dim, int64_t padding, Generator* gen)
    : num_embeddings(num), embedding_dim(dim), padding_idx(padding) {
  if (num <= 0 || dim <= 0) fail("Embedding: sizes must be positive, got {} x {}", num, dim);
  if (padding != kNoPadding) {
    if (padding < -num || padding >= num)
      fail("Embedding: padding_idx {} out of range for {} embeddings", padding, num);
    if (padding < 0) padding_idx = padding + num;
  }
  weight = register_parameter("weight", Tensor::empty({num, dim}));
  init::normal_(weight, 0.0, 1.0, gen);
  if (padding_idx != kNoPadding) {
    NoGradGuard no_grad;
    weight.detach().select(0, padding_idx).fill_(0.0);
  }
}

std::string Embedding::describe() const { return fmt::format("Embedding {}x{}", num_embeddings, embedding_dim); }

DropoutBase::DropoutBase(const char* name, double probability, Generator* gen)
    : p(probability), name_(name), gen_(gen) {
  if (p < 0 || p > 1) fail("{}: probability {} outside [0, 1]", name_, p);
}
std::string DropoutBase::describe() const { return fmt::format("{} p={}", name_, p); }

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

// The built-in layers. Each forward is one call into nn/functional.h or core/ops.h;
// Linear checks its input width and names itself in the error.
#pragma once
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "nn/functional.h"
#include "nn/module.h"

namespace vgrad::nn {

// y = x·Wᵀ + b. weight (out, in), bias (out); PyTorch's default init:
// W ~ kaiming_uniform(a=√5) = U(±1/√in), b ~ U(±1/√in).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  Tensor weight, bias;
  int64_t in_features, out_features;

 protected:
  void check_input(const Tensor& x) const;  // names the layer: "net.fc2 (Linear 256->10): input has ..."
};

// relu(x·Wᵀ + b) as one op (functional::linear_relu: on CUDA one cuBLASLt GEMM whose epilogue
// adds the bias, then the ReLU kernel): Sequential{Linear, ReLU} fused, as PyTorch's
// torch.ao.nn.intrinsic.LinearReLU. Linear's parameters, names and init, so a state_dict moves
// between the two (and torch.nn.Linear) unchanged.
class LinearReLU : public Linear {
 public:
  using Linear::Linear;
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
};

// A layer without parameters that is one function of its input (torch.nn.ReLU, ...);
// `name` is what describe() says.
class Activation : public Module {
 public:
  using Function = Tensor (*)(const Tensor&);
  Activation(const char* name, Function function) : name_(name), function_(function) {}
  Tensor forward(const Tensor& x) override { return function_(x); }
  std::string describe() const override { return name_; }

 private:
  const char* name_;
  Function function_;
};
class ReLU : public Activation {
 public:
  ReLU() : Activation("ReLU", relu) {}
};
class Sigmoid : public Activation {
 public:
  Sigmoid() : Activation("Sigmoid", sigmoid) {}
};
class Tanh : public Activation {
 public:
  Tanh() : Activation("Tanh", vgrad::tanh) {}
};
class GELU : public Activation {
 public:
  GELU() : Activation("GELU", gelu) {}
};
class LeakyReLU : public Module {
 public:
  explicit LeakyReLU(double negative_slope = 0.01) : negative_slope(negative_slope) {}
  Tensor forward(const Tensor& x) override { return leaky_relu(x, negative_slope); }
  std::string describe() const override { return "LeakyReLU"; }
  double negative_slope;
};
// An activation along one axis (by default the last): softmax, log-softmax.
class AxisActivation : public Module {
 public:
  using Function = Tensor (*)(const Tensor&, int64_t);
  AxisActivation(const char* name, Function function, int64_t axis) : axis(axis), name_(name), function_(function) {}
  Tensor forward(const Tensor& x) override { return function_(x, axis); }
  std::string describe() const override { return name_; }
  int64_t axis;

 private:
  const char* name_;
  Function function_;
};
class Softmax : public AxisActivation {
 public:
  explicit Softmax(int64_t axis = -1) : AxisActivation("Softmax", softmax, axis) {}
};
class LogSoftmax : public AxisActivation {
 public:
  explicit LogSoftmax(int64_t axis = -1) : AxisActivation("LogSoftmax", log_softmax, axis) {}
};
// What the dropout layers share (torch's _DropoutNd): a probability p in [0, 1], checked,
// and the generator that seeds the masks (nullptr: the default generator).
class DropoutBase : public Module {
 public:
  std::string describe() const override;  // "Dropout p=0.5"
  double p;

 protected:
  DropoutBase(const char* name, double p, Generator* gen);
  const char* name_;
  Generator* gen_;
};
// Zeroes inputs with probability p while training, scaling the rest by 1/(1-p).
class Dropout : public DropoutBase {
 public:
  explicit Dropout(double p = 0.5, Generator* gen = nullptr) : DropoutBase("Dropout", p, gen) {}
  Tensor forward(const Tensor& x) override { return functional::dropout(x, p, is_training(), gen_); }
};
// Zeroes whole channels of (N, C, ...) with probability p while training.
class Dropout2d : public DropoutBase {
 public:
  explicit Dropout2d(double p = 0.5, Generator* gen = nullptr) : DropoutBase("Dropout2d", p, gen) {}
  Tensor forward(const Tensor& x) override { return functional::dropout2d(x, p, is_training(), gen_); }
};
class Flatten : public Module {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1) : start_dim(start_dim), end_dim(end_dim) {}
  Tensor forward(const Tensor& x) override { return functional::flatten(x, start_dim, end_dim); }
  std::string describe() const override { return "Flatten"; }
  int64_t start_dim, end_dim;
};

// ---- convolution and pooling (NCHW) ----

// y = x ⊛ W + b. weight (out, in/groups, KH, KW), bias (out); PyTorch's names and init:
// W ~ kaiming_uniform(a=√5) = U(±1/√fan_in), b ~ U(±1/√fan_in), fan_in = in/groups·KH·KW,
// so state_dict keys and shapes match torch.nn.Conv2d.
struct Conv2dOptions {
  Pair2 stride{1, 1}, padding{0, 0}, dilation{1, 1};
  int64_t groups = 1;
  bool bias = true;
};
class Conv2d : public Module {
 public:
  using Options = Conv2dOptions;
  Conv2d(int64_t in_channels, int64_t out_channels, Pair2 kernel_size, Options options, Generator* gen = nullptr);
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, Options options = {}, Generator* gen = nullptr)
      : Conv2d(in_channels, out_channels, {kernel_size, kernel_size}, options, gen) {}
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  Tensor weight, bias;
  int64_t in_channels, out_channels;
  Pair2 kernel_size;
  Options options;
};

// weight (out, in/groups, K), bias (out); as torch.nn.Conv1d.
struct Conv1dOptions {
  int64_t stride = 1, padding = 0, dilation = 1, groups = 1;
  bool bias = true;
};
class Conv1d : public Module {
 public:
  using Options = Conv1dOptions;
  Conv1d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, Options options = {}, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  Tensor weight, bias;
  int64_t in_channels, out_channels, kernel_size;
  Options options;
};

// stride {0, 0} = the kernel size (torch's default).
class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(Pair2 kernel_size, Pair2 stride = {0, 0}, Pair2 padding = {0, 0}, Pair2 dilation = {1, 1})
      : kernel_size(kernel_size), stride(stride), padding(padding), dilation(dilation) {}
  explicit MaxPool2d(int64_t kernel_size) : MaxPool2d(Pair2{kernel_size, kernel_size}) {}
  Tensor forward(const Tensor& x) override { return max_pool2d(x, kernel_size, stride, padding, dilation); }
  std::string describe() const override { return "MaxPool2d"; }
  Pair2 kernel_size, stride, padding, dilation;
};
class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(Pair2 kernel_size, Pair2 stride = {0, 0}, Pair2 padding = {0, 0})
      : kernel_size(kernel_size), stride(stride), padding(padding) {}
  explicit AvgPool2d(int64_t kernel_size) : AvgPool2d(Pair2{kernel_size, kernel_size}) {}
  Tensor forward(const Tensor& x) override { return avg_pool2d(x, kernel_size, stride, padding); }
  std::string describe() const override { return "AvgPool2d"; }
  Pair2 kernel_size, stride, padding;
};
class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(Pair2 output_size) : output_size(output_size) {}
  explicit AdaptiveAvgPool2d(int64_t output_size) : output_size{output_size, output_size} {}
  Tensor forward(const Tensor& x) override { return adaptive_avg_pool2d(x, output_size); }
  std::string describe() const override { return "AdaptiveAvgPool2d"; }
  Pair2 output_size;
};

// ---- normalization, embeddings ----

// Per-channel normalization of (N, C) or (N, C, L) (BatchNorm1d) or (N, C, H, W)
// (BatchNorm2d). Parameters weight (ones) and bias (zeros); buffers running_mean,
// running_var and num_batches_tracked, as torch.nn.BatchNorm*d. Training normalizes
// with the batch's statistics and updates the running ones; eval() uses those.
class BatchNorm : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  int64_t num_features;
  double eps, momentum;

 protected:
  BatchNorm(int64_t num_features, double eps, double momentum, bool affine, int spatial_dims);

 private:
  int spatial_dims_;  // 1: (N, C) or (N, C, L); 2: (N, C, H, W)
};
class BatchNorm1d : public BatchNorm {
 public:
  explicit BatchNorm1d(int64_t num_features, double eps = 1e-5, double momentum = 0.1, bool affine = true)
      : BatchNorm(num_features, eps, momentum, affine, 1) {}
};
class BatchNorm2d : public BatchNorm {
 public:
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5, double momentum = 0.1, bool affine = true)
      : BatchNorm(num_features, eps, momentum, affine, 2) {}
};

// Normalizes over the trailing normalized_shape dims; weight (ones) and bias (zeros) of that shape.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(Shape normalized_shape, double eps = 1e-5, bool elementwise_affine = true);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override { return "LayerNorm"; }
  Tensor weight, bias;
  Shape normalized_shape;
  double eps;
};

// Normalizes (N, C, ...) over groups of C/num_groups channels; weight and bias per channel.
class GroupNorm : public Module {
 public:
  GroupNorm(int64_t num_groups, int64_t num_channels, double eps = 1e-5, bool affine = true);
  Tensor forward(const Tensor& x) override { return functional::group_norm(x, num_groups, weight, bias, eps); }
  std::string describe() const override { return "GroupNorm"; }
  Tensor weight, bias;
  int64_t num_groups, num_channels;
  double eps;
};

// weight (num_embeddings, dim) ~ N(0, 1), row padding_idx zeroed and given no
// gradient; forward looks up int64 indices of any shape.
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim, int64_t padding_idx = kNoPadding, Generator* gen = nullptr);
  Tensor forward(const Tensor& indices) override { return embedding(weight, indices, padding_idx); }
  std::string describe() const override;
  Tensor weight;
  int64_t num_embeddings, embedding_dim, padding_idx;
};

// Runs its modules in order; they are named "0", "1", ... (as in PyTorch).
class Sequential : public Module {
 public:
  Sequential() = default;
  Sequential(std::initializer_list<std::shared_ptr<Module>> modules);
  void push_back(std::shared_ptr<Module> module);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override { return "Sequential"; }
  size_t size() const { return modules_.size(); }
  std::shared_ptr<Module> operator[](size_t i) const { return modules_.at(i); }

 private:
  std::vector<std::shared_ptr<Module>> modules_;
};

}  // namespace vgrad::nn

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
};

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return relu(x); }
  std::string describe() const override { return "ReLU"; }
};
class LeakyReLU : public Module {
 public:
  explicit LeakyReLU(double negative_slope = 0.01) : negative_slope(negative_slope) {}
  Tensor forward(const Tensor& x) override { return leaky_relu(x, negative_slope); }
  std::string describe() const override { return "LeakyReLU"; }
  double negative_slope;
};
class Sigmoid : public Module {
 public:
  Tensor forward(const Tensor& x) override { return sigmoid(x); }
  std::string describe() const override { return "Sigmoid"; }
};
class Tanh : public Module {
 public:
  Tensor forward(const Tensor& x) override { return vgrad::tanh(x); }
  std::string describe() const override { return "Tanh"; }
};
class GELU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return gelu(x); }
  std::string describe() const override { return "GELU"; }
};
class Softmax : public Module {
 public:
  explicit Softmax(int64_t axis = -1) : axis(axis) {}
  Tensor forward(const Tensor& x) override { return softmax(x, axis); }
  std::string describe() const override { return "Softmax"; }
  int64_t axis;
};
class LogSoftmax : public Module {
 public:
  explicit LogSoftmax(int64_t axis = -1) : axis(axis) {}
  Tensor forward(const Tensor& x) override { return log_softmax(x, axis); }
  std::string describe() const override { return "LogSoftmax"; }
  int64_t axis;
};
// Zeroes inputs with probability p while training (seeded through gen or the default generator).
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) override { return functional::dropout(x, p, is_training(), gen_); }
  std::string describe() const override;
  double p;

 private:
  Generator* gen_;
};
class Flatten : public Module {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1) : start_dim(start_dim), end_dim(end_dim) {}
  Tensor forward(const Tensor& x) override { return functional::flatten(x, start_dim, end_dim); }
  std::string describe() const override { return "Flatten"; }
  int64_t start_dim, end_dim;
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

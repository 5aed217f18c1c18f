// Tensor creation: constant fills, ranges, host values, and seedable random numbers
// (counter-based Generators). Defined in core/creation.cpp; not differentiable.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "core/tensor.h"

namespace vgrad {

struct TensorOptions {
  DType dtype = DType::Float32;
  Device device = kCPU;
  bool requires_grad = false;
};
Tensor zeros(const Shape& shape, TensorOptions options = {});
Tensor ones(const Shape& shape, TensorOptions options = {});
Tensor full(const Shape& shape, double value, TensorOptions options = {});
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor arange(double start, double end, double step = 1.0, TensorOptions options = {});
Tensor arange(int64_t end, TensorOptions options = {.dtype = DType::Int64});
Tensor eye(int64_t n, TensorOptions options = {});
Tensor scalar_tensor(double value, TensorOptions options = {});
// From host values; shape defaults to 1-D. Element count must match the shape.
Tensor tensor(const std::vector<float>& values, const Shape& shape = {}, TensorOptions options = {});
Tensor tensor(const std::vector<double>& values, const Shape& shape = {}, TensorOptions options = {.dtype = DType::Float64});
Tensor tensor(const std::vector<int64_t>& values, const Shape& shape = {}, TensorOptions options = {.dtype = DType::Int64});
Tensor tensor(std::initializer_list<float> values, const Shape& shape = {}, TensorOptions options = {});

// Seedable random numbers: a Generator is a counter-based stream (same seed, same numbers).
class Generator {
 public:
  explicit Generator(uint64_t seed = 0x5eed) : state_{seed, 0} {}
  void manual_seed(uint64_t seed) { state_ = {seed, 0}; }
  RandomState& state() { return state_; }

 private:
  RandomState state_;
};
Generator& default_generator();
void manual_seed(uint64_t seed);  // seeds the default generator
Tensor rand(const Shape& shape, TensorOptions options = {}, Generator* gen = nullptr);   // U[0, 1)
Tensor randn(const Shape& shape, TensorOptions options = {}, Generator* gen = nullptr);  // N(0, 1)
Tensor uniform(const Shape& shape, double low, double high, TensorOptions options = {}, Generator* gen = nullptr);
Tensor normal(const Shape& shape, double mean, double stddev, TensorOptions options = {}, Generator* gen = nullptr);
Tensor randperm(int64_t n, Generator* gen = nullptr);  // int64, on the CPU
Tensor& uniform_(Tensor& t, double low, double high, Generator* gen = nullptr);
Tensor& normal_(Tensor& t, double mean, double stddev, Generator* gen = nullptr);

// ---------------- comparing ----------------
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8);

}  // namespace vgrad

// Tensor creation: constant fills, ranges, host values, and seedable random numbers
// (counter-based Generators). Defined in core/creation.cpp; not differentiable.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <type_traits>
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
// tensor()'s shape: given (the element count must match; {} is a 0-d scalar, as
// torch.tensor(3.0)), or left out: 1-D, n values -> [n], as torch.tensor([...]).
// NOTE: no default constructor on purpose, so that `{}` reaches the initializer-list
// constructor (the empty shape) instead of meaning "left out".
class ShapeArg {
 public:
  ShapeArg(std::initializer_list<int64_t> dims) : dims_(dims), given_(true) {}
  ShapeArg(const Shape& dims) : dims_(dims), given_(true) {}
  static ShapeArg left_out() { return ShapeArg(LeftOut{}); }
  // The shape for `count` values.
  Shape resolve(size_t count) const { return given_ ? dims_ : Shape{static_cast<int64_t>(count)}; }

 private:
  struct LeftOut {};
  explicit ShapeArg(LeftOut) {}
  Shape dims_;
  bool given_ = false;
};

// From host values:
//   tensor({1.f, 2.f}) -> [2];   tensor({3.f}) -> [1];   tensor({3.f}, {}) -> 0-d;   tensor(v, {2, 3}) -> [2, 3]
Tensor tensor(const std::vector<float>& values, const ShapeArg& shape = ShapeArg::left_out(), TensorOptions options = {});
Tensor tensor(const std::vector<double>& values, const ShapeArg& shape = ShapeArg::left_out(),
              TensorOptions options = {.dtype = DType::Float64});
Tensor tensor(const std::vector<int64_t>& values, const ShapeArg& shape = ShapeArg::left_out(),
              TensorOptions options = {.dtype = DType::Int64});
Tensor tensor(std::initializer_list<float> values, const ShapeArg& shape = ShapeArg::left_out(), TensorOptions options = {});
// A braced list, as LibTorch's torch::tensor: integers give int64, floating literals the
// default float32 (a std::vector<double> gives float64). Mixed {1, 2.5} does not compile.
//   tensor({1, 2, 3}) -> int64 [3];   tensor({0.5, 1.5}) -> float32 [2];   tensor({5.f}) -> float32 [1]
template <class T>
  requires std::is_arithmetic_v<T>
Tensor tensor(std::initializer_list<T> values, const ShapeArg& shape = ShapeArg::left_out(),
              TensorOptions options = {.dtype = std::is_integral_v<T> ? DType::Int64 : DType::Float32}) {
  if constexpr (std::is_integral_v<T>)
    return tensor(std::vector<int64_t>(values.begin(), values.end()), shape, options);
  else
    return tensor(std::vector<double>(values.begin(), values.end()), shape, options);
}

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

// Creation ops: constants, ranges, host data and seeded random numbers.
// None of these records a graph; requires_grad in TensorOptions makes a leaf.
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/kernels.h"
#include "core/creation.h"

namespace vgrad {
namespace {

Tensor finish(Tensor t, const TensorOptions& options) {
  if (options.requires_grad) t.requires_grad_(true);
  return t;
}

template <class T>
Tensor from_host(const std::vector<T>& values, const ShapeArg& shape, const TensorOptions& options) {
  const Shape s = shape.resolve(values.size());
  if (numel(s) != static_cast<int64_t>(values.size()))
    fail("tensor: {} values do not fill shape {} ({} elements)", values.size(), shape_str(s), numel(s));
  Tensor host = Tensor::empty(s, dtype_of<T>(), options.device);
  if (!values.empty()) backend_for(options.device).copy_from_host(host.data_ptr(), values.data(), values.size() * sizeof(T));
  return finish(kernels::cast(host, options.dtype), options);
}

}  // namespace

Tensor full(const Shape& shape, double value, TensorOptions options) {
  Tensor t = Tensor::empty(shape, options.dtype, options.device);
  backend_for(options.device).fill(t.view(), value);
  return finish(t, options);
}
Tensor zeros(const Shape& shape, TensorOptions options) { return full(shape, 0.0, options); }
Tensor ones(const Shape& shape, TensorOptions options) { return full(shape, 1.0, options); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), {.dtype = t.dtype(), .device = t.device()}); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), {.dtype = t.dtype(), .device = t.device()}); }
Tensor scalar_tensor(double value, TensorOptions options) { return full({}, value, options); }

Tensor arange(double start, double end, double step, TensorOptions options) {
  if (step == 0 || !std::isfinite(start) || !std::isfinite(end) || !std::isfinite(step))
    fail("arange: bad range start={} end={} step={}", start, end, step);
  // NOTE: end - start may overflow to +-Inf, and a count past 2^63 is no int64 (the cast is UB).
  const double count = std::ceil((end - start) / step);
  if (count >= 0x1p63)
    fail("arange: start={} end={} step={} gives {} elements, too many for an int64 count", start, end, step, count);
  const int64_t n = count > 0 ? static_cast<int64_t>(count) : 0;
  std::vector<double> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) values[i] = start + double(i) * step;
  return from_host(values, {n}, options);
}
Tensor arange(int64_t end, TensorOptions options) { return arange(0.0, double(end), 1.0, options); }

Tensor eye(int64_t n, TensorOptions options) {
  std::vector<double> values(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) values[i * n + i] = 1.0;
  return from_host(values, {n, n}, options);
}

Tensor tensor(const std::vector<float>& values, const ShapeArg& shape, TensorOptions options) {
  return from_host(values, shape, options);
}
Tensor tensor(const std::vector<double>& values, const ShapeArg& shape, TensorOptions options) {
  return from_host(values, shape, options);
}
Tensor tensor(const std::vector<int64_t>& values, const ShapeArg& shape, TensorOptions options) {
  return from_host(values, shape, options);
}
Tensor tensor(std::initializer_list<float> values, const ShapeArg& shape, TensorOptions options) {
  return from_host(std::vector<float>(values), shape, options);
}

Generator& default_generator() {
  static Generator generator;
  return generator;
}
void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

Tensor& uniform_(Tensor& t, double low, double high, Generator* gen) {
  if (!is_floating(t.dtype())) fail("uniform_: needs a floating-point tensor, got {}", dtype_name(t.dtype()));
  // As PyTorch: [low, high) must be a range, of a width the dtype can hold.
  if (!(low <= high)) fail("uniform_: low {} > high {}: the range is [low, high)", low, high);
  if (!std::isfinite(high - low)) fail("uniform_: the range [{}, {}) is not finite", low, high);
  check_no_internal_overlap(t, "uniform_");
  backend_for(t.device()).uniform(t.view(), low, high, (gen ? *gen : default_generator()).state());
  t.storage()->bump_version();
  return t;
}
Tensor& normal_(Tensor& t, double mean, double stddev, Generator* gen) {
  if (!is_floating(t.dtype())) fail("normal_: needs a floating-point tensor, got {}", dtype_name(t.dtype()));
  if (!(stddev >= 0)) fail("normal_: stddev {} is negative", stddev);
  check_no_internal_overlap(t, "normal_");
  backend_for(t.device()).normal(t.view(), mean, stddev, (gen ? *gen : default_generator()).state());
  t.storage()->bump_version();
  return t;
}
Tensor uniform(const Shape& shape, double low, double high, TensorOptions options, Generator* gen) {
  Tensor t = Tensor::empty(shape, options.dtype, options.device);
  uniform_(t, low, high, gen);
  return finish(t, options);
}
Tensor normal(const Shape& shape, double mean, double stddev, TensorOptions options, Generator* gen) {
  Tensor t = Tensor::empty(shape, options.dtype, options.device);
  normal_(t, mean, stddev, gen);
  return finish(t, options);
}
Tensor rand(const Shape& shape, TensorOptions options, Generator* gen) { return uniform(shape, 0, 1, options, gen); }
Tensor randn(const Shape& shape, TensorOptions options, Generator* gen) { return normal(shape, 0, 1, options, gen); }

Tensor randperm(int64_t n, Generator* gen) {
  if (n < 0) fail("randperm: negative n {}", n);
  // Fisher-Yates driven by the generator's counter stream (reproducible from the seed).
  Tensor u = rand({n}, {.dtype = DType::Float64}, gen);
  const double* draws = u.data<double>();
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(draws[i] * double(i + 1));
    std::swap(perm[i], perm[std::min(j, i)]);
  }
  return tensor(perm, {n});
}

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  if (a.shape() != b.shape()) return false;
  const auto x = a.to_vector<double>(), y = b.to_vector<double>();
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i]) || std::isnan(y[i])) return false;
    if (std::abs(x[i] - y[i]) > atol + rtol * std::abs(y[i])) return false;
  }
  return true;
}

}  // namespace vgrad

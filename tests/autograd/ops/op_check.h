// The one op check of the op tests, run on every device present (candle's test_device!):
// an op's values against a naive host loop, in float32 and float64, on contiguous and
// non-contiguous inputs, and its gradient with gradcheck in float64 on the same device.
// On CUDA the values are also compared with the CPU's, so a divergence fails the test.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "core/device.h"
#include "support.h"

namespace vgrad_test {

// A tensor on the host: shape and row-major values.
struct HostValues {
  Shape shape;
  std::vector<double> values;
};

using Inputs = std::vector<Tensor>;
using OpFn = std::function<Tensor(const Inputs&)>;
// What the op gives, computed naively on the host from its inputs' values.
using Reference = std::function<HostValues(const std::vector<HostValues>&)>;

// out[i] = f(every input's value at i), the inputs broadcast NumPy-style to the output shape.
inline Reference elementwise(std::function<double(const std::vector<double>&)> f) {
  return [f](const std::vector<HostValues>& in) {
    std::vector<Shape> shapes;
    for (const HostValues& h : in) shapes.push_back(h.shape);
    Shape out_shape;
    for (const Shape& s : shapes) out_shape = vgrad::broadcast_shapes(out_shape, s, "reference");
    HostValues out{out_shape, std::vector<double>(static_cast<size_t>(vgrad::numel(out_shape)))};
    std::vector<double> operands(in.size());
    for (int64_t i = 0; i < vgrad::numel(out_shape); ++i) {
      const auto index = unravel(i, out_shape);
      for (size_t k = 0; k < in.size(); ++k) operands[k] = in[k].values[broadcast_source(index, in[k].shape)];
      out.values[i] = f(operands);
    }
    return out;
  };
}
inline Reference elementwise(std::function<double(double)> f) {
  return elementwise([f](const std::vector<double>& v) { return f(v[0]); });
}
inline Reference elementwise(std::function<double(double, double)> f) {
  return elementwise([f](const std::vector<double>& v) { return f(v[0], v[1]); });
}

struct OpCheck {
  std::vector<DType> dtypes{DType::Float32, DType::Float64};  // floating inputs are cast to each; int64 stay
  double float32_tol = 5e-6;                                  // |got - naive| <= tol * max(1, |naive|)
  double float64_tol = 1e-12;
  bool strided = true;   // also with every input non-contiguous (stepped, and transposed where 2-D+)
  bool gradient = true;  // gradcheck in float64 on the device (off for comparisons, argmax)
  vgrad::autograd::GradcheckOptions grad{};
};

// Checks `op` on `device` against `naive` for `inputs` (given on the CPU); `what`
// names the case in failures. Called from a TEST_P of an OnEachDevice suite.
void check_op(vgrad::Device device, const std::string& what, const OpFn& op, const Reference& naive,
              const std::vector<Tensor>& inputs, const OpCheck& options = {});

// Only the gradient: gradcheck of `op` with `inputs` moved to `device` (floating ones
// as float64); for ops whose values other tests pin (shape ops, matmul, softmax).
void check_gradient(vgrad::Device device, const std::string& what, const OpFn& op, const std::vector<Tensor>& inputs,
                    const vgrad::autograd::GradcheckOptions& options = {});

// Seeded float64 standard-normal values, a fresh seed per call: gradient-check inputs.
inline Tensor rnd(const Shape& shape) {
  static uint64_t seed = 20240521;
  vgrad::Generator generator(seed++);
  return vgrad::randn(shape, {.dtype = DType::Float64}, &generator);
}

// d sum(fn(x)) / dx at `values` (float64, CPU). Central differences cannot check a
// kink; this pins the documented subgradients there.
inline std::vector<double> grad_at(const std::function<Tensor(const Tensor&)>& fn, const std::vector<double>& values) {
  Tensor x = vgrad::tensor(values, {static_cast<int64_t>(values.size())}, {.dtype = DType::Float64, .requires_grad = true});
  fn(x).sum().backward();
  return x.grad().to_vector<double>();
}

// A suite whose tests run once per device: Suite.Name/cpu always; Suite.Name/cuda on a
// GPU, SKIPPED without one (FAILED when VGRAD_REQUIRE_GPU=1). Use TEST_P, device(),
// and INSTANTIATE_ON_EACH_DEVICE(Suite) once per suite.
class OnEachDevice : public ::testing::TestWithParam<vgrad::Device> {
 protected:
  void SetUp() override {
    if (device().is_cuda()) REQUIRE_GPU();
  }
  vgrad::Device device() const { return GetParam(); }
  void check(const std::string& what, const OpFn& op, const Reference& naive, const std::vector<Tensor>& inputs,
             const OpCheck& options = {}) const {
    check_op(device(), what, op, naive, inputs, options);
  }
  void check_gradient(const std::string& what, const OpFn& op, const std::vector<Tensor>& inputs,
                      const vgrad::autograd::GradcheckOptions& options = {}) const {
    vgrad_test::check_gradient(device(), what, op, inputs, options);
  }
};

inline std::string device_test_name(const ::testing::TestParamInfo<vgrad::Device>& info) {
  return info.param.is_cpu() ? "cpu" : "cuda";
}

}  // namespace vgrad_test

namespace vgrad {
// gtest prints a failing case's device as "cpu" / "cuda:0", not as raw bytes.
inline void PrintTo(const Device& device, std::ostream* out) { *out << device.str(); }
}  // namespace vgrad

#define INSTANTIATE_ON_EACH_DEVICE(Suite)                                                        \
  INSTANTIATE_TEST_SUITE_P(OnDevice, Suite, ::testing::Values(vgrad::kCPU, vgrad::cuda_device(0)), \
                           vgrad_test::device_test_name)

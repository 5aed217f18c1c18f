// check_op (op_check.h): one op on one device, its values in each dtype and layout
// against the naive reference (and, on CUDA, against the CPU), then its gradient.
#include "autograd/ops/op_check.h"

namespace vgrad_test {
namespace {

Tensor as_dtype(const Tensor& t, DType dtype) { return vgrad::is_floating(t.dtype()) ? t.to(dtype) : t; }

// The same values in other memory orders, so the strided paths of every backend run.
Tensor contiguous_layout(const Tensor& t) { return t; }
// Every other element of a doubled last dim.
Tensor stepped_layout(const Tensor& t) {
  if (t.dim() == 0 || t.numel() == 0) return t;
  return vgrad::cat({t.unsqueeze(-1), t.unsqueeze(-1)}, -1).select(-1, 0);
}
// The last two dims stored transposed (1-D: stepped).
Tensor transposed_layout(const Tensor& t) {
  if (t.dim() < 2) return stepped_layout(t);
  return t.transpose(-1, -2).contiguous().transpose(-1, -2);
}

struct Layout {
  const char* name;
  Tensor (*make)(const Tensor&);
};
constexpr Layout kLayouts[] = {
    {"contiguous", contiguous_layout}, {"stepped", stepped_layout}, {"transposed", transposed_layout}};

std::vector<Tensor> laid_out(const std::vector<Tensor>& inputs, const Layout& layout, vgrad::Device device) {
  std::vector<Tensor> out;
  for (const Tensor& t : inputs) out.push_back(layout.make(t.to(device)));
  return out;
}

}  // namespace

void check_op(vgrad::Device device, const std::string& what, const OpFn& op, const Reference& naive,
              const std::vector<Tensor>& inputs, const OpCheck& options) {
  const std::string where = what + " on " + device.str();
  for (DType dtype : options.dtypes) {
    std::vector<Tensor> typed;
    std::vector<HostValues> host;
    for (const Tensor& input : inputs) {
      typed.push_back(as_dtype(input, dtype));
      host.push_back({input.shape(), vals(typed.back())});
    }
    const HostValues expected = naive(host);
    const double tol = dtype == DType::Float32 ? options.float32_tol : options.float64_tol;
    for (const Layout& layout : kLayouts) {
      if (!options.strided && layout.make != contiguous_layout) continue;
      const std::string label = where + " " + vgrad::dtype_name(dtype) + " " + layout.name;
      const Tensor out = op(laid_out(typed, layout, device));
      ASSERT_TRUE(out.defined()) << label;
      EXPECT_EQ(out.device(), device) << label;
      if (vgrad::is_floating(out.dtype())) {
        EXPECT_EQ(out.dtype(), dtype) << label;
      }
      const Tensor result = out.to(vgrad::kCPU);
      expect_tensor_near(result, expected.shape, expected.values, tol, label);
      // The naive loop bounds both devices; this pins them to each other, NaNs included.
      if (device.is_cuda()) {
        const Tensor on_cpu = op(laid_out(typed, layout, vgrad::kCPU));
        expect_tensor_near(result, on_cpu.shape(), vals(on_cpu), tol, label + ": cuda vs cpu");
      }
    }
  }
  if (options.gradient) check_gradient(device, what, op, inputs, options.grad);
}

void check_gradient(vgrad::Device device, const std::string& what, const OpFn& op, const std::vector<Tensor>& inputs,
                    const vgrad::autograd::GradcheckOptions& options) {
  std::vector<Tensor> on_device;
  for (const Tensor& input : inputs) on_device.push_back(as_dtype(input, DType::Float64).to(device));
  const auto report = vgrad::autograd::gradcheck(op, on_device, options);
  EXPECT_TRUE(report.ok) << what << " on " << device.str() << " gradient: " << report.message;
}

}  // namespace vgrad_test

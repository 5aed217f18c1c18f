// log1p and expm1, the primitives added by the recipe in docs/contributing.md: values
// against std::log1p/std::expm1 (where log(1 + x) loses digits) and gradients, on every
// device present (CPU always; a CUDA device runs the same functor).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "support.h"

namespace {

using namespace vgrad;

TEST(Log1pExpm1, MatchTheCLibraryNearZeroOnEveryDevice) {
  const std::vector<double> x = {-0.5, -1e-9, 0.0, 1e-12, 3e-8, 0.25, 2.0};
  std::vector<Device> devices{kCPU};
  if (cuda_is_available()) devices.push_back(cuda_device(0));
  for (Device device : devices)
    for (DType dtype : {DType::Float32, DType::Float64}) {
      const Tensor t = tensor(x).to(dtype).to(device);
      const auto l = vgrad_test::vals(log1p(t)), e = vgrad_test::vals(expm1(t));
      const double tol = dtype == DType::Float32 ? 2e-7 : 1e-15;
      for (size_t i = 0; i < x.size(); ++i) {
        const double xi = dtype == DType::Float32 ? double(float(x[i])) : x[i];
        EXPECT_NEAR(l[i], std::log1p(xi), tol * (std::abs(std::log1p(xi)) + 1e-30)) << device.str() << " " << xi;
        EXPECT_NEAR(e[i], std::expm1(xi), tol * (std::abs(std::expm1(xi)) + 1e-30)) << device.str() << " " << xi;
      }
    }
  EXPECT_ERROR(log1p(tensor(std::vector<int64_t>{1, 2})), "log1p: not defined for int64");
}

TEST(Log1pExpm1, GradientsPassGradcheckWithBroadcasting) {
  Generator gen(3);
  const Tensor x = uniform({4, 3}, -0.9, 2.0, {.dtype = DType::Float64}, &gen);
  const Tensor w = uniform({3}, -1.0, 1.0, {.dtype = DType::Float64}, &gen);
  const auto report = autograd::gradcheck(
      [](const std::vector<Tensor>& in) { return log1p(in[0]) * in[1] + expm1(in[0] * in[1]); }, {x, w});
  EXPECT_TRUE(report.ok) << report.message;
}

}  // namespace

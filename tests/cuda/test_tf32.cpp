// Tests of the TF32 switches (core/backend.h: cuda::set_tf32_matmul_enabled and
// set_tf32_conv_enabled; cuda/tf32.cpp, cuda/gemm.cpp, cuda/cudnn.cpp). Everywhere: both are
// off by default, follow their setters in a CUDA build and answer false without one, and never
// change a CPU result. With a GPU: a 256x4096 · 4096x256 float32 matmul (and a batched one, and
// a cuDNN convolution) matches a float64 reference within float32 accumulation error with TF32
// off; with it on, the error is at least 1e-4 relative (TF32 keeps 10 mantissa bits) and within
// TF32's bound; switching it off again gives the first result's bits back.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <gtest/gtest.h>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "core/backend.h"
#include "support.h"

namespace {

using namespace vgrad;
using vgrad_test::uniform_tensor;

// A process-wide switch set for a scope (the previous setting comes back).
class ScopedSwitch {
 public:
  ScopedSwitch(bool (*get)(), void (*set)(bool), bool on) : set_(set), previous_(get()) { set(on); }
  ~ScopedSwitch() { set_(previous_); }
  ScopedSwitch(const ScopedSwitch&) = delete;
  ScopedSwitch& operator=(const ScopedSwitch&) = delete;

 private:
  void (*set_)(bool);
  bool previous_;
};

ScopedSwitch tf32_matmul(bool on) { return {&cuda::tf32_matmul_enabled, &cuda::set_tf32_matmul_enabled, on}; }
ScopedSwitch tf32_conv(bool on) { return {&cuda::tf32_conv_enabled, &cuda::set_tf32_conv_enabled, on}; }

TEST(Tf32Switch, OffByDefaultFollowsTheSetterInACudaBuildAndIsFalseWithout) {
  EXPECT_FALSE(cuda::tf32_matmul_enabled()) << "PyTorch's torch.backends.cuda.matmul.allow_tf32 default";
  EXPECT_FALSE(cuda::tf32_conv_enabled()) << "off here (PyTorch's cuDNN default is on: docs/gpu.md)";
  {
    const ScopedSwitch matmul = tf32_matmul(true);
    EXPECT_EQ(cuda::tf32_matmul_enabled(), cuda::built_with_cuda());
    EXPECT_FALSE(cuda::tf32_conv_enabled()) << "the two switches are independent";
    const ScopedSwitch conv = tf32_conv(true);
    EXPECT_EQ(cuda::tf32_conv_enabled(), cuda::built_with_cuda());
    cuda::set_tf32_matmul_enabled(false);
    EXPECT_FALSE(cuda::tf32_matmul_enabled());
    EXPECT_EQ(cuda::tf32_conv_enabled(), cuda::built_with_cuda());
  }
  EXPECT_FALSE(cuda::tf32_matmul_enabled());
  EXPECT_FALSE(cuda::tf32_conv_enabled());
}

std::vector<unsigned char> bytes_of(const Tensor& t) {
  const Tensor host = t.to(kCPU).contiguous();
  const auto* data = static_cast<const unsigned char*>(host.view().data);
  return {data, data + host.numel() * static_cast<int64_t>(dtype_size(host.dtype()))};
}

TEST(Tf32Switch, NeverChangesACpuResult) {
  const Tensor a = uniform_tensor({64, 300}, 1, -1, 1), b = uniform_tensor({300, 48}, 2, -1, 1);
  const Tensor x = uniform_tensor({2, 8, 9, 9}, 3, -1, 1), w = uniform_tensor({5, 8, 3, 3}, 4, -1, 1);
  const std::vector<unsigned char> product = bytes_of(matmul(a, b)), convolution = bytes_of(conv2d(x, w));
  const ScopedSwitch matmul_on = tf32_matmul(true), conv_on = tf32_conv(true);
  EXPECT_EQ(bytes_of(matmul(a, b)), product);
  EXPECT_EQ(bytes_of(conv2d(x, w)), convolution);
}

// How far a float32 result is from its float64 reference: the relative Frobenius error, and
// the largest ratio of an element's error to the rounding bound `unit`·Σ|terms| (its
// `magnitude`, the same op on |inputs| in float64); the bound holds when that ratio is <= 1.
struct Accuracy {
  double relative = 0, worst_bound_ratio = 0;
};

Accuracy accuracy(const Tensor& got, const Tensor& reference, const Tensor& magnitude, double unit) {
  const std::vector<double> g = got.to_vector<double>(), r = reference.to_vector<double>(),
                            m = magnitude.to_vector<double>();
  double error2 = 0, reference2 = 0, worst = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const double e = g[i] - r[i];
    error2 += e * e;
    reference2 += r[i] * r[i];
    worst = std::max(worst, std::abs(e) / (unit * m[i]));
  }
  return {std::sqrt(error2 / reference2), worst};
}

// The unit roundoffs of the bounds: float32 accumulation of K terms (γ_K = K·2^-24, any order,
// FMA or not), and TF32 on top: each input rounded to 10 mantissa bits (< 2^-10 relative even
// truncated), so each product is off by < 2^-9 + 2^-20 before float32 accumulation.
double float32_unit(int64_t k) { return double(k) * std::ldexp(1.0, -24); }
double tf32_unit(int64_t k) { return std::ldexp(1.0, -9) + std::ldexp(1.0, -20) + float32_unit(k); }

// How a float32 result may differ from float64: GEMMs (cuBLAS, im2col) by rounding alone, so
// the elementwise bounds hold; cuDNN may pick Winograd or FFT, whose errors are normwise only.
enum class Bounds { Elementwise, Normwise };

// Runs `op` on float32 inputs with TF32 off, on, and off again, and checks each against the
// float64 reference: off within float32's bound (2e-5 relative for a GEMM, 5e-5 for cuDNN); on
// at least 1e-4 relative (random data: about 3e-4 rounding to nearest) and within TF32's bound;
// off again bit-identical.
template <class Op> void expect_tf32_only_when_on(ScopedSwitch (*tf32)(bool), Op op, const std::vector<Tensor>& inputs,
                                                  int64_t k, Bounds bounds, const std::string& what) {
  std::vector<Tensor> wide, absolute;
  for (const Tensor& t : inputs) {
    wide.push_back(t.to(DType::Float64));
    absolute.push_back(vgrad::abs(wide.back()));
  }
  const Tensor reference = op(wide), magnitude = op(absolute);
  Tensor off, on, off_again;
  {
    const ScopedSwitch s = tf32(false);
    off = op(inputs);
  }
  {
    const ScopedSwitch s = tf32(true);
    on = op(inputs);
  }
  {
    const ScopedSwitch s = tf32(false);
    off_again = op(inputs);
  }
  const Accuracy exact = accuracy(off, reference, magnitude, float32_unit(k));
  const bool elementwise = bounds == Bounds::Elementwise;
  EXPECT_LE(exact.relative, elementwise ? 2e-5 : 5e-5) << what << ": TF32 off";
  if (elementwise) {
    EXPECT_LE(exact.worst_bound_ratio, 1.0) << what << ": TF32 off, float32's bound";
  }
  const Accuracy fast = accuracy(on, reference, magnitude, tf32_unit(k));
  EXPECT_GE(fast.relative, 1e-4) << what << ": TF32 on should round the inputs to 10 mantissa bits";
  EXPECT_LE(fast.relative, 2e-3) << what << ": TF32 on";
  if (elementwise) {
    EXPECT_LE(fast.worst_bound_ratio, 1.0) << what << ": TF32 on, TF32's bound";
  }
  EXPECT_EQ(bytes_of(off_again), bytes_of(off)) << what << ": switching TF32 off again must restore float32 math";
  std::printf("%s: relative error %.3g with TF32 off, %.3g on\n", what.c_str(), exact.relative, fast.relative);
}

TEST(CudaTf32, MatmulIsFloat32UnlessSwitchedOnAndThenTf32) {
  REQUIRE_GPU();
  const Device gpu = cuda_device(0);
  const auto product = [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); };
  expect_tf32_only_when_on(
      &tf32_matmul, product,
      {uniform_tensor({256, 4096}, 1, -1, 1).to(gpu), uniform_tensor({4096, 256}, 2, -1, 1).to(gpu)}, 4096,
      Bounds::Elementwise, "matmul 256x4096 · 4096x256");
  expect_tf32_only_when_on(
      &tf32_matmul, product,
      {uniform_tensor({3, 128, 1024}, 3, -1, 1).to(gpu), uniform_tensor({3, 1024, 96}, 4, -1, 1).to(gpu)}, 1024,
      Bounds::Elementwise, "batched matmul 3 x 128x1024 · 1024x96");
  // The conv switch leaves matmul alone.
  const Tensor a = uniform_tensor({64, 2048}, 5, -1, 1).to(gpu), b = uniform_tensor({2048, 64}, 6, -1, 1).to(gpu);
  const Tensor exact = matmul(a, b);
  const ScopedSwitch conv_on = tf32_conv(true);
  EXPECT_EQ(bytes_of(matmul(a, b)), bytes_of(exact));
}

TEST(CudaTf32, CudnnConvolutionIsFloat32UnlessSwitchedOnAndThePlanFollows) {
  REQUIRE_GPU();
  if (!cuda::cudnn_enabled()) GTEST_SKIP() << "this build or machine has no cuDNN";
  const Device gpu = cuda_device(0);
  const auto convolution = [](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], Tensor(), {1, 1}, {1, 1}); };
  // 256 channels, 3x3: 2304 terms per output, a shape cuDNN runs on tensor cores when allowed.
  const std::vector<Tensor> inputs{uniform_tensor({8, 256, 16, 16}, 7, -1, 1).to(gpu),
                                   uniform_tensor({128, 256, 3, 3}, 8, -1, 1).to(gpu)};
  expect_tf32_only_when_on(&tf32_conv, convolution, inputs, 2304, Bounds::Normwise, "cuDNN conv2d 256->128 3x3");
  // The matmul switch leaves cuDNN's convolution alone.
  const Tensor exact = convolution(inputs);
  const ScopedSwitch matmul_on = tf32_matmul(true);
  EXPECT_EQ(bytes_of(convolution(inputs)), bytes_of(exact));
}

TEST(CudaTf32, Im2colConvolutionFollowsTheMatmulSwitch) {
  REQUIRE_GPU();
  const Device gpu = cuda_device(0);
  const ScopedSwitch no_cudnn{&cuda::cudnn_enabled, &cuda::set_cudnn_enabled, false};
  const auto convolution = [](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], Tensor(), {1, 1}, {1, 1}); };
  expect_tf32_only_when_on(
      &tf32_matmul, convolution,
      {uniform_tensor({4, 128, 12, 12}, 9, -1, 1).to(gpu), uniform_tensor({64, 128, 3, 3}, 10, -1, 1).to(gpu)}, 1152,
      Bounds::Elementwise, "im2col conv2d 128->64 3x3");
}

}  // namespace

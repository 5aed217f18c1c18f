// The CNN ops on the GPU against the CPU: conv2d (strides, padding, dilation, groups)
// through cuDNN and through im2col + cuBLAS, in every floating dtype, and the cuDNN seam
// itself (also after a capture came first); conv1d, pooling (NaN and ties included), norms, embedding; values and every
// gradient. Without a GPU they report SKIPPED (failing under VGRAD_REQUIRE_GPU=1).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <gtest/gtest.h>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "core/backend.h"
#include "core/cuda_graph.h"
#include "nn/functional.h"
#include "support.h"

namespace {

using namespace vgrad;
using vgrad_test::expect_near_all;
using vgrad_test::uniform_tensor;
using vgrad_test::vals;

using Results = std::vector<std::vector<double>>;
using Op = std::function<Tensor(const std::vector<Tensor>&)>;

// fn on `device` copies of `inputs` (floating ones require grad, converted to `dtype`
// when one is given): its output and the gradients of Σ out·R, R a fixed weighting
// rounded to the inputs' dtype.
// With `magnitudes`, every floating input and R enter as |value| in float64 on the CPU: each
// result is then the sum of the absolute values of the terms that made it (Σ|x||w|, ...).
Results outputs_and_grads(const Op& fn, const std::vector<Tensor>& inputs, Device device,
                          std::optional<DType> dtype = std::nullopt, bool magnitudes = false) {
  std::vector<Tensor> in;
  for (const Tensor& given : inputs) {
    const Tensor t = magnitudes && is_floating(given.dtype()) ? abs(given.to(DType::Float64)) : given;
    // detach: t.to(kCPU) may be t itself, whose requires_grad must stay off for the other device's run
    Tensor copy = (is_floating(t.dtype()) && dtype ? t.to(*dtype) : t).to(device).detach();
    if (is_floating(t.dtype())) copy.requires_grad_();
    in.push_back(copy);
  }
  const Tensor out = fn(in);
  Tensor r = uniform_tensor(out.shape(), 99, -1, 1, DType::Float64).to(inputs[0].dtype()).to(out.dtype());
  if (magnitudes) r = abs(r);
  (out * r.to(device)).sum().backward();
  Results results{vals(out.to(kCPU))};
  for (const Tensor& t : in)
    if (is_floating(t.dtype())) results.push_back(vals(t.grad().to(kCPU)));
  return results;
}

void expect_results_near(const Results& got, const Results& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i)
    expect_near_all(got[i], want[i], tol, (what + (i == 0 ? ": output" : ": gradient " + std::to_string(i))).c_str());
}

// As above, each element also allowed per_term * Σ|terms| (`magnitudes`, from outputs_and_grads
// with magnitudes = true): the bound of a sum reordered in float32 (cuDNN's dw over N·H·W
// terms cancels to values far below its terms), or of one whose partial sums were rounded
// to 16 bits (im2col's column gradient, summed over the taps by col2im).
void expect_results_near(const Results& got, const Results& want, double tol, const Results& magnitudes,
                         double per_term, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  ASSERT_EQ(magnitudes.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got[i].size(), want[i].size()) << what;
    ASSERT_EQ(magnitudes[i].size(), want[i].size()) << what;
    for (size_t j = 0; j < want[i].size(); ++j)
      ASSERT_NEAR(got[i][j], want[i][j], std::max(tol * (1 + std::abs(want[i][j])), per_term * magnitudes[i][j]))
          << what << (i == 0 ? ": output" : ": gradient " + std::to_string(i)) << " at element " << j
          << " (sum of |terms| " << magnitudes[i][j] << ")";
  }
}

// fn on CPU copies and on cuda:0 copies of `inputs`: outputs and gradients agree.
void expect_parity(const Op& fn, const std::vector<Tensor>& inputs, double tol) {
  expect_results_near(outputs_and_grads(fn, inputs, cuda_device(0)), outputs_and_grads(fn, inputs, kCPU), tol, "cuda");
}

// cuDNN switched on or off for a scope (the previous setting comes back).
class CudnnSwitch {
 public:
  explicit CudnnSwitch(bool on) : previous_(cuda::cudnn_enabled()) { cuda::set_cudnn_enabled(on); }
  ~CudnnSwitch() { cuda::set_cudnn_enabled(previous_); }
  CudnnSwitch(const CudnnSwitch&) = delete;
  CudnnSwitch& operator=(const CudnnSwitch&) = delete;

 private:
  bool previous_;
};

TEST(CudaConv, Conv2dAllOptionsBothDtypes) {
  REQUIRE_GPU();
  for (DType dtype : {DType::Float32, DType::Float64}) {
    const double tol = dtype == DType::Float32 ? 1e-4 : 1e-10;
    const auto x = uniform_tensor({3, 4, 9, 8}, 1, -1, 1, dtype), b = uniform_tensor({6}, 3, -1, 1, dtype);
    expect_parity([](const auto& in) { return conv2d(in[0], in[1], in[2], {1, 1}, {1, 1}); },
                  {x, uniform_tensor({6, 4, 3, 3}, 2, -1, 1, dtype), b}, tol);
    expect_parity([](const auto& in) { return conv2d(in[0], in[1], in[2], {2, 1}, {2, 0}, {2, 1}, 2); },
                  {x, uniform_tensor({6, 2, 3, 2}, 4, -1, 1, dtype), b}, tol);
    expect_parity([](const auto& in) { return conv1d(in[0], in[1], Tensor(), 2, 1); },
                  {uniform_tensor({2, 3, 12}, 5, -1, 1, dtype), uniform_tensor({4, 3, 3}, 6, -1, 1, dtype)}, tol);
  }
}

TEST(CudaConv, PoolingNormsEmbedding) {
  REQUIRE_GPU();
  const double tol = 1e-4;
  const auto x = uniform_tensor({2, 4, 7, 6}, 7, -1, 1);
  expect_parity([](const auto& in) { return max_pool2d(in[0], {3, 3}, {2, 1}, {1, 1}); }, {x}, tol);
  expect_parity([](const auto& in) { return avg_pool2d(in[0], {3, 3}, {2, 2}, {1, 1}); }, {x}, tol);
  expect_parity([](const auto& in) { return adaptive_avg_pool2d(in[0], {3, 4}); }, {x}, tol);
  const auto w = uniform_tensor({4}, 8, 0.5, 1.5), b = uniform_tensor({4}, 9, -1, 1);
  expect_parity([](const auto& in) { return nn::F::batch_norm(in[0], Tensor(), Tensor(), in[1], in[2], true); },
                {x, w, b}, tol);
  expect_parity([](const auto& in) { return nn::F::group_norm(in[0], 2, in[1], in[2]); }, {x, w, b}, tol);
  expect_parity([](const auto& in) { return nn::F::layer_norm(in[0], 1, Tensor(), Tensor()); }, {x}, tol);
  expect_parity([](const auto& in) { return embedding(in[0], in[1], 1); },
                {uniform_tensor({5, 3}, 10), tensor(std::vector<int64_t>{2, 1, 2, 4, 0, 2}, {2, 3})}, tol);
}

// The run-time switch needs no GPU: it follows the setter, and is never on in a build
// without cuDNN (nor in one without CUDA, whose stub answers false).
TEST(CudnnSwitch, FollowsTheSetterWithinWhatTheBuildHas) {
  {
    CudnnSwitch off(false);
    EXPECT_FALSE(cuda::cudnn_enabled());
  }
  {
    CudnnSwitch on(true);
    EXPECT_EQ(cuda::cudnn_enabled(), cuda::built_with_cudnn());
  }
  EXPECT_EQ(cuda::built_with_cudnn(), bool(VGRAD_TEST_CUDNN_CONFIGURED)) << "CMake's VGRAD_CUDNN decision";
  if (!cuda::built_with_cuda()) {
    EXPECT_FALSE(cuda::built_with_cudnn());
  }
}

// conv2d over every option: cuDNN (Backend::conv2d), im2col + cuBLAS (cuDNN switched
// off) and the CPU give the same outputs and gradients; in float32 and float64 to their
// rounding, in bfloat16/float16 (float32 accumulation) against the CPU's float32 result
// on the same rounded inputs.
TEST(CudaConv, CudnnAndIm2colMatchTheCpuOverEveryOptionAndDtype) {
  REQUIRE_GPU();
  if (!cuda::built_with_cudnn()) GTEST_SKIP() << "this build has no cuDNN (VGRAD_CUDNN=OFF): nothing to compare";
  struct Case {
    const char* name;
    Shape x, w;
    Pair2 stride, padding, dilation;
    int64_t groups;
  };
  const std::vector<Case> cases = {
      {"3x3 padding 1", {3, 4, 9, 8}, {6, 4, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 1},
      {"stride, padding, dilation, groups", {3, 4, 9, 8}, {6, 2, 3, 2}, {2, 1}, {2, 0}, {2, 1}, 2},
      {"depthwise", {2, 6, 7, 7}, {6, 1, 3, 3}, {1, 2}, {1, 1}, {1, 1}, 6},
      {"1x1", {2, 8, 5, 6}, {4, 8, 1, 1}, {1, 1}, {0, 0}, {1, 1}, 1},
      {"mnist_cnn's second layer", {16, 32, 14, 14}, {64, 32, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 1},
  };
  for (const Case& c : cases)
    for (DType dtype : {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16}) {
      const std::string what = std::string(c.name) + ", " + dtype_name(dtype);
      const std::vector<Tensor> inputs = {uniform_tensor(c.x, 1, -1, 1).to(dtype),
                                          uniform_tensor(c.w, 2, -1, 1).to(dtype),
                                          uniform_tensor({c.w[0]}, 3, -1, 1).to(dtype)};
      const Op op = [&c](const std::vector<Tensor>& in) {
        return conv2d(in[0], in[1], in[2], c.stride, c.padding, c.dilation, c.groups);
      };
      const bool half = is_half(dtype);
      // 16-bit: the CPU's float32 on the same (rounded) values; rounding of y, dx, dw to 16 bits.
      const Results cpu = outputs_and_grads(op, inputs, kCPU, half ? std::optional(DType::Float32) : std::nullopt);
      const double tol = dtype == DType::Float64    ? 1e-10
                         : dtype == DType::Float32  ? 1e-4
                         : dtype == DType::BFloat16 ? 3e-2
                                                    : 4e-3;
      // Per term: float32's reordering error stays far below 1e-6 of Σ|terms| (about
      // sqrt(3136) roundings of 6e-8 at the largest shape); 16-bit: half the unit roundoff
      // (2^-8 bfloat16, 2^-11 float16), a bound that one rounding of each column-gradient
      // entry before col2im's sum stays under (the H200 measured at most 0.08 u on this data).
      const double per_term = dtype == DType::Float64    ? 1e-14
                              : dtype == DType::Float32  ? 1e-6
                              : dtype == DType::BFloat16 ? 1.0 / 512
                                                         : 1.0 / 4096;
      const Results magnitudes = outputs_and_grads(op, inputs, kCPU, std::nullopt, true);
      Results with_cudnn, with_im2col;
      {
        CudnnSwitch on(true);
        with_cudnn = outputs_and_grads(op, inputs, cuda_device(0));
      }
      {
        CudnnSwitch off(false);
        with_im2col = outputs_and_grads(op, inputs, cuda_device(0));
      }
      expect_results_near(with_cudnn, cpu, tol, magnitudes, per_term, "cuDNN vs CPU, " + what);
      expect_results_near(with_im2col, cpu, tol, magnitudes, per_term, "im2col vs CPU, " + what);
    }
}

// A 3x3 convolution with padding 1 and stride 1 (the output keeps the input's size).
ConvGeometry padded_3x3(int64_t batch, int64_t channels, int64_t height, int64_t width, int64_t filters,
                        int64_t groups) {
  ConvGeometry g;
  g.window.batch = batch, g.window.channels = channels, g.window.height = height, g.window.width = width;
  g.window.kernel_h = g.window.kernel_w = 3;
  g.window.pad_h = g.window.pad_w = 1;
  g.window.out_h = height, g.window.out_w = width;
  g.filters = filters, g.groups = groups;
  return g;
}

// The seam itself: with cuDNN on, Backend::conv2d runs all three passes (returns true and
// writes what im2col + cuBLAS computes); switched off, it declines and writes nothing.
TEST(CudaConv, CudnnRunsEveryPassWhenOnAndDeclinesWhenOff) {
  REQUIRE_GPU();
  if (!cuda::built_with_cudnn()) GTEST_SKIP() << "this build has no cuDNN (VGRAD_CUDNN=OFF)";
  const ConvGeometry g = padded_3x3(2, 4, 6, 5, 6, 2);
  const Device gpu = cuda_device(0);
  Backend& backend = cuda::backend(0);
  const Tensor x = uniform_tensor({2, 4, 6, 5}, 4, -1, 1).to(gpu), w = uniform_tensor({6, 2, 3, 3}, 5, -1, 1).to(gpu);
  const Tensor dy = uniform_tensor({2, 6, 6, 5}, 6, -1, 1).to(gpu);
  {
    CudnnSwitch off(false);
    Tensor untouched = full({2, 6, 6, 5}, -7.0, {.device = gpu});
    EXPECT_FALSE(backend.conv2d(ConvPass::Forward, x.view(), w.view(), untouched.view(), g));
    EXPECT_EQ(vals(untouched), std::vector<double>(360, -7.0));
  }
  CudnnSwitch on(true);
  ASSERT_TRUE(cuda::cudnn_enabled());
  Tensor y = Tensor::empty({2, 6, 6, 5}, DType::Float32, gpu), dx = Tensor::empty(x.shape(), DType::Float32, gpu);
  Tensor dw = Tensor::empty(w.shape(), DType::Float32, gpu);
  ASSERT_TRUE(backend.conv2d(ConvPass::Forward, x.view(), w.view(), y.view(), g)) << "cuDNN did not start";
  ASSERT_TRUE(backend.conv2d(ConvPass::BackwardData, dx.view(), w.view(), dy.view(), g));
  ASSERT_TRUE(backend.conv2d(ConvPass::BackwardFilter, x.view(), dw.view(), dy.view(), g));
  // The same three through autograd on the CPU (im2col + GEMM): y, and dx, dw of Σ y·dy.
  Tensor x_cpu = x.to(kCPU).requires_grad_(), w_cpu = w.to(kCPU).requires_grad_();
  const Tensor y_cpu = conv2d(x_cpu, w_cpu, Tensor(), {1, 1}, {1, 1}, {1, 1}, 2);
  (y_cpu * dy.to(kCPU)).sum().backward();
  expect_near_all(vals(y), vals(y_cpu), 1e-4, "y");
  expect_near_all(vals(dx), vals(x_cpu.grad()), 1e-4, "dx");
  expect_near_all(vals(dw), vals(w_cpu.grad()), 1e-4, "dw");
}

// cuDNN starts at an eager convolution, never in a graph capture: a capture before any eager
// one records im2col (its replays give the CPU's values), and cuDNN runs at the next eager
// convolution (a create tried in the capture would have left it off for the process), and
// in later captures.
TEST(CudaConv, ACaptureBeforeAnyEagerConvolutionLeavesCudnnToStartLater) {
  REQUIRE_GPU();
  if (!cuda::built_with_cudnn()) GTEST_SKIP() << "this build has no cuDNN (VGRAD_CUDNN=OFF)";
  CudnnSwitch on(true);
  const Device gpu = cuda_device(0);
  const Tensor x_cpu = uniform_tensor({2, 3, 7, 6}, 8, -1, 1), w_cpu = uniform_tensor({4, 3, 3, 3}, 9, -1, 1);
  const Tensor x = x_cpu.to(gpu), w = w_cpu.to(gpu);
  // cuBLAS's first GEMM eagerly (cuDNN stays unstarted): only cuDNN's start is under test.
  (void)matmul(ones({2, 2}, {.device = gpu}), ones({2, 2}, {.device = gpu})).to(kCPU);
  Tensor y;
  cuda::Graph graph;
  graph.capture([&] { y = conv2d(x, w, Tensor(), {1, 1}, {1, 1}); });
  graph.replay();
  const Tensor want = conv2d(x_cpu, w_cpu, Tensor(), {1, 1}, {1, 1});
  expect_near_all(vals(y), vals(want), 1e-4, "replayed conv2d");
  const ConvGeometry g = padded_3x3(2, 3, 7, 6, 4, 1);
  Tensor eager = Tensor::empty(want.shape(), DType::Float32, gpu);
  EXPECT_TRUE(cuda::backend(0).conv2d(ConvPass::Forward, x.view(), w.view(), eager.view(), g))
      << "cuDNN did not start at the first eager convolution after the capture";
  expect_near_all(vals(eager), vals(want), 1e-4, "eager cuDNN conv2d");
  // Started, cuDNN runs inside a capture too (its workspace from the graph's pool).
  Tensor y2;
  cuda::Graph with_cudnn;
  with_cudnn.capture([&] { y2 = conv2d(x, w, Tensor(), {1, 1}, {1, 1}); });
  with_cudnn.replay();
  expect_near_all(vals(y2), vals(want), 1e-4, "replayed cuDNN conv2d");
}

// max_pool2d with NaN, ±∞ and ties: the GPU gives the CPU's values and indices (PyTorch's
// rule, tests/autograd/ops/test_conv.cpp), seen through the gradient.
TEST(CudaConv, MaxPoolNaNAndTiesMatchTheCpu) {
  REQUIRE_GPU();
  const std::vector<double> xv = vgrad_test::ties_nan_inf_values(2 * 3 * 9 * 10, 21);
  for (DType dtype : {DType::Float32, DType::Float64})
    for (const auto& [k, s, p] : {std::tuple<Pair2, Pair2, Pair2>{{2, 2}, {2, 2}, {0, 0}},
                                  std::tuple<Pair2, Pair2, Pair2>{{3, 3}, {1, 1}, {1, 1}}}) {
      Results results[2];
      for (int d = 0; d < 2; ++d) {
        Tensor x = tensor(xv, {2, 3, 9, 10}).to(dtype).to(d == 0 ? kCPU : cuda_device(0)).requires_grad_();
        const Tensor out = max_pool2d(x, k, s, p);
        (out * uniform_tensor(out.shape(), 22, -1, 1, dtype).to(x.device())).sum().backward();
        results[d] = {vals(out.to(kCPU)), vals(x.grad().to(kCPU))};
      }
      ASSERT_EQ(results[1][0].size(), results[0][0].size());
      for (size_t i = 0; i < results[0][0].size(); ++i)
        if (std::isnan(results[0][0][i])) {
          EXPECT_TRUE(std::isnan(results[1][0][i])) << "output " << i;
        } else {
          EXPECT_EQ(results[1][0][i], results[0][0][i]) << "output " << i;
        }
      expect_near_all(results[1][1], results[0][1], 1e-6, "gradient at the indices");
    }
}

}  // namespace

// Tests of the backend seam: Backend's checked entry points refuse bad arguments
// before any device writes (outputs stay untouched), on every device present; the
// dtype table; the op table's names and int64 rules; the many-parameter optimizer steps
// (checked first, then the same bits as one step per parameter).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <gtest/gtest.h>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/creation.h"
#include "core/dtype.h"
#include "core/scalar_ops.h"
#include "support.h"
#include "update_many_check.h"

namespace {

using namespace vgrad;
using vgrad_test::vals;

std::vector<Device> devices_present() {
  std::vector<Device> devices{kCPU};
  for (int i = 0; i < cuda_device_count(); ++i) devices.push_back(cuda_device(i));
  if (devices.size() == 1 && vgrad_test::gpu_required())
    ADD_FAILURE() << "no CUDA device, and VGRAD_REQUIRE_GPU requires one";
  return devices;
}

// The CPU refuses a bad index before writing. A GPU reports it at the next host read
// instead (tests/cuda/test_host_waits.cpp): the one documented difference.
// The CPU's side of the upload seam (the DataLoader's GPU path; docs/gpu.md, "Streams"): it
// copies at once into its one pool, and its fence is empty, so waiting on it does nothing.
TEST(Backend, TheCpuUploadsAtOnceWithAnEmptyFence) {
  Backend& cpu = cpu_backend();
  EXPECT_EQ(&cpu.upload_allocator(), &cpu.allocator()) << "the CPU has one pool";
  const std::vector<float> a{1.5f, -2, 3};
  const std::vector<int64_t> b{7, 8};
  const Tensor x = Tensor::empty({3}, DType::Float32, kCPU, cpu.upload_allocator());
  const Tensor y = Tensor::empty({2}, DType::Int64, kCPU, cpu.upload_allocator());
  const HostCopy copies[] = {{x.data_ptr(), a.data(), sizeof(float) * a.size()},
                             {y.data_ptr(), b.data(), sizeof(int64_t) * b.size()}};
  DeviceFence fence = cpu.upload(copies);
  EXPECT_TRUE(fence.empty());
  EXPECT_NO_THROW(fence.wait_host());
  EXPECT_NO_THROW(fence.make_compute_wait());
  EXPECT_EQ(x.to_vector<float>(), a);
  EXPECT_EQ(y.to_vector<int64_t>(), b);
  // memory_stats adds a device's pools: the CPU's one pool is counted once.
  const MemoryStats total = memory_stats(kCPU), pool = cpu.allocator().stats();
  EXPECT_EQ(total.bytes_in_use, pool.bytes_in_use);
  EXPECT_EQ(total.bytes_cached, pool.bytes_cached);
  EXPECT_EQ(total.system_allocations, pool.system_allocations);
}

TEST(Backend, BadIndexLeavesTheOutputUntouchedOnTheCpu) {
  const Device device = kCPU;
  const Tensor x = arange(0, 12, 1, {.device = device}).reshape({4, 3});
  const Tensor index = tensor(std::vector<int64_t>{1, 4, 0}).to(device);
  Tensor out = full({3, 3}, -7.0, {.device = device});
  EXPECT_ERROR(backend_for(device).index_select(x.view(), 0, index.view(), out.view()),
               "index_select: index 4 out of range for dim 0 of size 4 (position 1)");
  EXPECT_EQ(vgrad_test::vals(out), std::vector<double>(9, -7.0)) << device.str();

  Tensor acc = zeros({4, 3}, {.device = device});
  const Tensor src = ones({3, 3}, {.device = device});
  EXPECT_ERROR(backend_for(device).index_add(acc.view(), 0, index.view(), src.view()), "index_add: index 4");
  EXPECT_EQ(vgrad_test::vals(acc), std::vector<double>(12, 0.0)) << device.str();
}

TEST(Backend, CrossEntropyRefusesABadTargetBeforeWritingOnTheCpu) {
  const Device device = kCPU;
  const Tensor logits = zeros({2, 3}, {.device = device});
  const Tensor target = tensor(std::vector<int64_t>{2, 3}).to(device);
  Tensor probs = full({2, 3}, 5.0, {.device = device}), loss = full({2}, 5.0, {.device = device});
  EXPECT_ERROR(backend_for(device).cross_entropy(logits.view(), target.view(), 0.0, probs.view(), loss.view()),
               "cross_entropy: target 3 out of range for 3 classes (row 1)");
  EXPECT_EQ(vgrad_test::vals(probs), std::vector<double>(6, 5.0));
  EXPECT_EQ(vgrad_test::vals(loss), std::vector<double>(2, 5.0));
}

TEST(Backend, SumOfSquaresOfManyTensorsAddsEachOwnSumInTurn) {
  const Tensor a = tensor({1.f, 2.f, 3.f}), b = tensor(std::vector<double>{0.5, -4}), empty = zeros({0});
  const Tensor c = tensor({2.f, 2.f}).to(DType::BFloat16);
  const std::vector<View> views = {a.view(), empty.view(), b.view(), c.view()};
  EXPECT_EQ(cpu_backend().sum_of_squares(views.data(), views.size()), ((0.0 + 14.0) + 16.25) + 8.0);
  EXPECT_EQ(cpu_backend().sum_of_squares(views.data(), 0), 0.0);
  const Tensor strided = ones({4, 2}).transpose(0, 1);
  const std::vector<View> bad = {a.view(), strided.view()};
  EXPECT_ERROR(cpu_backend().sum_of_squares(bad.data(), bad.size()), "sum_of_squares: input [2, 4] must be contiguous");
}

// Loss scaling's unscale: each gradient times the inverse with the bits of a multiply by
// that scalar (16-bit: in float32, rounded once), and the flag set to 1 exactly when a
// stored product is Inf or NaN (a finite value that overflows when unscaled counts), never
// reset to 0; on every device and floating dtype, at sizes around the CPU's vector widths.
TEST(Backend, UnscaleAndCheckMultipliesInPlaceAndFlagsInfAndNaN) {
  const double inverse = double(float(1.0 / 3.0));
  for (const Device device : devices_present())
    for (const DType dtype : {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16})
      for (const int64_t n : {1, 17, 4099}) {
        const std::string label = std::string(dtype_name(dtype)) + " n=" + std::to_string(n) + " on " + device.str();
        const Tensor source = vgrad_test::uniform_tensor({n}, uint64_t(n), -1000, 1000).to(dtype);
        const Tensor expected = source * inverse;
        Tensor grad = source.to(device).clone(), flag = zeros({}, {.device = device});
        std::vector<View> views{grad.view()};
        backend_for(device).unscale_and_check(views.data(), 1, inverse, flag.view());
        EXPECT_EQ(vals(grad.to(kCPU)), vals(expected)) << label;
        EXPECT_EQ(flag.item(), 0.0) << label;
        // One poisoned element anywhere sets the flag; the others are still unscaled.
        const double huge = dtype == DType::Float16 ? 60000.0 : dtype == DType::Float64 ? 1e308 : 3e38;
        for (const double poison : {double(NAN), double(INFINITY), -double(INFINITY), huge}) {
          std::vector<double> values = source.to(DType::Float64).to_vector<double>();
          const size_t at = size_t(n) / 2;
          values[at] = poison;
          grad = tensor(values).to(dtype).to(device);
          flag = zeros({}, {.device = device});
          views = {grad.view()};
          // 4 makes the huge finite value overflow once unscaled: flagged as PyTorch's check
          // of the scaled value would not.
          const double by = poison == huge ? 4.0 : inverse;
          backend_for(device).unscale_and_check(views.data(), 1, by, flag.view());
          EXPECT_EQ(flag.item(), 1.0) << label << " poison " << poison;
          const auto got = vals(grad.to(kCPU)), want = vals(tensor(values).to(dtype) * by);
          for (size_t i = 0; i < got.size(); ++i) {
            if (i == at) continue;
            ASSERT_EQ(got[i], want[i]) << label << " element " << i;
          }
        }
        // Finite gradients leave a raised flag raised (it is never reset to 0).
        const Tensor finite = source.to(device).clone();
        views = {finite.view()};
        backend_for(device).unscale_and_check(views.data(), 1, inverse, flag.view());
        EXPECT_EQ(flag.item(), 1.0) << label;
        EXPECT_EQ(vals(finite.to(kCPU)), vals(expected)) << label;
      }
}

TEST(Backend, UnscaleAndCheckIsCheckedBeforeAnyWrite) {
  for (const Device device : devices_present()) {
    const Tensor good = ones({3}, {.device = device}), flag = zeros({}, {.device = device});
    const Tensor ints = zeros({2}, {.dtype = DType::Int64, .device = device});
    const Tensor strided = ones({4, 2}, {.device = device}).transpose(0, 1);
    auto run = [&](const Tensor& second, const Tensor& f, double inverse) {
      const std::vector<View> views{good.view(), second.view()};
      backend_for(device).unscale_and_check(views.data(), views.size(), inverse, f.view());
    };
    EXPECT_ERROR(run(ints, flag, 0.5), "unscale_and_check: gradient must be floating point, got int64");
    EXPECT_ERROR(run(strided, flag, 0.5), "unscale_and_check: gradient [2, 4] must be contiguous");
    EXPECT_ERROR(run(good, zeros({}, {.dtype = DType::Float64, .device = device}), 0.5),
                 "unscale_and_check: flag must be float32, got float64");
    EXPECT_ERROR(run(good, zeros({2}, {.device = device}), 0.5),
                 "unscale_and_check: the flag must be one value, got [2]");
    EXPECT_ERROR(run(good, flag, INFINITY), "unscale_and_check: inverse scale inf is not finite");
    EXPECT_EQ(vals(good.to(kCPU)), (std::vector<double>{1, 1, 1})) << device.str();
    EXPECT_EQ(flag.item(), 0.0) << device.str();
  }
}

TEST(Backend, CheckIndexNamesTheOpTheLimitAndTheFirstBadPosition) {
  const Tensor index = tensor(std::vector<int64_t>{0, 2, 5, -1});
  EXPECT_ERROR(cpu_backend().check_index({.op = "embedding", .limit = 5, .dim = 0}, index.view()),
               "embedding: index 5 out of range for dim 0 of size 5 (position 2)");
  EXPECT_ERROR(cpu_backend().check_index({.op = "nll_loss", .limit = 3, .class_targets = true}, index.view()),
               "nll_loss: target 5 out of range for 3 classes (row 2)");
  EXPECT_NO_THROW(cpu_backend().check_index({.op = "x", .limit = 6}, index.narrow(0, 0, 3).view()));
  EXPECT_ERROR(cpu_backend().check_index({.op = "x", .limit = 6}, ones({2}).view()), "x: index must be int64, got float32");
}

TEST(Backend, ElementwiseChecksShapesDtypesAndInt64Rules) {
  Backend& cpu = cpu_backend();
  const Tensor a = ones({2, 3}), b = ones({4}), d = ones({2, 3}, {.dtype = DType::Float64});
  Tensor out = zeros({2, 3});
  EXPECT_ERROR(cpu.binary(BinaryOp::Add, a.view(), b.view(), out.view()),
               "add: second operand [4] does not broadcast to the output [2, 3]");
  EXPECT_ERROR(cpu.binary(BinaryOp::Add, a.view(), d.view(), out.view()), "add: second operand must be float32, got float64");
  EXPECT_ERROR(cpu.unary(UnaryOp::Exp, d.view(), out.view()), "exp: output must be float64, got float32");
  const Tensor i = ones({3}, {.dtype = DType::Int64});
  Tensor io = zeros({3}, {.dtype = DType::Int64});
  EXPECT_ERROR(cpu.unary(UnaryOp::Exp, i.view(), io.view()), "exp: not defined for int64 tensors");
  EXPECT_ERROR(cpu.binary(BinaryOp::Div, i.view(), i.view(), io.view()), "div: not defined for int64 tensors");
  Tensor sums = zeros({1}, {.dtype = DType::Int64});
  EXPECT_ERROR(cpu.reduce(ReduceOp::Sum, i.view(), sums.view(), 0.5), "mean: not defined for int64 tensors");
  // An int64 functor takes its parameters as int64: Inf, 1e19 or 0.5 would be UB or truncate.
  EXPECT_ERROR(cpu.unary(UnaryOp::Affine, i.view(), io.view(), INFINITY, 0),
               "affine: parameters inf and 0 must be whole numbers in int64's range for an int64 tensor");
  EXPECT_ERROR(cpu.unary(UnaryOp::Affine, i.view(), io.view(), 2, 1e19), "affine: parameters 2 and 1e+19");
  EXPECT_ERROR(cpu.unary(UnaryOp::Affine, i.view(), io.view(), 0.5, 0), "affine: parameters 0.5 and 0");
  EXPECT_EQ(io.to_vector<int64_t>(), std::vector<int64_t>(3, 0));  // refused before writing
  cpu.unary(UnaryOp::Affine, i.view(), io.view(), -3, 2);
  EXPECT_EQ(io.to_vector<int64_t>(), std::vector<int64_t>(3, -1));
  // A (3,) row broadcast over (2, 3): the entry point expands it for the device.
  const Tensor row = tensor({1.f, 2.f, 3.f});
  cpu.binary(BinaryOp::Mul, a.view(), row.view(), out.view());
  EXPECT_EQ(vgrad_test::vals(out), (std::vector<double>{1, 2, 3, 1, 2, 3}));
}

TEST(Backend, GemmChecksSizesAndHandlesAnEmptySum) {
  Tensor c = full({2, 2}, 3.0);
  GemmArgs g;
  g.m = 2, g.n = 2, g.k = 0, g.c = c.data_ptr(), g.ldc = 2, g.beta = 0.5;
  cpu_backend().gemm(g);  // C = beta * C
  EXPECT_EQ(vgrad_test::vals(c), std::vector<double>(4, 1.5));
  g.k = -1;
  EXPECT_ERROR(cpu_backend().gemm(g), "gemm: negative size");
  g.k = 0, g.dtype = DType::Int64;
  EXPECT_ERROR(cpu_backend().gemm(g), "matmul: int64 tensors are not supported");
}

// ---- GEMM epilogues (Backend::gemm_epilogue) ----

// Small integers (and biases of half-integers): every product and sum is exact in float32 and
// float64, and (for small k) in the 16-bit dtypes, so a device's fused epilogue (cuBLASLt) and
// the composed one (the CPU) must give these exact values, in every dtype the epilogue takes.
double small_integer(int64_t i, int64_t j, int64_t salt) { return double((i * 7 + j * 3 + salt) % 5) - 2.0; }

struct EpilogueShape {
  int64_t m, n, k;
  bool trans_a, trans_b;
};

// Runs `epilogue` on `device` in `dtype` and compares C (and the bias gradient) with the exact
// host values; `with_bias` matters for BiasRelu only (Bias always has one, BiasGrad none).
void check_epilogue(Device device, DType dtype, GemmEpilogue epilogue, bool with_bias, EpilogueShape s) {
  const std::string label = fmt::format("{} {} {} m={} n={} k={}{}{}{}", device.str(), dtype_name(dtype), op_name(epilogue),
                                        s.m, s.n, s.k, s.trans_a ? " Aᵀ" : "", s.trans_b ? " Bᵀ" : "",
                                        with_bias ? " with bias" : "");
  SCOPED_TRACE(label);
  auto a_at = [&](int64_t i, int64_t kk) { return small_integer(i, kk, 1); };  // op(A) (m, k)
  auto b_at = [&](int64_t kk, int64_t j) { return small_integer(kk, j, 2); };  // op(B) (k, n)
  std::vector<double> a_host(s.m * s.k), b_host(s.k * s.n), bias_host(s.n);
  for (int64_t i = 0; i < s.m; ++i)
    for (int64_t kk = 0; kk < s.k; ++kk) a_host[s.trans_a ? kk * s.m + i : i * s.k + kk] = a_at(i, kk);
  for (int64_t kk = 0; kk < s.k; ++kk)
    for (int64_t j = 0; j < s.n; ++j) b_host[s.trans_b ? j * s.k + kk : kk * s.n + j] = b_at(kk, j);
  for (int64_t j = 0; j < s.n; ++j) bias_host[j] = double(j % 7) - 3.5;
  const bool bias_used = epilogue == GemmEpilogue::Bias || (epilogue == GemmEpilogue::BiasRelu && with_bias);
  std::vector<double> c_expected(s.m * s.n), bias_grad_expected(s.m, 0.0);
  for (int64_t i = 0; i < s.m; ++i) {
    for (int64_t kk = 0; kk < s.k; ++kk) bias_grad_expected[i] += a_at(i, kk);
    for (int64_t j = 0; j < s.n; ++j) {
      double sum = 0;
      for (int64_t kk = 0; kk < s.k; ++kk) sum += a_at(i, kk) * b_at(kk, j);
      if (bias_used) sum += bias_host[j];
      c_expected[i * s.n + j] = epilogue == GemmEpilogue::BiasRelu ? std::max(sum, 0.0) : sum;
    }
  }
  auto on_device = [&](const std::vector<double>& values, const Shape& shape) {
    return tensor(values, shape, {.dtype = DType::Float64}).to(dtype).to(device);
  };
  auto rounded = [&](const std::vector<double>& values) {  // what the dtype stores of the exact value
    return vgrad_test::vals(tensor(values, {int64_t(values.size())}, {.dtype = DType::Float64}).to(dtype));
  };
  const Tensor a = on_device(a_host, s.trans_a ? Shape{s.k, s.m} : Shape{s.m, s.k});
  const Tensor b = on_device(b_host, s.trans_b ? Shape{s.n, s.k} : Shape{s.k, s.n});
  const Tensor bias = on_device(bias_host, {s.n});
  Tensor c = full({s.m, s.n}, -7.0, {.dtype = dtype, .device = device});
  Tensor bias_grad = full({s.m}, -7.0, {.dtype = dtype, .device = device});
  GemmEpilogueArgs e;
  e.gemm = GemmArgs{.trans_a = s.trans_a, .trans_b = s.trans_b, .m = s.m, .n = s.n, .k = s.k, .a = a.data_ptr(),
                    .lda = s.trans_a ? s.m : s.k, .b = b.data_ptr(), .ldb = s.trans_b ? s.k : s.n, .c = c.data_ptr(),
                    .ldc = s.n, .dtype = dtype};
  e.epilogue = epilogue;
  if (bias_used) e.bias = bias.data_ptr();
  if (epilogue == GemmEpilogue::BiasGrad) e.bias_grad = bias_grad.data_ptr();
  backend_for(device).gemm_epilogue(e);
  EXPECT_EQ(vgrad_test::vals(c), rounded(c_expected));
  if (epilogue == GemmEpilogue::BiasGrad) EXPECT_EQ(vgrad_test::vals(bias_grad), rounded(bias_grad_expected));
  else EXPECT_EQ(vgrad_test::vals(bias_grad), std::vector<double>(s.m, -7.0)) << "only BiasGrad writes it";
}

TEST(Backend, GemmEpiloguesGiveTheExactValuesOnEveryDeviceInEveryFloatingDtype) {
  const std::vector<EpilogueShape> shapes = {{1, 1, 1, false, false}, {3, 17, 5, false, true}, {17, 3, 5, true, false},
                                             {5, 4, 3, true, true},   {1000, 3, 17, false, true}, {3, 1000, 17, true, true},
                                             {17, 5, 1000, true, false}};
  for (const Device device : devices_present())
    for (const DType dtype : {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16})
      for (const EpilogueShape& shape : shapes) {
        // 16-bit: sums of at most 17 products stay below 256, exact in bfloat16 even where a GEMM
        // library rounds its partial sums to 16 bits; k = 1000 is left to tests/cuda/test_gemm_lt.cpp.
        if (dtype_size(dtype) == 2 && shape.k > 17) continue;
        check_epilogue(device, dtype, GemmEpilogue::Bias, true, shape);
        check_epilogue(device, dtype, GemmEpilogue::BiasRelu, true, shape);
        check_epilogue(device, dtype, GemmEpilogue::BiasRelu, false, shape);
        check_epilogue(device, dtype, GemmEpilogue::BiasGrad, false, shape);
      }
}

TEST(Backend, GemmEpiloguesOfEmptySizesAreTheEmptyProductsEpilogue) {
  for (const Device device : devices_present()) {
    for (const auto epilogue : {GemmEpilogue::Bias, GemmEpilogue::BiasRelu, GemmEpilogue::BiasGrad}) {
      check_epilogue(device, DType::Float32, epilogue, true, {3, 4, 0, false, true});  // C = the bias (or 0), Σ = 0
      check_epilogue(device, DType::Float32, epilogue, true, {0, 4, 3, true, false});  // nothing to write
      check_epilogue(device, DType::Float32, epilogue, true, {3, 0, 5, false, false});  // C empty; Σ_k A still written
    }
  }
}

TEST(Backend, GemmEpilogueIsCheckedBeforeAnyDeviceWrites) {
  for (const Device device : devices_present()) {
    SCOPED_TRACE(device.str());
    const Tensor a = ones({2, 3}, {.device = device}), b = ones({3, 4}, {.device = device}),
                 bias = ones({4}, {.device = device});
    Tensor c = full({2, 4}, -7.0, {.device = device}), bias_grad = full({2}, -7.0, {.device = device});
    auto args = [&] {
      GemmEpilogueArgs e;
      e.gemm = GemmArgs{.m = 2, .n = 4, .k = 3, .a = a.data_ptr(), .lda = 3, .b = b.data_ptr(), .ldb = 4,
                        .c = c.data_ptr(), .ldc = 4};
      e.bias = bias.data_ptr();
      e.bias_grad = bias_grad.data_ptr();
      return e;
    };
    Backend& backend = backend_for(device);
    GemmEpilogueArgs e = args();
    e.gemm.batch = 2;
    EXPECT_ERROR(backend.gemm_epilogue(e), "gemm (bias epilogue): needs batch 1, alpha 1 and beta 0, got batch 2");
    e = args(), e.gemm.beta = 1.0;
    EXPECT_ERROR(backend.gemm_epilogue(e), "gemm (bias epilogue)", "beta 1");
    e = args(), e.gemm.alpha = 2.0, e.epilogue = GemmEpilogue::BiasRelu;
    EXPECT_ERROR(backend.gemm_epilogue(e), "gemm (bias+relu epilogue)", "alpha 2");
    e = args(), e.bias = nullptr;
    EXPECT_ERROR(backend.gemm_epilogue(e), "gemm (bias epilogue): no bias vector given");
    e = args(), e.epilogue = GemmEpilogue::BiasGrad, e.bias_grad = nullptr;
    EXPECT_ERROR(backend.gemm_epilogue(e), "gemm (bias gradient epilogue): no bias gradient vector given");
    e = args(), e.gemm.lda = 2;
    EXPECT_ERROR(backend.gemm_epilogue(e), "gemm: lda = 2 is smaller than the row length 3");
    e = args(), e.gemm.dtype = DType::Int64;
    EXPECT_ERROR(backend.gemm_epilogue(e), "matmul: int64 tensors are not supported");
    e = args(), e.gemm.k = -1;
    EXPECT_ERROR(backend.gemm_epilogue(e), "gemm: negative size");
    EXPECT_EQ(vgrad_test::vals(c), std::vector<double>(8, -7.0));
    EXPECT_EQ(vgrad_test::vals(bias_grad), std::vector<double>(2, -7.0));
  }
}

// x (2, 4, 5, 5) ⊛ weight (6, 2, 3, 3), 2 groups, padding 1 -> y (2, 6, 5, 5).
ConvGeometry small_conv() {
  ConvGeometry g;
  g.window.batch = 2, g.window.channels = 4, g.window.height = 5, g.window.width = 5;
  g.window.kernel_h = g.window.kernel_w = 3;
  g.window.pad_h = g.window.pad_w = 1;
  g.window.out_h = g.window.out_w = 5;
  g.filters = 6, g.groups = 2;
  return g;
}

TEST(Backend, DirectConvolutionIsCheckedOnEveryDeviceAndTheCpuHasNone) {
  for (Device device : devices_present()) {
    const ConvGeometry g = small_conv();
    const Tensor x = ones({2, 4, 5, 5}, {.device = device}), w = ones({6, 2, 3, 3}, {.device = device});
    Tensor y = full({2, 6, 5, 5}, -7.0, {.device = device});
    Backend& backend = backend_for(device);
    const Tensor bad_w = ones({6, 4, 3, 3}, {.device = device});
    EXPECT_ERROR(backend.conv2d(ConvPass::Forward, x.view(), bad_w.view(), y.view(), g),
                 "conv2d: weight [6, 4, 3, 3] should be [6, 2, 3, 3]");
    const Tensor bad_y = ones({2, 6, 4, 5}, {.device = device});
    EXPECT_ERROR(backend.conv2d(ConvPass::BackwardData, x.view(), w.view(), bad_y.view(), g),
                 "conv2d backward (input): output [2, 6, 4, 5] should be [2, 6, 5, 5]");
    const Tensor x64 = ones({2, 4, 5, 5}, {.dtype = DType::Float64, .device = device});
    EXPECT_ERROR(backend.conv2d(ConvPass::BackwardFilter, x64.view(), w.view(), y.view(), g),
                 "conv2d backward (weight): weight must be float64, got float32");
    ConvGeometry three_groups = g;
    three_groups.groups = 3;
    EXPECT_ERROR(backend.conv2d(ConvPass::Forward, x.view(), w.view(), y.view(), three_groups),
                 "conv2d: groups 3 must divide the channels 4 and the filters 6");
    EXPECT_EQ(vgrad_test::vals(y), std::vector<double>(300, -7.0)) << device.str();
    if (device.is_cpu()) {  // declines, writing nothing: conv2d then runs as im2col + GEMM
      EXPECT_FALSE(backend.conv2d(ConvPass::Forward, x.view(), w.view(), y.view(), g));
      EXPECT_EQ(vgrad_test::vals(y), std::vector<double>(300, -7.0));
    }
  }
}

// The many-parameter steps give each parameter the bits of its own one-parameter step: on
// the CPU through Backend's default loop; on a GPU through one launch per dtype (more cases
// in tests/cuda/test_optim_cuda.cpp). Sizes around the CPU's vector widths and threading
// threshold; bfloat16 takes the one-parameter path everywhere.
TEST(Backend, ManyParameterStepsGiveTheBitsOfOneStepPerParameterOnEveryDevice) {
  const std::vector<int64_t> sizes{1, 15, 17, 300, 4099, 200 * 1024 + 3};
  const std::vector<DType> dtypes{DType::Float32, DType::Float64, DType::BFloat16};
  for (Device device : devices_present()) {
    const std::string on = " on " + device.str();
    for (const SgdParams& p : {SgdParams{0.1, 0, 0, 0, false, true}, SgdParams{0.05, 0, 0, 1e-2, false, true},
                               SgdParams{0.1, 0.9, 0.5, 1e-3, false, true}, SgdParams{0.1, 0.9, 0, 1e-3, true, true}})
      vgrad_test::expect_sgd_many_matches_one(device, sizes, dtypes, p, 3,
                                              "SGD momentum " + std::to_string(p.momentum) + on);
    for (const bool decoupled : {false, true})
      vgrad_test::expect_adam_many_matches_one(device, sizes, dtypes, {1e-2, 0.9, 0.999, 1e-8, 0.05, decoupled, 1}, 3,
                                               (decoupled ? "AdamW" : "Adam") + on);
  }
}

TEST(Backend, ManyParameterStepsCheckEveryEntryBeforeWriting) {
  for (Device device : devices_present()) {
    Backend& backend = backend_for(device);
    Tensor first = full({5}, 1.0, {.device = device}), second = full({5}, 2.0, {.device = device});
    const Tensor grad = ones({5}, {.device = device}), short_grad = ones({4}, {.device = device});
    Tensor m = zeros({5}, {.device = device}), v = zeros({5}, {.device = device});
    Tensor m2 = zeros({5}, {.device = device}), v2 = zeros({5}, {.device = device});
    const SgdParams sgd{0.1, 0, 0, 0, false, true};
    const std::vector<SgdUpdate> bad_grad{{first.view(), grad.view(), View{}, sgd},
                                          {second.view(), short_grad.view(), View{}, sgd}};
    EXPECT_ERROR(backend.sgd_update_many(bad_grad),
                 "sgd_update (parameter 1): gradient [4] does not match parameter [5]");
    const std::vector<SgdUpdate> no_buffer{{first.view(), grad.view(), View{}, sgd},
                                           {second.view(), grad.view(), View{}, {0.1, 0.9, 0, 0, false, true}}};
    EXPECT_ERROR(backend.sgd_update_many(no_buffer), "sgd_update (parameter 1): momentum 0.9 needs a momentum buffer");
    const std::vector<SgdUpdate> twice{{first.view(), grad.view(), View{}, sgd},
                                       {second.view(), grad.view(), View{}, sgd},
                                       {first.view(), grad.view(), View{}, sgd}};
    EXPECT_ERROR(backend.sgd_update_many(twice),
                 "sgd_update: parameters 0 and 2 share memory (a parameter may be listed only once)");
    const AdamParams adam{1e-3, 0.9, 0.999, 1e-8, 0, true, 1};
    AdamParams step_zero = adam;
    step_zero.step = 0;
    const std::vector<AdamUpdate> bad_step{{first.view(), grad.view(), m.view(), v.view(), adam},
                                           {second.view(), grad.view(), m2.view(), v2.view(), step_zero}};
    EXPECT_ERROR(backend.adam_update_many(bad_step),
                 "adamw_update (parameter 1): step 0 must be >= 1 (bias correction is 1-based)");
    // Nothing was written by the refused calls.
    EXPECT_EQ(vgrad_test::vals(first), std::vector<double>(5, 1.0)) << device.str();
    EXPECT_EQ(vgrad_test::vals(second), std::vector<double>(5, 2.0)) << device.str();
    EXPECT_EQ(vgrad_test::vals(m), std::vector<double>(5, 0.0)) << device.str();
    // An empty list, and empty parameters among others, are fine.
    backend.sgd_update_many({});
    Tensor empty = zeros({0}, {.device = device});
    const std::vector<SgdUpdate> with_empty{{empty.view(), empty.view(), View{}, sgd},
                                            {first.view(), grad.view(), View{}, sgd}};
    backend.sgd_update_many(with_empty);
    EXPECT_EQ(vgrad_test::vals(first), std::vector<double>(5, double(0.9f))) << device.str();
  }
}

TEST(DTypeTable, NamesSizesPromotionAndSafetensorsCodes) {
  EXPECT_STREQ(dtype_name(DType::Float32), "float32");
  EXPECT_EQ(dtype_size(DType::Float64), 8u);
  EXPECT_EQ(dtype_size(DType::Float32), 4u);
  EXPECT_FALSE(is_floating(DType::Int64));
  EXPECT_EQ(promote(DType::Int64, DType::Float32), DType::Float32);
  EXPECT_EQ(promote(DType::Float64, DType::Float32), DType::Float64);
  EXPECT_EQ(promote(DType::Int64, DType::Int64), DType::Int64);
  DType parsed = DType::Int64;
  ASSERT_TRUE(dtype_from_safetensors("F64", parsed));
  EXPECT_EQ(parsed, DType::Float64);
  EXPECT_FALSE(dtype_from_safetensors("U8", parsed));
}

TEST(DTypeTable, AnUnknownDtypeIsAnErrorNeverInt64) {
  const auto unknown = static_cast<DType>(9);
  EXPECT_ERROR(dtype_size(unknown), "dtype: unknown dtype code 9");
  EXPECT_ERROR(visit_dtype(unknown, [](auto zero) { return sizeof(zero); }), "unknown dtype code 9");
  EXPECT_ERROR(Tensor::empty({2}, unknown), "unknown dtype code 9");
}

TEST(OpTable, EveryOpHasANameAndTheInt64RuleIsExplicit) {
  EXPECT_STREQ(op_name(UnaryOp::Relu), "relu");
  EXPECT_STREQ(op_name(BinaryOp::Maximum), "maximum");
  EXPECT_STREQ(op_name(ReduceOp::ArgMin), "argmin");
  EXPECT_TRUE(scalar::defined_on_int64(UnaryOp::Abs));
  EXPECT_FALSE(scalar::defined_on_int64(UnaryOp::Log));
  EXPECT_TRUE(scalar::defined_on_int64(BinaryOp::Pow));
  EXPECT_FALSE(scalar::defined_on_int64(BinaryOp::Div));
}

}  // namespace

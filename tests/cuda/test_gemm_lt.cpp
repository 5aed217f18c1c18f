// cuBLASLt's GEMM epilogues (cuda/gemm_lt.{h,cpp}, Backend::gemm_epilogue). Without a GPU: how
// linear's row-major GEMMs map onto Lt (operands swapped, BGRADB for the bias gradient), the
// pointer alignment Lt is told, which calls decline to the composed path, and what the plan key
// holds. With one: linear and linear_relu forward and backward against the CPU backend, exactly
// on small integers (float32, float64) or within the low dtype's roundoff (bfloat16, float16),
// over odd sizes (1, 3, 17, 1000), no bias, zero rows, transposed and offset inputs; that the
// fused path did run (cuda::fused_gemm_epilogue_count) where it should and not for float64; and
// that TF32 is honoured (a TF32 plan is never reused once it is switched off).
#include <algorithm>
#include <cmath>
#include <gtest/gtest.h>
#include <limits>
#include <string>
#include <vector>

#include "amp/low_precision.h"
#include "autograd/ops.h"
#include "core/backend.h"
#include "cuda/gemm_lt.h"
#include "support.h"

namespace {

using namespace vgrad;
using vgrad_test::vals;

// ---- host-side mapping (no GPU) ----

// linear's forward: x (N, D_in) · Wᵀ, W (D_out, D_in) row-major (matmul.cpp: b = Wᵀ read transposed).
GemmEpilogueArgs linear_forward_args(int64_t rows, int64_t in, int64_t out, GemmEpilogue epilogue) {
  static float x[1], w[1], y[1], bias[4];
  GemmEpilogueArgs e;
  e.gemm = GemmArgs{.trans_a = false, .trans_b = true, .m = rows, .n = out, .k = in, .a = x, .lda = in, .b = w,
                    .ldb = in, .c = y, .ldc = out};
  e.epilogue = epilogue;
  e.bias = bias;
  return e;
}

TEST(GemmLt, LinearsForwardIsWTransposedTimesXWithTheBiasPerRowOfD) {
  const cuda::LtProblem p = cuda::lt_problem(linear_forward_args(64, 784, 256, GemmEpilogue::Bias));
  EXPECT_EQ(p.m, 256);  // D = Yᵀ (D_out x N) column-major
  EXPECT_EQ(p.n, 64);
  EXPECT_EQ(p.k, 784);
  EXPECT_TRUE(p.first.transposed);  // W stored (D_out, D_in) row-major = D_in x D_out column-major, read as Wᵀ·
  EXPECT_EQ(p.first.rows, 784);
  EXPECT_EQ(p.first.cols, 256);
  EXPECT_EQ(p.first.ld, 784);
  EXPECT_FALSE(p.second.transposed);  // x (N, D_in) row-major = D_in x N column-major
  EXPECT_EQ(p.second.rows, 784);
  EXPECT_EQ(p.second.cols, 64);
  EXPECT_EQ(p.second.ld, 784);
  EXPECT_EQ(p.ldd, 256);
  EXPECT_EQ(p.epilogue, cuda::LtEpilogue::Bias);
  EXPECT_EQ(p.bias_length, 256) << "Lt's bias has one value per row of D: one per output feature";
  GemmEpilogueArgs relu = linear_forward_args(64, 784, 256, GemmEpilogue::BiasRelu);
  EXPECT_EQ(cuda::lt_problem(relu).epilogue, cuda::LtEpilogue::Bias)
      << "Lt adds linear_relu's bias; the ReLU is vgrad's kernel (Lt's max(x, 0) turns NaN into 0)";
  EXPECT_EQ(cuda::lt_problem(relu).bias_length, 256);
}

TEST(GemmLt, LinearsWeightGradientTakesTheBiasGradientFromLtsSecondOperandBGRADB) {
  // dW (D_out, D_in) = Δᵀ·x: A = Δ (N, D_out) read transposed, B = x (N, D_in).
  static float delta[1], x[1], dw[1], db[1];
  GemmEpilogueArgs e;
  e.gemm = GemmArgs{.trans_a = true, .trans_b = false, .m = 256, .n = 784, .k = 64, .a = delta, .lda = 256, .b = x,
                    .ldb = 784, .c = dw, .ldc = 784};
  e.epilogue = GemmEpilogue::BiasGrad;
  e.bias_grad = db;
  const cuda::LtProblem p = cuda::lt_problem(e);
  EXPECT_EQ(p.m, 784);
  EXPECT_EQ(p.n, 256);
  EXPECT_EQ(p.k, 64);
  EXPECT_EQ(p.first.data, x);
  EXPECT_FALSE(p.first.transposed);
  EXPECT_EQ(p.second.data, delta);  // Δ (N, D_out) row-major = D_out x N column-major, read as Δ: k x n
  EXPECT_TRUE(p.second.transposed);
  EXPECT_EQ(p.second.rows, 256);
  EXPECT_EQ(p.second.cols, 64);
  EXPECT_EQ(p.epilogue, cuda::LtEpilogue::BiasGradB);
  EXPECT_EQ(p.bias_length, 256) << "db has one value per output feature: Σ over the batch (Lt's k)";
}

TEST(GemmLt, PointerAlignmentIsTheLargestPowerOfTwoUpTo256) {
  alignas(512) static unsigned char buffer[1024];
  EXPECT_EQ(cuda::pointer_alignment(buffer), 256u);
  EXPECT_EQ(cuda::pointer_alignment(buffer + 256), 256u);
  EXPECT_EQ(cuda::pointer_alignment(buffer + 128), 128u);
  EXPECT_EQ(cuda::pointer_alignment(buffer + 4), 4u);
  EXPECT_EQ(cuda::pointer_alignment(buffer + 6), 2u);
  EXPECT_EQ(cuda::pointer_alignment(buffer + 1), 1u);
  EXPECT_EQ(cuda::pointer_alignment(buffer + 48), 16u);
}

TEST(GemmLt, Float64AndAMisalignedBiasDeclineToTheComposedPath) {
  alignas(256) static float bias[8];
  GemmEpilogueArgs e = linear_forward_args(4, 3, 8, GemmEpilogue::Bias);
  e.bias = bias;
  for (const DType dtype : {DType::Float32, DType::BFloat16, DType::Float16}) {
    e.gemm.dtype = dtype;
    EXPECT_FALSE(cuda::lt_declines(e)) << dtype_name(dtype);
  }
  e.gemm.dtype = DType::Float64;
  EXPECT_TRUE(cuda::lt_declines(e));
  e.gemm.dtype = DType::Float32;
  e.bias = bias + 1;  // 4 bytes past a 256-byte boundary
  EXPECT_TRUE(cuda::lt_declines(e));
  e.bias = bias + 4;  // 16 bytes
  EXPECT_FALSE(cuda::lt_declines(e));
  e.epilogue = GemmEpilogue::BiasGrad;
  e.bias = nullptr;
  e.gemm.trans_a = true;  // linear's dW = Δᵀ·X: A is Δ read transposed
  e.bias_grad = bias + 4;
  EXPECT_FALSE(cuda::lt_declines(e));
  e.bias_grad = bias + 2;
  EXPECT_TRUE(cuda::lt_declines(e)) << "the bias gradient is held to the same alignment";
  e.bias_grad = bias + 4;
  e.gemm.trans_a = false;  // BGRADB wants Lt's B (vgrad's A) transposed
  EXPECT_TRUE(cuda::lt_declines(e)) << "a bias gradient over an untransposed A";
  e.epilogue = GemmEpilogue::BiasRelu;
  e.bias_grad = nullptr;
  EXPECT_TRUE(cuda::lt_declines(e)) << "a ReLU without a bias: cuBLAS's GEMM and the ReLU kernel";
  e.bias = bias + 4;
  EXPECT_FALSE(cuda::lt_declines(e)) << "with its bias, Lt adds it";
}

TEST(GemmLt, ThePlanKeyHoldsTf32TheShapeAndTheAlignmentsButNotTheAddresses) {
  alignas(256) static float c[512], bias[512];
  const cuda::LtProblem p = cuda::lt_problem(linear_forward_args(64, 784, 256, GemmEpilogue::Bias));
  const cuda::LtPlanKey base = cuda::lt_plan_key(p, DType::Float32, false, c, bias);
  EXPECT_EQ(cuda::lt_plan_key(p, DType::Float32, false, c + 256, bias + 256), base) << "same alignment, same plan";
  EXPECT_NE(cuda::lt_plan_key(p, DType::Float32, true, c, bias), base) << "a TF32 plan is its own";
  EXPECT_EQ(cuda::lt_plan_key(p, DType::BFloat16, true, c, bias), cuda::lt_plan_key(p, DType::BFloat16, false, c, bias))
      << "TF32 means nothing for 16-bit";
  EXPECT_NE(cuda::lt_plan_key(p, DType::BFloat16, false, c, bias), base);
  EXPECT_NE(cuda::lt_plan_key(p, DType::Float32, false, c + 4, bias), base);
  EXPECT_NE(cuda::lt_plan_key(p, DType::Float32, false, c, bias + 4), base);
  EXPECT_NE(cuda::lt_plan_key(cuda::lt_problem(linear_forward_args(65, 784, 256, GemmEpilogue::Bias)), DType::Float32,
                              false, c, bias),
            base);
  EXPECT_EQ(cuda::lt_plan_key(cuda::lt_problem(linear_forward_args(64, 784, 256, GemmEpilogue::BiasRelu)),
                              DType::Float32, false, c, bias),
            base)
      << "linear_relu's GEMM is linear's (its ReLU is a kernel of its own): one plan";
}

#if VGRAD_WITH_CUDA
// Lt takes every descriptor attribute and preference vgrad sets, for every epilogue, dtype,
// transpose and TF32 setting (descriptor calls need no GPU; a wrong attribute size throws).
TEST(GemmLt, LtAcceptsEveryDescriptorAndPreferenceVgradSets) {
  alignas(256) static float data[64];
  for (const DType dtype : {DType::Float32, DType::BFloat16, DType::Float16})
    for (const auto epilogue : {GemmEpilogue::Bias, GemmEpilogue::BiasRelu, GemmEpilogue::BiasGrad})
      for (const bool transposed : {false, true})
        for (const bool tf32 : {false, true}) {
          GemmEpilogueArgs e = linear_forward_args(4, 3, 8, epilogue);
          e.gemm.dtype = dtype;
          e.gemm.trans_a = transposed;
          e.gemm.lda = transposed ? 4 : 3;
          e.gemm.a = data + 4;  // 16 bytes: an alignment below Lt's default 256
          e.bias = epilogue == GemmEpilogue::BiasGrad ? nullptr : data;
          e.bias_grad = epilogue == GemmEpilogue::BiasGrad ? data + 8 : nullptr;
          EXPECT_NO_THROW(cuda::check_lt_descriptors(e, tf32))
              << dtype_name(dtype) << " " << op_name(epilogue) << (transposed ? " Aᵀ" : "") << (tf32 ? " tf32" : "");
        }
}
#endif

// ---- on a GPU ----

// Small integers: exact in every dtype, and every float32 sum of their products is exact.
std::vector<double> small_integers(int64_t n, int64_t salt) {
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = double((i * 7 + salt * 3) % 5) - 2.0;
  return v;
}

struct LinearCase {
  int64_t rows, in, out;
  bool bias = true;
  bool transposed_x = false, transposed_w = false, offset_x = false;
  std::string str() const {
    return std::to_string(rows) + "x" + std::to_string(in) + " -> " + std::to_string(out) + (bias ? "" : " no bias") +
           (transposed_x ? " xᵀ view" : "") + (transposed_w ? " Wᵀ view" : "") + (offset_x ? " x at an offset" : "");
  }
};

struct LinearResult {
  std::vector<double> y, dx, dw, db;
};

// linear or linear_relu of `c` on `device` in `dtype`, forward and backward with an integer
// upstream gradient; the gradients are those of the leaves the views were taken from.
LinearResult run_linear(Device device, DType dtype, const LinearCase& c, bool relu_after) {
  auto leaf = [&](const std::vector<double>& values, const Shape& shape) {
    return tensor(values, shape, {.dtype = DType::Float64}).to(dtype).to(device).requires_grad_();
  };
  const int64_t pad = c.offset_x ? 1 : 0;  // one extra column in front: x starts 1 element in
  Tensor x_leaf = c.transposed_x ? leaf(small_integers(c.in * c.rows, 1), {c.in, c.rows})
                                 : leaf(small_integers(c.rows * (c.in + pad), 1), {c.rows, c.in + pad});
  Tensor w_leaf = c.transposed_w ? leaf(small_integers(c.in * c.out, 2), {c.in, c.out})
                                 : leaf(small_integers(c.out * c.in, 2), {c.out, c.in});
  std::vector<double> bias_values(c.out);
  for (int64_t j = 0; j < c.out; ++j) bias_values[j] = double(j % 7) - 3.5;  // never a zero pre-activation
  Tensor b_leaf = leaf(bias_values, {c.out});
  const Tensor x = c.transposed_x ? x_leaf.t() : x_leaf.narrow(1, pad, c.in);
  const Tensor w = c.transposed_w ? w_leaf.t() : w_leaf;
  const Tensor b = c.bias ? b_leaf : Tensor();
  const Tensor y = relu_after ? linear_relu(x, w, b) : linear(x, w, b);
  y.backward(tensor(small_integers(c.rows * c.out, 3), {c.rows, c.out}, {.dtype = DType::Float64}).to(dtype).to(device));
  LinearResult r{vals(y), vals(x_leaf.grad()), vals(w_leaf.grad()), {}};
  if (c.bias) r.db = vals(b_leaf.grad());
  return r;
}

const std::vector<LinearCase>& linear_cases() {
  static const std::vector<LinearCase> cases = {
      {1, 1, 1},          {3, 17, 5},         {17, 3, 1000},      {1000, 17, 3},       {64, 784, 256},
      {3, 17, 5, false},  {17, 3, 1000, false}, {0, 5, 3},        {5, 0, 3},           {17, 3, 5, true, true, false},
      {17, 3, 5, true, false, true},           {1000, 17, 3, true, true, true},        {17, 3, 5, true, false, false, true},
      {1000, 17, 1000, true, false, false, true}};
  return cases;
}

// |gpu - cpu| <= tol · max(1, max |cpu|): the low dtypes' roundoff, relative to the result's size.
void expect_match(const std::vector<double>& cpu, const std::vector<double>& gpu, double tol, const std::string& what) {
  ASSERT_EQ(cpu.size(), gpu.size()) << what;
  if (tol == 0) {
    EXPECT_EQ(cpu, gpu) << what;
    return;
  }
  double scale = 1;
  for (double v : cpu) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < cpu.size(); ++i)
    ASSERT_LE(std::fabs(cpu[i] - gpu[i]), tol * scale) << what << " at " << i << ": CPU " << cpu[i] << ", GPU " << gpu[i];
}

TEST(CudaGemmLt, LinearAndLinearReluMatchTheCpuForwardAndBackward) {
  const DType dtypes[] = {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16};
  // The CPU's results first: every case runs on the CPU even where no GPU is.
  std::vector<LinearResult> cpu_results;
  for (const DType dtype : dtypes)
    for (const LinearCase& c : linear_cases())
      for (const bool relu_after : {false, true}) cpu_results.push_back(run_linear(kCPU, dtype, c, relu_after));
  REQUIRE_GPU();
  size_t index = 0;
  for (const DType dtype : dtypes) {
    // float32 and float64: exact (integer sums); 16-bit: a GEMM library may round partial sums.
    const double tol = dtype_size(dtype) == 2 ? vgrad_test::low_precision_tolerance(dtype) : 0.0;
    for (const LinearCase& c : linear_cases())
      for (const bool relu_after : {false, true}) {
        const std::string what = std::string(relu_after ? "linear_relu " : "linear ") + dtype_name(dtype) + " " + c.str();
        const LinearResult& cpu = cpu_results[index++];
        const LinearResult gpu = run_linear(cuda_device(0), dtype, c, relu_after);
        expect_match(cpu.y, gpu.y, tol, what + ": y");
        expect_match(cpu.dx, gpu.dx, tol, what + ": dx");
        expect_match(cpu.dw, gpu.dw, tol, what + ": dW");
        expect_match(cpu.db, gpu.db, tol, what + ": db");
      }
  }
}

// Random float32 values (not exact sums): within the GEMM parity tests' tolerance.
TEST(CudaGemmLt, RandomFloat32ValuesMatchTheCpuWithinGemmTolerance) {
  REQUIRE_GPU();
  const Tensor x = vgrad_test::uniform_tensor({64, 784}, 7), w = vgrad_test::uniform_tensor({256, 784}, 8, -0.05, 0.05),
               b = vgrad_test::uniform_tensor({256}, 9, -0.5, 0.5), g = vgrad_test::uniform_tensor({64, 256}, 10);
  for (const bool relu_after : {false, true}) {
    std::vector<std::vector<double>> results[2];
    for (const Device device : {kCPU, cuda_device(0)}) {
      // Fresh leaves on each device: x.to(kCPU) is x itself, and marking it would make the GPU
      // pass's x.to(gpu) a recorded copy (no leaf, no grad) and add every pass's grads up.
      auto leaf = [&](const Tensor& t) { return t.detach().to(device).requires_grad_(); };
      const Tensor xd = leaf(x), wd = leaf(w), bd = leaf(b);
      const Tensor y = relu_after ? linear_relu(xd, wd, bd) : linear(xd, wd, bd);
      y.backward(g.to(device));
      results[device.is_cpu() ? 0 : 1] = {vals(y), vals(xd.grad()), vals(wd.grad()), vals(bd.grad())};
    }
    const char* names[] = {"y", "dx", "dW", "db"};
    for (int i = 0; i < 4; ++i)
      for (size_t j = 0; j < results[0][i].size(); ++j)
        ASSERT_NEAR(results[1][i][j], results[0][i][j], 1e-4 + 1e-4 * std::fabs(results[0][i][j]))
            << (relu_after ? "linear_relu " : "linear ") << names[i] << " at " << j;
  }
}

// NaN and ±Inf through linear_relu on the fused path: the GPU keeps the CPU's NaNs (relu(NaN)
// is NaN, as in PyTorch; cuBLASLt's RELU epilogues would give 0) and its values elsewhere.
TEST(CudaGemmLt, LinearReluKeepsNaNAndInfinityAsTheCpu) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  std::vector<double> xv = small_integers(8 * 16, 4);
  xv[3] = nan;       // row 0: every output NaN
  xv[16 + 5] = inf;  // row 1: ±Inf or NaN, by the weights' signs
  xv[2 * 16 + 7] = -inf;
  for (const DType dtype : {DType::Float32, DType::BFloat16, DType::Float16, DType::Float64}) {
    std::vector<double> results[2];
    for (const Device device : {kCPU, cuda_device(0)}) {
      if (device.is_cuda() && !cuda::is_available()) continue;
      const Tensor x = tensor(xv, {8, 16}, {.dtype = DType::Float64}).to(dtype).to(device);
      const Tensor w = tensor(small_integers(32 * 16, 5), {32, 16}, {.dtype = DType::Float64}).to(dtype).to(device);
      std::vector<double> bv(32);
      for (int64_t j = 0; j < 32; ++j) bv[j] = double(j % 7) - 3.5;
      const Tensor b = tensor(bv, {32}, {.dtype = DType::Float64}).to(dtype).to(device);
      const int64_t fused_before = device.is_cuda() ? cuda::fused_gemm_epilogue_count(0) : 0;
      results[device.is_cpu() ? 0 : 1] = vals(linear_relu(x, w, b));
      if (device.is_cuda() && dtype != DType::Float64) {
        EXPECT_EQ(cuda::fused_gemm_epilogue_count(0) - fused_before, 1) << dtype_name(dtype) << ": not the fused path";
      }
    }
    const std::vector<double>& cpu = results[0];
    ASSERT_TRUE(std::isnan(cpu[0]) && std::isnan(cpu[31])) << "the CPU's ReLU keeps NaN";
    REQUIRE_GPU();
    const std::vector<double>& gpu = results[1];
    ASSERT_EQ(gpu.size(), cpu.size());
    // Integer sums are exact; 16-bit keeps the other tests' allowance for a library's partial sums.
    const double tol = dtype_size(dtype) == 2 ? vgrad_test::low_precision_tolerance(dtype) : 0.0;
    for (size_t i = 0; i < cpu.size(); ++i) {
      const bool same = std::isnan(cpu[i])   ? std::isnan(gpu[i])
                        : std::isinf(cpu[i]) ? gpu[i] == cpu[i]
                                             : std::fabs(gpu[i] - cpu[i]) <= tol * std::max(1.0, std::fabs(cpu[i]));
      ASSERT_TRUE(same) << dtype_name(dtype) << " y[" << i / 32 << ", " << i % 32 << "]: CPU " << cpu[i] << ", GPU "
                        << gpu[i];
    }
  }
}

// The fused path ran where it should: one Lt call for linear's forward, one for linear_relu's,
// one for a backward that wants dW and db; none for float64 or a misaligned bias (composed).
TEST(CudaGemmLt, TheFusedPathRunsForFloat32And16BitButNotFloat64) {
  REQUIRE_GPU();
  const Device gpu = cuda_device(0);
  auto fused = [] { return cuda::fused_gemm_epilogue_count(0); };
  for (const DType dtype : {DType::Float32, DType::BFloat16, DType::Float16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const Tensor x = vgrad_test::uniform_tensor({64, 96}, 11).to(dtype).to(gpu);
    const Tensor w = vgrad_test::uniform_tensor({32, 96}, 12).to(dtype).to(gpu).requires_grad_();
    const Tensor b = vgrad_test::uniform_tensor({32}, 13).to(dtype).to(gpu).requires_grad_();
    int64_t before = fused();
    (void)linear(x, w, b);
    EXPECT_EQ(fused() - before, 1) << "linear's bias by the GEMM's epilogue";
    before = fused();
    const Tensor y = linear_relu(x, w, b);
    EXPECT_EQ(fused() - before, 1) << "linear_relu's bias by the GEMM's epilogue (its ReLU a kernel)";
    before = fused();
    y.sum().backward();
    EXPECT_EQ(fused() - before, 1) << "db from dW's GEMM (BGRADB)";
    before = fused();
    (void)linear(x, w);
    EXPECT_EQ(fused() - before, 0) << "no bias: the plain cuBLAS GEMM";
  }
  const Tensor x64 = vgrad_test::uniform_tensor({8, 16}, 14).to(DType::Float64).to(gpu);
  const Tensor w64 = vgrad_test::uniform_tensor({4, 16}, 15).to(DType::Float64).to(gpu);
  const Tensor b64 = vgrad_test::uniform_tensor({4}, 16).to(DType::Float64).to(gpu);
  int64_t before = fused();
  (void)linear_relu(x64, w64, b64);
  EXPECT_EQ(fused() - before, 0) << "float64 is composed";
  const Tensor wide = vgrad_test::uniform_tensor({5}, 17).to(gpu);  // bias one float past the block's start
  before = fused();
  const Tensor y = linear(vgrad_test::uniform_tensor({8, 16}, 18).to(gpu), vgrad_test::uniform_tensor({4, 16}, 19).to(gpu),
                          wide.narrow(0, 1, 4));
  EXPECT_EQ(fused() - before, 0) << "a bias 4 bytes off alignment is composed";
}

// TF32 on the Lt path: a large float32 product changes with it on, and comes back bit for bit
// once it is off again (the TF32 plan is not reused).
TEST(CudaGemmLt, HonoursTheTf32Switch) {
  REQUIRE_GPU();
  const Device gpu = cuda_device(0);
  const Tensor x = vgrad_test::uniform_tensor({256, 4096}, 20).to(gpu), w = vgrad_test::uniform_tensor({256, 4096}, 21).to(gpu),
               b = vgrad_test::uniform_tensor({256}, 22).to(gpu);
  const std::vector<double> off = vals(linear(x, w, b));
  cuda::set_tf32_matmul_enabled(true);
  const std::vector<double> on = vals(linear(x, w, b));
  cuda::set_tf32_matmul_enabled(false);
  EXPECT_NE(on, off) << "TF32 rounds the inputs to 10 mantissa bits";
  EXPECT_EQ(vals(linear(x, w, b)), off);
}

}  // namespace

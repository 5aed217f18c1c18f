// GEMM through OpenBLAS's cblas, with transposes as flags (never copies).
// Its own translation unit: <cblas.h> and xtensor-blas cannot share one.
#include <cblas.h>

#include "core/cpu/cpu_backend.h"
#include "core/error.h"

namespace vgrad::cpu {
namespace {

// OpenBLAS's threads cost more than they give on small products (measured on
// 2 cores: a 64x784x256 GEMM is faster on one thread). Below this many
// multiply-adds a GEMM runs single-threaded.
constexpr double kThreadedGemmMinFlops = 4.0e6;

void set_threads_for(double multiply_adds) {
  static const int max_threads = openblas_get_num_threads();
  static int current = max_threads;
  const int wanted = multiply_adds < kThreadedGemmMinFlops ? 1 : max_threads;
  if (wanted != current) {
    openblas_set_num_threads(wanted);
    current = wanted;
  }
}

}  // namespace

void blas_gemm(const GemmArgs& g) {
  if (g.m == 0 || g.n == 0) return;
  set_threads_for(double(g.m) * double(g.n) * double(g.k));
  const auto ta = g.trans_a ? CblasTrans : CblasNoTrans, tb = g.trans_b ? CblasTrans : CblasNoTrans;
  for (int64_t i = 0; i < g.batch; ++i) {
    if (g.dtype == DType::Float32) {
      cblas_sgemm(CblasRowMajor, ta, tb, int(g.m), int(g.n), int(g.k), float(g.alpha),
                  static_cast<const float*>(g.a) + i * g.stride_a, int(g.lda),
                  static_cast<const float*>(g.b) + i * g.stride_b, int(g.ldb), float(g.beta),
                  static_cast<float*>(g.c) + i * g.stride_c, int(g.ldc));
    } else if (g.dtype == DType::Float64) {
      cblas_dgemm(CblasRowMajor, ta, tb, int(g.m), int(g.n), int(g.k), g.alpha,
                  static_cast<const double*>(g.a) + i * g.stride_a, int(g.lda),
                  static_cast<const double*>(g.b) + i * g.stride_b, int(g.ldb), g.beta,
                  static_cast<double*>(g.c) + i * g.stride_c, int(g.ldc));
    } else {
      fail("matmul: {} tensors are not supported (use float32 or float64)", dtype_name(g.dtype));
    }
  }
}

}  // namespace vgrad::cpu

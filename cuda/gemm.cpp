// GEMM through cuBLAS. Row-major C = op(A)·op(B) is, read column-major,
// Cᵀ = op(B)ᵀ·op(A)ᵀ: cuBLAS gets B as its first operand and A as its second, with m
// and n swapped, and no data moves. Core already checked sizes and leading dims.
// Side by side with core/cpu/gemm.cpp.
#include "cuda/check.h"
#include "cuda/cuda_backend.h"

namespace vgrad::cuda {

void CudaBackend::gemm_impl(const GemmArgs& g) {
  activate();
  const int m = static_cast<int>(g.n);  // cuBLAS's view
  const int n = static_cast<int>(g.m);
  const int kk = static_cast<int>(g.k);
  const int lda = static_cast<int>(g.lda), ldb = static_cast<int>(g.ldb), ldc = static_cast<int>(g.ldc);
  const cublasOperation_t op_first = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  std::lock_guard lock(cublas_mutex_);
  if (g.dtype == DType::Float32) {
    const float alpha = static_cast<float>(g.alpha), beta = static_cast<float>(g.beta);
    const auto* a = static_cast<const float*>(g.a);
    const auto* b = static_cast<const float*>(g.b);
    auto* c = static_cast<float*>(g.c);
    if (g.batch == 1) {
      VGRAD_CUBLAS_CHECK(cublasSgemm(cublas_, op_first, op_second, m, n, kk, &alpha, b, ldb, a,
                                     lda, &beta, c, ldc));
    } else {
      VGRAD_CUBLAS_CHECK(cublasSgemmStridedBatched(cublas_, op_first, op_second, m, n, kk, &alpha, b,
                                                   ldb, g.stride_b, a, lda,
                                                   g.stride_a, &beta, c, ldc, g.stride_c,
                                                   static_cast<int>(g.batch)));
    }
  } else {
    const double alpha = g.alpha, beta = g.beta;
    const auto* a = static_cast<const double*>(g.a);
    const auto* b = static_cast<const double*>(g.b);
    auto* c = static_cast<double*>(g.c);
    if (g.batch == 1) {
      VGRAD_CUBLAS_CHECK(cublasDgemm(cublas_, op_first, op_second, m, n, kk, &alpha, b, ldb, a,
                                     lda, &beta, c, ldc));
    } else {
      VGRAD_CUBLAS_CHECK(cublasDgemmStridedBatched(cublas_, op_first, op_second, m, n, kk, &alpha, b,
                                                   ldb, g.stride_b, a, lda,
                                                   g.stride_a, &beta, c, ldc, g.stride_c,
                                                   static_cast<int>(g.batch)));
    }
  }
}

}  // namespace vgrad::cuda

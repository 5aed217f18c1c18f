// GEMM through cuBLAS. Row-major C = op(A)·op(B) is, read column-major,
// Cᵀ = op(B)ᵀ·op(A)ᵀ: cuBLAS gets B as its first operand and A as its second, with m
// and n swapped, and no data moves. Core already checked sizes and leading dims.
// bfloat16/float16 go through cublasGemmEx with float32 accumulation (CUBLAS_COMPUTE_32F), and
// so does float32 while TF32 is switched on (core/backend.h: cuda::set_tf32_matmul_enabled).
// Side by side with core/cpu/gemm.cpp.
#include "cuda/check.h"
#include "cuda/cuda_backend.h"
#include "cuda/libraries.h"

namespace vgrad::cuda {
namespace {

// The cuBLAS entry points of one element type.
template <class T> struct Gemm;
template <> struct Gemm<float> {
  static auto single() { return cublas().sgemm; }
  static auto batched() { return cublas().sgemm_strided_batched; }
};
template <> struct Gemm<double> {
  static auto single() { return cublas().dgemm; }
  static auto batched() { return cublas().dgemm_strided_batched; }
};

template <class T> void gemm_typed(cublasHandle_t handle, const GemmArgs& g) {
  const int m = static_cast<int>(g.n), n = static_cast<int>(g.m), k = static_cast<int>(g.k);  // cuBLAS's view
  const int lda = static_cast<int>(g.lda), ldb = static_cast<int>(g.ldb), ldc = static_cast<int>(g.ldc);
  const cublasOperation_t op_first = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const T alpha = static_cast<T>(g.alpha), beta = static_cast<T>(g.beta);
  const auto* a = static_cast<const T*>(g.a);
  const auto* b = static_cast<const T*>(g.b);
  auto* c = static_cast<T*>(g.c);
  if (g.batch == 1) {
    VGRAD_CUBLAS_CHECK(Gemm<T>::single()(handle, op_first, op_second, m, n, k, &alpha, b, ldb, a, lda, &beta, c, ldc));
  } else {
    VGRAD_CUBLAS_CHECK(Gemm<T>::batched()(handle, op_first, op_second, m, n, k, &alpha, b, ldb, g.stride_b, a, lda,
                                          g.stride_a, &beta, c, ldc, g.stride_c, static_cast<int>(g.batch)));
  }
}

// cublasGemmEx with float32 alpha/beta and accumulation: 16-bit storage (CUBLAS_COMPUTE_32F),
// or float32 with TF32 products (CUBLAS_COMPUTE_32F_FAST_TF32) when cuda::set_tf32_matmul_enabled
// asks for it.
void gemm_ex(cublasHandle_t handle, const GemmArgs& g, cudaDataType_t type, cublasComputeType_t compute) {
  const int m = static_cast<int>(g.n), n = static_cast<int>(g.m), k = static_cast<int>(g.k);  // cuBLAS's view
  const int lda = static_cast<int>(g.lda), ldb = static_cast<int>(g.ldb), ldc = static_cast<int>(g.ldc);
  const cublasOperation_t op_first = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const float alpha = static_cast<float>(g.alpha), beta = static_cast<float>(g.beta);
  if (g.batch == 1) {
    VGRAD_CUBLAS_CHECK(cublas().gemm_ex(handle, op_first, op_second, m, n, k, &alpha, g.b, type, ldb, g.a, type, lda,
                                        &beta, g.c, type, ldc, compute, CUBLAS_GEMM_DEFAULT));
  } else {
    VGRAD_CUBLAS_CHECK(cublas().gemm_strided_batched_ex(
        handle, op_first, op_second, m, n, k, &alpha, g.b, type, ldb, g.stride_b, g.a, type, lda, g.stride_a, &beta,
        g.c, type, ldc, g.stride_c, static_cast<int>(g.batch), compute, CUBLAS_GEMM_DEFAULT));
  }
}

}  // namespace

void CudaBackend::gemm_impl(const GemmArgs& g) {
  activate();
  std::lock_guard lock(cublas_mutex_);
  if (g.dtype == DType::Float32 && tf32_matmul_enabled())
    gemm_ex(cublas_, g, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32);
  else if (g.dtype == DType::Float32)
    gemm_typed<float>(cublas_, g);
  else if (g.dtype == DType::Float64)
    gemm_typed<double>(cublas_, g);
  else
    gemm_ex(cublas_, g, g.dtype == DType::BFloat16 ? CUDA_R_16BF : CUDA_R_16F, CUBLAS_COMPUTE_32F);
}

}  // namespace vgrad::cuda

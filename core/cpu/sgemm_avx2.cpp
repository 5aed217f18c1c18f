// The float32 GEMM kernels for AVX2 + FMA (8 lanes): packed tile 6 x 16 (12 of the 16
// ymm registers accumulate). Compiled with -mavx2 -mfma (CMakeLists.txt)
// and called only when the CPU has them (isa.cpp); see sgemm_kernels.h for the rules of this file.
#include "core/cpu/sgemm.h"

#if defined(__x86_64__)
#include <immintrin.h>

#include "core/cpu/avx_transpose.h"

namespace vgrad::cpu {
namespace {

struct Simd : AvxTranspose {
  using V = __m256;
  static constexpr int kLanes = 8;
  static __m256i first(int n) {
    alignas(32) static const int32_t mask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mask + 8 - n));
  }
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load_partial(const float* p, int n) { return _mm256_maskload_ps(p, first(n)); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void store_partial(float* p, V v, int n) { _mm256_maskstore_ps(p, first(n), v); }
  static V broadcast(float x) { return _mm256_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
};

}  // namespace
}  // namespace vgrad::cpu

#include "core/cpu/sgemm_kernels.h"

namespace vgrad::cpu {
const SgemmKernels* sgemm_kernels_avx2() {
  static constexpr SgemmKernels kernels = make_kernels<Simd, 6, 2, 256>(Isa::Avx2);
  return &kernels;
}
}  // namespace vgrad::cpu

#else
namespace vgrad::cpu {
const SgemmKernels* sgemm_kernels_avx2() { return nullptr; }
}  // namespace vgrad::cpu
#endif

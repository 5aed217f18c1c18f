// The float32 GEMM kernels for AVX-512F (16 lanes): packed tile 8 x 32 (16 accumulators).
// Compiled with -mavx512f -mfma (CMakeLists.txt) and called only when
// the CPU has them (isa.cpp); see sgemm_kernels.h for the rules of this file.
#include "core/cpu/sgemm.h"

#if defined(__x86_64__)
#include <immintrin.h>

#include "core/cpu/avx_transpose.h"

namespace vgrad::cpu {
namespace {

struct Simd : AvxTranspose {
  using V = __m512;
  static constexpr int kLanes = 16;
  static __mmask16 first(int n) { return __mmask16((1u << n) - 1u); }
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load_partial(const float* p, int n) { return _mm512_maskz_loadu_ps(first(n), p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void store_partial(float* p, V v, int n) { _mm512_mask_storeu_ps(p, first(n), v); }
  static V broadcast(float x) { return _mm512_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
};

}  // namespace
}  // namespace vgrad::cpu

#include "core/cpu/sgemm_kernels.h"

namespace vgrad::cpu {
const SgemmKernels* sgemm_kernels_avx512() {
  // kc 1024: the MLP's k (784 at most) in one block, so each C tile is stored once. The
  // panels then stream from L2 (~20 B a cycle at 2 FMAs a cycle, well within it): on the
  // Zen 5, 1 thread, fwd1 64x256x784 115 -> 113 us, fwd2 64x128x256 18.9 -> 18.3, the
  // k = 64 and 128 shapes unchanged, against kc 128 (16 KiB B panels, L1-resident).
  // n <= 16 (the 10-class layer's forward): a 16 x 16 tile, one vector a row.
  static constexpr SgemmKernels narrow = make_kernels<Simd, 16, 1, 1024>(Isa::Avx512);
  static constexpr SgemmKernels kernels = make_kernels<Simd, 8, 2, 1024>(Isa::Avx512, &narrow);
  return &kernels;
}
}  // namespace vgrad::cpu

#else
namespace vgrad::cpu {
const SgemmKernels* sgemm_kernels_avx512() { return nullptr; }
}  // namespace vgrad::cpu
#endif

// The float32 GEMM kernels for any CPU: 4-lane GCC vector types (SSE2 on baseline
// x86-64, NEON elsewhere), packed tile 4 x 8; no FMA, so a·b + c rounds
// twice (the other paths fuse it). The fallback when the CPU has neither AVX2 nor AVX-512.
#include "core/cpu/sgemm.h"

namespace vgrad::cpu {
namespace {

struct Simd {
  typedef float V __attribute__((vector_size(16)));
  static constexpr int kLanes = 4;
  static V zero() { return V{0.0f, 0.0f, 0.0f, 0.0f}; }
  static V load(const float* p) {
    V v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
  }
  static V load_partial(const float* p, int n) {
    V v = zero();
    for (int i = 0; i < n; ++i) v[i] = p[i];
    return v;
  }
  static void store(float* p, V v) { __builtin_memcpy(p, &v, sizeof v); }
  static void store_partial(float* p, V v, int n) {
    for (int i = 0; i < n; ++i) p[i] = v[i];
  }
  static V broadcast(float x) { return V{x, x, x, x}; }
  static V fma(V a, V b, V c) { return a * b + c; }
  static V mul(V a, V b) { return a * b; }
  static constexpr int kBlock = 4;
  static void transpose_block(const float* src, int64_t ld_src, float* dst, int64_t ld_dst) {
    for (int i = 0; i < kBlock; ++i)
      for (int j = 0; j < kBlock; ++j) dst[j * ld_dst + i] = src[i * ld_src + j];
  }
};

}  // namespace
}  // namespace vgrad::cpu

#include "core/cpu/sgemm_kernels.h"

namespace vgrad::cpu {
const SgemmKernels& sgemm_kernels_generic() {
  static constexpr SgemmKernels kernels = make_kernels<Simd, 4, 2, 256>(Isa::Generic);
  return kernels;
}
}  // namespace vgrad::cpu

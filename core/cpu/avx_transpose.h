// The 8 x 8 float transpose of AVX (unpack, shuffle, swap 128-bit halves), shared by the
// AVX2 and AVX-512 GEMM kernels' packing. Include only from files compiled with -mavx2
// (sgemm_avx2.cpp, sgemm_avx512.cpp), after <immintrin.h>; anonymous namespace for the
// reason sgemm_kernels.h gives.
#pragma once
#include <cstdint>

namespace vgrad::cpu {
namespace {

// The packing transpose of sgemm_kernels.h's Simd, for the ISAs with 256-bit registers or wider.
struct AvxTranspose {
  static constexpr int kBlock = 8;
  __attribute__((always_inline)) static void transpose_block(const float* src, int64_t ld_src, float* dst,
                                                             int64_t ld_dst);
};

__attribute__((always_inline)) inline void AvxTranspose::transpose_block(const float* src, int64_t ld_src, float* dst,
                                                                         int64_t ld_dst) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ld_src);
  for (int i = 0; i < 8; i += 2) t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]), t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ld_dst, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ld_dst, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

}  // namespace
}  // namespace vgrad::cpu

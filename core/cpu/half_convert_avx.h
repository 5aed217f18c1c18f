// The AVX2-level pieces the F16C and AVX-512 half conversions share (half_convert.h).
// Included only by half_convert_{avx2,avx512}.cpp, compiled for those ISAs: everything
// stays in an anonymous namespace (see sgemm_kernels.h for why).
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace vgrad::cpu {
namespace {

constexpr int kF16cRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

// F16C keeps a NaN's top payload bits; half.h gives the one quiet NaN 0x7e00 (sign kept).
inline __m256i canonical_float16_nans(__m256i h) {
  const __m256i magnitude = _mm256_and_si256(h, _mm256_set1_epi16(0x7fff));
  const __m256i nan = _mm256_cmpgt_epi16(magnitude, _mm256_set1_epi16(0x7c00));
  const __m256i quiet = _mm256_or_si256(_mm256_and_si256(h, _mm256_set1_epi16(int16_t(0x8000))), _mm256_set1_epi16(0x7e00));
  return _mm256_blendv_epi8(h, quiet, nan);
}

// F16C quiets a signalling float16 NaN as it widens; half.h keeps the quiet bit clear.
// h32: the 8 float16 values zero-extended to 32 bits.
inline __m256 keep_float16_signalling_nans(__m256i h32, __m256 f) {
  const __m256i magnitude = _mm256_and_si256(h32, _mm256_set1_epi32(0x7fff));
  const __m256i signalling = _mm256_and_si256(_mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7c00)),
                                              _mm256_cmpgt_epi32(_mm256_set1_epi32(0x7e00), magnitude));
  const __m256i quiet_bit = _mm256_and_si256(signalling, _mm256_set1_epi32(0x00400000));
  return _mm256_castsi256_ps(_mm256_andnot_si256(quiet_bit, _mm256_castps_si256(f)));
}

}  // namespace
}  // namespace vgrad::cpu

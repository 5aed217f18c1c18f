// The bulk half conversions for AVX2 + F16C, 16 elements a step (half_convert.h).
// Compiled with -mavx2 -mf16c (CMakeLists.txt) and called only when the CPU has them.
#include "core/cpu/half_convert.h"

#if defined(__x86_64__)
#include "core/cpu/half_convert_avx.h"

namespace vgrad::cpu {
namespace {

int64_t float16_from_float_avx2(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i lo = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), kF16cRound);
    const __m128i hi = _mm256_cvtps_ph(_mm256_loadu_ps(src + i + 8), kF16cRound);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), canonical_float16_nans(_mm256_set_m128i(hi, lo)));
  }
  return i;
}

int64_t float16_to_float_avx2(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, keep_float16_signalling_nans(_mm256_cvtepu16_epi32(h), _mm256_cvtph_ps(h)));
  }
  return i;
}

// bfloat16_from_float of half.h on 8 lanes, each result in its lane's low 16 bits.
__m256i bfloat16_bits(__m256i u) {
  const __m256i high = _mm256_srli_epi32(u, 16);
  const __m256i odd = _mm256_and_si256(high, _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd)), 16);
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
  return _mm256_blendv_epi8(rounded, _mm256_or_si256(high, _mm256_set1_epi32(0x40)), nan);
}

int64_t bfloat16_from_float_avx2(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i lo = bfloat16_bits(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    const __m256i hi = bfloat16_bits(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 8)));
    // packus works within 128-bit lanes: lo0-3 hi0-3 lo4-7 hi4-7, reordered to lo hi.
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xd8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), packed);
  }
  return i;
}

int64_t bfloat16_to_float_avx2(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_slli_epi32(h, 16));
  }
  return i;
}

constexpr HalfConverters kAvx2 = {Isa::Avx2, float16_from_float_avx2, float16_to_float_avx2, bfloat16_from_float_avx2,
                                  bfloat16_to_float_avx2};

}  // namespace

const HalfConverters* half_converters_avx2() { return &kAvx2; }

}  // namespace vgrad::cpu
#else
namespace vgrad::cpu {
const HalfConverters* half_converters_avx2() { return nullptr; }
}  // namespace vgrad::cpu
#endif

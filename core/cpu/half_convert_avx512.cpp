// The bulk half conversions for AVX-512F (+ F16C), 16 elements a step (half_convert.h).
// Compiled with -mavx512f (CMakeLists.txt) and called only when the CPU has it.
#include "core/cpu/half_convert.h"

#if defined(__x86_64__)
#include "core/cpu/half_convert_avx.h"

namespace vgrad::cpu {
namespace {

int64_t float16_from_float_avx512(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(src + i), kF16cRound);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), canonical_float16_nans(h));
  }
  return i;
}

int64_t float16_to_float_avx512(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    const __m512i magnitude = _mm512_and_si512(_mm512_cvtepu16_epi32(h), _mm512_set1_epi32(0x7fff));
    // F16C quiets a signalling NaN as it widens; half.h keeps the quiet bit clear.
    const __mmask16 signalling = _mm512_cmpgt_epi32_mask(magnitude, _mm512_set1_epi32(0x7c00)) &
                                 _mm512_cmplt_epi32_mask(magnitude, _mm512_set1_epi32(0x7e00));
    const __m512i bits = _mm512_castps_si512(_mm512_cvtph_ps(h));
    const __m512i kept = _mm512_mask_and_epi32(bits, signalling, bits, _mm512_set1_epi32(~0x00400000));
    _mm512_storeu_si512(dst + i, kept);
  }
  return i;
}

int64_t bfloat16_from_float_avx512(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i u = _mm512_loadu_si512(src + i);
    const __m512i high = _mm512_srli_epi32(u, 16);
    const __m512i odd = _mm512_and_si512(high, _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd)), 16);
    const __mmask16 nan =
        _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    const __m512i bits = _mm512_mask_blend_epi32(nan, rounded, _mm512_or_si512(high, _mm512_set1_epi32(0x40)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm512_cvtepi32_epi16(bits));
  }
  return i;
}

int64_t bfloat16_to_float_avx512(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    _mm512_storeu_si512(dst + i, _mm512_slli_epi32(h, 16));
  }
  return i;
}

constexpr HalfConverters kAvx512 = {Isa::Avx512, float16_from_float_avx512, float16_to_float_avx512,
                                    bfloat16_from_float_avx512, bfloat16_to_float_avx512};

}  // namespace

const HalfConverters* half_converters_avx512() { return &kAvx512; }

}  // namespace vgrad::cpu
#else
namespace vgrad::cpu {
const HalfConverters* half_converters_avx512() { return nullptr; }
}  // namespace vgrad::cpu
#endif

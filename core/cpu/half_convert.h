// Bulk float32 <-> float16 / bfloat16 conversion for the CPU backend's casts, chosen at
// run time as the GEMM is (isa.h): F16C on AVX2 machines, AVX-512 where present, and
// core/half.h's scalar code otherwise. Every path gives the scalar code's bits for every
// input (ties to even, subnormals, overflow to Inf, NaN payloads): the vector kernels fix
// up the two places where the hardware differs (it keeps a float16 NaN's payload and
// quiets signalling NaNs on widening; half.h drops and keeps them). bfloat16 rounds with
// integer vector ops, not AVX512-BF16's vcvtneps2bf16, which flushes subnormals to zero.
#pragma once
#include <cstdint>

#include "core/cpu/isa.h"

namespace vgrad::cpu {

// Each converts src[0, n) into dst[0, n) (no overlap) with the kernels of active_isa().
void float16_from_float(const float* src, uint16_t* dst, int64_t n);
void float16_to_float(const uint16_t* src, float* dst, int64_t n);
void bfloat16_from_float(const float* src, uint16_t* dst, int64_t n);
void bfloat16_to_float(const uint16_t* src, float* dst, int64_t n);

// One ISA's kernels. The vector ones convert the leading whole vectors and return how
// many elements they did; the caller converts the rest with the scalar code (the ISA
// files must not call inline functions the rest of the library shares: see
// sgemm_kernels.h).
struct HalfConverters {
  Isa isa;
  int64_t (*float16_from_float)(const float* src, uint16_t* dst, int64_t n);
  int64_t (*float16_to_float)(const uint16_t* src, float* dst, int64_t n);
  int64_t (*bfloat16_from_float)(const float* src, uint16_t* dst, int64_t n);
  int64_t (*bfloat16_to_float)(const uint16_t* src, float* dst, int64_t n);
};
// The kernels of `isa` (tests force each); an ISA the CPU lacks is an error naming it.
const HalfConverters& half_converters(Isa isa);
// Each converts all n elements with the given kernels (tail included).
void float16_from_float(const HalfConverters& k, const float* src, uint16_t* dst, int64_t n);
void float16_to_float(const HalfConverters& k, const uint16_t* src, float* dst, int64_t n);
void bfloat16_from_float(const HalfConverters& k, const float* src, uint16_t* dst, int64_t n);
void bfloat16_to_float(const HalfConverters& k, const uint16_t* src, float* dst, int64_t n);

// Defined in half_convert_{avx2,avx512}.cpp; nullptr where the build has no such kernels.
const HalfConverters* half_converters_avx2();
const HalfConverters* half_converters_avx512();

}  // namespace vgrad::cpu

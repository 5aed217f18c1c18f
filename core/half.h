// The 16-bit floating storage types, bfloat16 and IEEE float16: two bytes each, with
// round-to-nearest-even conversion from float32 and exact widening back. Kernels never
// do 16-bit arithmetic: they load, compute in float32 (compute_t<T>) and store.
// C++17 and host/device-clean; under nvcc the device side uses CUDA's own conversions.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define VGRAD_HALF_HOST_DEVICE __host__ __device__
#else
#define VGRAD_HALF_HOST_DEVICE
#endif
// The CPU's own float16 conversions where compiled for them (-march=native on F16C
// CPUs): the portable bit code below costs float16 kernels ~30% of GEMM time. Both give
// the same bits (tests/core/test_half.cpp compares them: its TUs build without F16C).
#if defined(__F16C__) && !defined(__CUDACC__)
#include <immintrin.h>
#define VGRAD_HALF_F16C 1
#endif

namespace vgrad {
namespace half_bits {

// The same bits as another type of the same size (std::bit_cast is C++20; this header is
// C++17). memcpy compiles to a register move, on the device too.
template <class To, class From> VGRAD_HALF_HOST_DEVICE inline To bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast: the two types differ in size");
  To to;
  std::memcpy(&to, &from, sizeof to);
  return to;
}
VGRAD_HALF_HOST_DEVICE inline uint32_t float_bits(float f) { return bit_cast<uint32_t>(f); }
VGRAD_HALF_HOST_DEVICE inline float bits_float(uint32_t u) { return bit_cast<float>(u); }

// bfloat16 is float32's top half: round the dropped 16 bits to nearest, ties to even.
// NOTE: NaN must be caught first: the rounding carry could turn a NaN payload into Inf.
VGRAD_HALF_HOST_DEVICE inline uint16_t bfloat16_from_float(float f) {
#if defined(__CUDA_ARCH__)
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
#else
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);  // quiet NaN, sign kept
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
#endif
}
VGRAD_HALF_HOST_DEVICE inline float bfloat16_to_float(uint16_t b) { return bits_float(uint32_t(b) << 16); }

// IEEE binary16: 5 exponent bits (bias 15), 10 mantissa bits; max 65504, subnormals
// below 2^-14. Rounds to nearest even; overflow gives Inf, NaN stays (quiet) NaN.
VGRAD_HALF_HOST_DEVICE inline uint16_t float16_from_float(float f) {
#if defined(__CUDA_ARCH__)
  return __half_as_ushort(__float2half_rn(f));
#elif defined(VGRAD_HALF_F16C)
  return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
#else
  uint32_t x = float_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  uint16_t h;
  if (x >= 0x47800000u) {  // |f| >= 2^16, Inf or NaN: beyond every finite half after rounding
    h = x > 0x7f800000u ? 0x7e00u : 0x7c00u;
  } else if (x < 0x38800000u) {  // below 2^-14: subnormal or zero. Adding 0.5 lets the FPU
    // round the mantissa at the 2^-24 position (nearest even), then the 0.5 is removed.
    const uint32_t magic = 126u << 23;
    h = uint16_t(float_bits(bits_float(x) + bits_float(magic)) - magic);
  } else {  // normal: rebias the exponent and round the 13 dropped bits (a carry may give Inf)
    const uint32_t odd = (x >> 13) & 1u;
    x += (uint32_t(15 - 127) << 23) + 0xfffu + odd;
    h = uint16_t(x >> 13);
  }
  return uint16_t(h | sign);
#endif
}
VGRAD_HALF_HOST_DEVICE inline float float16_to_float(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#elif defined(VGRAD_HALF_F16C)
  return _cvtsh_ss(h);
#else
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return bits_float(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) return bits_float(sign | float_bits(float(mantissa) * 5.9604644775390625e-8f));  // m * 2^-24
  return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
#endif
}

}  // namespace half_bits

// A 16-bit float held as its bits, implicitly to and from float (as c10::BFloat16), so
// the float functors of core/scalar_ops.h apply to loaded values and their results store
// back rounded. The format picks the conversions; the branch folds at compile time.
enum class HalfFormat { BFloat16, Float16 };

template <HalfFormat Format> struct HalfFloat {
  uint16_t bits = 0;
  HalfFloat() = default;
  VGRAD_HALF_HOST_DEVICE HalfFloat(float f)
      : bits(Format == HalfFormat::BFloat16 ? half_bits::bfloat16_from_float(f) : half_bits::float16_from_float(f)) {}
  VGRAD_HALF_HOST_DEVICE operator float() const {
    return Format == HalfFormat::BFloat16 ? half_bits::bfloat16_to_float(bits) : half_bits::float16_to_float(bits);
  }
  static constexpr HalfFloat from_bits(uint16_t b) {
    HalfFloat v;
    v.bits = b;
    return v;
  }
};
using BFloat16 = HalfFloat<HalfFormat::BFloat16>;
using Float16 = HalfFloat<HalfFormat::Float16>;

// The type a kernel computes in for storage type T: float for the 16-bit types.
template <class T> struct ComputeType { using type = T; };
template <HalfFormat Format> struct ComputeType<HalfFloat<Format>> { using type = float; };
template <class T> using compute_t = typename ComputeType<T>::type;

}  // namespace vgrad

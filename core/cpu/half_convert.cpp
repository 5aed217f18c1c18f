// Run-time choice of the bulk half conversions (half_convert.h) and the scalar path.
#include "core/cpu/half_convert.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "core/error.h"
#include "core/half.h"

namespace vgrad::cpu {

namespace {

// The vector kernels of the generic path: none, the scalar tail does everything.
int64_t none(const float*, uint16_t*, int64_t) { return 0; }
int64_t none(const uint16_t*, float*, int64_t) { return 0; }
constexpr HalfConverters kGeneric = {Isa::Generic, none, none, none, none};

// The AVX2 kernels use F16C too, which isa.h's avx2 does not promise (every AVX2 CPU
// has it in practice).
bool cpu_has_f16c() {
#if defined(__x86_64__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
#else
  return false;
#endif
}

}  // namespace

const HalfConverters& half_converters(Isa isa) {
  if (!cpu_supports(isa) || (isa != Isa::Generic && !cpu_has_f16c()))
    fail("half conversion: this CPU lacks {} and f16c for the {} kernels", isa_requirement(isa), isa_name(isa));
  const HalfConverters* kernels = isa == Isa::Avx512 ? half_converters_avx512()
                                  : isa == Isa::Avx2 ? half_converters_avx2()
                                                     : &kGeneric;
  if (kernels == nullptr) fail("half conversion: this build has no {} kernels", isa_name(isa));
  return *kernels;
}

void float16_from_float(const HalfConverters& k, const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = k.float16_from_float(src, dst, n); i < n; ++i) dst[i] = half_bits::float16_from_float(src[i]);
}
void float16_to_float(const HalfConverters& k, const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = k.float16_to_float(src, dst, n); i < n; ++i) dst[i] = half_bits::float16_to_float(src[i]);
}
void bfloat16_from_float(const HalfConverters& k, const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = k.bfloat16_from_float(src, dst, n); i < n; ++i) dst[i] = half_bits::bfloat16_from_float(src[i]);
}
void bfloat16_to_float(const HalfConverters& k, const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = k.bfloat16_to_float(src, dst, n); i < n; ++i) dst[i] = half_bits::bfloat16_to_float(src[i]);
}

namespace {
// The machine's kernels, looked up once (active_isa() reads VGRAD_CPU_ISA once too); the
// scalar ones on a CPU with AVX2 but without F16C.
const HalfConverters& active() {
  static const HalfConverters& kernels = half_converters(cpu_has_f16c() ? active_isa() : Isa::Generic);
  return kernels;
}
}  // namespace

void float16_from_float(const float* src, uint16_t* dst, int64_t n) { float16_from_float(active(), src, dst, n); }
void float16_to_float(const uint16_t* src, float* dst, int64_t n) { float16_to_float(active(), src, dst, n); }
void bfloat16_from_float(const float* src, uint16_t* dst, int64_t n) { bfloat16_from_float(active(), src, dst, n); }
void bfloat16_to_float(const uint16_t* src, float* dst, int64_t n) { bfloat16_to_float(active(), src, dst, n); }

}  // namespace vgrad::cpu

// Run-time ISA choice for the hand-written kernels (isa.h).
#include "core/cpu/isa.h"

#include <cstdlib>

#include "core/error.h"

namespace vgrad::cpu {

namespace {

struct IsaInfo {
  Isa isa;
  std::string_view name, requirement;
};
constexpr IsaInfo kIsas[] = {
    {Isa::Generic, "generic", "none"}, {Isa::Avx2, "avx2", "avx2 and fma"}, {Isa::Avx512, "avx512", "avx512f and fma"}};

const IsaInfo& info(Isa isa) {
  for (const IsaInfo& entry : kIsas)
    if (entry.isa == isa) return entry;
  fail("cpu isa: unknown value {}", int(isa));
}

}  // namespace

std::string_view isa_name(Isa isa) { return info(isa).name; }
std::string_view isa_requirement(Isa isa) { return info(isa).requirement; }

bool cpu_supports(Isa isa) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  // libgcc's checks include the OS's XSAVE support for the ymm/zmm state.
  const bool fma = __builtin_cpu_supports("fma");
  switch (isa) {
    case Isa::Generic: return true;
    case Isa::Avx2: return fma && __builtin_cpu_supports("avx2");
    case Isa::Avx512: return fma && __builtin_cpu_supports("avx512f");
  }
  return false;
#else
  return isa == Isa::Generic;
#endif
}

Isa detected_isa() {
  for (Isa isa : {Isa::Avx512, Isa::Avx2})
    if (cpu_supports(isa)) return isa;
  return Isa::Generic;
}

Isa parse_isa(std::string_view name) {
  for (const IsaInfo& entry : kIsas)
    if (name == entry.name) return entry.isa;
  fail("VGRAD_CPU_ISA: unknown instruction set '{}' (expected generic, avx2 or avx512)", name);
}

Isa active_isa() {
  static const Isa isa = [] {
    const char* forced = std::getenv("VGRAD_CPU_ISA");
    if (forced == nullptr || *forced == '\0') return detected_isa();
    const Isa wanted = parse_isa(forced);
    if (!cpu_supports(wanted))
      fail("VGRAD_CPU_ISA={}: this CPU lacks {} (it supports up to {})", forced, isa_requirement(wanted),
           isa_name(detected_isa()));
    return wanted;
  }();
  return isa;
}

}  // namespace vgrad::cpu

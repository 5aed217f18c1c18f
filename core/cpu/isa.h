// Which x86 vector instruction set the hand-written CPU kernels run with, chosen at run
// time from the CPU's features (the library itself is built for baseline x86-64), and the
// VGRAD_CPU_ISA override (generic | avx2 | avx512) for tests and benchmarks.
// Not a general feature-detection API: only what the kernels in core/cpu need.
#pragma once
#include <string_view>

namespace vgrad::cpu {

enum class Isa { Generic, Avx2, Avx512 };  // Avx2 means AVX2 + FMA; Avx512 means AVX-512F + FMA

std::string_view isa_name(Isa isa);
// The CPU feature an ISA needs, as a user would look for it in /proc/cpuinfo ("avx512f").
std::string_view isa_requirement(Isa isa);
bool cpu_supports(Isa isa);
// The best ISA this CPU and build support.
Isa detected_isa();
// detected_isa(), unless VGRAD_CPU_ISA names another one (read once); an unknown name or
// one the CPU lacks is an error that says so.
Isa active_isa();
// "generic"/"avx2"/"avx512" -> Isa; anything else fails naming the variable and the value.
Isa parse_isa(std::string_view name);

}  // namespace vgrad::cpu

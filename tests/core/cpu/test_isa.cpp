// The run-time ISA choice (core/cpu/isa.h): names, the VGRAD_CPU_ISA parser, detection.
#include "core/cpu/isa.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "support.h"

namespace vgrad::cpu {
namespace {

TEST(Isa, NamesRoundTripAndUnknownNamesAreErrors) {
  for (Isa isa : {Isa::Generic, Isa::Avx2, Isa::Avx512}) EXPECT_EQ(isa, parse_isa(isa_name(isa)));
  EXPECT_ERROR(parse_isa("avx1024"), "VGRAD_CPU_ISA", "unknown instruction set 'avx1024'", "generic, avx2 or avx512");
  EXPECT_ERROR(parse_isa("AVX2"), "unknown instruction set 'AVX2'");
}

TEST(Isa, DetectedIsTheBestSupportedAndGenericAlwaysWorks) {
  EXPECT_TRUE(cpu_supports(Isa::Generic));
  const Isa best = detected_isa();
  EXPECT_TRUE(cpu_supports(best));
  if (cpu_supports(Isa::Avx512)) EXPECT_EQ(Isa::Avx512, best);
  else if (cpu_supports(Isa::Avx2)) EXPECT_EQ(Isa::Avx2, best);
  else EXPECT_EQ(Isa::Generic, best);
#if defined(__x86_64__)
  EXPECT_EQ(bool(__builtin_cpu_supports("avx512f")) && bool(__builtin_cpu_supports("fma")), cpu_supports(Isa::Avx512));
#endif
}

// The suite runs again under VGRAD_CPU_ISA=generic (tests/CMakeLists.txt): the setting
// must reach the kernels, and without it the best ISA is used.
TEST(Isa, ActiveFollowsTheEnvironment) {
  const char* forced = std::getenv("VGRAD_CPU_ISA");
  EXPECT_EQ(forced != nullptr && *forced != '\0' ? parse_isa(forced) : detected_isa(), active_isa());
}

}  // namespace
}  // namespace vgrad::cpu

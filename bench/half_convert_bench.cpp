// Google Benchmark of the bulk float32 <-> float16/bfloat16 conversions
// (core/cpu/half_convert.h), each ISA path forced in turn on 1M elements (4 MiB of
// float32: beyond L2, as a training cast's operands are). Names are
// DIRECTION/FORMAT/ISA; bytes/s counts the source read and the destination written.
// The generic path is the scalar code of core/half.h that the casts used before.
//
//   ./build-cpu/bench/half_convert_bench --benchmark_min_time=0.2 --benchmark_repetitions=3
//       --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/cpu/half_convert.h"
#include "core/half.h"

using namespace vgrad;
using namespace vgrad::cpu;

namespace {

constexpr int64_t kElements = int64_t(1) << 20;

using Narrow = void (*)(const HalfConverters&, const float*, uint16_t*, int64_t);
using Widen = void (*)(const HalfConverters&, const uint16_t*, float*, int64_t);

void narrow(benchmark::State& st, Isa isa, Narrow convert) {
  const HalfConverters& kernels = half_converters(isa);
  std::vector<float> src(kElements);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& x : src) x = normal(rng);
  std::vector<uint16_t> dst(kElements);
  for (auto _ : st) {
    convert(kernels, src.data(), dst.data(), kElements);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(st.iterations() * kElements);
  st.SetBytesProcessed(st.iterations() * kElements * int64_t(sizeof(float) + sizeof(uint16_t)));
}

void widen(benchmark::State& st, Isa isa, Widen convert) {
  const HalfConverters& kernels = half_converters(isa);
  std::vector<uint16_t> src(kElements);
  std::mt19937 rng(1);
  for (uint16_t& h : src) h = uint16_t(rng() & 0xbfffu);  // finite values of both formats, either sign
  std::vector<float> dst(kElements);
  for (auto _ : st) {
    convert(kernels, src.data(), dst.data(), kElements);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(st.iterations() * kElements);
  st.SetBytesProcessed(st.iterations() * kElements * int64_t(sizeof(float) + sizeof(uint16_t)));
}

void register_all() {
  for (Isa isa : {Isa::Generic, Isa::Avx2, Isa::Avx512}) {
    if (!cpu_supports(isa)) continue;
    const std::string name(isa_name(isa));
    benchmark::RegisterBenchmark(("narrow/float16/" + name).c_str(), narrow, isa, Narrow(float16_from_float));
    benchmark::RegisterBenchmark(("widen/float16/" + name).c_str(), widen, isa, Widen(float16_to_float));
    benchmark::RegisterBenchmark(("narrow/bfloat16/" + name).c_str(), narrow, isa, Narrow(bfloat16_from_float));
    benchmark::RegisterBenchmark(("widen/bfloat16/" + name).c_str(), widen, isa, Widen(bfloat16_to_float));
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

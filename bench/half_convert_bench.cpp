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

template <class From, class To>
using Convert = void (*)(const HalfConverters&, const From*, To*, int64_t);

template <class From, class To>
void convert(benchmark::State& st, Isa isa, Convert<From, To> convert_all, const std::vector<From>& src) {
  const HalfConverters& kernels = half_converters(isa);
  std::vector<To> dst(src.size());
  for (auto _ : st) {
    convert_all(kernels, src.data(), dst.data(), int64_t(src.size()));
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(st.iterations() * int64_t(src.size()));
  st.SetBytesProcessed(st.iterations() * int64_t(src.size() * (sizeof(From) + sizeof(To))));
}

// Normal floats, and 16-bit patterns that are finite in both formats, either sign.
std::vector<float> float_inputs() {
  std::vector<float> src(kElements);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& x : src) x = normal(rng);
  return src;
}
std::vector<uint16_t> half_inputs() {
  std::vector<uint16_t> src(kElements);
  std::mt19937 rng(1);
  for (uint16_t& h : src) h = uint16_t(rng() & 0xbfffu);
  return src;
}

void register_all() {
  static const std::vector<float> floats = float_inputs();
  static const std::vector<uint16_t> halves = half_inputs();
  for (Isa isa : {Isa::Generic, Isa::Avx2, Isa::Avx512}) {
    if (!cpu_supports(isa)) continue;
    const std::string name(isa_name(isa));
    benchmark::RegisterBenchmark(("narrow/float16/" + name).c_str(), convert<float, uint16_t>, isa,
                                 Convert<float, uint16_t>(float16_from_float), floats);
    benchmark::RegisterBenchmark(("widen/float16/" + name).c_str(), convert<uint16_t, float>, isa,
                                 Convert<uint16_t, float>(float16_to_float), halves);
    benchmark::RegisterBenchmark(("narrow/bfloat16/" + name).c_str(), convert<float, uint16_t>, isa,
                                 Convert<float, uint16_t>(bfloat16_from_float), floats);
    benchmark::RegisterBenchmark(("widen/bfloat16/" + name).c_str(), convert<uint16_t, float>, isa,
                                 Convert<uint16_t, float>(bfloat16_to_float), halves);
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

// CPU random numbers: a counter-based SplitMix64 stream, so (seed, offset) fixes
// every value; uniform, normal (Box-Muller) and Dropout's keep mask. Side by side
// with cuda/random.cu (which uses cuRAND's Philox: the streams differ by device).
#include <cmath>

#include "core/cpu/cpu_backend.h"
#include "core/cpu/strided.h"

namespace vgrad::cpu {
namespace {

// SplitMix64 over (seed, counter): a counter-based stream, so any element can be
// drawn independently and the same (seed, offset) always gives the same numbers.
inline uint64_t mix(uint64_t seed, uint64_t counter) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + counter * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
inline double uniform01(uint64_t seed, uint64_t counter) { return double(mix(seed, counter) >> 11) * 0x1.0p-53; }

template <class Gen>
void fill_random(const View& out, Gen gen) {
  int64_t i = 0;
  visit_wide_dtype(out.dtype, [&](auto zero) {
    using T = decltype(zero);
    for_each_row<1>({out}, [&](auto p, int64_t n, auto s) {
      T* o = reinterpret_cast<T*>(p[0]);
      const int64_t so = s[0] / int64_t(sizeof(T));
      for (int64_t j = 0; j < n; ++j) o[j * so] = static_cast<T>(gen(i++));
    });
  });
}

}  // namespace

void CpuBackend::uniform_impl(const View& out, double low, double high, RandomState& state) {
  const uint64_t seed = state.seed, base = state.offset;
  fill_random(out, [&](int64_t i) { return low + (high - low) * uniform01(seed, base + uint64_t(i)); });
  state.offset += uint64_t(out.numel());
}

void CpuBackend::normal_impl(const View& out, double mean, double stddev, RandomState& state) {
  const uint64_t seed = state.seed, base = state.offset;
  // Box-Muller on pairs of counters: element i uses pair i/2 (cos for even, sin for odd).
  fill_random(out, [&](int64_t i) {
    const uint64_t pair = base + uint64_t(i / 2) * 2;
    const double u1 = 1.0 - uniform01(seed, pair), u2 = uniform01(seed, pair + 1);
    const double radius = std::sqrt(-2.0 * std::log(u1)), angle = 2.0 * M_PI * u2;
    return mean + stddev * radius * (i % 2 == 0 ? std::cos(angle) : std::sin(angle));
  });
  state.offset += uint64_t(out.numel() + 1) / 2 * 2;
}

void CpuBackend::dropout_mask_impl(const View& out, double p, RandomState& state) {
  const uint64_t seed = state.seed, base = state.offset;
  const double keep_scale = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
  fill_random(out, [&](int64_t i) { return uniform01(seed, base + uint64_t(i)) >= p ? keep_scale : 0.0; });
  state.offset += uint64_t(out.numel());
}

}  // namespace vgrad::cpu

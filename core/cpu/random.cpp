// CPU random numbers from vgrad's counter-based stream (core/random_stream.h), so
// (seed, offset) fixes every value: uniform, normal (Box-Muller) and Dropout's keep mask.
// Side by side with cuda/random.cu, which draws uniform and dropout from the same stream
// (the same bits) and normals from cuRAND.
#include <cmath>

#include "core/cpu/cpu_backend.h"
#include "core/cpu/strided.h"
#include "core/random_stream.h"

namespace vgrad::cpu {
namespace {

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
  fill_random(out, [&](int64_t i) { return random_stream::scaled_uniform(low, high - low, seed, base + uint64_t(i)); });
  state.offset += uint64_t(out.numel());
}

void CpuBackend::normal_impl(const View& out, double mean, double stddev, RandomState& state) {
  const uint64_t seed = state.seed, base = state.offset;
  // Box-Muller on pairs of counters: element i uses pair i/2 (cos for even, sin for odd).
  fill_random(out, [&](int64_t i) {
    const uint64_t pair = base + uint64_t(i / 2) * 2;
    const double u1 = 1.0 - random_stream::uniform01(seed, pair), u2 = random_stream::uniform01(seed, pair + 1);
    const double radius = std::sqrt(-2.0 * std::log(u1)), angle = 2.0 * M_PI * u2;
    return mean + stddev * radius * (i % 2 == 0 ? std::cos(angle) : std::sin(angle));
  });
  state.offset += uint64_t(out.numel() + 1) / 2 * 2;
}

void CpuBackend::dropout_mask_impl(const View& out, double p, RandomState& state) {
  const uint64_t seed = state.seed, base = state.offset;
  const double keep_scale = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
  fill_random(out, [&](int64_t i) { return random_stream::dropout_keep(p, keep_scale, seed, base + uint64_t(i)); });
  state.offset += uint64_t(out.numel());
}

}  // namespace vgrad::cpu

// vgrad's random stream, one definition for every device: SplitMix64 over (seed,
// counter). It is counter-based, so element i of a draw at offset o is a function of
// (seed, o + i) alone: any element can be drawn independently (one GPU thread each), and
// the same seed gives the same uniform and dropout values on the CPU and on a GPU, bit
// for bit. C++17, host/device-clean.
#pragma once
#include <cstdint>

#include "core/kernel_types.h"

namespace vgrad::random_stream {

VGRAD_HOST_DEVICE inline uint64_t mix(uint64_t seed, uint64_t counter) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + counter * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// A uniform double in [0, 1): the top 53 bits, exactly.
VGRAD_HOST_DEVICE inline double uniform01(uint64_t seed, uint64_t counter) {
  return static_cast<double>(mix(seed, counter) >> 11) * 0x1.0p-53;
}

// low + range·u, rounded after the product and after the sum on every device: a fused
// multiply-add would round once and break the CPU/GPU equality (nvcc contracts by
// default; the CPU file is compiled with -ffp-contract=off).
VGRAD_HOST_DEVICE inline double scaled_uniform(double low, double range, uint64_t seed, uint64_t counter) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(low, __dmul_rn(range, uniform01(seed, counter)));
#else
  return low + range * uniform01(seed, counter);
#endif
}

// Dropout's scaled keep mask: keep_scale where u >= p, else 0 (PyTorch keeps u >= p too).
VGRAD_HOST_DEVICE inline double dropout_keep(double p, double keep_scale, uint64_t seed, uint64_t counter) {
  return uniform01(seed, counter) >= p ? keep_scale : 0.0;
}

}  // namespace vgrad::random_stream

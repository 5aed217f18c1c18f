// fma_peak: the CPU's float32 multiply-add peak, measured with an FMA loop on every core
// at once (AVX-512 where the CPU has it, else AVX2), and the bound it puts on one epoch of
// the MLP 784-256-128-10 on 60,000 samples: multiply-adds per epoch / peak. Not a GEMM:
// no loads, no stores, only independent FMA chains. One JSON line (bench/compare.py).
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <ctime>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

// Per sample: forward, weight gradients, and the input gradients of layers 2-3 (layer 1's
// input gradient is not needed), as bench/gemm_floor.cpp runs them.
constexpr double kSamples = 60000;
constexpr double kMaddsPerSample = (784.0 * 256 + 256.0 * 128 + 128.0 * 10) * 2 + (256.0 * 128 + 128.0 * 10);

// The thread's CPU time, not wall time: on a shared machine the scheduler takes turns
// between our threads and others', and the peak is what the core does while it runs us.
double thread_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// Sixteen independent accumulators hide the FMA latency (4 cycles) on two FMA ports.
// a = a*m + c converges to c / (1 - m): no overflow, no denormals. Returns a sum so the
// loop cannot be dropped; each iteration is 16 FMAs of 16 lanes.
__attribute__((target("avx512f"))) float fma_loop_avx512(int64_t iterations) {
  __m512 acc[16];
  for (int j = 0; j < 16; ++j) acc[j] = _mm512_set1_ps(float(j));
  const __m512 m = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(1e-4f);
  for (int64_t i = 0; i < iterations; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) acc[j] = _mm512_fmadd_ps(acc[j], m, c);
  __m512 total = acc[0];
  for (int j = 1; j < 16; ++j) total = _mm512_add_ps(total, acc[j]);
  float lanes[16];  // NOTE: not _mm512_reduce_add_ps: g++ 12 warns inside it (-Werror=uninitialized)
  _mm512_storeu_ps(lanes, total);
  float sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

// AVX2 has 16 ymm registers: 12 accumulators and the two constants fit.
__attribute__((target("avx2,fma"))) float fma_loop_avx2(int64_t iterations) {
  __m256 acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = _mm256_set1_ps(float(j));
  const __m256 m = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(1e-4f);
  for (int64_t i = 0; i < iterations; ++i)
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm256_fmadd_ps(acc[j], m, c);
  __m256 total = acc[0];
  for (int j = 1; j < 12; ++j) total = _mm256_add_ps(total, acc[j]);
  float lanes[8];
  _mm256_storeu_ps(lanes, total);
  float sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

// The core clock: a chain of dependent integer adds retires one per cycle on every
// x86-64 core (the loop counter runs beside it on other ports).
void add_chain(int64_t iterations) {
  uint64_t x = 0;
  for (int64_t i = 0; i < iterations; ++i)
    asm volatile(
        "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
        "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
        "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
        "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
        : "+r"(x));
}

// Runs work(core) on one thread per core, each pinned, all started together; returns
// each thread's CPU seconds.
template <class Work>
std::vector<double> on_every_core(int cores, Work work) {
  std::vector<double> seconds(cores);
  std::vector<std::thread> threads;
  for (int core = 0; core < cores; ++core)
    threads.emplace_back([&, core] {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(core, &set);
      pthread_setaffinity_np(pthread_self(), sizeof(set), &set);  // best effort: unpinned still measures
      const double start = thread_seconds();
      work();
      seconds[core] = thread_seconds() - start;
    });
  for (auto& t : threads) t.join();
  return seconds;
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--repeats" && i + 1 < argc) {
      repeats = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: fma_peak [--repeats R]\n");
      return 2;
    }
  }
  if (repeats < 1) repeats = 1;
  const bool avx512 = __builtin_cpu_supports("avx512f");
  if (!avx512 && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
    std::fprintf(stderr, "fma_peak: this CPU has neither AVX-512 nor AVX2+FMA\n");
    return 1;
  }
  const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  const double fmas_per_iteration = avx512 ? 16.0 * 16 : 12.0 * 8;  // multiply-adds (lanes)
  const int64_t fma_iterations = 20'000'000, add_iterations = 40'000'000;
  volatile float sink = 0;

  // Best of the repeats: the machine is shared, and a busy sibling only ever slows us.
  double best_fma_s = 1e30, best_add_s = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto fma_s = on_every_core(cores, [&] {
      sink = sink + (avx512 ? fma_loop_avx512(fma_iterations) : fma_loop_avx2(fma_iterations));
    });
    const auto add_s = on_every_core(cores, [&] { add_chain(add_iterations); });
    best_fma_s = std::min(best_fma_s, *std::max_element(fma_s.begin(), fma_s.end()));
    best_add_s = std::min(best_add_s, *std::max_element(add_s.begin(), add_s.end()));
  }
  const double ghz = 16.0 * double(add_iterations) / best_add_s * 1e-9;
  const double madds_per_s_core = fmas_per_iteration * double(fma_iterations) / best_fma_s;
  const double madds_per_s = madds_per_s_core * cores;
  const double epoch_madds = kMaddsPerSample * kSamples;
  std::printf(
      "{\"impl\":\"fma_peak\",\"isa\":\"%s\",\"cores\":%d,\"ghz\":%.2f,\"fma_per_cycle_per_core\":%.1f,"
      "\"gflops\":%.1f,\"epoch_madds\":%.4g,\"epoch_s_median\":%.4f,\"epoch_s\":[%.4f]}\n",
      avx512 ? "avx512" : "avx2", cores, ghz, madds_per_s_core / (ghz * 1e9), 2 * madds_per_s * 1e-9, epoch_madds,
      epoch_madds / madds_per_s, epoch_madds / madds_per_s);
  return 0;
}

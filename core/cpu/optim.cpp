// CPU fused optimizer steps: SGD (momentum, dampening, Nesterov, weight decay) and
// Adam/AdamW, PyTorch's update rules in one pass per parameter. Side by side with
// cuda/optim.cu.
#include "core/cpu/optim.h"

#include <algorithm>
#include <cmath>

#include "core/cpu/cpu_backend.h"
#include "core/cpu/strided.h"
#include "core/cpu/thread_pool.h"
#include "core/optim_step.h"

namespace vgrad::cpu {
namespace {

// SGD's loops over [begin, end) of one parameter (T* __restrict: they vectorise).
// always_inline so that each target-specific copy below compiles its own; nothing here
// may be shared with the rest of the library as an out-of-line AVX function (see
// sgemm_kernels.h's note).
template <class T>
__attribute__((always_inline)) inline void sgd_range(T* __restrict w, const T* __restrict g, T* __restrict buf,
                                                     int64_t begin, int64_t end, const SgdParams& p) {
  const T lr = T(p.lr), wd = T(p.weight_decay), mom = T(p.momentum), damp = T(1 - p.dampening);
  if (p.momentum == 0) {
    for (int64_t i = begin; i < end; ++i) w[i] -= lr * (g[i] + wd * w[i]);
    return;
  }
  // The step is lr·(d + μ·b) with Nesterov, lr·b without: flags become factors so
  // the loops have no branches and vectorise (the buffer is unset before the first step).
  const T use_d = p.nesterov ? T(1) : T(0), use_b = p.nesterov ? mom : T(1);
  if (p.first_step) {
    for (int64_t i = begin; i < end; ++i) {
      const T d = g[i] + wd * w[i];
      buf[i] = d;
      w[i] -= lr * (use_d * d + use_b * d);
    }
    return;
  }
  for (int64_t i = begin; i < end; ++i) {
    const T d = g[i] + wd * w[i];
    const T b = mom * buf[i] + damp * d;
    buf[i] = b;
    w[i] -= lr * (use_d * d + use_b * b);
  }
}

// The float32 loops compiled for wider vectors than the library's baseline x86-64 (SSE2,
// 4 floats an instruction: the plain update of the MLP's 235K parameters took 26 us per
// step). fp-contract=off: AVX-512F brings FMA, and a fused multiply-add would round
// once where the baseline rounds twice (tests/core/cpu/test_optim.cpp caught it).
using SgdRange = void (*)(float*, const float*, float*, int64_t, int64_t, const SgdParams&);
void sgd_range_generic(float* w, const float* g, float* buf, int64_t begin, int64_t end, const SgdParams& p) {
  sgd_range(w, g, buf, begin, end, p);
}
#if defined(__x86_64__)
__attribute__((target("avx2"), optimize("fp-contract=off"))) void sgd_range_avx2(float* w, const float* g, float* buf, int64_t begin, int64_t end,
                                                     const SgdParams& p) {
  sgd_range(w, g, buf, begin, end, p);
}
__attribute__((target("avx512f,prefer-vector-width=512"), optimize("fp-contract=off"))) void sgd_range_avx512(
    float* w, const float* g, float* buf, int64_t begin, int64_t end, const SgdParams& p) {
  sgd_range(w, g, buf, begin, end, p);
}
#endif

SgdRange sgd_range_for(Isa isa) {
#if defined(__x86_64__)
  if (isa == Isa::Avx512) return &sgd_range_avx512;
  if (isa == Isa::Avx2) return &sgd_range_avx2;
#endif
  (void)isa;
  return &sgd_range_generic;
}

// From this many floats the update is split between the pool's threads, in chunks of
// whole cache lines: the MLP's first weight (200K floats, 2.4 MB of traffic) but not the
// second (32K).
constexpr int64_t kThreadedMinFloats = 64 * 1024;

}  // namespace

void sgd_update_float32(Isa isa, int max_threads, float* w, const float* g, float* momentum_buffer, int64_t n,
                        const SgdParams& p) {
  const SgdRange range = sgd_range_for(isa);
  ThreadPool& pool = ThreadPool::instance();
  const int threads = n < kThreadedMinFloats ? 1 : std::max(1, std::min(max_threads, pool.threads()));
  if (threads == 1) return range(w, g, momentum_buffer, 0, n, p);
  const int pieces = 2 * threads;
  auto bound = [&](int piece) { return piece == pieces ? n : n * piece / pieces / 16 * 16; };
  pool.run(pieces, threads, [&](int piece) { range(w, g, momentum_buffer, bound(piece), bound(piece + 1), p); });
}

void CpuBackend::sgd_update_impl(const View& param, const View& grad, const View& momentum_buffer, const SgdParams& p) {
  if (param.dtype == DType::Float32)
    return sgd_update_float32(active_isa(), 1 << 16, param.ptr<float>(), grad.ptr<float>(), momentum_buffer.ptr<float>(),
                              param.numel(), p);
  visit_wide_dtype(param.dtype, [&](auto zero) {
    using T = decltype(zero);
    if constexpr (!is_int<T>) sgd_range(param.ptr<T>(), grad.ptr<T>(), momentum_buffer.ptr<T>(), 0, param.numel(), p);
  });
}

void CpuBackend::adam_update_impl(const View& param, const View& grad, const View& exp_avg, const View& exp_avg_sq,
                             const AdamParams& p) {
  visit_wide_dtype(param.dtype, [&](auto zero) {
    using T = decltype(zero);
    if constexpr (!is_int<T>) {
      T* w = param.ptr<T>();
      const T* g = grad.ptr<T>();
      T* m = exp_avg.ptr<T>();
      T* v = exp_avg_sq.ptr<T>();
      const AdamStep<T> step = AdamStep<T>::from(p);
      const int64_t n = param.numel();
      for (int64_t i = 0; i < n; ++i) step(w[i], g[i], m[i], v[i]);
    }
  });
}

}  // namespace vgrad::cpu

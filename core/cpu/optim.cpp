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

// SGD's loop over [begin, end) of one parameter, PyTorch's ops in its order (cuda/optim.cu's
// SgdRule is the same): d = g (+ wd·w); with momentum b = first step ? d : μ·b + (1 − τ)·d and
// d = Nesterov ? d + μ·b : b; w −= lr·d. The settings are template arguments, so each loop
// has no branch and vectorises, and no term is multiplied by 0 (an Inf would become NaN).
// T* __restrict: they vectorise. always_inline so that each target-specific copy below
// compiles its own; nothing here may be shared with the rest of the library as an
// out-of-line AVX function (see sgemm_kernels.h's note).
template <class T, bool kDecay, bool kMomentum, bool kFirstStep, bool kNesterov>
__attribute__((always_inline)) inline void sgd_loop(T* __restrict w, const T* __restrict g, T* __restrict buf,
                                                    int64_t begin, int64_t end, const SgdParams& p) {
  const T lr = T(p.lr), wd = T(p.weight_decay), mom = T(p.momentum), damp = T(1 - p.dampening);
  for (int64_t i = begin; i < end; ++i) {
    T d = g[i];
    if constexpr (kDecay) d = d + wd * w[i];
    if constexpr (kMomentum) {
      const T b = kFirstStep ? d : mom * buf[i] + damp * d;  // the buffer is unset before the first step
      buf[i] = b;
      d = kNesterov ? d + mom * b : b;
    }
    w[i] -= lr * d;
  }
}

template <class T, bool kDecay>
__attribute__((always_inline)) inline void sgd_momentum_range(T* __restrict w, const T* __restrict g, T* __restrict buf,
                                                              int64_t begin, int64_t end, const SgdParams& p) {
  if (p.first_step) {
    if (p.nesterov)
      sgd_loop<T, kDecay, true, true, true>(w, g, buf, begin, end, p);
    else
      sgd_loop<T, kDecay, true, true, false>(w, g, buf, begin, end, p);
  } else {
    if (p.nesterov)
      sgd_loop<T, kDecay, true, false, true>(w, g, buf, begin, end, p);
    else
      sgd_loop<T, kDecay, true, false, false>(w, g, buf, begin, end, p);
  }
}

template <class T> __attribute__((always_inline)) inline void sgd_range(T* __restrict w, const T* __restrict g,
                                                                        T* __restrict buf, int64_t begin, int64_t end,
                                                                        const SgdParams& p) {
  const bool decay = p.weight_decay != 0;
  if (p.momentum == 0) {
    if (decay)
      sgd_loop<T, true, false, false, false>(w, g, buf, begin, end, p);
    else
      sgd_loop<T, false, false, false, false>(w, g, buf, begin, end, p);
  } else {
    if (decay)
      sgd_momentum_range<T, true>(w, g, buf, begin, end, p);
    else
      sgd_momentum_range<T, false>(w, g, buf, begin, end, p);
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

// Adam's element rule (core/optim_step.h) over [begin, end), compiled likewise. The rule is
// copied so that its settings stay in registers and its branches, on those settings alone,
// are unswitched out of the loop; sqrt vectorises because this file is compiled with
// -fno-math-errno (CMakeLists.txt). IEEE sqrt and division round as the scalar code does.
template <class T>
__attribute__((always_inline)) inline void adam_range(T* __restrict w, const T* __restrict g, T* __restrict m,
                                                      T* __restrict v, int64_t begin, int64_t end,
                                                      const AdamStep<T>& rule) {
  const AdamStep<T> step = rule;
  for (int64_t i = begin; i < end; ++i) step(w[i], g[i], m[i], v[i]);
}
using AdamRange = void (*)(float*, const float*, float*, float*, int64_t, int64_t, const AdamStep<float>&);
void adam_range_generic(float* w, const float* g, float* m, float* v, int64_t begin, int64_t end,
                        const AdamStep<float>& step) {
  adam_range(w, g, m, v, begin, end, step);
}
#if defined(__x86_64__)
__attribute__((target("avx2"), optimize("fp-contract=off"))) void adam_range_avx2(
    float* w, const float* g, float* m, float* v, int64_t begin, int64_t end, const AdamStep<float>& step) {
  adam_range(w, g, m, v, begin, end, step);
}
__attribute__((target("avx512f,prefer-vector-width=512"), optimize("fp-contract=off"))) void
adam_range_avx512(float* w, const float* g, float* m, float* v, int64_t begin, int64_t end,
                  const AdamStep<float>& step) {
  adam_range(w, g, m, v, begin, end, step);
}
#endif

AdamRange adam_range_for(Isa isa) {
#if defined(__x86_64__)
  if (isa == Isa::Avx512) return &adam_range_avx512;
  if (isa == Isa::Avx2) return &adam_range_avx2;
#endif
  (void)isa;
  return &adam_range_generic;
}

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

// range(begin, end) over [0, n): on the caller alone below kThreadedMinFloats, else in
// pieces of whole cache lines over up to max_threads of the pool's threads.
template <class Range> void split_over_pool(int max_threads, int64_t n, const Range& range) {
  ThreadPool& pool = ThreadPool::instance();
  const int threads = n < kThreadedMinFloats ? 1 : std::max(1, std::min(max_threads, pool.threads()));
  if (threads == 1) return range(int64_t{0}, n);
  const int pieces = 2 * threads;
  auto bound = [&](int piece) { return piece == pieces ? n : n * piece / pieces / 16 * 16; };
  pool.run(pieces, threads, [&](int piece) { range(bound(piece), bound(piece + 1)); });
}

}  // namespace

void sgd_update_float32(Isa isa, int max_threads, float* w, const float* g, float* momentum_buffer, int64_t n,
                        const SgdParams& p) {
  const SgdRange range = sgd_range_for(isa);
  split_over_pool(max_threads, n, [&](int64_t begin, int64_t end) { range(w, g, momentum_buffer, begin, end, p); });
}

void adam_update_float32(Isa isa, int max_threads, float* w, const float* g, float* exp_avg, float* exp_avg_sq,
                         int64_t n, const AdamParams& p) {
  const AdamRange range = adam_range_for(isa);
  const AdamStep<float> step = AdamStep<float>::from(p);
  split_over_pool(max_threads, n, [&](int64_t begin, int64_t end) { range(w, g, exp_avg, exp_avg_sq, begin, end, step); });
}

void CpuBackend::sgd_update_impl(const View& param, const View& grad, const View& momentum_buffer,
                                 const SgdParams& params) {
  const SgdParams p = read_sources(params);  // a capturable step's lr, in host memory here
  if (param.dtype == DType::Float32)
    return sgd_update_float32(active_isa(), 1 << 16, param.ptr<float>(), grad.ptr<float>(), momentum_buffer.ptr<float>(),
                              param.numel(), p);
  visit_wide_dtype(param.dtype, [&](auto zero) {
    using T = decltype(zero);
    if constexpr (!is_int<T>) sgd_range(param.ptr<T>(), grad.ptr<T>(), momentum_buffer.ptr<T>(), 0, param.numel(), p);
  });
}

void CpuBackend::adam_update_impl(const View& param, const View& grad, const View& exp_avg, const View& exp_avg_sq,
                                  const AdamParams& params) {
  const AdamParams p = read_sources(params);  // a capturable step's lr and step count
  if (param.dtype == DType::Float32)
    return adam_update_float32(active_isa(), 1 << 16, param.ptr<float>(), grad.ptr<float>(), exp_avg.ptr<float>(),
                               exp_avg_sq.ptr<float>(), param.numel(), p);
  visit_wide_dtype(param.dtype, [&](auto zero) {
    using T = decltype(zero);
    if constexpr (!is_int<T>)
      adam_range(param.ptr<T>(), grad.ptr<T>(), exp_avg.ptr<T>(), exp_avg_sq.ptr<T>(), 0, param.numel(),
                 AdamStep<T>::from(p));
  });
}

}  // namespace vgrad::cpu

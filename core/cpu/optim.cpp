// CPU fused optimizer steps: SGD (momentum, dampening, Nesterov, weight decay) and
// Adam/AdamW, PyTorch's update rules in one pass per parameter. Side by side with
// cuda/optim.cu.
#include <cmath>

#include "core/cpu/cpu_backend.h"
#include "core/cpu/strided.h"

namespace vgrad::cpu {

void CpuBackend::sgd_update_impl(const View& param, const View& grad, const View& momentum_buffer, const SgdParams& p) {
  visit_wide_dtype(param.dtype, [&](auto zero) {
    using T = decltype(zero);
    if constexpr (!is_int<T>) {
      T* __restrict w = param.ptr<T>();
      const T* __restrict g = grad.ptr<T>();
      T* __restrict buf = momentum_buffer.ptr<T>();
      const T lr = T(p.lr), wd = T(p.weight_decay), mom = T(p.momentum), damp = T(1 - p.dampening);
      const int64_t n = param.numel();
      if (p.momentum == 0) {
        for (int64_t i = 0; i < n; ++i) w[i] -= lr * (g[i] + wd * w[i]);
        return;
      }
      // The step is lr·(d + μ·b) with Nesterov, lr·b without: flags become factors so
      // the loops have no branches and vectorise (the buffer is unset before the first step).
      const T use_d = p.nesterov ? T(1) : T(0), use_b = p.nesterov ? mom : T(1);
      if (p.first_step) {
        for (int64_t i = 0; i < n; ++i) {
          const T d = g[i] + wd * w[i];
          buf[i] = d;
          w[i] -= lr * (use_d * d + use_b * d);
        }
        return;
      }
      for (int64_t i = 0; i < n; ++i) {
        const T d = g[i] + wd * w[i];
        const T b = mom * buf[i] + damp * d;
        buf[i] = b;
        w[i] -= lr * (use_d * d + use_b * b);
      }
    }
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
      const double bias1 = 1 - std::pow(p.beta1, double(p.step)), bias2 = 1 - std::pow(p.beta2, double(p.step));
      const T step_size = T(p.lr / bias1), inv_sqrt_bias2 = T(1 / std::sqrt(bias2));
      const T b1 = T(p.beta1), b2 = T(p.beta2), eps = T(p.eps), wd = T(p.weight_decay), lr = T(p.lr);
      const int64_t n = param.numel();
      for (int64_t i = 0; i < n; ++i) {
        T gi = g[i];
        if (p.decoupled) w[i] *= T(1) - lr * wd;
        else gi += wd * w[i];
        m[i] = b1 * m[i] + (T(1) - b1) * gi;
        v[i] = b2 * v[i] + (T(1) - b2) * gi * gi;
        w[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bias2 + eps);
      }
    }
  });
}

}  // namespace vgrad::cpu

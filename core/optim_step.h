// The Adam/AdamW update of one element: one definition for the CPU loop
// (core/cpu/optim.cpp) and the CUDA kernel (cuda/optim.cu). It follows PyTorch's
// single-tensor rule op for op, with every scalar computed in double and rounded to T
// once on the host, as PyTorch passes Python floats:
//   AdamW: p *= 1 - lr * wd;   Adam: g += wd * p
//   m = lerp(m, g, 1 - beta1);  v = v * beta2 + (1 - beta2) * g * g
//   p += -step_size * (m / (sqrt(v) / sqrt(1 - beta2^t) + eps)),  step_size = lr / (1 - beta1^t)
// A capturable step (AdamParams::step_source) computes the same doubles where it runs: on a
// GPU, each thread once per parameter chunk with the device's pow (see docs/gpu.md).
// Every op rounds as written on both devices: the files that use this are compiled without
// contraction (CMakeLists.txt: cuda/optim.cu --fmad=false, core/cpu/optim.cpp -ffp-contract=off).
#pragma once
#include <cmath>

#include "core/kernel_types.h"
#include "core/scalar_ops.h"

namespace vgrad {

template <class T> struct AdamStep {
  T one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay_factor, neg_step_size, bias_correction2_sqrt;
  bool use_decay, decoupled;  // use_decay: decided on the double, as PyTorch (a decay below T's range still adds 0·p)

  // `p` with its sources read (read_sources, core/kernel_types.h).
  VGRAD_HOST_DEVICE static AdamStep from(const AdamParams& p) {
    const double steps = static_cast<double>(p.step);
    return {T(1.0 - p.beta1),
            T(p.beta2),
            T(1.0 - p.beta2),
            T(p.eps),
            T(p.weight_decay),
            T(1.0 - p.lr * p.weight_decay),
            T(-(p.lr / (1.0 - scalar::pow_(p.beta1, steps)))),
            T(scalar::sqrt_(1.0 - scalar::pow_(p.beta2, steps))),
            p.weight_decay != 0.0,
            p.decoupled};
  }

  VGRAD_HOST_DEVICE void operator()(T& param, T grad, T& exp_avg, T& exp_avg_sq) const {
    T p = param, g = grad;
    if (use_decay) {
      if (decoupled) p = p * decay_factor;
      else g = g + weight_decay * p;
    }
    // torch.lerp's formula (the branch keeps it exact at both ends).
    const T m0 = exp_avg;
    const T m = one_minus_beta1 < T(0.5) ? m0 + one_minus_beta1 * (g - m0) : g - (g - m0) * (T(1) - one_minus_beta1);
    const T v = exp_avg_sq * beta2 + one_minus_beta2 * g * g;
    exp_avg = m;
    exp_avg_sq = v;
    param = p + neg_step_size * (m / (scalar::sqrt_(v) / bias_correction2_sqrt + eps));
  }
};

}  // namespace vgrad

// Fused optimizer steps, one kernel per step, following PyTorch's update rules op for
// op (torch.optim.SGD and Adam/AdamW, single-tensor form) so results match closely.
// Adam's element rule is core/optim_step.h, shared with the CPU.
// Scalars are rounded to the tensor dtype once, on the host, as PyTorch does.
// Side by side with core/cpu/optim.cpp.
#include <cmath>

#include "core/optim_step.h"
#include "cuda/kernel_utils.cuh"

namespace vgrad::cuda::kernels {
namespace {

// d = g + wd * p
// momentum: buf = first_step ? d : momentum * buf + (1 - dampening) * d
//           d = nesterov ? d + momentum * buf : buf
// p -= lr * d
template <class T>
__global__ void __launch_bounds__(kBlock)
    sgd_kernel(T* param, const T* grad, T* buffer, int64_t n, T lr, T momentum, T one_minus_dampening,
               T weight_decay, bool use_momentum, bool nesterov, bool first_step) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += step) {
    const T p = param[i];
    T d = grad[i];
    if (weight_decay != T(0)) d = d + weight_decay * p;
    if (use_momentum) {
      const T b = first_step ? d : buffer[i] * momentum + one_minus_dampening * d;
      buffer[i] = b;
      d = nesterov ? d + momentum * b : b;
    }
    param[i] = p + (-lr) * d;
  }
}

template <class T>
__global__ void __launch_bounds__(kBlock)
    adam_kernel(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, int64_t n, AdamStep<T> update) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += step)
    update(param[i], grad[i], exp_avg[i], exp_avg_sq[i]);
}

}  // namespace

void sgd_update(const Context& ctx, const View& param, const View& grad, const View& momentum_buffer,
                const SgdParams& c) {
  const int64_t n = param.numel();
  if (n == 0) return;
  dispatch_floating(param.dtype, "sgd_update", [&](auto tag) {
    using T = decltype(tag);
    sgd_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
        static_cast<T*>(param.data), static_cast<const T*>(grad.data), static_cast<T*>(momentum_buffer.data), n,
        static_cast<T>(c.lr), static_cast<T>(c.momentum), static_cast<T>(1.0 - c.dampening),
        static_cast<T>(c.weight_decay), c.momentum != 0.0, c.nesterov, c.first_step);
  });
  VGRAD_CUDA_CHECK_LAUNCH();
}

void adam_update(const Context& ctx, const View& param, const View& grad, const View& exp_avg,
                 const View& exp_avg_sq, const AdamParams& c) {
  const int64_t n = param.numel();
  if (n == 0) return;
  dispatch_floating(param.dtype, "adam_update", [&](auto tag) {
    using T = decltype(tag);
    adam_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
        static_cast<T*>(param.data), static_cast<const T*>(grad.data), static_cast<T*>(exp_avg.data),
        static_cast<T*>(exp_avg_sq.data), n, AdamStep<T>::from(c));
  });
  VGRAD_CUDA_CHECK_LAUNCH();
}

}  // namespace vgrad::cuda::kernels

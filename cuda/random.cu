// Post-processing of cuRAND output (the generators themselves run in backend.cpp):
// cuRAND's uniforms lie in (0, 1]; vgrad's contract is [0, 1), so 1 maps to 0 (as
// PyTorch does), then uniform(low, high) scales and dropout thresholds.
#include "cuda/kernel_utils.cuh"

namespace vgrad::cuda::kernels {
namespace {

template <class T> __device__ __forceinline__ T half_open(T u) { return u < T(1) ? u : T(0); }

template <class T> __global__ void __launch_bounds__(kBlock) uniform_kernel(T* data, int64_t n, T low, T range) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += step)
    data[i] = low + range * half_open(data[i]);
}

// mask = (u >= p) / (1 - p): Dropout's scaled keep mask.
template <class T> __global__ void __launch_bounds__(kBlock) dropout_kernel(T* data, int64_t n, T p, T scale) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += step)
    data[i] = half_open(data[i]) >= p ? scale : T(0);
}

}  // namespace

void uniform_transform(const Context& ctx, void* data, DType dtype, int64_t n, double low, double high) {
  if (n == 0) return;
  dispatch_floating(dtype, "uniform", [&](auto tag) {
    using T = decltype(tag);
    uniform_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(static_cast<T*>(data), n, static_cast<T>(low),
                                                                   static_cast<T>(high - low));
  });
  VGRAD_CUDA_CHECK_LAUNCH();
}

void dropout_transform(const Context& ctx, void* data, DType dtype, int64_t n, double p) {
  if (n == 0) return;
  const double scale = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;  // p == 1 drops everything
  dispatch_floating(dtype, "dropout_mask", [&](auto tag) {
    using T = decltype(tag);
    dropout_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(static_cast<T*>(data), n, static_cast<T>(p),
                                                                   static_cast<T>(scale));
  });
  VGRAD_CUDA_CHECK_LAUNCH();
}

}  // namespace vgrad::cuda::kernels

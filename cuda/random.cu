// Uniform and dropout draws in one kernel each, from vgrad's counter-based stream
// (core/random_stream.h): element i of the output in row-major order takes counter
// offset + i, as on the CPU, so both devices give the same bits for the same seed, and
// no generator pass or temporary comes before the transform (the normal draws use cuRAND
// in backend.cpp). Side by side with core/cpu/random.cpp.
#include "core/random_stream.h"
#include "cuda/kernel_utils.cuh"

namespace vgrad::cuda::kernels {
namespace {

template <class Index, class T, class Draw>
__global__ void __launch_bounds__(kBlock) draw_kernel(Geometry<1> geometry, Index n, T* out, Draw draw) {
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    Index off[1];
    geometry.offsets(i, off);
    out[off[0]] = static_cast<T>(draw(static_cast<uint64_t>(i)));
  }
}

// out[i] = draw(i) over out's elements in row-major order (any strides).
template <class Draw> void launch_draw(const Context& ctx, const View& out, const char* op, Draw draw) {
  const int64_t* strides[1] = {out.strides};
  const Geometry<1> geometry = make_geometry<1>(out.ndim, out.shape, strides);
  const int64_t n = geometry.numel();
  if (n == 0) return;
  dispatch_floating(out.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    T* data = static_cast<T*>(out.data);
    if (geometry.fits_32bit()) {
      draw_kernel<uint32_t><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(geometry, static_cast<uint32_t>(n), data, draw);
    } else {
      draw_kernel<int64_t><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(geometry, n, data, draw);
    }
  });
  VGRAD_CUDA_CHECK_LAUNCH();
}

struct UniformDraw {
  uint64_t seed, offset;
  double low, range;
  __device__ double operator()(uint64_t i) const { return random_stream::scaled_uniform(low, range, seed, offset + i); }
};

struct DropoutDraw {
  uint64_t seed, offset;
  double p, keep_scale;
  __device__ double operator()(uint64_t i) const { return random_stream::dropout_keep(p, keep_scale, seed, offset + i); }
};

}  // namespace

void uniform(const Context& ctx, const View& out, double low, double high, uint64_t seed, uint64_t offset) {
  launch_draw(ctx, out, "uniform", UniformDraw{seed, offset, low, high - low});
}

void dropout_mask(const Context& ctx, const View& out, double p, uint64_t seed, uint64_t offset) {
  const double keep_scale = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;  // p == 1 drops everything
  launch_draw(ctx, out, "dropout_mask", DropoutDraw{seed, offset, p, keep_scale});
}

}  // namespace vgrad::cuda::kernels

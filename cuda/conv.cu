// im2col and col2im on the GPU: one thread per column entry for im2col, and for
// col2im one thread per pixel that gathers the entries it fed (no atomics, so the
// sum order is fixed and results are deterministic); max pooling likewise, one thread
// per output forward and one per pixel backward. Side by side with core/cpu/conv.cpp.
#include "cuda/kernel_utils.cuh"

namespace vgrad::cuda::kernels {
namespace {

template <class T>
__global__ void __launch_bounds__(kBlock) im2col_kernel(const T* x, WindowGeometry g, T* col, int64_t n_total) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  const int64_t cols = g.col_cols(), spatial = g.out_h * g.out_w;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n_total; i += step) {
    const int64_t row = i / cols, column = i % cols;
    const int64_t kw = row % g.kernel_w, kh = (row / g.kernel_w) % g.kernel_h, c = row / (g.kernel_w * g.kernel_h);
    const int64_t n = column / spatial, oh = (column % spatial) / g.out_w, ow = column % g.out_w;
    const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
    const int64_t iw = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
    const bool inside = ih >= 0 && ih < g.height && iw >= 0 && iw < g.width;
    col[i] = inside ? x[((n * g.channels + c) * g.height + ih) * g.width + iw] : T(0);
  }
}

template <class T>
__global__ void __launch_bounds__(kBlock) col2im_kernel(const T* col, WindowGeometry g, T* x, int64_t n_total) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  const int64_t cols = g.col_cols(), spatial = g.out_h * g.out_w;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n_total; i += step) {
    const int64_t w = i % g.width, h = (i / g.width) % g.height;
    const int64_t c = (i / (g.width * g.height)) % g.channels, n = i / (g.width * g.height * g.channels);
    T sum = 0;
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      const int64_t th = h + g.pad_h - kh * g.dilation_h;  // = oh·stride_h when this tap read pixel h
      if (th < 0 || th % g.stride_h != 0 || th / g.stride_h >= g.out_h) continue;
      const int64_t oh = th / g.stride_h;
      for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
        const int64_t tw = w + g.pad_w - kw * g.dilation_w;
        if (tw < 0 || tw % g.stride_w != 0 || tw / g.stride_w >= g.out_w) continue;
        const int64_t row = (c * g.kernel_h + kh) * g.kernel_w + kw;
        sum += col[row * cols + n * spatial + oh * g.out_w + tw / g.stride_w];
      }
    }
    x[i] = sum;
  }
}

// The max of window (oh, ow) of one plane and where it is, h·W + w: PyTorch's rule of
// Backend::max_pool2d (row by row, a value wins when it is greater or NaN; the first
// valid value always does), as the CPU's.
template <class T>
__device__ __forceinline__ void max_of_window(const T* plane, const WindowGeometry& g, int64_t oh, int64_t ow, T& best,
                                              int64_t& where) {
  T max_value = T(0);
  int64_t at = -1;
  for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
    const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
    if (ih < 0 || ih >= g.height) continue;
    for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
      const int64_t iw = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
      if (iw < 0 || iw >= g.width) continue;
      const T v = plane[ih * g.width + iw];
      if (at < 0 || v > max_value || is_nan(v)) {
        max_value = v;
        at = ih * g.width + iw;
      }
    }
  }
  best = max_value;
  where = at;
}

template <class T>
__global__ void __launch_bounds__(kBlock)
    max_pool_kernel(const T* x, WindowGeometry g, T* out, int64_t* indices, int64_t n_total) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  const int64_t spatial = g.out_h * g.out_w;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n_total; i += step) {
    const int64_t p = i / spatial, oh = (i % spatial) / g.out_w, ow = i % g.out_w;
    max_of_window(x + p * g.height * g.width, g, oh, ow, out[i], indices[i]);
  }
}

// Pixel i gathers grad_out of every window that contains it and chose it.
template <class T>
__global__ void __launch_bounds__(kBlock) max_pool_backward_kernel(const T* grad_out, const int64_t* indices,
                                                                   WindowGeometry g, T* grad_x, int64_t n_total) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  const int64_t plane = g.height * g.width, spatial = g.out_h * g.out_w;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n_total; i += step) {
    const int64_t p = i / plane, pixel = i % plane, h = pixel / g.width, w = pixel % g.width;
    T sum = 0;
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      const int64_t th = h + g.pad_h - kh * g.dilation_h;
      if (th < 0 || th % g.stride_h != 0 || th / g.stride_h >= g.out_h) continue;
      for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
        const int64_t tw = w + g.pad_w - kw * g.dilation_w;
        if (tw < 0 || tw % g.stride_w != 0 || tw / g.stride_w >= g.out_w) continue;
        const int64_t o = p * spatial + (th / g.stride_h) * g.out_w + tw / g.stride_w;
        if (indices[o] == pixel) sum += grad_out[o];
      }
    }
    grad_x[i] = sum;
  }
}

}  // namespace

namespace {

// One grid-stride kernel over n elements, for the floating dtype T of `dtype`:
// launch(T{}, grid) queues it; the launch is checked.
template <class Launch>
void launch_floating(const Context& ctx, DType dtype, const char* op, int64_t n, Launch&& launch) {
  dispatch_floating(dtype, op, [&](auto tag) { launch(tag, grid_for(ctx, n)); });
  VGRAD_CUDA_CHECK_LAUNCH();
}

}  // namespace

void max_pool2d(const Context& ctx, const View& x, const WindowGeometry& g, const View& out, const View& indices) {
  launch_floating(ctx, x.dtype, "max_pool2d", out.numel(), [&](auto tag, unsigned grid) {
    using T = decltype(tag);
    max_pool_kernel<T>
        <<<grid, kBlock, 0, ctx.stream>>>(x.ptr<const T>(), g, out.ptr<T>(), indices.ptr<int64_t>(), out.numel());
  });
}

void max_pool2d_backward(const Context& ctx, const View& grad_out, const View& indices, const WindowGeometry& g,
                         const View& grad_x) {
  launch_floating(ctx, grad_x.dtype, "max_pool2d backward", grad_x.numel(), [&](auto tag, unsigned grid) {
    using T = decltype(tag);
    max_pool_backward_kernel<T><<<grid, kBlock, 0, ctx.stream>>>(grad_out.ptr<const T>(), indices.ptr<const int64_t>(),
                                                                 g, grad_x.ptr<T>(), grad_x.numel());
  });
}

void im2col(const Context& ctx, const View& x, const WindowGeometry& g, const View& col) {
  launch_floating(ctx, x.dtype, "im2col", col.numel(), [&](auto tag, unsigned grid) {
    using T = decltype(tag);
    im2col_kernel<T><<<grid, kBlock, 0, ctx.stream>>>(x.ptr<const T>(), g, col.ptr<T>(), col.numel());
  });
}

void col2im(const Context& ctx, const View& col, const WindowGeometry& g, const View& x) {
  launch_floating(ctx, x.dtype, "col2im", x.numel(), [&](auto tag, unsigned grid) {
    using T = decltype(tag);
    col2im_kernel<T><<<grid, kBlock, 0, ctx.stream>>>(col.ptr<const T>(), g, x.ptr<T>(), x.numel());
  });
}

}  // namespace vgrad::cuda::kernels

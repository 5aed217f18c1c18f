// Row-wise softmax / log_softmax with their backward, and the fused softmax-cross-entropy
// forward (probs + per-row loss, label smoothing) and backward, over rows of C
// contiguous elements. A warp per row up to C = 1024, a 512-thread block per row above.
// Numerically stable: every exp is of x - max(row).
#include <cmath>

#include "cuda/kernel_utils.cuh"

namespace vgrad::cuda::kernels {
namespace {

constexpr int kWarpRowsBlock = 256;  // warp mode: 8 rows per block
constexpr int kWideBlock = 512;      // block mode: one row per block
constexpr int64_t kWarpModeMaxC = 1024;

template <class T> struct SumPair {
  T first, second;
};
struct SumPairCombine {
  template <class T> __device__ SumPair<T> operator()(SumPair<T> a, SumPair<T> b) const {
    return SumPair<T>{a.first + b.first, a.second + b.second};
  }
};

// Calls body(row, lane) for every row this thread's group handles: a group of kGroup
// threads per row (a warp, or the whole block), grid-striding over the rows. `row <
// rows` is uniform over the group, so group_reduce inside body is safe.
template <int kGroup, int kThreads, class Body> __device__ __forceinline__ void for_each_row(int64_t rows, Body body) {
  constexpr int kRowsPerBlock = kThreads / kGroup;
  const int lane = threadIdx.x % kGroup;
  for (int64_t first = int64_t{blockIdx.x} * kRowsPerBlock; first < rows; first += int64_t{gridDim.x} * kRowsPerBlock) {
    const int64_t row = first + threadIdx.x / kGroup;
    if (row < rows) body(row, lane);
  }
}

// softmax: y = exp(x - m) / sum exp(x - m);  log_softmax: y = (x - m) - log(sum exp(x - m)).
template <class T, int kGroup, int kThreads>
__global__ void __launch_bounds__(kThreads) softmax_kernel(const T* x, T* y, int64_t rows, int64_t C, bool log) {
  for_each_row<kGroup, kThreads>(rows, [&](int64_t row, int lane) {
    const T* xr = x + row * C;
    T* yr = y + row * C;
    T m = lowest_value<T>();
    for (int64_t c = lane; c < C; c += kGroup) m = MaxCombine{}(m, xr[c]);
    m = group_reduce<kGroup>(m, MaxCombine{});
    T s = 0;
    for (int64_t c = lane; c < C; c += kGroup) s += exp_(xr[c] - m);
    s = group_reduce<kGroup>(s, SumCombine{});
    if (log) {
      const T log_s = log_(s);
      for (int64_t c = lane; c < C; c += kGroup) yr[c] = (xr[c] - m) - log_s;
    } else {
      for (int64_t c = lane; c < C; c += kGroup) yr[c] = exp_(xr[c] - m) / s;
    }
  });
}

// softmax:     dx = y * (dy - sum(dy * y))
// log_softmax: dx = dy - exp(y) * sum(dy)
template <class T, int kGroup, int kThreads>
__global__ void __launch_bounds__(kThreads)
    softmax_backward_kernel(const T* y, const T* dy, T* dx, int64_t rows, int64_t C, bool log) {
  for_each_row<kGroup, kThreads>(rows, [&](int64_t row, int lane) {
    const T* yr = y + row * C;
    const T* dyr = dy + row * C;
    T* dxr = dx + row * C;
    T s = 0;
    if (log) {
      for (int64_t c = lane; c < C; c += kGroup) s += dyr[c];
    } else {
      for (int64_t c = lane; c < C; c += kGroup) s += dyr[c] * yr[c];
    }
    s = group_reduce<kGroup>(s, SumCombine{});
    if (log) {
      for (int64_t c = lane; c < C; c += kGroup) dxr[c] = dyr[c] - exp_(yr[c]) * s;
    } else {
      for (int64_t c = lane; c < C; c += kGroup) dxr[c] = yr[c] * (dyr[c] - s);
    }
  });
}

// loss_i = -sum_c q_ic log p_ic with q = (1 - s) onehot(t_i) + s / C
//        = lse_i - (1 - s) x_{i,t_i} - s * mean_c(x_ic),   lse = m + log sum exp(x - m).
// Core checked every target is in [0, C); one outside anyway gives a NaN loss, never
// an out-of-bounds read.
template <class T, int kGroup, int kThreads>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_kernel(const T* x, const int64_t* target, int64_t target_stride, T* probs, T* loss,
                         int64_t loss_stride, int64_t rows, int64_t C, T smoothing) {
  for_each_row<kGroup, kThreads>(rows, [&](int64_t row, int lane) {
    const T* xr = x + row * C;
    T* pr = probs + row * C;
    const int64_t t = target[row * target_stride];
    const bool valid = t >= 0 && t < C;
    T m = lowest_value<T>();
    for (int64_t c = lane; c < C; c += kGroup) m = MaxCombine{}(m, xr[c]);
    m = group_reduce<kGroup>(m, MaxCombine{});
    SumPair<T> sums{T(0), T(0)};  // sum exp(x - m), sum x
    for (int64_t c = lane; c < C; c += kGroup) {
      const T v = xr[c];
      sums.first += exp_(v - m);
      sums.second += v;
    }
    sums = group_reduce<kGroup>(sums, SumPairCombine{});
    const T s = sums.first;
    for (int64_t c = lane; c < C; c += kGroup) pr[c] = exp_(xr[c] - m) / s;
    if (lane == 0) {
      T value = T(NAN);
      if (valid) {
        const T lse = m + log_(s);
        value = lse - (T(1) - smoothing) * xr[t];
        if (smoothing != T(0)) value -= smoothing * (sums.second / static_cast<T>(C));
      }
      loss[row * loss_stride] = value;
    }
  });
}

// grad = scale * (p - q), q = (1 - s) onehot(t) + s / C. Bad targets only lose the onehot.
template <class T>
__global__ void __launch_bounds__(kBlock)
    cross_entropy_backward_kernel(const T* probs, const int64_t* target, int64_t target_stride, T* grad, int64_t n,
                                  int64_t C, T on_target, T off_target, T scale) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += step) {
    const int64_t row = i / C;
    const int64_t c = i - row * C;
    const T q = c == target[row * target_stride] ? on_target : off_target;
    grad[i] = scale * (probs[i] - q);
  }
}

unsigned warp_mode_grid(const Context& ctx, int64_t rows) {
  const int64_t blocks = (rows + kWarpRowsBlock / 32 - 1) / (kWarpRowsBlock / 32);
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t{ctx.sm_count} * 8)));
}
unsigned block_mode_grid(const Context& ctx, int64_t rows) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(rows, int64_t{ctx.sm_count} * 4)));
}

// Row kernels run in one of two layouts: a warp per row for short rows (C <=
// kWarpModeMaxC), a block per row for long ones. `warp` and `block` are the two
// instantiations of one kernel template.
template <class... Params, class... Args>
void launch_rows(const Context& ctx, int64_t rows, int64_t C, void (*warp)(Params...), void (*block)(Params...),
                 Args... args) {
  if (C <= kWarpModeMaxC) {
    warp<<<warp_mode_grid(ctx, rows), kWarpRowsBlock, 0, ctx.stream>>>(args...);
  } else {
    block<<<block_mode_grid(ctx, rows), kWideBlock, 0, ctx.stream>>>(args...);
  }
  VGRAD_CUDA_CHECK_LAUNCH();
}

// v as rows of its last dim (rows × C); false when there is nothing to do.
bool as_rows(const View& v, int64_t& rows, int64_t& C) {
  C = v.ndim == 0 ? 1 : v.shape[v.ndim - 1];
  const int64_t n = v.numel();
  rows = C == 0 ? 0 : n / C;
  return n > 0 && C > 0;
}

}  // namespace

void softmax(const Context& ctx, const View& x, const View& out, bool log) {
  int64_t rows = 0, C = 0;
  if (!as_rows(x, rows, C)) return;
  dispatch_floating(x.dtype, log ? "log_softmax" : "softmax", [&](auto tag) {
    using T = decltype(tag);
    launch_rows(ctx, rows, C, softmax_kernel<T, 32, kWarpRowsBlock>, softmax_kernel<T, kWideBlock, kWideBlock>,
                static_cast<const T*>(x.data), static_cast<T*>(out.data), rows, C, log);
  });
}

void softmax_backward(const Context& ctx, const View& y, const View& grad_y, const View& grad_x, bool log) {
  int64_t rows = 0, C = 0;
  if (!as_rows(y, rows, C)) return;
  dispatch_floating(y.dtype, log ? "log_softmax backward" : "softmax backward", [&](auto tag) {
    using T = decltype(tag);
    launch_rows(ctx, rows, C, softmax_backward_kernel<T, 32, kWarpRowsBlock>,
                softmax_backward_kernel<T, kWideBlock, kWideBlock>, static_cast<const T*>(y.data),
                static_cast<const T*>(grad_y.data), static_cast<T*>(grad_x.data), rows, C, log);
  });
}

void cross_entropy(const Context& ctx, const View& logits, const View& target, double smoothing,
                   const View& probs, const View& loss_rows) {
  const int64_t rows = logits.shape[0];
  const int64_t C = logits.shape[1];
  if (rows == 0) return;
  const int64_t target_stride = target.strides[0];
  const int64_t loss_stride = loss_rows.is_contiguous() ? 1 : loss_rows.strides[0];
  dispatch_floating(logits.dtype, "cross_entropy", [&](auto tag) {
    using T = decltype(tag);
    launch_rows(ctx, rows, C, cross_entropy_kernel<T, 32, kWarpRowsBlock>,
                cross_entropy_kernel<T, kWideBlock, kWideBlock>, static_cast<const T*>(logits.data),
                static_cast<const int64_t*>(target.data), target_stride, static_cast<T*>(probs.data),
                static_cast<T*>(loss_rows.data), loss_stride, rows, C, static_cast<T>(smoothing));
  });
}

void cross_entropy_backward(const Context& ctx, const View& probs, const View& target, double smoothing,
                            double scale, const View& grad_logits) {
  const int64_t C = probs.shape[1];
  const int64_t n = probs.numel();
  if (n == 0) return;
  dispatch_floating(probs.dtype, "cross_entropy backward", [&](auto tag) {
    using T = decltype(tag);
    const T off_target = static_cast<T>(smoothing / static_cast<double>(C));
    const T on_target = static_cast<T>(1.0 - smoothing) + off_target;
    cross_entropy_backward_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
        static_cast<const T*>(probs.data), static_cast<const int64_t*>(target.data), target.strides[0],
        static_cast<T*>(grad_logits.data), n, C, on_target, off_target, static_cast<T>(scale));
  });
  VGRAD_CUDA_CHECK_LAUNCH();
}

}  // namespace vgrad::cuda::kernels

// Reductions over any set of dims (Sum with scale, Max, Min, ArgMax, ArgMin), the
// double-precision sum of squares, and GradScaler's unscale with its Inf/NaN check (one
// launch per dtype for all gradients). Not here: row-wise softmax (softmax.cu).
//
// The plan (geometry.h) splits the dims into kept (K outputs) and reduced (R inputs
// each). Two layouts: "inner" when the reduced dims run along unit stride — a warp or
// a block per output reads consecutive elements; "outer" when the kept dims do — each
// thread owns one output column and a block's rows split R. When K is too small to fill
// the GPU, R is also split across blocks and a second pass merges the partials.
// Sums accumulate in double (int64 for int64); Max/Min propagate NaN; Arg* return the
// first index of the extreme value (ties and NaN both resolved by the smaller index).
#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "cuda/kernel_utils.cuh"
#include "cuda/optim_table.h"

namespace vgrad::cuda::kernels {
namespace {

template <class T> struct SumReducer {
  using Acc = std::conditional_t<std::is_integral_v<T>, int64_t, double>;
  using Out = T;
  __device__ static Acc identity() { return Acc(0); }
  __device__ static Acc add(Acc acc, T value, int64_t) { return acc + static_cast<Acc>(value); }
  __device__ static Acc merge(Acc a, Acc b) { return a + b; }
  __device__ static Out finish(Acc acc, double scale) {
    if constexpr (std::is_integral_v<T>) {
      return scale == 1.0 ? acc : static_cast<int64_t>(static_cast<double>(acc) * scale);
    } else {
      return static_cast<T>(acc * scale);
    }
  }
};

template <class T> struct ValueIndex {  // index < 0: nothing seen yet
  T value;
  int64_t index;
};

template <class T, bool kMax, bool kArg> struct ExtremeReducer {
  using Acc = ValueIndex<T>;
  using Out = std::conditional_t<kArg, int64_t, T>;
  // x strictly more extreme than y; NaN is the most extreme of all (as PyTorch).
  __device__ static bool beats(T x, T y) {
    if (is_nan(x)) return !is_nan(y);
    if (is_nan(y)) return false;
    return kMax ? x > y : x < y;
  }
  __device__ static Acc identity() { return Acc{T(0), -1}; }
  __device__ static Acc merge(Acc a, Acc b) {
    if (b.index < 0) return a;
    if (a.index < 0) return b;
    if (beats(b.value, a.value)) return b;
    if (beats(a.value, b.value)) return a;
    return b.index < a.index ? b : a;  // equal: the first index wins
  }
  __device__ static Acc add(Acc acc, T value, int64_t index) { return merge(acc, Acc{value, index}); }
  __device__ static Out finish(Acc acc, double) {
    if constexpr (kArg) {
      return acc.index;
    } else {
      return acc.value;
    }
  }
};

template <class R> struct MergeFn {
  template <class A> __device__ A operator()(A a, A b) const { return R::merge(a, b); }
};

// Inner layout: a group of kGroup threads per (output, split) item; kGroup == 32 is a
// warp (kBlockThreads / 32 items per block), kGroup == kBlockThreads a whole block.
template <class R, class T, int kGroup, int kBlockThreads>
__global__ void __launch_bounds__(kBlockThreads)
    reduce_inner_kernel(const T* in, Geometry<2> kept, Geometry<1> reduced, int64_t kept_count,
                        int64_t reduced_count, int64_t splits, int64_t chunk, typename R::Out* out,
                        typename R::Acc* partial, double scale) {
  constexpr int kPerBlock = kBlockThreads / kGroup;
  const int lane = threadIdx.x % kGroup;
  const int slot = threadIdx.x / kGroup;
  const int64_t items = kept_count * splits;
  // The loop bound depends on blockIdx only, so every thread of a block runs the same
  // iterations: group_reduce's barriers (block mode) are reached by all of them.
  for (int64_t first = int64_t{blockIdx.x} * kPerBlock; first < items; first += int64_t{gridDim.x} * kPerBlock) {
    const int64_t item = first + slot;
    typename R::Acc acc = R::identity();
    int64_t off[2] = {0, 0};
    if (item < items) {
      const int64_t k = item / splits;
      const int64_t begin = (item % splits) * chunk;
      const int64_t end = begin + chunk < reduced_count ? begin + chunk : reduced_count;
      kept.offsets(k, off);
      const T* base = in + off[0];
      for (int64_t r = begin + lane; r < end; r += kGroup) {
        int64_t roff[1];
        reduced.offsets(r, roff);
        acc = R::add(acc, base[roff[0]], r);
      }
    }
    acc = group_reduce<kGroup>(acc, MergeFn<R>{});
    if (item < items && lane == 0) {
      if (partial != nullptr) {
        partial[item] = acc;
      } else {
        out[off[1]] = R::finish(acc, scale);
      }
    }
  }
}

// Outer layout: threadIdx.x walks outputs (unit stride in the input), threadIdx.y and
// blockIdx.y split the reduced elements.
constexpr int kOuterX = 32;
constexpr int kOuterY = 16;

template <class R, class T>
__global__ void __launch_bounds__(kOuterX* kOuterY)
    reduce_outer_kernel(const T* in, Geometry<2> kept, Geometry<1> reduced, int64_t kept_count, int64_t reduced_count,
                        int64_t chunk, typename R::Out* out, typename R::Acc* partial, double scale) {
  __shared__ typename R::Acc tile[kOuterY][kOuterX + 1];
  const int64_t splits = gridDim.y;
  for (int64_t first = int64_t{blockIdx.x} * kOuterX; first < kept_count; first += int64_t{gridDim.x} * kOuterX) {
    const int64_t k = first + threadIdx.x;
    typename R::Acc acc = R::identity();
    int64_t off[2] = {0, 0};
    if (k < kept_count) {
      const int64_t begin = int64_t{blockIdx.y} * chunk;
      const int64_t end = begin + chunk < reduced_count ? begin + chunk : reduced_count;
      kept.offsets(k, off);
      const T* base = in + off[0];
      for (int64_t r = begin + threadIdx.y; r < end; r += kOuterY) {
        int64_t roff[1];
        reduced.offsets(r, roff);
        acc = R::add(acc, base[roff[0]], r);
      }
    }
    tile[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && k < kept_count) {
      for (int j = 1; j < kOuterY; ++j) acc = R::merge(acc, tile[j][threadIdx.x]);
      if (partial != nullptr) {
        partial[k * splits + blockIdx.y] = acc;
      } else {
        out[off[1]] = R::finish(acc, scale);
      }
    }
    __syncthreads();  // the tile is reused by the next iteration
  }
}

// Second pass: merges each output's `splits` partials in order.
template <class R>
__global__ void __launch_bounds__(kBlock)
    reduce_finish_kernel(const typename R::Acc* partial, int64_t kept_count, int64_t splits, Geometry<2> kept,
                         typename R::Out* out, double scale) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t k = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; k < kept_count; k += step) {
    typename R::Acc acc = partial[k * splits];
    for (int64_t s = 1; s < splits; ++s) acc = R::merge(acc, partial[k * splits + s]);
    int64_t off[2];
    kept.offsets(k, off);
    out[off[1]] = R::finish(acc, scale);
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <class R, class T>
void run_reduce(const Context& ctx, const ReducePlan& plan, const View& in, const View& out, double scale) {
  using Acc = typename R::Acc;
  using Out = typename R::Out;
  const int64_t kept_count = plan.kept_count;
  const int64_t reduced_count = plan.reduced_count;
  if (kept_count == 0) return;
  const T* in_ptr = static_cast<const T*>(in.data);
  Out* out_ptr = static_cast<Out*>(out.data);
  const int64_t sm = ctx.sm_count;
  const int64_t target_blocks = 4 * sm;  // enough blocks to keep every SM busy

  int64_t splits = 1;
  unsigned grid = 1;
  bool warp_mode = false;
  if (plan.inner) {
    warp_mode = reduced_count <= 2048;
    if (warp_mode) {
      grid = static_cast<unsigned>(std::min<int64_t>(ceil_div(kept_count, kBlock / 32), sm * 8));
    } else {
      if (kept_count < target_blocks)
        splits = std::max<int64_t>(1, std::min(ceil_div(target_blocks, kept_count), ceil_div(reduced_count, 4096)));
    }
  } else {
    const int64_t column_blocks = ceil_div(kept_count, kOuterX);
    if (column_blocks < target_blocks)
      splits = std::max<int64_t>(
          1, std::min({ceil_div(target_blocks, column_blocks), ceil_div(reduced_count, kOuterY * 16), int64_t{65535}}));
    grid = static_cast<unsigned>(std::min<int64_t>(column_blocks, sm * 4));
  }
  const int64_t chunk = ceil_div(reduced_count, splits);
  splits = ceil_div(reduced_count, chunk);  // no empty splits
  if (plan.inner && !warp_mode) grid = static_cast<unsigned>(std::min<int64_t>(kept_count * splits, sm * 8));

  const size_t partial_bytes = splits > 1 ? static_cast<size_t>(kept_count * splits) * sizeof(Acc) : 0;
  ScratchBuffer partial_buffer(ctx, partial_bytes);
  Acc* partial = splits > 1 ? partial_buffer.as<Acc>() : nullptr;

  if (plan.inner) {
    if (warp_mode) {
      reduce_inner_kernel<R, T, 32, kBlock><<<grid, kBlock, 0, ctx.stream>>>(
          in_ptr, plan.kept, plan.reduced, kept_count, reduced_count, splits, chunk, out_ptr, partial, scale);
    } else {
      reduce_inner_kernel<R, T, kBlock, kBlock><<<grid, kBlock, 0, ctx.stream>>>(
          in_ptr, plan.kept, plan.reduced, kept_count, reduced_count, splits, chunk, out_ptr, partial, scale);
    }
  } else {
    const dim3 blocks(grid, static_cast<unsigned>(splits));
    const dim3 threads(kOuterX, kOuterY);
    reduce_outer_kernel<R, T><<<blocks, threads, 0, ctx.stream>>>(in_ptr, plan.kept, plan.reduced, kept_count,
                                                                   reduced_count, chunk, out_ptr, partial, scale);
  }
  VGRAD_CUDA_CHECK_LAUNCH();
  if (partial != nullptr) {
    reduce_finish_kernel<R><<<grid_for(ctx, kept_count), kBlock, 0, ctx.stream>>>(partial, kept_count, splits,
                                                                                  plan.kept, out_ptr, scale);
    VGRAD_CUDA_CHECK_LAUNCH();
  }
}

template <class T> __global__ void __launch_bounds__(kBlock) sum_of_squares_kernel(const T* x, int64_t n, double* partial) {
  double acc = 0;
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += step) {
    const double v = static_cast<double>(x[i]);
    acc += v * v;
  }
  acc = group_reduce<kBlock>(acc, SumCombine{});
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// *result = the partials' sum, or *result plus it when `accumulate` (tensors after the first).
__global__ void __launch_bounds__(kBlock)
    sum_partials_kernel(const double* partial, int64_t count, double* result, bool accumulate) {
  double acc = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
  acc = group_reduce<kBlock>(acc, SumCombine{});
  if (threadIdx.x == 0) *result = accumulate ? *result + acc : acc;
}

// Many gradients of one dtype in one launch, as the optimizer steps' many form (cuda/optim.cu):
// each is cut into chunks of kTensorChunk elements, numbered across all of them
// (cuda/chunks.h); each block takes chunks in a grid-stride loop and finds its gradient by
// binary search. g *= inv, and *found = 1 where a stored value is Inf or NaN (every writer
// stores the same value, so the race is benign); as core/cpu/reduce.cpp's loop.
template <class T> __global__ void __launch_bounds__(kBlock)
    unscale_many_kernel(const TensorSpan* grads, const int64_t* first_chunk, int count, int64_t chunks,
                        compute_t<T> inv, compute_t<T> largest, float* found) {
  using C = compute_t<T>;
  bool bad = false;
  for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const ChunkRange range = find_chunk(first_chunk, count, chunk, kTensorChunk, [&](int j) { return grads[j].n; });
    // In a register: the gradient's stores could alias the table for the compiler.
    T* const g = static_cast<T*>(grads[range.tensor].data);
    for (int64_t i = range.begin + threadIdx.x; i < range.end; i += blockDim.x) {
      const T y = static_cast<T>(static_cast<C>(g[i]) * inv);
      g[i] = y;
      bad = bad || !(fabs(static_cast<C>(y)) <= largest);
    }
  }
  if (bad) *found = 1.0f;
}

}  // namespace

// One launch per dtype for all its gradients; the dtype's table of (pointer, size) comes
// from ctx.tables: written when the set of gradients is new, found afterwards (gradients
// dropped each step come back on the blocks of earlier steps, in a short cycle that the
// backend's cache holds: cuda/optim_table.h, kTableCacheCapacity).
void unscale_and_check(const Context& ctx, const View* grads, size_t count, double inverse, float* found) {
  if (ctx.tables == nullptr) detail::throw_error("cuda: internal error: no device tables in the kernel context");
  std::vector<DType> dtypes;  // in order of first appearance
  for (size_t k = 0; k < count; ++k)
    if (std::find(dtypes.begin(), dtypes.end(), grads[k].dtype) == dtypes.end()) dtypes.push_back(grads[k].dtype);
  for (const DType dtype : dtypes) {
    std::vector<TensorSpan> spans;
    for (size_t k = 0; k < count; ++k)
      if (grads[k].dtype == dtype) spans.push_back({grads[k].data, grads[k].numel()});
    if (spans.size() > size_t{INT32_MAX})
      detail::throw_error("unscale_and_check: more than 2^31 gradients in one launch");
    const HostTable table = build_table(spans, kTensorChunk);
    const auto* device_table = static_cast<const unsigned char*>(ctx.tables->table(ctx, table.bytes));
    visit_dtype(dtype, [&](auto tag) {
      using T = decltype(tag);
      if constexpr (!std::is_integral_v<T>) {
        using C = compute_t<T>;
        // A block per chunk, at most the blocks that fill the GPU (grid_for: kBlock items a block).
        unscale_many_kernel<T><<<grid_for(ctx, table.chunks * kBlock), kBlock, 0, ctx.stream>>>(
            reinterpret_cast<const TensorSpan*>(device_table + table.pointers_offset),
            reinterpret_cast<const int64_t*>(device_table), table.count, table.chunks, static_cast<C>(inverse),
            std::numeric_limits<C>::max(), found);
      }
    });
    VGRAD_CUDA_CHECK_LAUNCH();
  }
}

void reduce(const Context& ctx, ReduceOp op, const View& in, const View& out, double scale) {
  ReducePlan plan;
  if (in.ndim != out.ndim || !make_reduce_plan(in.ndim, in.shape, in.strides, out.shape, out.strides, plan))
    detail::throw_error("cuda reduce: output shape does not fit the input (backend.cpp should have refused it)");
  visit_wide_dtype(in.dtype, [&](auto tag) {
    using T = decltype(tag);
    switch (op) {
      case ReduceOp::Sum: return run_reduce<SumReducer<T>, T>(ctx, plan, in, out, scale);
      case ReduceOp::Max: return run_reduce<ExtremeReducer<T, true, false>, T>(ctx, plan, in, out, scale);
      case ReduceOp::Min: return run_reduce<ExtremeReducer<T, false, false>, T>(ctx, plan, in, out, scale);
      case ReduceOp::ArgMax: return run_reduce<ExtremeReducer<T, true, true>, T>(ctx, plan, in, out, scale);
      case ReduceOp::ArgMin: return run_reduce<ExtremeReducer<T, false, true>, T>(ctx, plan, in, out, scale);
    }
  });
}

// One partial pass and one summing block per tensor, all into results->sum_of_squares:
// the host reads the total once, whatever the count.
void sum_of_squares(const Context& ctx, const View* xs, size_t count) {
  for (size_t k = 0; k < count; ++k) {
    const View& x = xs[k];
    const int64_t n = x.numel();
    const unsigned grid = grid_for(ctx, n);
    ScratchBuffer partial(ctx, grid * sizeof(double));
    visit_wide_dtype(x.dtype, [&](auto tag) {
      using T = decltype(tag);
      sum_of_squares_kernel<T><<<grid, kBlock, 0, ctx.stream>>>(static_cast<const T*>(x.data), n, partial.as<double>());
    });
    VGRAD_CUDA_CHECK_LAUNCH();
    sum_partials_kernel<<<1, kBlock, 0, ctx.stream>>>(partial.as<double>(), grid, &ctx.results->sum_of_squares, k > 0);
    VGRAD_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace vgrad::cuda::kernels

// Gather and scatter-add along one dim: index_select (batching, embedding lookups) and
// index_add, its gradient, with atomics because an index may repeat; and the range
// check core runs first, which records a bad index on the device for the host to report
// at its next wait (Backend::check_index), so the gathers run on regardless: a bad index
// is never dereferenced (index_select writes 0, index_add skips it). Side by side with
// core/cpu/index.cpp.
#include "cuda/kernel_utils.cuh"

namespace vgrad::cuda::kernels {
namespace {

// Iteration over `iter` (out for select, src for add); `other` is the tensor indexed
// through `index` along `dim`.
struct IndexGeometry {
  int ndim;
  int dim;
  int64_t shape[kMaxDims];          // the iterated tensor's shape
  int64_t iter_strides[kMaxDims];   // its strides
  int64_t other_strides[kMaxDims];  // the indexed tensor's strides
  int64_t other_dim_size;           // valid indices are [0, other_dim_size)
  int64_t index_stride;
};

IndexGeometry make_index_geometry(const View& iter, const View& other, int dim, const View& index) {
  IndexGeometry g{};
  g.ndim = iter.ndim;
  g.dim = dim;
  for (int d = 0; d < iter.ndim; ++d) {
    g.shape[d] = iter.shape[d];
    g.iter_strides[d] = iter.strides[d];
    g.other_strides[d] = other.strides[d];
  }
  g.other_dim_size = other.shape[dim];
  g.index_stride = index.ndim == 0 ? 0 : index.strides[0];
  return g;
}

// Offsets of linear element i: in the iterated tensor, and in the indexed one (or -1
// when the index is out of range; *position is the index position either way).
__device__ __forceinline__ void index_offsets(const IndexGeometry& g, const int64_t* index, int64_t i,
                                              int64_t& iter_off, int64_t& other_off, int64_t& position) {
  iter_off = 0;
  other_off = 0;
  position = 0;
  int64_t rest = i;
  for (int d = g.ndim - 1; d >= 0; --d) {
    const int64_t c = rest % g.shape[d];
    rest /= g.shape[d];
    iter_off += c * g.iter_strides[d];
    if (d == g.dim) {
      position = c;
    } else {
      other_off += c * g.other_strides[d];
    }
  }
  const int64_t target = index[position * g.index_stride];
  if (target < 0 || target >= g.other_dim_size) {
    other_off = -1;
  } else {
    other_off += target * g.other_strides[g.dim];
  }
}

// Elements move as raw 4- or 8-byte words: the dtype does not matter to a gather.
template <class Word>
__global__ void __launch_bounds__(kBlock) index_select_kernel(const Word* x, const int64_t* index, Word* out,
                                                              IndexGeometry g, int64_t n) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t out_off, x_off, position;
    index_offsets(g, index, i, out_off, x_off, position);
    out[out_off] = x_off >= 0 ? x[x_off] : Word{0};
  }
}

__device__ __forceinline__ void atomic_add(float* address, float value) { atomicAdd(address, value); }
__device__ __forceinline__ void atomic_add(double* address, double value) { atomicAdd(address, value); }
__device__ __forceinline__ void atomic_add(int64_t* address, int64_t value) {  // two's complement wraps alike
  atomicAdd(reinterpret_cast<unsigned long long*>(address), static_cast<unsigned long long>(value));
}

template <class T>
__global__ void __launch_bounds__(kBlock) index_add_kernel(T* out, const int64_t* index, const T* src, IndexGeometry g,
                                                           int64_t n) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t src_off, out_off, position;
    index_offsets(g, index, i, src_off, out_off, position);
    if (out_off >= 0) atomic_add(out + out_off, src[src_off]);
  }
}

struct MinCombine {
  __device__ __forceinline__ unsigned long long operator()(unsigned long long a, unsigned long long b) const {
    return a < b ? a : b;
  }
};

// Each block finds its first bad position (a thread's grid-stride positions rise, so its
// first bad one is its smallest) and lowers record->first with it; the last block to
// finish, seeing every block's atomicMin, stores the value when this check's position
// is the record's first, and resets the block counter for the next check.
__global__ void __launch_bounds__(kBlock)
    check_index_kernel(const int64_t* index, int64_t stride, int64_t n, int64_t limit, unsigned long long tag,
                       IndexErrorRecord* record) {
  unsigned long long first = kNoIndexError;
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += step) {
    const int64_t v = index[i * stride];
    if (v < 0 || v >= limit) {
      first = tag | static_cast<unsigned long long>(i);
      break;
    }
  }
  first = group_reduce<kBlock>(first, MinCombine{});
  if (threadIdx.x != 0) return;
  if (first != kNoIndexError) atomicMin(&record->first, first);
  __threadfence();  // this block's atomicMin before its count
  if (atomicAdd(&record->blocks_done, 1u) != gridDim.x - 1) return;
  const unsigned long long found = atomicAdd(&record->first, 0ull);  // read at L2, past any stale cache
  if (found != kNoIndexError && (found >> kIndexPositionBits) == (tag >> kIndexPositionBits)) {
    const auto position = static_cast<int64_t>(found & ((1ull << kIndexPositionBits) - 1));
    record->value = index[position * stride];
  }
  record->blocks_done = 0;
}

}  // namespace

void check_index(const Context& ctx, const View& index, int64_t limit, int check) {
  const int64_t n = index.numel();
  if (n == 0) return;
  if (n >= (int64_t{1} << kIndexPositionBits) || check < 0 || check >= (1 << (64 - kIndexPositionBits)))
    detail::throw_error("cuda check_index: " + std::to_string(n) + " indices or check " + std::to_string(check) +
                        " exceed the error record's fields");
  const int64_t stride = index.ndim == 0 ? 0 : index.strides[0];
  const unsigned long long tag = static_cast<unsigned long long>(check) << kIndexPositionBits;
  check_index_kernel<<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(static_cast<const int64_t*>(index.data), stride, n,
                                                                  limit, tag, &ctx.results->index_error);
  VGRAD_CUDA_CHECK_LAUNCH();
}

void reset_index_error(const Context& ctx) {
  IndexErrorRecord* record = &ctx.results->index_error;
  VGRAD_CUDA_CHECK(cudaMemsetAsync(&record->first, 0xFF, sizeof(record->first), ctx.stream));
  VGRAD_CUDA_CHECK(cudaMemsetAsync(&record->blocks_done, 0, sizeof(record->blocks_done), ctx.stream));
}

void index_select(const Context& ctx, const View& x, int dim, const View& index, const View& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  const IndexGeometry g = make_index_geometry(out, x, dim, index);
  const auto* index_ptr = static_cast<const int64_t*>(index.data);
  if (dtype_size(x.dtype) == 2) {  // gathering moves bits: bfloat16/float16 as 16-bit words
    index_select_kernel<uint16_t><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
        static_cast<const uint16_t*>(x.data), index_ptr, static_cast<uint16_t*>(out.data), g, n);
  } else if (dtype_size(x.dtype) == 4) {
    index_select_kernel<uint32_t><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
        static_cast<const uint32_t*>(x.data), index_ptr, static_cast<uint32_t*>(out.data), g, n);
  } else {
    index_select_kernel<uint64_t><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
        static_cast<const uint64_t*>(x.data), index_ptr, static_cast<uint64_t*>(out.data), g, n);
  }
  VGRAD_CUDA_CHECK_LAUNCH();
}

void index_add(const Context& ctx, const View& out, int dim, const View& index, const View& src) {
  const int64_t n = src.numel();
  if (n == 0) return;
  const IndexGeometry g = make_index_geometry(src, out, dim, index);
  visit_wide_dtype(out.dtype, [&](auto tag) {  // 16-bit arrives as float32 (Backend::Float32Scratch)
    using T = decltype(tag);
    index_add_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
        static_cast<T*>(out.data), static_cast<const int64_t*>(index.data), static_cast<const T*>(src.data), g, n);
  });
  VGRAD_CUDA_CHECK_LAUNCH();
}

}  // namespace vgrad::cuda::kernels

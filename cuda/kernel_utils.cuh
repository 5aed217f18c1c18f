// Device-side helpers shared by the cuda/*.cu files: launch sizing, scratch buffers,
// floating-dtype dispatch, core's math per type, warp shuffles of any small struct, and a
// reduction over a group of threads (one warp, or a whole block). Not a public header.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "cuda/check.h"
#include "core/geometry.h"
#include "core/scalar_ops.h"
#include "cuda/kernels.h"

namespace vgrad::cuda::kernels {

constexpr int kBlock = 256;  // threads per block of the elementwise kernels
// Elements per chunk of a many-tensor launch (optimizer steps, unscale; cuda/chunks.h): a
// block's threads take 8 elements each.
constexpr int64_t kTensorChunk = 8 * kBlock;

// Blocks for a grid-stride loop over n items: enough to fill every SM (2048 resident
// threads each), never more than the work needs, never zero.
inline unsigned grid_for(const Context& ctx, int64_t n, int block = kBlock) {
  const int64_t wanted = (n + block - 1) / block;
  const int64_t cap = int64_t{ctx.sm_count} * (2048 / block);
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(wanted, cap)));
}

// Temporary device memory for the duration of one launcher call (stream-ordered reuse).
// Zero bytes allocate nothing (a null pointer).
class ScratchBuffer {
 public:
  ScratchBuffer(const Context& ctx, size_t bytes) : scratch_(ctx.scratch), bytes_(bytes) {
    if (bytes_ == 0) return;
    if (scratch_ == nullptr) detail::throw_error("cuda: internal error: no scratch allocator in the kernel context");
    ptr_ = scratch_->allocate(bytes_);
  }
  ~ScratchBuffer() {
    if (ptr_ != nullptr) scratch_->deallocate(ptr_, bytes_);
  }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  template <class T> T* as() const { return static_cast<T*>(ptr_); }

 private:
  Scratch* scratch_;
  size_t bytes_;
  void* ptr_ = nullptr;
};

// Calls fn(T{}) for float/double; int64 is an error naming `op`.
template <class Fn> void dispatch_floating(DType dtype, const char* op, Fn&& fn) {
  switch (dtype) {
    case DType::Float32: fn(float{}); return;
    case DType::Float64: fn(double{}); return;
    case DType::Int64: break;
    case DType::BFloat16:  // core hands the row kernels float32 copies (Backend::Float32Scratch)
    case DType::Float16: fail_half_in_wide_kernel(dtype);
  }
  detail::throw_error(std::string(op) + ": not defined for " + dtype_name(dtype) + " on cuda");
}

// The per-type math and NaN test are core's (core/scalar_ops.h), shared with the CPU.
using scalar::exp_;
using scalar::is_nan;
using scalar::log_;
using scalar::sqrt_;

template <class T> __device__ __forceinline__ T lowest_value() {
  if constexpr (std::is_floating_point_v<T>) {
    return -INFINITY;
  } else {
    return INT64_MIN;
  }
}

// ---- warp shuffles of any trivially copyable value (moved as 32-bit words) ----
template <class V, class Shuffle> __device__ __forceinline__ V shuffle_words(const V& value, Shuffle shuffle) {
  static_assert(sizeof(V) % sizeof(int) == 0, "shuffled values must be a whole number of 32-bit words");
  constexpr int kWords = sizeof(V) / sizeof(int);
  int words[kWords];
  memcpy(words, &value, sizeof(V));
#pragma unroll
  for (int i = 0; i < kWords; ++i) words[i] = shuffle(words[i]);
  V result;
  memcpy(&result, words, sizeof(V));
  return result;
}
template <class V> __device__ __forceinline__ V shfl_down(const V& value, int delta) {
  return shuffle_words(value, [delta](int word) { return __shfl_down_sync(0xffffffffu, word, delta); });
}
template <class V> __device__ __forceinline__ V shfl_from(const V& value, int lane) {
  return shuffle_words(value, [lane](int word) { return __shfl_sync(0xffffffffu, word, lane); });
}

// Combines `value` over a group of kGroup consecutive threads (threadIdx.x / kGroup is
// the group) and returns the result to every thread of the group. kGroup == 32: one
// warp, no barrier. kGroup > 32: the whole block (blockDim.x == kGroup), with
// __syncthreads, so every thread of the block must call it. The combination order is
// fixed, so results are deterministic.
template <int kGroup, class V, class Combine> __device__ __forceinline__ V group_reduce(V value, Combine combine) {
  static_assert(kGroup % 32 == 0 && kGroup <= 1024, "groups are whole warps");
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) value = combine(value, shfl_down(value, offset));
  if constexpr (kGroup == 32) {
    return shfl_from(value, 0);
  } else {
    constexpr int kWarps = kGroup / 32;
    __shared__ V partial[kWarps];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    __syncthreads();  // readers of a previous call are done with `partial`
    if (lane == 0) partial[warp] = value;
    __syncthreads();
    V result = partial[0];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) result = combine(result, partial[w]);
    return result;
  }
}

struct SumCombine {
  template <class T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct MaxCombine {  // NaN-propagating
  template <class T> __device__ __forceinline__ T operator()(T a, T b) const { return (is_nan(a) || a > b) ? a : b; }
};

}  // namespace vgrad::cuda::kernels

// The iteration space of an elementwise or reduction kernel on every device: an
// out-shaped walk over N strided operands, with size-1 dims dropped and dims that are
// contiguous for every operand merged (the CPU's row loops in core/cpu/strided.h and
// the CUDA kernels both build on make_geometry). C++17, host/device-clean.
#pragma once
#include <cstdint>

#include "core/kernel_types.h"

namespace vgrad {

constexpr int kGeometryMaxDims = kMaxDims;

// N operands over one shape; operand 0 is conventionally the output. Strides are in
// elements (0 = broadcast). Trivially copyable, so it is passed to kernels by value.
template <int N> struct Geometry {
  int ndim;
  int64_t shape[kGeometryMaxDims];
  int64_t strides[N][kGeometryMaxDims];

  // Element offsets of row-major linear index i (over shape) in each operand.
  // Index is int64_t, or uint32_t when every offset is known to fit (see fits_32bit).
  template <class Index> VGRAD_HOST_DEVICE void offsets(Index i, Index (&off)[N]) const {
    for (int k = 0; k < N; ++k) off[k] = 0;
    Index rest = i;
    for (int d = ndim - 1; d >= 1; --d) {
      const Index size = static_cast<Index>(shape[d]);
      const Index c = rest % size;
      rest /= size;
      for (int k = 0; k < N; ++k) off[k] += c * static_cast<Index>(strides[k][d]);
    }
    for (int k = 0; k < N; ++k) off[k] += rest * static_cast<Index>(strides[k][0]);
  }

  int64_t numel() const {
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= shape[d];
    return n;
  }
  bool all_contiguous() const {  // one dim, unit stride everywhere: plain pointer arithmetic
    if (ndim != 1) return false;
    for (int k = 0; k < N; ++k)
      if (strides[k][0] != 1) return false;
    return true;
  }
  // True when the element count and every operand's largest offset stay below 2^31,
  // so 32-bit index arithmetic (much cheaper on a GPU than 64-bit division) is exact.
  bool fits_32bit() const {
    constexpr int64_t kLimit = int64_t{1} << 31;
    if (numel() >= kLimit) return false;
    for (int k = 0; k < N; ++k) {
      int64_t last = 0;
      for (int d = 0; d < ndim; ++d) last += (shape[d] - 1) * strides[k][d];
      if (last >= kLimit) return false;
    }
    return true;
  }
};

// Builds a Geometry from `ndim` dims of `shape` and each operand's strides (strides[k]
// points at ndim values). Size-1 dims are dropped; a dim is merged into the next one
// when, for every operand, stride[d] == stride[d+1] * shape[d+1]. The linear order of
// elements is unchanged. Zero dims left (a scalar) become one dim of size 1.
template <int N> Geometry<N> make_geometry(int ndim, const int64_t* shape, const int64_t* const* strides) {
  Geometry<N> g{};
  g.ndim = 0;
  for (int d = 0; d < ndim; ++d) {
    if (shape[d] == 1) continue;
    if (g.ndim > 0) {
      const int last = g.ndim - 1;
      bool mergeable = true;
      for (int k = 0; k < N; ++k)
        if (g.strides[k][last] != strides[k][d] * shape[d]) mergeable = false;
      if (mergeable) {
        g.shape[last] *= shape[d];
        for (int k = 0; k < N; ++k) g.strides[k][last] = strides[k][d];
        continue;
      }
    }
    g.shape[g.ndim] = shape[d];
    for (int k = 0; k < N; ++k) g.strides[k][g.ndim] = strides[k][d];
    ++g.ndim;
  }
  if (g.ndim == 0) {
    g.ndim = 1;
    g.shape[0] = 1;
    for (int k = 0; k < N; ++k) g.strides[k][0] = 0;
  }
  return g;
}

// How a reduction splits into kept dims (the output's) and reduced dims: both as
// geometries, kept with strides {in, out} and reduced with strides {in}.
struct ReducePlan {
  Geometry<2> kept;     // K = kept.numel() outputs
  Geometry<1> reduced;  // R = reduced.numel() inputs per output
  int64_t kept_count;
  int64_t reduced_count;
  bool inner;  // the reduction runs along unit stride (a group of threads per output)
};

// in and out have the same ndim; out's dims equal in's or are 1 (reduced). Returns
// false when the shapes do not fit that rule.
inline bool make_reduce_plan(int ndim, const int64_t* in_shape, const int64_t* in_strides, const int64_t* out_shape,
                             const int64_t* out_strides, ReducePlan& plan) {
  int64_t kept_shape[kGeometryMaxDims], kept_in[kGeometryMaxDims], kept_out[kGeometryMaxDims];
  int64_t red_shape[kGeometryMaxDims], red_in[kGeometryMaxDims];
  int nk = 0, nr = 0;
  for (int d = 0; d < ndim; ++d) {
    if (in_shape[d] == out_shape[d]) {
      kept_shape[nk] = in_shape[d];
      kept_in[nk] = in_strides[d];
      kept_out[nk] = out_strides[d];
      ++nk;
    } else if (out_shape[d] == 1) {
      red_shape[nr] = in_shape[d];
      red_in[nr] = in_strides[d];
      ++nr;
    } else {
      return false;
    }
  }
  const int64_t* kept_strides[2] = {kept_in, kept_out};
  const int64_t* red_strides[1] = {red_in};
  plan.kept = make_geometry<2>(nk, kept_shape, kept_strides);
  plan.reduced = make_geometry<1>(nr, red_shape, red_strides);
  plan.kept_count = 1;
  for (int d = 0; d < nk; ++d) plan.kept_count *= kept_shape[d];
  plan.reduced_count = 1;
  for (int d = 0; d < nr; ++d) plan.reduced_count *= red_shape[d];
  // Threads of a group walk the reduced dims; that is coalesced when the fastest
  // reduced dim has unit stride, or when there is a single output anyway. Otherwise
  // one thread per output walks the reduced dims while neighbours read neighbours.
  const Geometry<1>& r = plan.reduced;
  const Geometry<2>& k = plan.kept;
  const bool reduced_unit = r.strides[0][r.ndim - 1] == 1 || r.shape[r.ndim - 1] == 1;
  const bool kept_unit = k.strides[0][k.ndim - 1] == 1 && k.shape[k.ndim - 1] > 1;
  plan.inner = plan.kept_count == 1 || reduced_unit || !kept_unit;
  return true;
}

}  // namespace vgrad

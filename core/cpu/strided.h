// The CPU's strided N-d iteration: operands of one shape are walked row by row,
// after dropping size-1 dims and merging dims that are contiguous in every operand,
// so most loops become one long row that the compiler vectorises; map1/map2 are
// the elementwise loops built on it, and their 16-bit forms that compute in float32
// blocks (map1_blocked/map2_blocked).
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>

#include "core/backend.h"
#include "core/cpu/half_convert.h"
#include "core/geometry.h"
#include "core/half.h"

namespace vgrad::cpu {

template <class T> constexpr bool is_int = std::is_integral_v<T>;

// Calls row(ptrs, n, byte_strides) for every innermost row of the common shape of
// `views` (all share views[0]'s shape; strides may be 0 for broadcast operands).
template <size_t N, class Row>
void for_each_row(const std::array<View, N>& views, Row&& row) {
  const int64_t* stride_ptrs[N];
  for (size_t k = 0; k < N; ++k) stride_ptrs[k] = views[k].strides;
  const Geometry<int(N)> g = make_geometry<int(N)>(views[0].ndim, views[0].shape, stride_ptrs);
  const int nd = g.ndim;
  int64_t elem[N];
  std::array<char*, N> ptrs;
  std::array<int64_t, N> inner;
  for (size_t k = 0; k < N; ++k) {
    elem[k] = static_cast<int64_t>(dtype_size(views[k].dtype));
    ptrs[k] = static_cast<char*>(views[k].data);
    inner[k] = g.strides[k][nd - 1] * elem[k];
  }
  const int64_t n = g.shape[nd - 1];
  const int64_t outer = n == 0 ? 0 : g.numel() / n;
  int64_t counter[kMaxDims] = {};
  for (int64_t r = 0; r < outer; ++r) {
    row(ptrs, n, inner);
    // Advance the odometer over the outer dims.
    for (int d = nd - 2; d >= 0; --d) {
      if (++counter[d] < g.shape[d]) {
        for (size_t k = 0; k < N; ++k) ptrs[k] += g.strides[k][d] * elem[k];
        break;
      }
      for (size_t k = 0; k < N; ++k) ptrs[k] -= g.strides[k][d] * (g.shape[d] - 1) * elem[k];
      counter[d] = 0;
    }
  }
}

// Elementwise loops over for_each_row rows, with the contiguous and broadcast-scalar
// cases spelled out for the vectoriser.
// out[i] = f(x[i]).
template <class TOut, class TIn, class F>
void map1(const View& x, const View& out, F f) {
  for_each_row<2>({out, x}, [&](auto p, int64_t n, auto s) {
    TOut* o = reinterpret_cast<TOut*>(p[0]);
    const TIn* a = reinterpret_cast<const TIn*>(p[1]);
    const int64_t so = s[0] / int64_t(sizeof(TOut)), sa = s[1] / int64_t(sizeof(TIn));
    if (so == 1 && sa == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = f(a[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * so] = f(a[i * sa]);
    }
  });
}

// out[i] = f(a[i], b[i]).
template <class T, class F>
void map2(const View& a, const View& b, const View& out, F f) {
  for_each_row<3>({out, a, b}, [&](auto p, int64_t n, auto s) {
    T* o = reinterpret_cast<T*>(p[0]);
    const T* x = reinterpret_cast<const T*>(p[1]);
    const T* y = reinterpret_cast<const T*>(p[2]);
    const int64_t so = s[0] / int64_t(sizeof(T)), sx = s[1] / int64_t(sizeof(T)), sy = s[2] / int64_t(sizeof(T));
    if (so == 1 && sx == 1 && sy == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], y[i]);
    } else if (so == 1 && sx == 1 && sy == 0) {
      const T yv = *y;
      for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], yv);
    } else if (so == 1 && sx == 0 && sy == 1) {
      const T xv = *x;
      for (int64_t i = 0; i < n; ++i) o[i] = f(xv, y[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * so] = f(x[i * sx], y[i * sy]);
    }
  });
}

// ---- 16-bit floats in float32 blocks ----
// A 16-bit row is computed block by block: its operands widened into float32 buffers
// (the SIMD conversions of half_convert.h where a row is contiguous), the float functor's
// loop over the buffer, and the block rounded back. Each element is still computed in
// float32 from exactly widened operands and rounded once, so the bits are those of a loop
// converting one element at a time (the bulk conversions give the scalar code's bits).
// NOTE: each block is read before it is written: an in-place op (output = an input) is
// exact, but an output that partly overlaps an input at a shift (a[1:] += a[:-1]) sees
// the old values, not those the element-by-element loop had just written (no device
// promises either; CUDA's threads differ too).

template <class T> constexpr bool is_half_float = false;
template <HalfFormat Format> constexpr bool is_half_float<HalfFloat<Format>> = true;

// Elements per block: 8 KiB of float32 per operand, so a binary op's two buffers and its
// 16-bit rows stay in L1 between the conversions and the loop.
constexpr int64_t kHalfBlock = 2048;

// dst[i] = src[i * stride] widened, i < n (stride 0: one broadcast value).
template <class Half> void widen_block(const uint16_t* src, int64_t stride, float* dst, int64_t n) {
  if (stride == 1) {
    if constexpr (std::is_same_v<Half, BFloat16>) bfloat16_to_float(src, dst, n);
    else float16_to_float(src, dst, n);
  } else if (stride == 0) {
    std::fill(dst, dst + n, float(Half::from_bits(*src)));
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = float(Half::from_bits(src[i * stride]));
  }
}

// dst[i * stride] = src[i] rounded, i < n.
template <class Half> void narrow_block(const float* src, uint16_t* dst, int64_t stride, int64_t n) {
  if (stride == 1) {
    if constexpr (std::is_same_v<Half, BFloat16>) bfloat16_from_float(src, dst, n);
    else float16_from_float(src, dst, n);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i * stride] = Half(src[i]).bits;
  }
}

// map1<Half, Half> in blocks: out[i] = f(x[i]) with f on float.
template <class Half, class F>
void map1_blocked(const View& x, const View& out, F f) {
  static_assert(is_half_float<Half>);
  for_each_row<2>({out, x}, [&](auto p, int64_t n, auto s) {
    uint16_t* o = reinterpret_cast<uint16_t*>(p[0]);
    const uint16_t* a = reinterpret_cast<const uint16_t*>(p[1]);
    const int64_t so = s[0] / int64_t(sizeof(Half)), sa = s[1] / int64_t(sizeof(Half));
    alignas(64) float block[kHalfBlock];
    for (int64_t start = 0; start < n; start += kHalfBlock) {
      const int64_t m = std::min(kHalfBlock, n - start);
      widen_block<Half>(a + start * sa, sa, block, m);
      for (int64_t i = 0; i < m; ++i) block[i] = f(block[i]);
      narrow_block<Half>(block, o + start * so, so, m);
    }
  });
}

// map2<Half> in blocks: out[i] = f(a[i], b[i]) with f on float; a broadcast operand
// (stride 0) is widened once per block.
template <class Half, class F>
void map2_blocked(const View& a, const View& b, const View& out, F f) {
  static_assert(is_half_float<Half>);
  for_each_row<3>({out, a, b}, [&](auto p, int64_t n, auto s) {
    uint16_t* o = reinterpret_cast<uint16_t*>(p[0]);
    const uint16_t* x = reinterpret_cast<const uint16_t*>(p[1]);
    const uint16_t* y = reinterpret_cast<const uint16_t*>(p[2]);
    const int64_t z = sizeof(Half), so = s[0] / z, sx = s[1] / z, sy = s[2] / z;
    alignas(64) float xb[kHalfBlock], yb[kHalfBlock];
    for (int64_t start = 0; start < n; start += kHalfBlock) {
      const int64_t m = std::min(kHalfBlock, n - start);
      if (sy == 0) {
        const float yv = float(Half::from_bits(*y));
        widen_block<Half>(x + start * sx, sx, xb, m);
        for (int64_t i = 0; i < m; ++i) xb[i] = f(xb[i], yv);
      } else if (sx == 0) {
        const float xv = float(Half::from_bits(*x));
        widen_block<Half>(y + start * sy, sy, yb, m);
        for (int64_t i = 0; i < m; ++i) xb[i] = f(xv, yb[i]);
      } else {
        widen_block<Half>(x + start * sx, sx, xb, m);
        widen_block<Half>(y + start * sy, sy, yb, m);
        for (int64_t i = 0; i < m; ++i) xb[i] = f(xb[i], yb[i]);
      }
      narrow_block<Half>(xb, o + start * so, so, m);
    }
  });
}

}  // namespace vgrad::cpu

// The CPU's strided N-d iteration: operands of one shape are walked row by row,
// after dropping size-1 dims and merging dims that are contiguous in every operand,
// so most loops become one long row that the compiler vectorises; map1/map2 are
// the elementwise loops built on it.
#pragma once
#include <array>
#include <cstdint>
#include <type_traits>

#include "core/backend.h"
#include "core/geometry.h"

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

}  // namespace vgrad::cpu

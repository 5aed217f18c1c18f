// CPU im2col and col2im: the window unfolding under conv2d and pooling, written as
// one row of OW outputs at a time so the inner loop is a strided copy (a plain copy
// at stride 1) that the compiler vectorises; and max pooling with its indices.
// Side by side with cuda/conv.cu.
#include <algorithm>
#include <bit>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/cpu/cpu_backend.h"
#include "core/cpu/thread_pool.h"

namespace vgrad::cpu {
namespace {

// The output columns [lo, hi) of one kernel column kw whose input column
// iw = ow·stride + shift (shift = kw·dilation − pad) is inside [0, W).
struct ColumnSpan {
  int64_t lo, hi, shift;
};
inline ColumnSpan valid_columns(const WindowGeometry& g, int64_t kw) {
  const int64_t shift = kw * g.dilation_w - g.pad_w;
  int64_t lo = shift >= 0 ? 0 : (-shift + g.stride_w - 1) / g.stride_w;
  int64_t hi = g.width - shift <= 0 ? 0 : (g.width - shift - 1) / g.stride_w + 1;
  hi = std::min(hi, g.out_w);
  lo = std::min(lo, hi);
  return {lo, hi, shift};
}

// Calls row(c, span, n, ih, col_row) for every (image, output row) of col's row
// r = (c, kh, kw), with span kw's valid output columns (worked out once per r: its
// divisions cost more than a short row's copy), ih the input row read (possibly outside
// [0, H)) and col_row the OW entries. Shared by both directions, so they agree on the
// layout by construction.
template <class T, class Row>
void for_each_window_row(const WindowGeometry& g, int64_t r, T* col, Row&& row) {
  const int64_t spatial = g.out_h * g.out_w, cols = g.col_cols();
  const int64_t kw = r % g.kernel_w, kh = r / g.kernel_w % g.kernel_h, c = r / (g.kernel_w * g.kernel_h);
  const ColumnSpan span = valid_columns(g, kw);
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t oh = 0; oh < g.out_h; ++oh)
      row(c, span, n, oh * g.stride_h - g.pad_h + kh * g.dilation_h, col + r * cols + n * spatial + oh * g.out_w);
}

// One col row per piece on the thread pool. The rows are short (OW entries, 14 in a
// small CNN): plain loops rather than memcpy/fill calls per row.
template <class T> void im2col_typed(const View& x_view, const WindowGeometry& g, const View& col_view) {
  const T* x = x_view.ptr<T>();
  const int64_t plane = g.height * g.width;
  parallel_for(g.col_rows(), [&](int64_t r) {
    for_each_window_row(g, r, col_view.ptr<T>(), [&](int64_t c, ColumnSpan span, int64_t n, int64_t ih, T* out) {
      if (ih < 0 || ih >= g.height) {
        for (int64_t ow = 0; ow < g.out_w; ++ow) out[ow] = T(0);
        return;
      }
      const T* in = x + (n * g.channels + c) * plane + ih * g.width;
      for (int64_t ow = 0; ow < span.lo; ++ow) out[ow] = T(0);
      if (g.stride_w == 1) {
        const T* src = in + span.shift;
        for (int64_t ow = span.lo; ow < span.hi; ++ow) out[ow] = src[ow];
      } else {
        for (int64_t ow = span.lo; ow < span.hi; ++ow) out[ow] = in[ow * g.stride_w + span.shift];
      }
      for (int64_t ow = span.hi; ow < g.out_w; ++ow) out[ow] = T(0);
    });
  });
}

// One input channel per piece (its KH·KW col rows all add into its planes, in the same
// order whatever the thread count).
template <class T> void col2im_typed(const View& col_view, const WindowGeometry& g, const View& x_view) {
  T* x = x_view.ptr<T>();
  const int64_t plane = g.height * g.width, taps = g.kernel_h * g.kernel_w;
  parallel_for(g.channels, [&](int64_t channel) {
    for (int64_t n = 0; n < g.batch; ++n) {
      T* p = x + (n * g.channels + channel) * plane;
      for (int64_t i = 0; i < plane; ++i) p[i] = T(0);
    }
    for (int64_t r = channel * taps; r < (channel + 1) * taps; ++r)
      for_each_window_row(g, r, col_view.ptr<T>(), [&](int64_t c, ColumnSpan span, int64_t n, int64_t ih, T* in) {
        if (ih < 0 || ih >= g.height) return;
        T* out = x + (n * g.channels + c) * plane + ih * g.width;
        if (g.stride_w == 1) {
          T* dst = out + span.shift;
          for (int64_t ow = span.lo; ow < span.hi; ++ow) dst[ow] += in[ow];
        } else {
          for (int64_t ow = span.lo; ow < span.hi; ++ow) out[ow * g.stride_w + span.shift] += in[ow];
        }
      });
  });
}

// Max pooling by PyTorch's rule: walking the window row by row from max = −∞ and the
// first valid position, a value wins when it is greater or NaN (so ties keep the first,
// NaN propagates and the last NaN is the index). Vectorised across one output row: each
// tap of the window is a branch-free pass over the row's OW outputs (a select the
// compiler turns into SIMD blends) that keeps the tap number beside the max, in an
// integer as wide as T; positions h·W + w are made once per output at the end, from a
// table of the taps' offsets. 2x2 stride-2 windows (the usual CNN pool) take a single
// pass with the four values in registers.
template <class T> using TapOf = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
template <class T> using BitsOf = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;

// best, at = v, tap when v wins. Written as a bit blend: a ?: here compiles to a branch
// (GCC 12) in the short rows the vector loop leaves to scalar code, and random data
// mispredicts it half the time (2x slower).
template <class T, class Tap> inline void take_if_wins(T v, Tap tap, T& best, Tap& at) {
  using Bits = BitsOf<T>;
  const Bits wins = Bits(0) - Bits((v > best) | (v != v));  // all ones when v wins
  best = std::bit_cast<T>((std::bit_cast<Bits>(v) & wins) | (std::bit_cast<Bits>(best) & ~wins));
  at = Tap((Bits(tap) & wins) | (Bits(at) & ~wins));
}

// Per-thread scratch reused across calls: tap numbers, and the 2x2 path's pair maxima.
template <class V> std::vector<V>& reused_buffer(int64_t size) {
  thread_local std::vector<V> buffer;
  if (buffer.size() < size_t(size)) buffer.resize(size_t(size));
  return buffer;
}
template <class Tap> std::vector<Tap>& tap_buffer(int64_t size) { return reused_buffer<Tap>(size); }
template <class T> std::vector<T>& pair_buffer(int64_t size) { return reused_buffer<T>(size); }

// kernel 2x2, stride 2, no padding, no dilation: the window of output ow is
// x[2·oh + {0, 1}][2·ow + {0, 1}]. The rule is associative over ordered halves (the last
// NaN, else the first max), so each row's pairs are reduced first, in one flat pass over
// the plane when W is even (rows of 7-14 outputs are too short to vectorise alone), and
// then the two rows of each window: (top-left ⊕ top-right) ⊕ (bottom-left ⊕ bottom-right).
template <class T> void max_pool_2x2_stride2(const T* x, const WindowGeometry& g, T* out, int64_t* indices) {
  using Tap = TapOf<T>;
  const int64_t w = g.width, ow_n = g.out_w, rows = 2 * g.out_h;
  std::vector<T>& pair_max = pair_buffer<T>(rows * ow_n);
  Tap* pair_tap = tap_buffer<Tap>(rows * ow_n).data();  // 0: left, 1: right
  T* pair_best = pair_max.data();
  auto reduce_pairs = [&](const T* in, int64_t count, T* best, Tap* tap) {
    for (int64_t k = 0; k < count; ++k) {
      T b = in[2 * k];
      Tap t = 0;
      take_if_wins(in[2 * k + 1], Tap(1), b, t);
      best[k] = b;
      tap[k] = t;
    }
  };
  if (w == 2 * ow_n) {
    reduce_pairs(x, rows * ow_n, pair_best, pair_tap);
  } else {  // odd W: the last column is in no window
    for (int64_t r = 0; r < rows; ++r) reduce_pairs(x + r * w, ow_n, pair_best + r * ow_n, pair_tap + r * ow_n);
  }
  const Tap below = Tap(w);
  for (int64_t oh = 0; oh < g.out_h; ++oh) {
    const T* top = pair_best + 2 * oh * ow_n;
    const T* bottom = top + ow_n;
    Tap* tap = pair_tap + 2 * oh * ow_n;  // the top row's taps become the window's
    const Tap* bottom_tap = tap + ow_n;
    T* out_row = out + oh * ow_n;
    for (int64_t ow = 0; ow < ow_n; ++ow) {
      T best = top[ow];
      take_if_wins(bottom[ow], Tap(below + bottom_tap[ow]), best, tap[ow]);
      out_row[ow] = best;
    }
    int64_t* at_row = indices + oh * ow_n;
    const int64_t origin = 2 * oh * w;
    for (int64_t ow = 0; ow < ow_n; ++ow) at_row[ow] = origin + 2 * ow + tap[ow];
  }
}

// Any window: tap t = kh·KW + kw, in PyTorch's order.
template <class T> void max_pool_windows(const T* x, const WindowGeometry& g, T* out, int64_t* indices) {
  using Tap = TapOf<T>;
  std::vector<Tap>& taps = tap_buffer<Tap>(g.out_w);
  std::vector<int64_t> offset(size_t(g.kernel_h * g.kernel_w));  // of tap t from the window's corner
  for (int64_t kh = 0; kh < g.kernel_h; ++kh)
    for (int64_t kw = 0; kw < g.kernel_w; ++kw)
      offset[size_t(kh * g.kernel_w + kw)] = kh * g.dilation_h * g.width + kw * g.dilation_w;
  for (int64_t oh = 0; oh < g.out_h; ++oh) {
    T* best = out + oh * g.out_w;
    Tap* at = taps.data();
    std::fill(best, best + g.out_w, -std::numeric_limits<T>::infinity());
    std::fill(at, at + g.out_w, Tap(-1));
    const int64_t top = oh * g.stride_h - g.pad_h;
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      const int64_t ih = top + kh * g.dilation_h;
      if (ih < 0 || ih >= g.height) continue;
      for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
        const auto [lo, hi, shift] = valid_columns(g, kw);
        const T* row = x + ih * g.width + shift;
        const Tap tap = Tap(kh * g.kernel_w + kw);
        if (g.stride_w == 1) {
          for (int64_t ow = lo; ow < hi; ++ow) take_if_wins(row[ow], tap, best[ow], at[ow]);
        } else {
          for (int64_t ow = lo; ow < hi; ++ow) take_if_wins(row[ow * g.stride_w], tap, best[ow], at[ow]);
        }
      }
    }
    int64_t* at_row = indices + oh * g.out_w;
    for (int64_t ow = 0; ow < g.out_w; ++ow) {
      const int64_t left = ow * g.stride_w - g.pad_w;
      if (at[ow] >= 0) {
        at_row[ow] = top * g.width + left + offset[size_t(at[ow])];
      } else {  // every value −∞: PyTorch's index is the window's first valid position
        int64_t ih = top, iw = left;
        while (ih < 0) ih += g.dilation_h;
        while (iw < 0) iw += g.dilation_w;
        at_row[ow] = ih * g.width + iw;
      }
    }
  }
}

template <class T>
void max_pool_typed(const View& x_view, const WindowGeometry& g, const View& out_view, const View& indices_view) {
  const int64_t plane = g.height * g.width, spatial = g.out_h * g.out_w;
  const bool two_by_two = g.kernel_h == 2 && g.kernel_w == 2 && g.stride_h == 2 && g.stride_w == 2 && g.pad_h == 0 &&
                          g.pad_w == 0 && g.dilation_h == 1 && g.dilation_w == 1;
  for (int64_t p = 0; p < g.batch * g.channels; ++p) {
    const T* x = x_view.ptr<T>() + p * plane;
    T* out = out_view.ptr<T>() + p * spatial;
    int64_t* indices = indices_view.ptr<int64_t>() + p * spatial;
    if (two_by_two) {
      max_pool_2x2_stride2(x, g, out, indices);
    } else {
      max_pool_windows(x, g, out, indices);
    }
  }
}

// A scatter-add in output order: sequential, so the sum order is fixed.
template <class T> void max_pool_backward_typed(const View& grad_out, const View& indices, const WindowGeometry& g,
                                                const View& grad_x) {
  const int64_t plane = g.height * g.width, spatial = g.out_h * g.out_w;
  T* gx = grad_x.ptr<T>();
  const T* go = grad_out.ptr<T>();
  const int64_t* idx = indices.ptr<int64_t>();
  std::fill(gx, gx + grad_x.numel(), T(0));
  for (int64_t p = 0; p < g.batch * g.channels; ++p)
    for (int64_t i = p * spatial; i < (p + 1) * spatial; ++i) gx[p * plane + idx[i]] += go[i];
}

}  // namespace

// The CPU has no convolution library: conv2d runs as im2col + GEMM (autograd/ops/conv.cpp).
bool CpuBackend::conv2d_impl(ConvPass, const View&, const View&, const View&, const ConvGeometry&) { return false; }

void CpuBackend::max_pool2d_impl(const View& x, const WindowGeometry& g, const View& out, const View& indices) {
  if (x.dtype == DType::Float32) return max_pool_typed<float>(x, g, out, indices);
  max_pool_typed<double>(x, g, out, indices);
}

void CpuBackend::max_pool2d_backward_impl(const View& grad_out, const View& indices, const WindowGeometry& g,
                                          const View& grad_x) {
  if (grad_x.dtype == DType::Float32) return max_pool_backward_typed<float>(grad_out, indices, g, grad_x);
  max_pool_backward_typed<double>(grad_out, indices, g, grad_x);
}

void CpuBackend::im2col_impl(const View& x, const WindowGeometry& g, const View& col) {
  if (x.dtype == DType::Float32) return im2col_typed<float>(x, g, col);
  im2col_typed<double>(x, g, col);
}

void CpuBackend::col2im_impl(const View& col, const WindowGeometry& g, const View& x) {
  if (x.dtype == DType::Float32) return col2im_typed<float>(col, g, x);
  col2im_typed<double>(col, g, x);
}

}  // namespace vgrad::cpu

// CPU im2col and col2im: the window unfolding under conv2d and pooling, written as
// one row of OW outputs at a time so the inner loop is a strided copy (a plain copy
// at stride 1) that the compiler vectorises; and max pooling with its indices.
// Side by side with cuda/conv.cu.
#include <algorithm>
#include <cstring>
#include <limits>

#include "core/cpu/cpu_backend.h"

namespace vgrad::cpu {
namespace {

// Calls row(c, kh, kw, n, oh, ih, col_row) for every (row of col, image, output row),
// with ih the input row read (possibly outside [0, H)) and col_row the OW entries.
// Shared by both directions, so they agree on the layout by construction.
template <class T, class Row>
void for_each_window_row(const WindowGeometry& g, T* col, Row&& row) {
  const int64_t spatial = g.out_h * g.out_w, cols = g.col_cols();
  int64_t r = 0;
  for (int64_t c = 0; c < g.channels; ++c)
    for (int64_t kh = 0; kh < g.kernel_h; ++kh)
      for (int64_t kw = 0; kw < g.kernel_w; ++kw, ++r)
        for (int64_t n = 0; n < g.batch; ++n)
          for (int64_t oh = 0; oh < g.out_h; ++oh)
            row(c, kh, kw, n, oh * g.stride_h - g.pad_h + kh * g.dilation_h,
                col + r * cols + n * spatial + oh * g.out_w);
}

// The output columns [lo, hi) whose input column ow·stride − pad + kw·dilation is inside [0, W).
inline void valid_columns(const WindowGeometry& g, int64_t kw, int64_t& lo, int64_t& hi) {
  const int64_t shift = kw * g.dilation_w - g.pad_w;  // iw = ow·stride + shift
  lo = shift >= 0 ? 0 : (-shift + g.stride_w - 1) / g.stride_w;
  hi = g.width - shift <= 0 ? 0 : (g.width - shift - 1) / g.stride_w + 1;
  hi = std::min(hi, g.out_w);
  lo = std::min(lo, hi);
}

template <class T> void im2col_typed(const View& x_view, const WindowGeometry& g, const View& col_view) {
  const T* x = x_view.ptr<T>();
  const T pad = T(0);
  const int64_t plane = g.height * g.width;
  for_each_window_row(g, col_view.ptr<T>(), [&](int64_t c, int64_t, int64_t kw, int64_t n, int64_t ih, T* out) {
    if (ih < 0 || ih >= g.height) {
      std::fill(out, out + g.out_w, pad);
      return;
    }
    int64_t lo, hi;
    valid_columns(g, kw, lo, hi);
    const T* in = x + (n * g.channels + c) * plane + ih * g.width;
    const int64_t shift = kw * g.dilation_w - g.pad_w;  // iw = ow·stride + shift
    std::fill(out, out + lo, pad);
    if (g.stride_w == 1) {
      std::memcpy(out + lo, in + lo + shift, size_t(hi - lo) * sizeof(T));
    } else {
      for (int64_t ow = lo; ow < hi; ++ow) out[ow] = in[ow * g.stride_w + shift];
    }
    std::fill(out + hi, out + g.out_w, pad);
  });
}

template <class T> void col2im_typed(const View& col_view, const WindowGeometry& g, const View& x_view) {
  T* x = x_view.ptr<T>();
  std::fill(x, x + x_view.numel(), T(0));
  const int64_t plane = g.height * g.width;
  for_each_window_row(g, col_view.ptr<T>(), [&](int64_t c, int64_t, int64_t kw, int64_t n, int64_t ih, T* in) {
    if (ih < 0 || ih >= g.height) return;
    int64_t lo, hi;
    valid_columns(g, kw, lo, hi);
    T* out = x + (n * g.channels + c) * plane + ih * g.width;
    const int64_t shift = kw * g.dilation_w - g.pad_w;
    if (g.stride_w == 1) {
      for (int64_t ow = lo; ow < hi; ++ow) out[ow + shift] += in[ow];
    } else {
      for (int64_t ow = lo; ow < hi; ++ow) out[ow * g.stride_w + shift] += in[ow];
    }
  });
}

// Two passes per output row, each a branch-free loop over OW that the compiler
// vectorises: the window max first, then the first position holding it (scanning the
// window backwards, so the earliest match is written last). One pass with a
// data-dependent branch per pixel was 2.5x slower (mispredicted on random data).
template <class T> void max_pool_typed(const View& x_view, const WindowGeometry& g, const View& out_view,
                                       const View& indices_view) {
  const int64_t plane = g.height * g.width, spatial = g.out_h * g.out_w;
  auto for_each_tap = [&](int64_t oh, bool backwards, auto&& tap) {  // tap(ih, shift, lo, hi)
    for (int64_t i = 0; i < g.kernel_h; ++i) {
      const int64_t kh = backwards ? g.kernel_h - 1 - i : i;
      const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
      if (ih < 0 || ih >= g.height) continue;
      for (int64_t j = 0; j < g.kernel_w; ++j) {
        const int64_t kw = backwards ? g.kernel_w - 1 - j : j;
        int64_t lo, hi;
        valid_columns(g, kw, lo, hi);
        tap(ih, kw * g.dilation_w - g.pad_w, lo, hi);
      }
    }
  };
  for (int64_t p = 0; p < g.batch * g.channels; ++p) {
    const T* x = x_view.ptr<T>() + p * plane;
    for (int64_t oh = 0; oh < g.out_h; ++oh) {
      T* out = out_view.ptr<T>() + p * spatial + oh * g.out_w;
      int64_t* at = indices_view.ptr<int64_t>() + p * spatial + oh * g.out_w;
      std::fill(out, out + g.out_w, -std::numeric_limits<T>::infinity());
      for_each_tap(oh, false, [&](int64_t ih, int64_t shift, int64_t lo, int64_t hi) {
        const T* row = x + ih * g.width + shift;
        for (int64_t ow = lo; ow < hi; ++ow) {
          const T v = row[ow * g.stride_w];
          out[ow] = v > out[ow] || v != v ? v : out[ow];
        }
      });
      for_each_tap(oh, true, [&](int64_t ih, int64_t shift, int64_t lo, int64_t hi) {
        const T* row = x + ih * g.width + shift;
        for (int64_t ow = lo; ow < hi; ++ow) {
          const T v = row[ow * g.stride_w], m = out[ow];
          at[ow] = v == m || (v != v && m != m) ? ih * g.width + ow * g.stride_w + shift : at[ow];
        }
      });
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

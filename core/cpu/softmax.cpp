// CPU softmax/log_softmax over the last dim (forward and backward) and the fused
// softmax-cross-entropy loss with label smoothing. Side by side with cuda/softmax.cu.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/cpu/cpu_backend.h"
#include "core/cpu/strided.h"

namespace vgrad::cpu {

void CpuBackend::softmax_impl(const View& x, const View& out, bool log) {
  const int64_t cols = x.shape[x.ndim - 1], rows = cols == 0 ? 0 : x.numel() / cols;
  visit_wide_dtype(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    if constexpr (!is_int<T>) {
      const T* in = x.ptr<T>();
      T* o = out.ptr<T>();
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = in + r * cols;
        T* yr = o + r * cols;
        T max_value = -std::numeric_limits<T>::infinity();
        for (int64_t c = 0; c < cols; ++c) max_value = std::max(max_value, xr[c]);
        T total = 0;
        for (int64_t c = 0; c < cols; ++c) {
          yr[c] = std::exp(xr[c] - max_value);
          total += yr[c];
        }
        if (log) {
          // (x - max) - log(total), not x - (max + log(total)): with logits near 1000 the
          // sum max + log(total) would round away float32's last digits of log(total).
          const T log_total = std::log(total);
          for (int64_t c = 0; c < cols; ++c) yr[c] = (xr[c] - max_value) - log_total;
        } else {
          const T inv = T(1) / total;
          for (int64_t c = 0; c < cols; ++c) yr[c] *= inv;
        }
      }
    }
  });
}

void CpuBackend::softmax_backward_impl(const View& y, const View& grad_y, const View& grad_x, bool log) {
  const int64_t cols = y.shape[y.ndim - 1], rows = cols == 0 ? 0 : y.numel() / cols;
  visit_wide_dtype(y.dtype, [&](auto zero) {
    using T = decltype(zero);
    if constexpr (!is_int<T>) {
      for (int64_t r = 0; r < rows; ++r) {
        const T* yr = y.ptr<T>() + r * cols;
        const T* gr = grad_y.ptr<T>() + r * cols;
        T* dr = grad_x.ptr<T>() + r * cols;
        T dot = 0;
        if (log) {  // dx = dy - softmax * sum(dy)
          for (int64_t c = 0; c < cols; ++c) dot += gr[c];
          for (int64_t c = 0; c < cols; ++c) dr[c] = gr[c] - std::exp(yr[c]) * dot;
        } else {  // dx = y * (dy - sum(dy * y))
          for (int64_t c = 0; c < cols; ++c) dot += gr[c] * yr[c];
          for (int64_t c = 0; c < cols; ++c) dr[c] = yr[c] * (gr[c] - dot);
        }
      }
    }
  });
}

void CpuBackend::cross_entropy_impl(const View& logits, const View& target, double smoothing, const View& probs,
                               const View& loss_rows) {
  const int64_t rows = logits.shape[0], classes = logits.shape[1];
  const int64_t* t = target.ptr<int64_t>();
  visit_wide_dtype(logits.dtype, [&](auto zero) {
    using T = decltype(zero);
    if constexpr (!is_int<T>) {
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = logits.ptr<T>() + r * classes;
        T* pr = probs.ptr<T>() + r * classes;
        T max_value = -std::numeric_limits<T>::infinity();
        for (int64_t c = 0; c < classes; ++c) max_value = std::max(max_value, xr[c]);
        T total = 0, sum_logits = 0;
        for (int64_t c = 0; c < classes; ++c) {
          pr[c] = std::exp(xr[c] - max_value);
          total += pr[c];
          sum_logits += xr[c];
        }
        const T log_total = std::log(total) + max_value, inv = T(1) / total;
        for (int64_t c = 0; c < classes; ++c) pr[c] *= inv;
        // -sum_c q_c log p_c with q = (1-s) onehot + s/C and log p_c = x_c - log_total, as
        // log_total - (1-s) x_t - s mean(x): without smoothing the mean is left out, so a
        // class masked with a -inf logit costs nothing (0·inf would be NaN), as in PyTorch.
        const T s = T(smoothing);
        T value = log_total - (T(1) - s) * xr[t[r * target.strides[0]]];
        if (s != T(0)) value -= s * (sum_logits / T(classes));
        loss_rows.ptr<T>()[r * loss_rows.strides[0]] = value;
      }
    }
  });
}

void CpuBackend::cross_entropy_backward_impl(const View& probs, const View& target, double smoothing, double scale,
                                        const View& grad_logits) {
  const int64_t rows = probs.shape[0], classes = probs.shape[1];
  visit_wide_dtype(probs.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T off = T(smoothing / double(classes)), on = T(1 - smoothing) + off, s = T(scale);
    for (int64_t r = 0; r < rows; ++r) {
      const T* pr = probs.ptr<T>() + r * classes;
      T* gr = grad_logits.ptr<T>() + r * classes;
      for (int64_t c = 0; c < classes; ++c) gr[c] = s * (pr[c] - off);
      gr[target.ptr<int64_t>()[r * target.strides[0]]] -= s * (on - off);
    }
  });
}

}  // namespace vgrad::cpu

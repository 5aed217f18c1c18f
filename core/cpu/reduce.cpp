// CPU reductions (sum/max/min/argmax/argmin over any set of dims, keepdim form) and
// the sum of squares for gradient clipping. Side by side with cuda/reduce.cu.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/cpu/cpu_backend.h"
#include "core/cpu/strided.h"
#include "core/scalar_ops.h"

namespace vgrad::cpu {

using scalar::is_nan;

void CpuBackend::reduce_impl(ReduceOp op, const View& in, const View& out, double scale) {
  // The output is read-modify-written through a view of in's shape whose reduced
  // dims have stride 0: every input element lands on its output slot.
  View acc = out;
  for (int d = 0; d < in.ndim; ++d) {
    acc.shape[d] = in.shape[d];
    if (out.shape[d] == 1 && in.shape[d] != 1) acc.strides[d] = 0;
  }
  if (op == ReduceOp::ArgMax || op == ReduceOp::ArgMin) {
    // One reduced axis: scan along it for every output element.
    int axis = -1;
    for (int d = 0; d < in.ndim; ++d)
      if (out.shape[d] == 1 && in.shape[d] != 1) axis = d;
    const bool is_max = op == ReduceOp::ArgMax;
    visit_wide_dtype(in.dtype, [&](auto zero) {
      using T = decltype(zero);
      View first = in;  // in restricted to index 0 along the axis
      if (axis >= 0) first.shape[axis] = 1;
      const int64_t len = axis >= 0 ? in.shape[axis] : 1, step = axis >= 0 ? in.strides[axis] : 0;
      for_each_row<2>({out, first}, [&](auto p, int64_t n, auto s) {
        int64_t* o = reinterpret_cast<int64_t*>(p[0]);
        const T* x = reinterpret_cast<const T*>(p[1]);
        for (int64_t i = 0; i < n; ++i) {
          const T* row = x + i * s[1] / int64_t(sizeof(T));
          int64_t best = 0;
          T best_value = row[0];
          for (int64_t j = 1; j < len; ++j) {
            const T v = row[j * step];
            // NaN counts as the extreme (as in NumPy); the first extreme wins ties.
            if (is_nan(v) && !is_nan(best_value)) { best = j; best_value = v; }
            else if (is_max ? v > best_value : v < best_value) { best = j; best_value = v; }
          }
          o[i * s[0] / 8] = best;
        }
      });
    });
    return;
  }
  visit_wide_dtype(in.dtype, [&](auto zero) {
    using T = decltype(zero);
    // Floats start from -inf/+inf, not lowest()/max(): the max of an all -inf row is -inf.
    using Lim = std::numeric_limits<T>;
    const T init = op == ReduceOp::Sum ? T(0)
                   : op == ReduceOp::Max ? (Lim::has_infinity ? -Lim::infinity() : Lim::lowest())
                                         : (Lim::has_infinity ? Lim::infinity() : Lim::max());
    // NOTE: not fill(out, double(init)): int64's max is not a double, and converting
    // the rounded 2^63 back to int64 overflows.
    for_each_row<1>({out}, [&](auto p, int64_t n, auto s) {
      T* o = reinterpret_cast<T*>(p[0]);
      // Contiguous case spelled out: with the stride division inside the index, g++
      // vectorised this into AVX-512 scatters, ~10% of a (64,256) column sum.
      const int64_t so = s[0] / int64_t(sizeof(T));
      if (so == 1) std::fill(o, o + n, init);
      else for (int64_t i = 0; i < n; ++i) o[i * so] = init;
    });
    if (in.numel() == 0) return;
    auto combine = [op](T o, T v) {
      if (op == ReduceOp::Sum) return T(o + v);
      if (is_nan(v)) return v;  // NaN propagates
      return op == ReduceOp::Max ? (v > o ? v : o) : (v < o ? v : o);
    };
    for_each_row<2>({acc, in}, [&](auto p, int64_t n, auto s) {
      T* o = reinterpret_cast<T*>(p[0]);
      const T* x = reinterpret_cast<const T*>(p[1]);
      const int64_t so = s[0] / int64_t(sizeof(T)), sx = s[1] / int64_t(sizeof(T));
      if (so == 0 && sx == 1 && op == ReduceOp::Sum) {
        // Row sum: several accumulators so the vectoriser can work.
        T lanes[8] = {};
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
          for (int l = 0; l < 8; ++l) lanes[l] += x[i + l];
        T total = 0;
        for (int l = 0; l < 8; ++l) total += lanes[l];
        for (; i < n; ++i) total += x[i];
        *o += total;
      } else if (so == 0 && sx == 1) {
        // Row max/min: 8 lanes, with the NaN test off the dependency chain (one scalar
        // chain with a NaN branch per element ran ~20% behind a plain std::max loop).
        // Without NaNs the lanes give the same extreme; with any, the scalar loop below
        // redoes the row so that the NaN propagates exactly as before.
        const bool is_max = op == ReduceOp::Max;
        T lanes[8];
        bool nan_lanes[8];
        for (int l = 0; l < 8; ++l) {
          lanes[l] = *o;
          nan_lanes[l] = is_nan(*o);
        }
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
          for (int l = 0; l < 8; ++l) {
            const T v = x[i + l];
            nan_lanes[l] |= is_nan(v);
            lanes[l] = is_max ? (v > lanes[l] ? v : lanes[l]) : (v < lanes[l] ? v : lanes[l]);
          }
        bool any_nan = false;
        T value = lanes[0];
        for (int l = 0; l < 8; ++l) {
          any_nan |= nan_lanes[l];
          value = is_max ? (lanes[l] > value ? lanes[l] : value) : (lanes[l] < value ? lanes[l] : value);
        }
        for (; i < n; ++i) {
          any_nan |= is_nan(x[i]);
          value = is_max ? (x[i] > value ? x[i] : value) : (x[i] < value ? x[i] : value);
        }
        if (any_nan) {
          value = *o;
          for (int64_t j = 0; j < n; ++j) value = combine(value, x[j]);
        }
        *o = value;
      } else if (so == 0) {
        T value = *o;
        for (int64_t i = 0; i < n; ++i) value = combine(value, x[i * sx]);
        *o = value;
      } else if (so == 1 && sx == 1) {
        for (int64_t i = 0; i < n; ++i) o[i] = combine(o[i], x[i]);  // column sums: vectorises
      } else {
        for (int64_t i = 0; i < n; ++i) o[i * so] = combine(o[i * so], x[i * sx]);
      }
    });
    if (op == ReduceOp::Sum && scale != 1.0) map1<T, T>(out, out, scalar::Affine<T>{T(scale), T(0)});
  });
}

// Each tensor's own sum, then their sum in order: what clip_grad_norm added up before it
// took them all at once, bit for bit.
double CpuBackend::sum_of_squares_impl(const View* xs, size_t count) {
  double total = 0;
  for (size_t k = 0; k < count; ++k) {
    double sum = 0;
    visit_wide_dtype(xs[k].dtype, [&](auto zero) {
      using T = decltype(zero);
      const T* v = xs[k].ptr<T>();
      const int64_t n = xs[k].numel();
      for (int64_t i = 0; i < n; ++i) sum += double(v[i]) * double(v[i]);
    });
    total += sum;
  }
  return total;
}

// One pass per gradient: store g·inverse (16-bit: in float32, rounded once) and note
// whether a stored value is Inf or NaN: !(|y| <= max) is true for both, and is a compare
// the compiler vectorises.
void CpuBackend::unscale_and_check_impl(const View* grads, size_t count, double inverse, const View& found) {
  bool any = false;
  for (size_t k = 0; k < count; ++k) {
    visit_dtype(grads[k].dtype, [&](auto zero) {
      using T = decltype(zero);
      if constexpr (!is_int<T>) {
        using C = compute_t<T>;
        const C inv = static_cast<C>(inverse), largest = std::numeric_limits<C>::max();
        T* g = grads[k].ptr<T>();
        const int64_t n = grads[k].numel();
        int bad = 0;
        for (int64_t i = 0; i < n; ++i) {
          const T y = static_cast<T>(static_cast<C>(g[i]) * inv);
          g[i] = y;
          bad |= !(std::abs(static_cast<C>(y)) <= largest);
        }
        any = any || bad != 0;
      }
    });
  }
  if (any) *found.ptr<float>() = 1.0f;
}

}  // namespace vgrad::cpu

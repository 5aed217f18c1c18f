// CPU implementations of the Backend primitives (see core/backend.h for each contract).
// Every loop runs over rows from for_each_row, with a contiguous fast path.
#include "core/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

#include "core/cpu/strided.h"
#include "core/error.h"

namespace vgrad::cpu {
namespace {

void* raw_alloc(size_t bytes, int) { return std::aligned_alloc(64, (bytes + 63) / 64 * 64); }
void raw_free(void* ptr, int) { std::free(ptr); }

template <class T> constexpr bool is_int = std::is_same_v<T, int64_t>;
template <class T> bool is_nan(T v) {
  if constexpr (is_int<T>) return false;
  else return std::isnan(v);
}

// out[i] = f(x[i]) with the contiguous and strided cases spelled out for the vectoriser.
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

template <class T> T gelu(T x) { return T(0.5) * x * (T(1) + std::erf(x * T(M_SQRT1_2))); }
template <class T> T gelu_grad(T x) {
  const T cdf = T(0.5) * (T(1) + std::erf(x * T(M_SQRT1_2)));
  const T pdf = std::exp(T(-0.5) * x * x) * T(0.3989422804014327);
  return cdf + x * pdf;
}

template <class T>
void unary_typed(UnaryOp op, const View& x, const View& out, double a_param, double b_param) {
  const T a = static_cast<T>(a_param), b = static_cast<T>(b_param);
  auto need_float = [&](const char* name) {
    if constexpr (is_int<T>) fail("{}: not defined for int64 tensors (convert with .to(vgrad::DType::Float32))", name);
  };
  switch (op) {
    case UnaryOp::Neg: return map1<T, T>(x, out, [](T v) { return T(-v); });
    case UnaryOp::Abs: return map1<T, T>(x, out, [](T v) { return v < 0 ? T(-v) : v; });
    case UnaryOp::Sign: return map1<T, T>(x, out, [](T v) { return T((v > 0) - (v < 0)); });
    case UnaryOp::Relu: return map1<T, T>(x, out, [](T v) { return v > 0 ? v : T(0); });
    case UnaryOp::Square: return map1<T, T>(x, out, [](T v) { return T(v * v); });
    case UnaryOp::Affine: return map1<T, T>(x, out, [a, b](T v) { return T(a * v + b); });
    case UnaryOp::Clamp: return map1<T, T>(x, out, [a, b](T v) { return std::min(std::max(v, a), b); });
    case UnaryOp::LeakyRelu: return map1<T, T>(x, out, [a](T v) { return v > 0 ? v : T(a * v); });
    case UnaryOp::Cast: return map1<T, T>(x, out, [](T v) { return v; });
    default: break;
  }
  if constexpr (!is_int<T>) {
    switch (op) {
      case UnaryOp::Exp: return map1<T, T>(x, out, [](T v) { return std::exp(v); });
      case UnaryOp::Log: return map1<T, T>(x, out, [](T v) { return std::log(v); });
      case UnaryOp::Sqrt: return map1<T, T>(x, out, [](T v) { return std::sqrt(v); });
      case UnaryOp::Sigmoid: return map1<T, T>(x, out, [](T v) { return T(1) / (T(1) + std::exp(-v)); });
      case UnaryOp::Tanh: return map1<T, T>(x, out, [](T v) { return std::tanh(v); });
      case UnaryOp::Gelu: return map1<T, T>(x, out, [](T v) { return gelu(v); });
      case UnaryOp::PowScalar: return map1<T, T>(x, out, [a](T v) { return std::pow(v, a); });
      case UnaryOp::RPowScalar: return map1<T, T>(x, out, [a](T v) { return std::pow(a, v); });
      case UnaryOp::Reciprocal: return map1<T, T>(x, out, [](T v) { return T(1) / v; });
      default: break;
    }
  }
  need_float("unary op");
  fail("unary: op {} not implemented", static_cast<int>(op));
}

template <class T>
void binary_typed(BinaryOp op, const View& a, const View& b, const View& out) {
  switch (op) {
    case BinaryOp::Add: return map2<T>(a, b, out, [](T x, T y) { return T(x + y); });
    case BinaryOp::Sub: return map2<T>(a, b, out, [](T x, T y) { return T(x - y); });
    case BinaryOp::Mul: return map2<T>(a, b, out, [](T x, T y) { return T(x * y); });
    case BinaryOp::Div:
      if constexpr (is_int<T>) {
        // Integer division by zero is undefined behaviour in C++: refuse it.
        return map2<T>(a, b, out, [](T x, T y) {
          if (y == 0) fail("div: integer division by zero");
          return T(x / y);
        });
      } else {
        return map2<T>(a, b, out, [](T x, T y) { return T(x / y); });
      }
    case BinaryOp::Pow: return map2<T>(a, b, out, [](T x, T y) { return T(std::pow(x, y)); });
    case BinaryOp::Maximum: return map2<T>(a, b, out, [](T x, T y) { return std::max(x, y); });
    case BinaryOp::Minimum: return map2<T>(a, b, out, [](T x, T y) { return std::min(x, y); });
    case BinaryOp::Eq: return map2<T>(a, b, out, [](T x, T y) { return T(x == y); });
    case BinaryOp::Ne: return map2<T>(a, b, out, [](T x, T y) { return T(x != y); });
    case BinaryOp::Lt: return map2<T>(a, b, out, [](T x, T y) { return T(x < y); });
    case BinaryOp::Le: return map2<T>(a, b, out, [](T x, T y) { return T(x <= y); });
    case BinaryOp::Gt: return map2<T>(a, b, out, [](T x, T y) { return T(x > y); });
    case BinaryOp::Ge: return map2<T>(a, b, out, [](T x, T y) { return T(x >= y); });
    case BinaryOp::ReluBackward: return map2<T>(a, b, out, [](T g, T x) { return x > 0 ? g : T(0); });
    case BinaryOp::SigmoidBackward: return map2<T>(a, b, out, [](T g, T y) { return T(g * y * (T(1) - y)); });
    case BinaryOp::TanhBackward: return map2<T>(a, b, out, [](T g, T y) { return T(g * (T(1) - y * y)); });
    case BinaryOp::GeluBackward:
      if constexpr (!is_int<T>) return map2<T>(a, b, out, [](T g, T x) { return g * gelu_grad(x); });
      break;
  }
  fail("binary: op {} not defined for {}", static_cast<int>(op), dtype_name(out.dtype));
}

// SplitMix64 over (seed, counter): a counter-based stream, so any element can be
// drawn independently and the same (seed, offset) always gives the same numbers.
inline uint64_t mix(uint64_t seed, uint64_t counter) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + counter * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
inline double uniform01(uint64_t seed, uint64_t counter) { return double(mix(seed, counter) >> 11) * 0x1.0p-53; }

template <class Gen>
void fill_random(const View& out, Gen gen) {
  int64_t i = 0;
  visit_dtype(out.dtype, [&](auto zero) {
    using T = decltype(zero);
    for_each_row<1>({out}, [&](auto p, int64_t n, auto s) {
      T* o = reinterpret_cast<T*>(p[0]);
      const int64_t so = s[0] / int64_t(sizeof(T));
      for (int64_t j = 0; j < n; ++j) o[j * so] = static_cast<T>(gen(i++));
    });
  });
}

void check_index(const View& index, int64_t limit, const char* op) {
  const int64_t* idx = index.ptr<int64_t>();
  for (int64_t i = 0; i < index.shape[0]; ++i)
    if (idx[i * index.strides[0]] < 0 || idx[i * index.strides[0]] >= limit)
      fail("{}: index {} out of range for dimension of size {} (position {})", op, idx[i * index.strides[0]], limit, i);
}

}  // namespace

CpuBackend::CpuBackend() : allocator_(raw_alloc, raw_free, 0) {}

Backend& cpu_backend_instance() {
  static CpuBackend backend;
  return backend;
}

void CpuBackend::copy_from_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void CpuBackend::copy_to_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }

void CpuBackend::fill(const View& out, double value) {
  visit_dtype(out.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T v = static_cast<T>(value);
    for_each_row<1>({out}, [&](auto p, int64_t n, auto s) {
      T* o = reinterpret_cast<T*>(p[0]);
      const int64_t so = s[0] / int64_t(sizeof(T));
      if (so == 1) std::fill(o, o + n, v);
      else for (int64_t i = 0; i < n; ++i) o[i * so] = v;
    });
  });
}

void CpuBackend::copy(const View& src, const View& out) {
  visit_dtype(out.dtype, [&](auto out_zero) {
    using TOut = decltype(out_zero);
    visit_dtype(src.dtype, [&](auto in_zero) {
      using TIn = decltype(in_zero);
      map1<TOut, TIn>(src, out, [](TIn v) { return static_cast<TOut>(v); });
    });
  });
}

void CpuBackend::unary(UnaryOp op, const View& x, const View& out, double a, double b) {
  if (op == UnaryOp::Cast) return copy(x, out);
  if (x.is_contiguous() && out.is_contiguous() && vector_unary(op, x, out, a, b)) return;
  visit_dtype(out.dtype, [&](auto zero) { unary_typed<decltype(zero)>(op, x, out, a, b); });
}

void CpuBackend::binary(BinaryOp op, const View& a, const View& b, const View& out) {
  visit_dtype(out.dtype, [&](auto zero) { binary_typed<decltype(zero)>(op, a, b, out); });
}

void CpuBackend::where(const View& cond, const View& a, const View& b, const View& out) {
  visit_dtype(out.dtype, [&](auto zero) {
    using T = decltype(zero);
    for_each_row<4>({out, cond, a, b}, [&](auto p, int64_t n, auto s) {
      T* o = reinterpret_cast<T*>(p[0]);
      const T* c = reinterpret_cast<const T*>(p[1]);
      const T* x = reinterpret_cast<const T*>(p[2]);
      const T* y = reinterpret_cast<const T*>(p[3]);
      const int64_t z = sizeof(T);
      for (int64_t i = 0; i < n; ++i)
        o[i * s[0] / z] = c[i * s[1] / z] != T(0) ? x[i * s[2] / z] : y[i * s[3] / z];
    });
  });
}

void CpuBackend::reduce(ReduceOp op, const View& in, const View& out, double scale) {
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
    visit_dtype(in.dtype, [&](auto zero) {
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
  visit_dtype(in.dtype, [&](auto zero) {
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
    if (op == ReduceOp::Sum && scale != 1.0) {
      if constexpr (is_int<T>) fail("mean: not defined for int64 tensors");
      else unary_typed<T>(UnaryOp::Affine, out, out, scale, 0.0);
    }
  });
}

void CpuBackend::gemm(const GemmArgs& args) { blas_gemm(args); }

void CpuBackend::softmax(const View& x, const View& out, bool log) {
  const int64_t cols = x.shape[x.ndim - 1], rows = cols == 0 ? 0 : x.numel() / cols;
  visit_dtype(x.dtype, [&](auto zero) {
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
    } else {
      fail("softmax: not defined for int64 tensors");
    }
  });
}

void CpuBackend::softmax_backward(const View& y, const View& grad_y, const View& grad_x, bool log) {
  const int64_t cols = y.shape[y.ndim - 1], rows = cols == 0 ? 0 : y.numel() / cols;
  visit_dtype(y.dtype, [&](auto zero) {
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

void CpuBackend::cross_entropy(const View& logits, const View& target, double smoothing, const View& probs,
                               const View& loss_rows) {
  const int64_t rows = logits.shape[0], classes = logits.shape[1];
  const int64_t* t = target.ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r)
    if (t[r * target.strides[0]] < 0 || t[r * target.strides[0]] >= classes)
      fail("cross_entropy: target {} out of range for {} classes (row {})", t[r * target.strides[0]], classes, r);
  visit_dtype(logits.dtype, [&](auto zero) {
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
        // -sum_c q_c log p_c with q = (1-s) onehot + s/C and log p_c = x_c - log_total.
        const T nll = log_total - xr[t[r * target.strides[0]]];
        const T uniform_term = log_total - sum_logits / T(classes);
        loss_rows.ptr<T>()[r * loss_rows.strides[0]] = T(1 - smoothing) * nll + T(smoothing) * uniform_term;
      }
    }
  });
}

void CpuBackend::cross_entropy_backward(const View& probs, const View& target, double smoothing, double scale,
                                        const View& grad_logits) {
  const int64_t rows = probs.shape[0], classes = probs.shape[1];
  visit_dtype(probs.dtype, [&](auto zero) {
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

void CpuBackend::index_select(const View& x, int dim, const View& index, const View& out) {
  check_index(index, x.shape[dim], "index_select");
  const int64_t* idx = index.ptr<int64_t>();
  if (dim == 0 && x.is_contiguous() && out.is_contiguous()) {  // gathering rows: one memcpy each
    const size_t row_bytes = size_t(x.shape[0] ? x.numel() / x.shape[0] : 0) * dtype_size(x.dtype);
    for (int64_t i = 0; i < index.shape[0]; ++i)
      std::memcpy(static_cast<char*>(out.data) + size_t(i) * row_bytes,
                  static_cast<const char*>(x.data) + size_t(idx[i * index.strides[0]]) * row_bytes, row_bytes);
    return;
  }
  View src = x, dst = out;
  src.shape[dim] = 1;
  dst.shape[dim] = 1;
  const size_t elem = dtype_size(x.dtype);
  for (int64_t i = 0; i < index.shape[0]; ++i) {
    src.data = static_cast<char*>(x.data) + idx[i * index.strides[0]] * x.strides[dim] * int64_t(elem);
    dst.data = static_cast<char*>(out.data) + i * out.strides[dim] * int64_t(elem);
    copy(src, dst);
  }
}

void CpuBackend::index_add(const View& out, int dim, const View& index, const View& src) {
  check_index(index, out.shape[dim], "index_add");
  const int64_t* idx = index.ptr<int64_t>();
  View s = src, d = out;
  s.shape[dim] = 1;
  d.shape[dim] = 1;
  const size_t elem = dtype_size(out.dtype);
  for (int64_t i = 0; i < index.shape[0]; ++i) {
    s.data = static_cast<char*>(src.data) + i * src.strides[dim] * int64_t(elem);
    d.data = static_cast<char*>(out.data) + idx[i * index.strides[0]] * out.strides[dim] * int64_t(elem);
    binary(BinaryOp::Add, d, s, d);
  }
}

void CpuBackend::uniform(const View& out, double low, double high, RandomState& state) {
  const uint64_t seed = state.seed, base = state.offset;
  fill_random(out, [&](int64_t i) { return low + (high - low) * uniform01(seed, base + uint64_t(i)); });
  state.offset += uint64_t(out.numel());
}

void CpuBackend::normal(const View& out, double mean, double stddev, RandomState& state) {
  const uint64_t seed = state.seed, base = state.offset;
  // Box-Muller on pairs of counters: element i uses pair i/2 (cos for even, sin for odd).
  fill_random(out, [&](int64_t i) {
    const uint64_t pair = base + uint64_t(i / 2) * 2;
    const double u1 = 1.0 - uniform01(seed, pair), u2 = uniform01(seed, pair + 1);
    const double radius = std::sqrt(-2.0 * std::log(u1)), angle = 2.0 * M_PI * u2;
    return mean + stddev * radius * (i % 2 == 0 ? std::cos(angle) : std::sin(angle));
  });
  state.offset += uint64_t(out.numel() + 1) / 2 * 2;
}

void CpuBackend::dropout_mask(const View& out, double p, RandomState& state) {
  const uint64_t seed = state.seed, base = state.offset;
  const double keep_scale = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
  fill_random(out, [&](int64_t i) { return uniform01(seed, base + uint64_t(i)) >= p ? keep_scale : 0.0; });
  state.offset += uint64_t(out.numel());
}

void CpuBackend::sgd_update(const View& param, const View& grad, const View& momentum_buffer, const SgdParams& p) {
  visit_dtype(param.dtype, [&](auto zero) {
    using T = decltype(zero);
    if constexpr (!is_int<T>) {
      T* __restrict w = param.ptr<T>();
      const T* __restrict g = grad.ptr<T>();
      T* __restrict buf = momentum_buffer.ptr<T>();
      const T lr = T(p.lr), wd = T(p.weight_decay), mom = T(p.momentum), damp = T(1 - p.dampening);
      const int64_t n = param.numel();
      if (p.momentum == 0) {
        for (int64_t i = 0; i < n; ++i) w[i] -= lr * (g[i] + wd * w[i]);
        return;
      }
      // The step is lr·(d + μ·b) with Nesterov, lr·b without: flags become factors so
      // the loops have no branches and vectorise (the buffer is unset before the first step).
      const T use_d = p.nesterov ? T(1) : T(0), use_b = p.nesterov ? mom : T(1);
      if (p.first_step) {
        for (int64_t i = 0; i < n; ++i) {
          const T d = g[i] + wd * w[i];
          buf[i] = d;
          w[i] -= lr * (use_d * d + use_b * d);
        }
        return;
      }
      for (int64_t i = 0; i < n; ++i) {
        const T d = g[i] + wd * w[i];
        const T b = mom * buf[i] + damp * d;
        buf[i] = b;
        w[i] -= lr * (use_d * d + use_b * b);
      }
    }
  });
}

void CpuBackend::adam_update(const View& param, const View& grad, const View& exp_avg, const View& exp_avg_sq,
                             const AdamParams& p) {
  visit_dtype(param.dtype, [&](auto zero) {
    using T = decltype(zero);
    if constexpr (!is_int<T>) {
      T* w = param.ptr<T>();
      const T* g = grad.ptr<T>();
      T* m = exp_avg.ptr<T>();
      T* v = exp_avg_sq.ptr<T>();
      const double bias1 = 1 - std::pow(p.beta1, double(p.step)), bias2 = 1 - std::pow(p.beta2, double(p.step));
      const T step_size = T(p.lr / bias1), inv_sqrt_bias2 = T(1 / std::sqrt(bias2));
      const T b1 = T(p.beta1), b2 = T(p.beta2), eps = T(p.eps), wd = T(p.weight_decay), lr = T(p.lr);
      const int64_t n = param.numel();
      for (int64_t i = 0; i < n; ++i) {
        T gi = g[i];
        if (p.decoupled) w[i] *= T(1) - lr * wd;
        else gi += wd * w[i];
        m[i] = b1 * m[i] + (T(1) - b1) * gi;
        v[i] = b2 * v[i] + (T(1) - b2) * gi * gi;
        w[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bias2 + eps);
      }
    }
  });
}

double CpuBackend::sum_of_squares(const View& x) {
  double total = 0;
  visit_dtype(x.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* v = x.ptr<T>();
    const int64_t count = x.numel();
    for (int64_t i = 0; i < count; ++i) total += double(v[i]) * double(v[i]);
  });
  return total;
}

}  // namespace vgrad::cpu

namespace vgrad {
Backend& cpu_backend() { return cpu::cpu_backend_instance(); }
}  // namespace vgrad

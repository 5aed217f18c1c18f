// Elementwise kernels: fill, copy (with dtype conversion), unary, binary and where.
// One grid-stride kernel per op over a collapsed N-d geometry (32-bit index math when
// it fits), and a plain pointer kernel when every operand is contiguous.
// Not here: reductions (reduce.cu), row-wise ops (softmax.cu).
#include <cmath>

#include "cuda/kernel_utils.cuh"

namespace vgrad::cuda::kernels {
namespace {

constexpr double kSqrtHalf = 0.70710678118654752440;    // 1/sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1/sqrt(2*pi)

template <class F> __global__ void __launch_bounds__(kBlock) contiguous_kernel(int64_t n, F f) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += step) f.contiguous(i);
}

template <int N, class Index, class F>
__global__ void __launch_bounds__(kBlock) strided_kernel(Geometry<N> geometry, Index n, F f) {
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    Index off[N];
    geometry.offsets(i, off);
    f.strided(off);
  }
}

// Runs f over out's elements. operands[0] is out; the others broadcast to its shape.
template <int N, class F> void launch(const Context& ctx, const Array* const (&operands)[N], const F& f) {
  const Array& out = *operands[0];
  int64_t strides[N][kMaxDims];
  const int64_t* stride_ptrs[N];
  for (int k = 0; k < N; ++k) {
    const Array& a = *operands[k];
    if (k == 0) {
      for (int d = 0; d < out.ndim; ++d) strides[0][d] = out.strides[d];
    } else if (!broadcast_strides(a.ndim, a.shape, a.strides, out.ndim, out.shape, strides[k])) {
      detail::throw_error("cuda elementwise: an operand does not broadcast to the output shape");
    }
    stride_ptrs[k] = strides[k];
  }
  const Geometry<N> geometry = make_geometry<N>(out.ndim, out.shape, stride_ptrs);
  const int64_t n = geometry.numel();
  if (n == 0) return;
  const unsigned grid = grid_for(ctx, n);
  if (geometry.all_contiguous()) {
    contiguous_kernel<<<grid, kBlock, 0, ctx.stream>>>(n, f);
  } else if (geometry.fits_32bit()) {
    strided_kernel<N, uint32_t><<<grid, kBlock, 0, ctx.stream>>>(geometry, static_cast<uint32_t>(n), f);
  } else {
    strided_kernel<N, int64_t><<<grid, kBlock, 0, ctx.stream>>>(geometry, n, f);
  }
  VGRAD_CUDA_CHECK_LAUNCH();
}

// ---------------- fill and copy ----------------

template <class T> struct FillFn {
  T* out;
  T value;
  __device__ void contiguous(int64_t i) const { out[i] = value; }
  template <class I> __device__ void strided(const I (&off)[1]) const { out[off[0]] = value; }
};

template <class TSrc, class TDst> struct CopyFn {
  TDst* out;
  const TSrc* src;
  __device__ void contiguous(int64_t i) const { out[i] = static_cast<TDst>(src[i]); }
  template <class I> __device__ void strided(const I (&off)[2]) const { out[off[0]] = static_cast<TDst>(src[off[1]]); }
};

// ---------------- unary ops: y = f(x) ----------------

template <class T> struct NegOp {
  __device__ T operator()(T x) const { return -x; }
};
template <class T> struct ExpOp {
  __device__ T operator()(T x) const { return d_exp(x); }
};
template <class T> struct LogOp {
  __device__ T operator()(T x) const { return d_log(x); }
};
template <class T> struct SqrtOp {
  __device__ T operator()(T x) const { return d_sqrt(x); }
};
template <class T> struct AbsOp {
  __device__ T operator()(T x) const { return d_abs(x); }
};
template <class T> struct SignOp {  // sign(0) = 0, sign(NaN) = NaN
  __device__ T operator()(T x) const { return x > T(0) ? T(1) : (x < T(0) ? T(-1) : x); }
};
template <class T> struct ReluOp {  // NaN propagates (as PyTorch)
  __device__ T operator()(T x) const { return (x > T(0) || is_nan(x)) ? x : T(0); }
};
template <class T> struct SigmoidOp {  // exp(-x) overflows to inf for x << 0: 1/inf = 0, no NaN
  __device__ T operator()(T x) const { return T(1) / (T(1) + d_exp(-x)); }
};
template <class T> struct TanhOp {
  __device__ T operator()(T x) const { return d_tanh(x); }
};
template <class T> struct GeluOp {  // exact form: x * Phi(x)
  __device__ T operator()(T x) const { return T(0.5) * x * (T(1) + d_erf(x * T(kSqrtHalf))); }
};
template <class T> struct AffineOp {
  T a, b;
  __device__ T operator()(T x) const { return a * x + b; }
};
struct AffineIntOp {  // integral a and b: exact in int64
  int64_t a, b;
  __device__ int64_t operator()(int64_t x) const { return a * x + b; }
};
struct AffineIntViaDoubleOp {  // fractional a or b on int64: computed in double, truncated
  double a, b;
  __device__ int64_t operator()(int64_t x) const { return static_cast<int64_t>(a * static_cast<double>(x) + b); }
};
template <class T> struct PowScalarOp {
  T exponent;
  __device__ T operator()(T x) const { return exponent == T(2) ? x * x : d_pow(x, exponent); }
};
template <class T> struct RPowScalarOp {
  T base;
  __device__ T operator()(T x) const { return d_pow(base, x); }
};
template <class T> struct ClampOp {  // min(max(x, lo), hi): NaN stays NaN; lo > hi gives hi (as PyTorch)
  T lo, hi;
  __device__ T operator()(T x) const {
    T y = x < lo ? lo : x;
    return y > hi ? hi : y;
  }
};
template <class T> struct LeakyReluOp {
  T slope;
  __device__ T operator()(T x) const { return x > T(0) ? x : slope * x; }
};
template <class T> struct SquareOp {
  __device__ T operator()(T x) const { return x * x; }
};
template <class T> struct ReciprocalOp {
  __device__ T operator()(T x) const { return T(1) / x; }
};

template <class T, class Op> struct UnaryFn {
  T* out;
  const T* x;
  Op op;
  __device__ void contiguous(int64_t i) const { out[i] = op(x[i]); }
  template <class I> __device__ void strided(const I (&off)[2]) const { out[off[0]] = op(x[off[1]]); }
};

template <class T, class Op> void run_unary(const Context& ctx, const Array& x, const Array& out, Op op) {
  const Array* operands[2] = {&out, &x};
  launch<2>(ctx, operands, UnaryFn<T, Op>{static_cast<T*>(out.data), static_cast<const T*>(x.data), op});
}

template <class T> void unary_floating(const Context& ctx, Unary op, const Array& x, const Array& out, double a,
                                       double b) {
  switch (op) {
    case Unary::Neg: return run_unary<T>(ctx, x, out, NegOp<T>{});
    case Unary::Exp: return run_unary<T>(ctx, x, out, ExpOp<T>{});
    case Unary::Log: return run_unary<T>(ctx, x, out, LogOp<T>{});
    case Unary::Sqrt: return run_unary<T>(ctx, x, out, SqrtOp<T>{});
    case Unary::Abs: return run_unary<T>(ctx, x, out, AbsOp<T>{});
    case Unary::Sign: return run_unary<T>(ctx, x, out, SignOp<T>{});
    case Unary::Relu: return run_unary<T>(ctx, x, out, ReluOp<T>{});
    case Unary::Sigmoid: return run_unary<T>(ctx, x, out, SigmoidOp<T>{});
    case Unary::Tanh: return run_unary<T>(ctx, x, out, TanhOp<T>{});
    case Unary::Gelu: return run_unary<T>(ctx, x, out, GeluOp<T>{});
    case Unary::Affine: return run_unary<T>(ctx, x, out, AffineOp<T>{static_cast<T>(a), static_cast<T>(b)});
    case Unary::PowScalar: return run_unary<T>(ctx, x, out, PowScalarOp<T>{static_cast<T>(a)});
    case Unary::RPowScalar: return run_unary<T>(ctx, x, out, RPowScalarOp<T>{static_cast<T>(a)});
    case Unary::Clamp: return run_unary<T>(ctx, x, out, ClampOp<T>{static_cast<T>(a), static_cast<T>(b)});
    case Unary::LeakyRelu: return run_unary<T>(ctx, x, out, LeakyReluOp<T>{static_cast<T>(a)});
    case Unary::Square: return run_unary<T>(ctx, x, out, SquareOp<T>{});
    case Unary::Reciprocal: return run_unary<T>(ctx, x, out, ReciprocalOp<T>{});
  }
  detail::throw_error("cuda unary: unknown op");
}

// int64 -> the bound of [lo, hi] that int64 can hold: ceil for the lower bound,
// floor for the upper, saturated (a bound may be +-infinity).
int64_t int_bound(double value, bool lower) {
  constexpr double kMax = 9223372036854775807.0;  // rounds to 2^63
  if (value != value) return lower ? INT64_MIN : INT64_MAX;
  const double rounded = lower ? std::ceil(value) : std::floor(value);
  if (rounded >= kMax) return INT64_MAX;
  if (rounded <= -kMax) return INT64_MIN;
  return static_cast<int64_t>(rounded);
}

void unary_int64(const Context& ctx, Unary op, const Array& x, const Array& out, double a, double b) {
  using T = int64_t;
  switch (op) {
    case Unary::Neg: return run_unary<T>(ctx, x, out, NegOp<T>{});
    case Unary::Abs: return run_unary<T>(ctx, x, out, AbsOp<T>{});
    case Unary::Sign: return run_unary<T>(ctx, x, out, SignOp<T>{});
    case Unary::Relu: return run_unary<T>(ctx, x, out, ReluOp<T>{});
    case Unary::Square: return run_unary<T>(ctx, x, out, SquareOp<T>{});
    case Unary::Clamp: return run_unary<T>(ctx, x, out, ClampOp<T>{int_bound(a, true), int_bound(b, false)});
    case Unary::Affine:
      if (a == std::trunc(a) && b == std::trunc(b) && std::fabs(a) < 9.0e18 && std::fabs(b) < 9.0e18)
        return run_unary<T>(ctx, x, out, AffineIntOp{static_cast<T>(a), static_cast<T>(b)});
      return run_unary<T>(ctx, x, out, AffineIntViaDoubleOp{a, b});
    default: break;
  }
  detail::throw_error("cuda unary: op not defined for int64 (backend.cpp should have refused it)");
}

// ---------------- binary ops: out = f(a, b) ----------------

template <class T> struct AddOp {
  __device__ T operator()(T a, T b) const { return a + b; }
};
template <class T> struct SubOp {
  __device__ T operator()(T a, T b) const { return a - b; }
};
template <class T> struct MulOp {
  __device__ T operator()(T a, T b) const { return a * b; }
};
template <class T> struct DivOp {  // int64: truncates toward zero; x / 0 gives 0 instead of trapping
  __device__ T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) {
      return b == 0 ? T(0) : a / b;
    } else {
      return a / b;
    }
  }
};
template <class T> struct PowOp {
  __device__ T operator()(T a, T b) const { return d_pow(a, b); }
};
template <class T> struct MaximumOp {  // NaN propagates
  __device__ T operator()(T a, T b) const { return (is_nan(a) || a > b) ? a : b; }
};
template <class T> struct MinimumOp {
  __device__ T operator()(T a, T b) const { return (is_nan(a) || a < b) ? a : b; }
};
template <class T> struct EqOp {
  __device__ T operator()(T a, T b) const { return a == b ? T(1) : T(0); }
};
template <class T> struct NeOp {
  __device__ T operator()(T a, T b) const { return a != b ? T(1) : T(0); }
};
template <class T> struct LtOp {
  __device__ T operator()(T a, T b) const { return a < b ? T(1) : T(0); }
};
template <class T> struct LeOp {
  __device__ T operator()(T a, T b) const { return a <= b ? T(1) : T(0); }
};
template <class T> struct GtOp {
  __device__ T operator()(T a, T b) const { return a > b ? T(1) : T(0); }
};
template <class T> struct GeOp {
  __device__ T operator()(T a, T b) const { return a >= b ? T(1) : T(0); }
};
template <class T> struct ReluBackwardOp {  // a = dy, b = x; subgradient 0 at 0
  __device__ T operator()(T a, T b) const { return b > T(0) ? a : T(0); }
};
template <class T> struct SigmoidBackwardOp {  // a = dy, b = y = sigmoid(x)
  __device__ T operator()(T a, T b) const { return a * b * (T(1) - b); }
};
template <class T> struct TanhBackwardOp {  // a = dy, b = y = tanh(x)
  __device__ T operator()(T a, T b) const { return a * (T(1) - b * b); }
};
template <class T> struct GeluBackwardOp {  // a = dy, b = x: dy * (Phi(x) + x * phi(x))
  __device__ T operator()(T a, T b) const {
    const T cdf = T(0.5) * (T(1) + d_erf(b * T(kSqrtHalf)));
    const T pdf = T(kInvSqrt2Pi) * d_exp(T(-0.5) * b * b);
    return a * (cdf + b * pdf);
  }
};

template <class T, class Op> struct BinaryFn {
  T* out;
  const T* a;
  const T* b;
  Op op;
  __device__ void contiguous(int64_t i) const { out[i] = op(a[i], b[i]); }
  template <class I> __device__ void strided(const I (&off)[3]) const { out[off[0]] = op(a[off[1]], b[off[2]]); }
};

template <class T, class Op> void run_binary(const Context& ctx, const Array& a, const Array& b, const Array& out, Op op) {
  const Array* operands[3] = {&out, &a, &b};
  launch<3>(ctx, operands,
            BinaryFn<T, Op>{static_cast<T*>(out.data), static_cast<const T*>(a.data), static_cast<const T*>(b.data), op});
}

template <class T> void binary_typed(const Context& ctx, Binary op, const Array& a, const Array& b, const Array& out) {
  switch (op) {
    case Binary::Add: return run_binary<T>(ctx, a, b, out, AddOp<T>{});
    case Binary::Sub: return run_binary<T>(ctx, a, b, out, SubOp<T>{});
    case Binary::Mul: return run_binary<T>(ctx, a, b, out, MulOp<T>{});
    case Binary::Div: return run_binary<T>(ctx, a, b, out, DivOp<T>{});
    case Binary::Maximum: return run_binary<T>(ctx, a, b, out, MaximumOp<T>{});
    case Binary::Minimum: return run_binary<T>(ctx, a, b, out, MinimumOp<T>{});
    case Binary::Eq: return run_binary<T>(ctx, a, b, out, EqOp<T>{});
    case Binary::Ne: return run_binary<T>(ctx, a, b, out, NeOp<T>{});
    case Binary::Lt: return run_binary<T>(ctx, a, b, out, LtOp<T>{});
    case Binary::Le: return run_binary<T>(ctx, a, b, out, LeOp<T>{});
    case Binary::Gt: return run_binary<T>(ctx, a, b, out, GtOp<T>{});
    case Binary::Ge: return run_binary<T>(ctx, a, b, out, GeOp<T>{});
    case Binary::ReluBackward: return run_binary<T>(ctx, a, b, out, ReluBackwardOp<T>{});
    default: break;
  }
  if constexpr (std::is_floating_point_v<T>) {
    switch (op) {
      case Binary::Pow: return run_binary<T>(ctx, a, b, out, PowOp<T>{});
      case Binary::SigmoidBackward: return run_binary<T>(ctx, a, b, out, SigmoidBackwardOp<T>{});
      case Binary::TanhBackward: return run_binary<T>(ctx, a, b, out, TanhBackwardOp<T>{});
      case Binary::GeluBackward: return run_binary<T>(ctx, a, b, out, GeluBackwardOp<T>{});
      default: break;
    }
  }
  detail::throw_error("cuda binary: op not defined for this dtype (backend.cpp should have refused it)");
}

// ---------------- where ----------------

template <class TCond, class T> struct WhereFn {
  T* out;
  const TCond* cond;
  const T* a;
  const T* b;
  __device__ void contiguous(int64_t i) const { out[i] = cond[i] != TCond(0) ? a[i] : b[i]; }
  template <class I> __device__ void strided(const I (&off)[4]) const {
    out[off[0]] = cond[off[1]] != TCond(0) ? a[off[2]] : b[off[3]];
  }
};

}  // namespace

void fill(const Context& ctx, const Array& out, double value) {
  const Array* operands[1] = {&out};
  if (value == 0.0 && out.is_contiguous()) {  // all-zero bits in every dtype
    const int64_t n = out.numel();
    if (n > 0)
      VGRAD_CUDA_CHECK(cudaMemsetAsync(out.data, 0, static_cast<size_t>(n) * dtype_size(out.dtype), ctx.stream));
    return;
  }
  dispatch_all(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    T typed_value;
    if constexpr (std::is_integral_v<T>) {
      typed_value = int_bound(std::trunc(value), true);  // truncates like a cast, saturated
    } else {
      typed_value = static_cast<T>(value);
    }
    launch<1>(ctx, operands, FillFn<T>{static_cast<T*>(out.data), typed_value});
  });
}

void copy(const Context& ctx, const Array& src, const Array& out) {
  if (src.dtype == out.dtype && src.is_contiguous() && out.is_contiguous() && src.numel() == out.numel() &&
      src.ndim == out.ndim) {
    bool same_shape = true;
    for (int d = 0; d < out.ndim; ++d) same_shape = same_shape && src.shape[d] == out.shape[d];
    if (same_shape) {
      const int64_t n = out.numel();
      if (n > 0 && src.data != out.data)
        VGRAD_CUDA_CHECK(cudaMemcpyAsync(out.data, src.data, static_cast<size_t>(n) * dtype_size(out.dtype),
                                         cudaMemcpyDeviceToDevice, ctx.stream));
      return;
    }
  }
  const Array* operands[2] = {&out, &src};
  dispatch_all(src.dtype, [&](auto src_tag) {
    using TSrc = decltype(src_tag);
    dispatch_all(out.dtype, [&](auto dst_tag) {
      using TDst = decltype(dst_tag);
      launch<2>(ctx, operands, CopyFn<TSrc, TDst>{static_cast<TDst*>(out.data), static_cast<const TSrc*>(src.data)});
    });
  });
}

void unary(const Context& ctx, Unary op, const Array& x, const Array& out, double a, double b) {
  switch (out.dtype) {
    case DType::Float32: return unary_floating<float>(ctx, op, x, out, a, b);
    case DType::Float64: return unary_floating<double>(ctx, op, x, out, a, b);
    case DType::Int64: return unary_int64(ctx, op, x, out, a, b);
  }
}

void binary(const Context& ctx, Binary op, const Array& a, const Array& b, const Array& out) {
  dispatch_all(out.dtype, [&](auto tag) { binary_typed<decltype(tag)>(ctx, op, a, b, out); });
}

void where(const Context& ctx, const Array& cond, const Array& a, const Array& b, const Array& out) {
  const Array* operands[4] = {&out, &cond, &a, &b};
  dispatch_all(cond.dtype, [&](auto cond_tag) {
    using TCond = decltype(cond_tag);
    dispatch_all(out.dtype, [&](auto tag) {
      using T = decltype(tag);
      launch<4>(ctx, operands,
                WhereFn<TCond, T>{static_cast<T*>(out.data), static_cast<const TCond*>(cond.data),
                                  static_cast<const T*>(a.data), static_cast<const T*>(b.data)});
    });
  });
}

}  // namespace vgrad::cuda::kernels

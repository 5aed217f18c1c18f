// The elementwise op table: the UnaryOp and BinaryOp enums with their names, one
// host/device functor per op (what it computes on one element, used by the CPU loops
// of core/cpu/elementwise.cpp and the CUDA kernels of cuda/elementwise.cu alike), and
// visit_unary/visit_binary, the one switch from an op to its functor, and convert, the
// element conversion of copy and fill. NaN propagates as in PyTorch (relu, leaky_relu,
// maximum/minimum, clamp, sign). C++17, nvcc-clean.
// Not here: reductions, softmax and the fused optimizer steps (whole-row kernels).
#pragma once
#include <math.h>

#include <cstdint>
#include <type_traits>

#include "core/kernel_types.h"

namespace vgrad {

// y = f(x), elementwise. `a` and `b` are the op's scalar parameters.
enum class UnaryOp {
  Neg, Exp, Log, Sqrt, Abs, Sign, Relu, Sigmoid, Tanh, Gelu,
  Affine,     // a*x + b   (scalar add/sub/mul/div)
  PowScalar,  // x^a
  RPowScalar, // a^x
  Clamp,      // min(max(x, a), b)
  LeakyRelu,  // x > 0 ? x : a*x
  Square, Reciprocal,
  Log1p,      // log(1 + x), accurate for small x
  Expm1,      // exp(x) - 1, accurate for small x
};

// out = f(a, b), elementwise, with a and b broadcast to out's shape (0 strides) and
// of out's dtype. Comparisons give 1 or 0. The *Backward ops are fused gradient
// rules: a is the incoming gradient, b what the forward saved.
enum class BinaryOp {
  Add, Sub, Mul, Div, Pow, Maximum, Minimum,
  Eq, Ne, Lt, Le, Gt, Ge,
  ReluBackward,     // b > 0 ? a : 0          (b = forward input; subgradient 0 at 0)
  SigmoidBackward,  // a * b * (1 - b)        (b = forward output)
  TanhBackward,     // a * (1 - b*b)          (b = forward output)
  GeluBackward,     // a * gelu'(b)           (b = forward input)
};

// Names for messages. Exhaustive switches: a new enumerator without a name fails
// the build (-Wswitch).
constexpr const char* op_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::Neg: return "neg";
    case UnaryOp::Exp: return "exp";
    case UnaryOp::Log: return "log";
    case UnaryOp::Sqrt: return "sqrt";
    case UnaryOp::Abs: return "abs";
    case UnaryOp::Sign: return "sign";
    case UnaryOp::Relu: return "relu";
    case UnaryOp::Sigmoid: return "sigmoid";
    case UnaryOp::Tanh: return "tanh";
    case UnaryOp::Gelu: return "gelu";
    case UnaryOp::Affine: return "affine";
    case UnaryOp::PowScalar: return "pow";
    case UnaryOp::RPowScalar: return "rpow";
    case UnaryOp::Clamp: return "clamp";
    case UnaryOp::LeakyRelu: return "leaky_relu";
    case UnaryOp::Square: return "square";
    case UnaryOp::Reciprocal: return "reciprocal";
    case UnaryOp::Log1p: return "log1p";
    case UnaryOp::Expm1: return "expm1";
  }
  return "unary";
}
constexpr const char* op_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return "add";
    case BinaryOp::Sub: return "sub";
    case BinaryOp::Mul: return "mul";
    case BinaryOp::Div: return "div";
    case BinaryOp::Pow: return "pow";
    case BinaryOp::Maximum: return "maximum";
    case BinaryOp::Minimum: return "minimum";
    case BinaryOp::Eq: return "eq";
    case BinaryOp::Ne: return "ne";
    case BinaryOp::Lt: return "lt";
    case BinaryOp::Le: return "le";
    case BinaryOp::Gt: return "gt";
    case BinaryOp::Ge: return "ge";
    case BinaryOp::ReluBackward: return "relu_backward";
    case BinaryOp::SigmoidBackward: return "sigmoid_backward";
    case BinaryOp::TanhBackward: return "tanh_backward";
    case BinaryOp::GeluBackward: return "gelu_backward";
  }
  return "binary";
}
}  // namespace vgrad

namespace vgrad::scalar {

// Math per type: the float overloads call the single-precision functions, which
// exist on the host (<math.h>) and on the device (CUDA's math API) under one name.
VGRAD_HOST_DEVICE inline float exp_(float x) { return ::expf(x); }
VGRAD_HOST_DEVICE inline double exp_(double x) { return ::exp(x); }
VGRAD_HOST_DEVICE inline float log_(float x) { return ::logf(x); }
VGRAD_HOST_DEVICE inline double log_(double x) { return ::log(x); }
VGRAD_HOST_DEVICE inline float sqrt_(float x) { return ::sqrtf(x); }
VGRAD_HOST_DEVICE inline double sqrt_(double x) { return ::sqrt(x); }
VGRAD_HOST_DEVICE inline float tanh_(float x) { return ::tanhf(x); }
VGRAD_HOST_DEVICE inline double tanh_(double x) { return ::tanh(x); }
VGRAD_HOST_DEVICE inline float erf_(float x) { return ::erff(x); }
VGRAD_HOST_DEVICE inline double erf_(double x) { return ::erf(x); }
VGRAD_HOST_DEVICE inline float log1p_(float x) { return ::log1pf(x); }
VGRAD_HOST_DEVICE inline double log1p_(double x) { return ::log1p(x); }
VGRAD_HOST_DEVICE inline float expm1_(float x) { return ::expm1f(x); }
VGRAD_HOST_DEVICE inline double expm1_(double x) { return ::expm1(x); }
VGRAD_HOST_DEVICE inline float pow_(float x, float y) { return ::powf(x, y); }
VGRAD_HOST_DEVICE inline double pow_(double x, double y) { return ::pow(x, y); }

template <class T> VGRAD_HOST_DEVICE inline bool is_nan(T x) {
  if constexpr (std::is_floating_point_v<T>) return x != x;
  else return false;
}

// int64 add/sub/mul/neg/abs wrap on overflow (two's complement), as PyTorch's do: they are
// computed in the unsigned type, where signed overflow would be undefined behaviour.
template <class T, bool = std::is_integral_v<T>> struct WrappingType { using type = T; };
template <class T> struct WrappingType<T, true> { using type = std::make_unsigned_t<T>; };
template <class T> using Wrapping = typename WrappingType<T>::type;

constexpr double kSqrtHalf = 0.70710678118654752440;    // 1/sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1/sqrt(2*pi)

// Each functor: `T operator()(T x)` (unary) or `T operator()(T a, T b)` (binary), and
// kIntegral: whether it is defined on int64 (core refuses the others before any
// device runs). Parameters (a, b of the op) are members, converted to T once.

// ---------------- unary ----------------
template <class T> struct Neg {
  static constexpr bool kIntegral = true;
  VGRAD_HOST_DEVICE T operator()(T x) const {
    if constexpr (std::is_integral_v<T>) return T(Wrapping<T>(0) - Wrapping<T>(x));
    else return -x;  // -0.0 and the NaN's sign, as 0 - x would not give
  }
};
template <class T> struct Exp {
  static constexpr bool kIntegral = false;
  VGRAD_HOST_DEVICE T operator()(T x) const { return exp_(x); }
};
template <class T> struct Log {
  static constexpr bool kIntegral = false;
  VGRAD_HOST_DEVICE T operator()(T x) const { return log_(x); }
};
template <class T> struct Sqrt {
  static constexpr bool kIntegral = false;
  VGRAD_HOST_DEVICE T operator()(T x) const { return sqrt_(x); }
};
template <class T> struct Abs {
  static constexpr bool kIntegral = true;
  VGRAD_HOST_DEVICE T operator()(T x) const { return x < T(0) ? Neg<T>{}(x) : x; }
};
template <class T> struct Sign {  // sign(0) = 0, sign(NaN) = NaN
  static constexpr bool kIntegral = true;
  VGRAD_HOST_DEVICE T operator()(T x) const { return x > T(0) ? T(1) : x < T(0) ? T(-1) : is_nan(x) ? x : T(0); }
};
template <class T> struct Relu {  // !(x <= 0): NaN passes through
  static constexpr bool kIntegral = true;
  VGRAD_HOST_DEVICE T operator()(T x) const { return x <= T(0) ? T(0) : x; }
};
template <class T> struct Sigmoid {  // exp(-x) overflows to inf for x << 0: 1/inf = 0, no NaN
  static constexpr bool kIntegral = false;
  VGRAD_HOST_DEVICE T operator()(T x) const { return T(1) / (T(1) + exp_(-x)); }
};
template <class T> struct Tanh {
  static constexpr bool kIntegral = false;
  VGRAD_HOST_DEVICE T operator()(T x) const { return tanh_(x); }
};
template <class T> struct Gelu {  // exact form: x * Phi(x)
  static constexpr bool kIntegral = false;
  VGRAD_HOST_DEVICE T operator()(T x) const { return T(0.5) * x * (T(1) + erf_(x * T(kSqrtHalf))); }
};
template <class T> struct Affine {  // int64: core passes integral a and b only
  static constexpr bool kIntegral = true;
  T a, b;
  VGRAD_HOST_DEVICE T operator()(T x) const {
    if constexpr (std::is_integral_v<T>) return T(Wrapping<T>(a) * Wrapping<T>(x) + Wrapping<T>(b));  // neg(INT64_MIN)
    else return T(a * x + b);
  }
};
template <class T> struct PowScalar {
  static constexpr bool kIntegral = false;
  T exponent;
  VGRAD_HOST_DEVICE T operator()(T x) const { return exponent == T(2) ? x * x : pow_(x, exponent); }
};
template <class T> struct RPowScalar {
  static constexpr bool kIntegral = false;
  T base;
  VGRAD_HOST_DEVICE T operator()(T x) const { return pow_(base, x); }
};
template <class T> struct Clamp {  // NaN stays NaN (both comparisons are false)
  static constexpr bool kIntegral = false;
  T lo, hi;
  VGRAD_HOST_DEVICE T operator()(T x) const {
    const T y = x < lo ? lo : x;
    return y > hi ? hi : y;
  }
};
template <class T> struct LeakyRelu {  // NaN * slope is NaN
  static constexpr bool kIntegral = false;
  T slope;
  VGRAD_HOST_DEVICE T operator()(T x) const { return x > T(0) ? x : T(slope * x); }
};
template <class T> struct Square {
  static constexpr bool kIntegral = true;
  VGRAD_HOST_DEVICE T operator()(T x) const { return T(Wrapping<T>(x) * Wrapping<T>(x)); }
};
template <class T> struct Reciprocal {
  static constexpr bool kIntegral = false;
  VGRAD_HOST_DEVICE T operator()(T x) const { return T(1) / x; }
};

template <class T> struct Log1p {
  static constexpr bool kIntegral = false;
  VGRAD_HOST_DEVICE T operator()(T x) const { return log1p_(x); }
};
template <class T> struct Expm1 {
  static constexpr bool kIntegral = false;
  VGRAD_HOST_DEVICE T operator()(T x) const { return expm1_(x); }
};

// ---------------- binary ----------------
template <class T> struct Add {
  static constexpr bool kIntegral = true;
  VGRAD_HOST_DEVICE T operator()(T a, T b) const { return T(Wrapping<T>(a) + Wrapping<T>(b)); }
};
template <class T> struct Sub {
  static constexpr bool kIntegral = true;
  VGRAD_HOST_DEVICE T operator()(T a, T b) const { return T(Wrapping<T>(a) - Wrapping<T>(b)); }
};
template <class T> struct Mul {
  static constexpr bool kIntegral = true;
  VGRAD_HOST_DEVICE T operator()(T a, T b) const { return T(Wrapping<T>(a) * Wrapping<T>(b)); }
};
// int64 / int64 is true division in float32, as PyTorch: no integer division kernel,
// so no division by zero to trap.
template <class T> struct Div {
  static constexpr bool kIntegral = false;
  VGRAD_HOST_DEVICE T operator()(T a, T b) const { return a / b; }
};
// int64: exact, by squaring (wraps on overflow as int64 multiplication does); a negative
// exponent gives the truncated 1/a^-b (0 unless a is 1 or -1), where PyTorch refuses.
template <class T> struct Pow {
  static constexpr bool kIntegral = true;
  VGRAD_HOST_DEVICE T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) {
      if (b < 0) return a == 1 ? T(1) : a == -1 ? (b % 2 == 0 ? T(1) : T(-1)) : T(0);
      // In unsigned arithmetic: it wraps as documented, where signed overflow is undefined
      // (and the last squaring overflows even when the result fits: 3^39).
      using U = std::make_unsigned_t<T>;
      U result = 1, base = static_cast<U>(a);
      for (; b > 0; b >>= 1, base *= base)
        if (b & 1) result *= base;
      return static_cast<T>(result);
    } else {
      return pow_(a, b);
    }
  }
};
template <class T> struct Maximum {  // NaN in either operand gives NaN, in either order
  static constexpr bool kIntegral = true;
  VGRAD_HOST_DEVICE T operator()(T a, T b) const { return is_nan(b) ? b : a > b || is_nan(a) ? a : b; }
};
template <class T> struct Minimum {
  static constexpr bool kIntegral = true;
  VGRAD_HOST_DEVICE T operator()(T a, T b) const { return is_nan(b) ? b : a < b || is_nan(a) ? a : b; }
};
template <class T> struct Eq {
  static constexpr bool kIntegral = true;
  VGRAD_HOST_DEVICE T operator()(T a, T b) const { return a == b ? T(1) : T(0); }
};
template <class T> struct Ne {
  static constexpr bool kIntegral = true;
  VGRAD_HOST_DEVICE T operator()(T a, T b) const { return a != b ? T(1) : T(0); }
};
template <class T> struct Lt {
  static constexpr bool kIntegral = true;
  VGRAD_HOST_DEVICE T operator()(T a, T b) const { return a < b ? T(1) : T(0); }
};
template <class T> struct Le {
  static constexpr bool kIntegral = true;
  VGRAD_HOST_DEVICE T operator()(T a, T b) const { return a <= b ? T(1) : T(0); }
};
template <class T> struct Gt {
  static constexpr bool kIntegral = true;
  VGRAD_HOST_DEVICE T operator()(T a, T b) const { return a > b ? T(1) : T(0); }
};
template <class T> struct Ge {
  static constexpr bool kIntegral = true;
  VGRAD_HOST_DEVICE T operator()(T a, T b) const { return a >= b ? T(1) : T(0); }
};
template <class T> struct ReluBackward {  // a = dy, b = x; subgradient 0 at 0; NaN x passes dy (as forward)
  static constexpr bool kIntegral = false;
  VGRAD_HOST_DEVICE T operator()(T a, T b) const { return b <= T(0) ? T(0) : a; }
};
template <class T> struct SigmoidBackward {  // a = dy, b = y = sigmoid(x)
  static constexpr bool kIntegral = false;
  VGRAD_HOST_DEVICE T operator()(T a, T b) const { return a * b * (T(1) - b); }
};
template <class T> struct TanhBackward {  // a = dy, b = y = tanh(x)
  static constexpr bool kIntegral = false;
  VGRAD_HOST_DEVICE T operator()(T a, T b) const { return a * (T(1) - b * b); }
};
template <class T> struct GeluBackward {  // a = dy, b = x: dy * (Phi(x) + x * phi(x))
  static constexpr bool kIntegral = false;
  VGRAD_HOST_DEVICE T operator()(T a, T b) const {
    const T cdf = T(0.5) * (T(1) + erf_(b * T(kSqrtHalf)));
    const T pdf = T(kInvSqrt2Pi) * exp_(T(-0.5) * b * b);
    return a * (cdf + b * pdf);
  }
};

// ---------------- conversion between element types ----------------

// Floating -> int64, one rule on every device: truncation toward zero; NaN -> 0; +Inf and
// values >= 2^63 -> INT64_MAX; -Inf and values < -2^63 -> INT64_MIN. C++ leaves the
// out-of-range cases undefined (x86's cvttsd2si gives INT64_MIN, as PyTorch's CPU does even
// for NaN); this is PTX's cvt.rzi.s64 rule, so the GPU's own conversion already gives it.
template <class F> VGRAD_HOST_DEVICE inline int64_t saturating_int64(F x) {
  static_assert(std::is_floating_point_v<F>, "saturating_int64: floating input");
  constexpr F kTwoTo63 = F(9223372036854775808.0);  // exact in float and double
  if (x != x) return 0;
  if (x >= kTwoTo63) return INT64_MAX;
  if (x < -kTwoTo63) return INT64_MIN;
  return static_cast<int64_t>(x);  // in range: the cast truncates, defined
}

// The one element conversion of copy and fill on every device: a floating value (16-bit
// through float) into int64 saturates as above; every other pair is the C++ conversion
// (rounding to nearest, 16-bit destinations through float).
template <class To, class From> VGRAD_HOST_DEVICE inline To convert(From x) {
  if constexpr (std::is_same_v<To, int64_t> && !std::is_integral_v<From>) {
    return saturating_int64(static_cast<compute_t<From>>(x));
  } else {
    return static_cast<To>(x);
  }
}

// Calls fn(functor) unless the functor is not defined for T; returns whether it ran.
template <class T, class Functor, class Fn> bool apply_if_defined(Fn& fn, const Functor& functor) {
  if constexpr (std::is_integral_v<T> && !Functor::kIntegral) {
    return false;
  } else {
    fn(functor);
    return true;
  }
}

// The one switch from an op to its functor, for element type T. Host code; fn is
// called once with the functor (a loop on the CPU, a kernel launch on CUDA).
// Returns false when op is not defined for T.
template <class T, class Fn> bool visit_unary(UnaryOp op, double a, double b, Fn&& fn) {
  switch (op) {
    case UnaryOp::Neg: return apply_if_defined<T>(fn, Neg<T>{});
    case UnaryOp::Exp: return apply_if_defined<T>(fn, Exp<T>{});
    case UnaryOp::Log: return apply_if_defined<T>(fn, Log<T>{});
    case UnaryOp::Sqrt: return apply_if_defined<T>(fn, Sqrt<T>{});
    case UnaryOp::Abs: return apply_if_defined<T>(fn, Abs<T>{});
    case UnaryOp::Sign: return apply_if_defined<T>(fn, Sign<T>{});
    case UnaryOp::Relu: return apply_if_defined<T>(fn, Relu<T>{});
    case UnaryOp::Sigmoid: return apply_if_defined<T>(fn, Sigmoid<T>{});
    case UnaryOp::Tanh: return apply_if_defined<T>(fn, Tanh<T>{});
    case UnaryOp::Gelu: return apply_if_defined<T>(fn, Gelu<T>{});
    case UnaryOp::Affine: return apply_if_defined<T>(fn, Affine<T>{T(a), T(b)});
    case UnaryOp::PowScalar: return apply_if_defined<T>(fn, PowScalar<T>{T(a)});
    case UnaryOp::RPowScalar: return apply_if_defined<T>(fn, RPowScalar<T>{T(a)});
    case UnaryOp::Clamp: return apply_if_defined<T>(fn, Clamp<T>{T(a), T(b)});
    case UnaryOp::LeakyRelu: return apply_if_defined<T>(fn, LeakyRelu<T>{T(a)});
    case UnaryOp::Square: return apply_if_defined<T>(fn, Square<T>{});
    case UnaryOp::Reciprocal: return apply_if_defined<T>(fn, Reciprocal<T>{});
    case UnaryOp::Log1p: return apply_if_defined<T>(fn, Log1p<T>{});
    case UnaryOp::Expm1: return apply_if_defined<T>(fn, Expm1<T>{});
  }
  return false;
}

template <class T, class Fn> bool visit_binary(BinaryOp op, Fn&& fn) {
  switch (op) {
    case BinaryOp::Add: return apply_if_defined<T>(fn, Add<T>{});
    case BinaryOp::Sub: return apply_if_defined<T>(fn, Sub<T>{});
    case BinaryOp::Mul: return apply_if_defined<T>(fn, Mul<T>{});
    case BinaryOp::Div: return apply_if_defined<T>(fn, Div<T>{});
    case BinaryOp::Pow: return apply_if_defined<T>(fn, Pow<T>{});
    case BinaryOp::Maximum: return apply_if_defined<T>(fn, Maximum<T>{});
    case BinaryOp::Minimum: return apply_if_defined<T>(fn, Minimum<T>{});
    case BinaryOp::Eq: return apply_if_defined<T>(fn, Eq<T>{});
    case BinaryOp::Ne: return apply_if_defined<T>(fn, Ne<T>{});
    case BinaryOp::Lt: return apply_if_defined<T>(fn, Lt<T>{});
    case BinaryOp::Le: return apply_if_defined<T>(fn, Le<T>{});
    case BinaryOp::Gt: return apply_if_defined<T>(fn, Gt<T>{});
    case BinaryOp::Ge: return apply_if_defined<T>(fn, Ge<T>{});
    case BinaryOp::ReluBackward: return apply_if_defined<T>(fn, ReluBackward<T>{});
    case BinaryOp::SigmoidBackward: return apply_if_defined<T>(fn, SigmoidBackward<T>{});
    case BinaryOp::TanhBackward: return apply_if_defined<T>(fn, TanhBackward<T>{});
    case BinaryOp::GeluBackward: return apply_if_defined<T>(fn, GeluBackward<T>{});
  }
  return false;
}

// Whether op is defined on int64 tensors (the check core makes before dispatch).
inline bool defined_on_int64(UnaryOp op) {
  return visit_unary<int64_t>(op, 0, 0, [](const auto&) {});
}
inline bool defined_on_int64(BinaryOp op) {
  return visit_binary<int64_t>(op, [](const auto&) {});
}

}  // namespace vgrad::scalar

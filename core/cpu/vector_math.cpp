// Transcendental functions on contiguous float data through xtensor + xsimd:
// xsimd's vectorised exp/log/tanh are several times faster than the scalar libm
// calls in a plain loop. xtensor stays inside this file. Each vector form is
// checked against the scalar functor of core/scalar_ops.h by the op tests.
#include <xtensor/xadapt.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xnoalias.hpp>

#include "core/cpu/cpu_backend.h"

namespace vgrad::cpu {
namespace {

// NOTE: xsimd's exp converts x·log2(e) to an integer before it masks the result of a large
// |x|: at x = ±inf that conversion is out of range (UB, UBSan's float-cast-overflow). exp is
// already 0 below kExpLow and inf above kExpHigh in T, so the input is clamped there first;
// NaN stays NaN (both comparisons are false for it).
template <class T> constexpr T kExpLow = T(-746);
template <> constexpr float kExpLow<float> = -104.0f;
template <class T> constexpr T kExpHigh = T(710);
template <> constexpr float kExpHigh<float> = 89.0f;

template <class E> auto exp_of_clamped(const E& in) {
  using T = typename E::value_type;
  return xt::exp(xt::where(in < kExpLow<T>, kExpLow<T>, xt::where(in > kExpHigh<T>, kExpHigh<T>, in)));
}

template <class T>
bool vector_unary_typed(UnaryOp op, const View& x, const View& out) {
  const size_t n = static_cast<size_t>(x.numel());
  const std::array<size_t, 1> shape{n};
  auto in = xt::adapt(static_cast<const T*>(x.data), n, xt::no_ownership(), shape);
  auto o = xt::adapt(static_cast<T*>(out.data), n, xt::no_ownership(), shape);
  switch (op) {
    case UnaryOp::Exp:
      xt::noalias(o) = exp_of_clamped(in);
      return true;
    case UnaryOp::Log: xt::noalias(o) = xt::log(in); return true;
    case UnaryOp::Tanh: xt::noalias(o) = xt::tanh(in); return true;
    case UnaryOp::Sigmoid:
      xt::noalias(o) = T(1) / (T(1) + exp_of_clamped(xt::eval(-in)));
      return true;
    default: return false;
  }
}

}  // namespace

bool vector_unary(UnaryOp op, const View& x, const View& out) {
  if (x.dtype != out.dtype || !x.is_contiguous() || !out.is_contiguous() || x.numel() != out.numel()) return false;
  if (x.dtype == DType::Float32) return vector_unary_typed<float>(op, x, out);
  if (x.dtype == DType::Float64) return vector_unary_typed<double>(op, x, out);
  return false;
}

}  // namespace vgrad::cpu

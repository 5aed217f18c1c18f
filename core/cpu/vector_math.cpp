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

template <class T>
bool vector_unary_typed(UnaryOp op, const View& x, const View& out) {
  const size_t n = static_cast<size_t>(x.numel());
  const std::array<size_t, 1> shape{n};
  auto in = xt::adapt(static_cast<const T*>(x.data), n, xt::no_ownership(), shape);
  auto o = xt::adapt(static_cast<T*>(out.data), n, xt::no_ownership(), shape);
  switch (op) {
    case UnaryOp::Exp: xt::noalias(o) = xt::exp(in); return true;
    case UnaryOp::Log: xt::noalias(o) = xt::log(in); return true;
    case UnaryOp::Tanh: xt::noalias(o) = xt::tanh(in); return true;
    case UnaryOp::Sigmoid: xt::noalias(o) = T(1) / (T(1) + xt::exp(-in)); return true;
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

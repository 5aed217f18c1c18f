// CPU elementwise primitives: fill, copy (dtype conversion), unary and binary ops
// through the scalar functors of core/scalar_ops.h (the xsimd forms where faster),
// and where. 16-bit floats go through the float functor in float32 blocks and store
// rounded (strided.h's map1_blocked/map2_blocked); where selects their bits. Side by side
// with cuda/elementwise.cu.
#include <algorithm>
#include <type_traits>

#include "core/cpu/cpu_backend.h"
#include "core/cpu/half_convert.h"
#include "core/cpu/strided.h"
#include "core/error.h"
#include "core/scalar_ops.h"

namespace vgrad::cpu {

void CpuBackend::fill_impl(const View& out, double value) {
  visit_dtype(out.dtype, [&](auto zero) {
    using T = decltype(zero);
    const T v = scalar::convert<T>(value);  // int64: NaN -> 0, saturated (scalar_ops.h)
    for_each_row<1>({out}, [&](auto p, int64_t n, auto s) {
      T* o = reinterpret_cast<T*>(p[0]);
      const int64_t so = s[0] / int64_t(sizeof(T));
      if (so == 1) std::fill(o, o + n, v);
      else for (int64_t i = 0; i < n; ++i) o[i * so] = v;
    });
  });
}

namespace {

// float32 <-> float16/bfloat16: rows contiguous in both go through the bulk vector
// conversions (half_convert.h: the scalar code's bits, several times faster), strided
// rows through Half's scalar conversions.
template <class From, class To, class Scalar>
void convert_rows(const View& src, const View& out, void (*bulk)(const From*, To*, int64_t), Scalar scalar) {
  for_each_row<2>({out, src}, [&](auto p, int64_t n, auto s) {
    const From* in = reinterpret_cast<const From*>(p[1]);
    To* o = reinterpret_cast<To*>(p[0]);
    const int64_t so = s[0] / int64_t(sizeof(To)), si = s[1] / int64_t(sizeof(From));
    if (so == 1 && si == 1) return bulk(in, o, n);
    for (int64_t i = 0; i < n; ++i) o[i * so] = scalar(in[i * si]);
  });
}

// False when src -> out is no float32 <-> 16-bit float conversion.
bool copy_half_rows(const View& src, const View& out) {
  const DType from = src.dtype, to = out.dtype;
  if (from == DType::Float32 && to == DType::Float16)
    convert_rows(src, out, float16_from_float, [](float x) { return Float16(x).bits; });
  else if (from == DType::Float32 && to == DType::BFloat16)
    convert_rows(src, out, bfloat16_from_float, [](float x) { return BFloat16(x).bits; });
  else if (from == DType::Float16 && to == DType::Float32)
    convert_rows(src, out, float16_to_float, [](uint16_t h) { return float(Float16::from_bits(h)); });
  else if (from == DType::BFloat16 && to == DType::Float32)
    convert_rows(src, out, bfloat16_to_float, [](uint16_t h) { return float(BFloat16::from_bits(h)); });
  else return false;
  return true;
}

}  // namespace

void CpuBackend::copy_impl(const View& src, const View& out) {
  if (copy_half_rows(src, out)) return;
  visit_dtype(out.dtype, [&](auto out_zero) {
    using TOut = decltype(out_zero);
    visit_dtype(src.dtype, [&](auto in_zero) {
      using TIn = decltype(in_zero);
      map1<TOut, TIn>(src, out, [](TIn v) { return scalar::convert<TOut>(v); });
    });
  });
}

void CpuBackend::unary_impl(UnaryOp op, const View& x, const View& out, double a, double b) {
  if (vector_unary(op, x, out)) return;
  visit_dtype(out.dtype, [&](auto zero) {
    using T = decltype(zero);
    const bool defined = scalar::visit_unary<compute_t<T>>(op, a, b, [&](const auto& f) {
      if constexpr (is_half_float<T>) map1_blocked<T>(x, out, f);
      else map1<T, T>(x, out, f);
    });
    if (!defined)
      fail("{}: not defined for {}", op_name(op), dtype_name(out.dtype));
  });
}

void CpuBackend::binary_impl(BinaryOp op, const View& a, const View& b, const View& out) {
  visit_dtype(out.dtype, [&](auto zero) {
    using T = decltype(zero);
    const bool defined = scalar::visit_binary<compute_t<T>>(op, [&](const auto& f) {
      if constexpr (is_half_float<T>) map2_blocked<T>(a, b, out, f);
      else map2<T>(a, b, out, f);
    });
    if (!defined)
      fail("{}: not defined for {}", op_name(op), dtype_name(out.dtype));
  });
}

void CpuBackend::where_impl(const View& cond, const View& a, const View& b, const View& out) {
  visit_dtype(out.dtype, [&](auto zero) {
    using T = decltype(zero);
    // 16-bit: select bits, testing the condition on its bits (nonzero but for ±0, as
    // float(c) != 0 is; NaN counts as true) rather than widening it.
    using Bits = std::conditional_t<is_half_float<T>, uint16_t, T>;
    for_each_row<4>({out, cond, a, b}, [&](auto p, int64_t n, auto s) {
      Bits* o = reinterpret_cast<Bits*>(p[0]);
      const Bits* c = reinterpret_cast<const Bits*>(p[1]);
      const Bits* x = reinterpret_cast<const Bits*>(p[2]);
      const Bits* y = reinterpret_cast<const Bits*>(p[3]);
      const int64_t z = sizeof(Bits), so = s[0] / z, sc = s[1] / z, sx = s[2] / z, sy = s[3] / z;
      for (int64_t i = 0; i < n; ++i) {
        const Bits ci = c[i * sc];
        bool pick_x;
        if constexpr (is_half_float<T>) pick_x = (ci & 0x7fffu) != 0;
        else pick_x = ci != T(0);
        o[i * so] = pick_x ? x[i * sx] : y[i * sy];
      }
    });
  });
}

}  // namespace vgrad::cpu

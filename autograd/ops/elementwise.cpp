// Elementwise ops with NumPy broadcasting, each beside its backward rule.
// Rules return gradients of the output's (broadcast) shape; the engine sums
// them back to each input's shape, so no rule handles broadcasting itself.
#include <cmath>

#include "autograd/autocast.h"
#include "autograd/function.h"
#include "autograd/ops.h"
#include "core/error.h"
#include "core/int64_scalar.h"
#include "core/kernels.h"
#include "core/profiler.h"

namespace vgrad {

using autograd::Context;
using autograd::needs_grad;
using autograd::record;

namespace {

Tensor binary_op(BinaryOp op, const Tensor& a, const Tensor& b, const char* name) {
  return kernels::binary(op, a, b, name);
}

void check_floating(const Tensor& x, const char* op) {
  if (!is_floating(x.dtype())) fail("{}: not defined for {} tensors (convert with .to(DType::Float32))", op, dtype_name(x.dtype()));
}

// A unary op whose gradient is g * f'(saved), with f' computed by `derivative`. It opens the
// op's profiler scope, so an op that only calls it needs none of its own.
template <class Derivative>
Tensor unary_op(UnaryOp op, const Tensor& x, const char* name, bool save_output, Derivative derivative,
                double a = 0, double b = 0) {
  VGRAD_PROFILE_OP(name);
  check_floating(x, name);
  Tensor out = kernels::unary(op, x, a, b);
  if (!needs_grad({x})) return out;
  Context ctx(name);
  ctx.save_for_backward({save_output ? out : x});
  ctx.values["a"] = a;
  ctx.values["b"] = b;
  return record(out, {x}, std::move(ctx), [derivative](Context& c, const Tensor& g) {
    return std::vector<Tensor>{derivative(c, g, c.saved(0))};
  });
}

// The derivative of relu, sigmoid, tanh and gelu: one fused kernel of (g, saved).
auto fused_backward(BinaryOp op, const char* name) {
  return [op, name](Context&, const Tensor& g, const Tensor& saved) { return kernels::binary(op, g, saved, name); };
}

}  // namespace

// a + b;  da = g,  db = g
Tensor add(const Tensor& a, const Tensor& b) {
  VGRAD_PROFILE_OP("add");
  Tensor out = binary_op(BinaryOp::Add, a, b, "add");
  if (!needs_grad({a, b})) return out;
  return record(out, {a, b}, Context("add"), [](Context&, const Tensor& g) { return std::vector<Tensor>{g, g}; });
}

// a - b;  da = g,  db = -g
Tensor sub(const Tensor& a, const Tensor& b) {
  VGRAD_PROFILE_OP("sub");
  Tensor out = binary_op(BinaryOp::Sub, a, b, "sub");
  if (!needs_grad({a, b})) return out;
  return record(out, {a, b}, Context("sub"), [](Context&, const Tensor& g) { return std::vector<Tensor>{g, neg(g)}; });
}

// a * b;  da = g*b,  db = g*a
Tensor mul(const Tensor& a, const Tensor& b) {
  VGRAD_PROFILE_OP("mul");
  Tensor out = binary_op(BinaryOp::Mul, a, b, "mul");
  if (!needs_grad({a, b})) return out;
  Context ctx("mul");
  ctx.save_for_backward({a, b});
  return record(out, {a, b}, std::move(ctx), [](Context& c, const Tensor& g) {
    return std::vector<Tensor>{c.needs_input_grad(0) ? mul(g, c.saved(1)) : Tensor(),
                               c.needs_input_grad(1) ? mul(g, c.saved(0)) : Tensor()};
  });
}

// a / b;  da = g/b,  db = -g*a/b²   (int64 / int64 is true division in float32, as PyTorch)
Tensor div(const Tensor& a, const Tensor& b) {
  VGRAD_PROFILE_OP("div");
  if (!is_floating(a.dtype()) && !is_floating(b.dtype())) return div(a.to(DType::Float32), b);
  Tensor out = binary_op(BinaryOp::Div, a, b, "div");
  if (!needs_grad({a, b})) return out;
  Context ctx("div");
  ctx.save_for_backward({a, b});
  return record(out, {a, b}, std::move(ctx), [](Context& c, const Tensor& g) {
    const Tensor a_saved = c.saved(0), b_saved = c.saved(1);
    const Tensor ga = div(g, b_saved);
    return std::vector<Tensor>{ga, c.needs_input_grad(1) ? neg(mul(ga, div(a_saved, b_saved))) : Tensor()};
  });
}

// a^b;  da = g*b*a^(b-1), 0 where b = 0;  db = g*a^b*log(a), 0 where a = 0 and b >= 0.
// As PyTorch: the zeros keep 0*Inf from making NaN at a = 0; a negative base gives db NaN.
Tensor pow(const Tensor& a, const Tensor& b) {
  VGRAD_PROFILE_OP("pow");
  if (const auto wide = autograd::autocast::to_float32(a, b); wide.changed) return pow(wide.first, wide.second);
  Tensor out = binary_op(BinaryOp::Pow, a, b, "pow");
  if (!needs_grad({a, b})) return out;
  Context ctx("pow");
  ctx.save_for_backward({a, b, out});
  return record(out, {a, b}, std::move(ctx), [](Context& c, const Tensor& g) {
    const Tensor x = c.saved(0), e = c.saved(1), y = c.saved(2);
    const Tensor ga = where(eq(e, 0.0), zeros_like(g), mul(g, mul(e, pow(x, sub(e, ones_like(e))))));
    const Tensor flat_at_zero = mul(eq(x, 0.0), ge(e, 0.0));
    return std::vector<Tensor>{ga, mul(g, where(flat_at_zero, zeros_like(y), mul(y, log(x))))};
  });
}

// x^p;  dx = g*p*x^(p-1), 0 for p = 0 (as PyTorch; it would be 0*Inf at x = 0)
Tensor pow(const Tensor& x, double exponent) {
  VGRAD_PROFILE_OP("pow");
  if (const Tensor wide = autograd::autocast::to_float32(x); !wide.is_same(x)) return pow(wide, exponent);
  return unary_op(
      UnaryOp::PowScalar, x, "pow", false,
      [](Context& c, const Tensor& g, const Tensor& v) {
        const double p = c.values["a"];
        return p == 0 ? zeros_like(g) : mul(g, affine(pow(v, p - 1), p, 0));
      },
      exponent);
}

// base^x;  dx = g*base^x*log(base), 0 where base = 0 and x >= 0 (as PyTorch; 0*-Inf there)
Tensor pow(double base, const Tensor& x) {
  VGRAD_PROFILE_OP("pow");
  if (const Tensor wide = autograd::autocast::to_float32(x); !wide.is_same(x)) return pow(base, wide);
  return unary_op(
      UnaryOp::RPowScalar, x, "pow", true,
      [](Context& c, const Tensor& g, const Tensor& y) {
        const double b = c.values["a"];
        const Tensor dx = mul(g, affine(y, std::log(b), 0));
        return b == 0 ? where(le(y, 1.0), zeros_like(dx), dx) : dx;  // y = 0^x <= 1 iff x >= 0
      },
      base);
}

// max(a, b);  the gradient goes to the larger input, half to each on ties
// (PyTorch's choice), so the rule stays symmetric.
static Tensor extremum(const Tensor& a, const Tensor& b, bool is_max) {
  const char* name = is_max ? "maximum" : "minimum";
  VGRAD_PROFILE_OP(name);
  Tensor out = binary_op(is_max ? BinaryOp::Maximum : BinaryOp::Minimum, a, b, name);
  if (!needs_grad({a, b})) return out;
  Context ctx(name);
  ctx.save_for_backward({a, b});
  ctx.values["is_max"] = is_max;
  return record(out, {a, b}, std::move(ctx), [](Context& c, const Tensor& g) {
    const Tensor x = c.saved(0), y = c.saved(1);
    const Tensor wins = c.values["is_max"] != 0 ? gt(x, y) : lt(x, y);
    const Tensor weight_a = add(wins, affine(eq(x, y), 0.5, 0));  // 1, 0.5 on ties, 0
    const Tensor ga = mul(g, weight_a);
    return std::vector<Tensor>{ga, sub(g, ga)};
  });
}
Tensor maximum(const Tensor& a, const Tensor& b) { return extremum(a, b, true); }
Tensor minimum(const Tensor& a, const Tensor& b) { return extremum(a, b, false); }

// scale*x + shift;  dx = scale*g
Tensor affine(const Tensor& x, double scale, double shift) {
  VGRAD_PROFILE_OP("affine");
  // int64 * 0.5 (or * Inf, + 1e19: not int64 values) becomes float32, never truncates.
  if (!is_floating(x.dtype()) && !(scalar::is_int64_value(scale) && scalar::is_int64_value(shift)))
    return affine(x.to(DType::Float32), scale, shift);
  Tensor out = kernels::unary(UnaryOp::Affine, x, scale, shift);
  if (!needs_grad({x})) return out;
  Context ctx("affine");
  ctx.values["scale"] = scale;
  return record(out, {x}, std::move(ctx), [](Context& c, const Tensor& g) {
    return std::vector<Tensor>{affine(g, c.values["scale"], 0)};
  });
}

// -x;  dx = -g
Tensor neg(const Tensor& x) { return affine(x, -1, 0); }

// exp(x);  dx = g*y
Tensor exp(const Tensor& x) {
  VGRAD_PROFILE_OP("exp");
  if (const Tensor wide = autograd::autocast::to_float32(x); !wide.is_same(x)) return exp(wide);
  return unary_op(UnaryOp::Exp, x, "exp", true, [](Context&, const Tensor& g, const Tensor& y) { return mul(g, y); });
}
// log(x);  dx = g/x
Tensor log(const Tensor& x) {
  VGRAD_PROFILE_OP("log");
  if (const Tensor wide = autograd::autocast::to_float32(x); !wide.is_same(x)) return log(wide);
  return unary_op(UnaryOp::Log, x, "log", false, [](Context&, const Tensor& g, const Tensor& v) { return div(g, v); });
}
// sqrt(x);  dx = g/(2y)
Tensor sqrt(const Tensor& x) {
  return unary_op(UnaryOp::Sqrt, x, "sqrt", true,
                  [](Context&, const Tensor& g, const Tensor& y) { return div(g, affine(y, 2, 0)); });
}
// |x|;  dx = g*sign(x)  (0 at 0)
Tensor abs(const Tensor& x) {
  VGRAD_PROFILE_OP("abs");
  if (!is_floating(x.dtype())) return kernels::unary(UnaryOp::Abs, x);
  return unary_op(UnaryOp::Abs, x, "abs", false,
                  [](Context&, const Tensor& g, const Tensor& v) { return mul(g, kernels::unary(UnaryOp::Sign, v)); });
}
// relu(x);  dx = g where x > 0, else 0 (subgradient 0 at the kink, as PyTorch)
Tensor relu(const Tensor& x) {
  return unary_op(UnaryOp::Relu, x, "relu", false, fused_backward(BinaryOp::ReluBackward, "relu backward"));
}
// leaky_relu(x);  dx = g where x > 0, else slope*g
Tensor leaky_relu(const Tensor& x, double negative_slope) {
  return unary_op(
      UnaryOp::LeakyRelu, x, "leaky_relu", false,
      [](Context& c, const Tensor& g, const Tensor& v) {
        const double slope = c.values["a"];
        return mul(g, affine(gt(v, zeros_like(v)), 1 - slope, slope));
      },
      negative_slope);
}
// sigmoid(x);  dx = g*y*(1-y)
Tensor sigmoid(const Tensor& x) {
  return unary_op(UnaryOp::Sigmoid, x, "sigmoid", true, fused_backward(BinaryOp::SigmoidBackward, "sigmoid backward"));
}
// tanh(x);  dx = g*(1-y²)
Tensor tanh(const Tensor& x) {
  return unary_op(UnaryOp::Tanh, x, "tanh", true, fused_backward(BinaryOp::TanhBackward, "tanh backward"));
}
// gelu(x) = x*Φ(x);  dx = g*(Φ(x) + x*φ(x))
Tensor gelu(const Tensor& x) {
  return unary_op(UnaryOp::Gelu, x, "gelu", false, fused_backward(BinaryOp::GeluBackward, "gelu backward"));
}
// clamp(x, lo, hi);  dx = g inside [lo, hi], 0 outside
Tensor clamp(const Tensor& x, double min, double max) {
  VGRAD_PROFILE_OP("clamp");
  if (min > max) fail("clamp: min {} is greater than max {}", min, max);
  return unary_op(
      UnaryOp::Clamp, x, "clamp", false,
      [](Context& c, const Tensor& g, const Tensor& v) {
        const Tensor lo = full({}, c.values["a"], {.dtype = v.dtype(), .device = v.device()});
        const Tensor hi = full({}, c.values["b"], {.dtype = v.dtype(), .device = v.device()});
        return mul(g, mul(ge(v, lo), le(v, hi)));
      },
      min, max);
}
// x²;  dx = 2*g*x
Tensor square(const Tensor& x) {
  return unary_op(UnaryOp::Square, x, "square", false,
                  [](Context&, const Tensor& g, const Tensor& v) { return mul(g, affine(v, 2, 0)); });
}

// log(1 + x);  dx = g/(1 + x)
Tensor log1p(const Tensor& x) {
  return unary_op(UnaryOp::Log1p, x, "log1p", false,
                  [](Context&, const Tensor& g, const Tensor& v) { return div(g, affine(v, 1, 1)); });
}
// exp(x) - 1;  dx = g*(y + 1)
Tensor expm1(const Tensor& x) {
  return unary_op(UnaryOp::Expm1, x, "expm1", true,
                  [](Context&, const Tensor& g, const Tensor& y) { return mul(g, affine(y, 1, 1)); });
}

// Comparisons: masks of 1/0, not differentiable.
Tensor eq(const Tensor& a, const Tensor& b) { return kernels::binary(BinaryOp::Eq, a, b, "eq"); }
Tensor ne(const Tensor& a, const Tensor& b) { return kernels::binary(BinaryOp::Ne, a, b, "ne"); }
Tensor lt(const Tensor& a, const Tensor& b) { return kernels::binary(BinaryOp::Lt, a, b, "lt"); }
Tensor le(const Tensor& a, const Tensor& b) { return kernels::binary(BinaryOp::Le, a, b, "le"); }
Tensor gt(const Tensor& a, const Tensor& b) { return kernels::binary(BinaryOp::Gt, a, b, "gt"); }
Tensor ge(const Tensor& a, const Tensor& b) { return kernels::binary(BinaryOp::Ge, a, b, "ge"); }

namespace {

// x op value, a mask in x's dtype. The number takes x's dtype, except that an int64 x
// against a number that is not an int64 value (x > 0.5, x < Inf) compares in float64:
// truncating 0.5 to 0 would be wrong.
Tensor compare(BinaryOp op, const Tensor& x, double value, const char* name) {
  if (is_floating(x.dtype()) || scalar::is_int64_value(value))
    return kernels::binary(op, x, full({}, value, {.dtype = x.dtype(), .device = x.device()}), name);
  const Tensor wide = kernels::cast(x, DType::Float64);
  return kernels::cast(kernels::binary(op, wide, full({}, value, {.dtype = DType::Float64, .device = x.device()}), name),
                       x.dtype());
}

}  // namespace

Tensor eq(const Tensor& x, double value) { return compare(BinaryOp::Eq, x, value, "eq"); }
Tensor ne(const Tensor& x, double value) { return compare(BinaryOp::Ne, x, value, "ne"); }
Tensor lt(const Tensor& x, double value) { return compare(BinaryOp::Lt, x, value, "lt"); }
Tensor le(const Tensor& x, double value) { return compare(BinaryOp::Le, x, value, "le"); }
Tensor gt(const Tensor& x, double value) { return compare(BinaryOp::Gt, x, value, "gt"); }
Tensor ge(const Tensor& x, double value) { return compare(BinaryOp::Ge, x, value, "ge"); }

Tensor operator==(const Tensor& a, const Tensor& b) { return eq(a, b); }
Tensor operator!=(const Tensor& a, const Tensor& b) { return ne(a, b); }
Tensor operator<(const Tensor& a, const Tensor& b) { return lt(a, b); }
Tensor operator<=(const Tensor& a, const Tensor& b) { return le(a, b); }
Tensor operator>(const Tensor& a, const Tensor& b) { return gt(a, b); }
Tensor operator>=(const Tensor& a, const Tensor& b) { return ge(a, b); }
Tensor operator==(const Tensor& x, double value) { return eq(x, value); }
Tensor operator!=(const Tensor& x, double value) { return ne(x, value); }
Tensor operator<(const Tensor& x, double value) { return lt(x, value); }
Tensor operator<=(const Tensor& x, double value) { return le(x, value); }
Tensor operator>(const Tensor& x, double value) { return gt(x, value); }
Tensor operator>=(const Tensor& x, double value) { return ge(x, value); }
Tensor operator==(double value, const Tensor& x) { return eq(x, value); }
Tensor operator!=(double value, const Tensor& x) { return ne(x, value); }
Tensor operator<(double value, const Tensor& x) { return gt(x, value); }
Tensor operator<=(double value, const Tensor& x) { return ge(x, value); }
Tensor operator>(double value, const Tensor& x) { return lt(x, value); }
Tensor operator>=(double value, const Tensor& x) { return le(x, value); }

// cond ? a : b;  da = g where cond, db = g elsewhere
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  VGRAD_PROFILE_OP("where");
  Tensor out = kernels::where(cond, a, b);
  if (!needs_grad({a, b})) return out;
  Context ctx("where");
  ctx.save_for_backward({cond});
  return record(out, {a, b}, std::move(ctx), [](Context& c, const Tensor& g) {
    const Tensor mask = c.saved(0), zero = zeros({}, {.dtype = g.dtype(), .device = g.device()});
    return std::vector<Tensor>{kernels::where(mask, g, zero), kernels::where(mask, zero, g)};
  });
}

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& x) { return neg(x); }
Tensor operator+(const Tensor& a, double b) { return affine(a, 1, b); }
Tensor operator-(const Tensor& a, double b) { return affine(a, 1, -b); }
Tensor operator*(const Tensor& a, double b) { return affine(a, b, 0); }
Tensor operator/(const Tensor& a, double b) { return affine(a, 1.0 / b, 0); }
Tensor operator+(double a, const Tensor& b) { return affine(b, 1, a); }
Tensor operator-(double a, const Tensor& b) { return affine(b, -1, a); }
Tensor operator*(double a, const Tensor& b) { return affine(b, a, 0); }
Tensor operator/(double a, const Tensor& b) {
  return div(full({}, a, {.dtype = is_floating(b.dtype()) ? b.dtype() : DType::Float32, .device = b.device()}), b);
}

}  // namespace vgrad

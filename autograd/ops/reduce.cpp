// Reductions over all elements or chosen axes (keepdim optional), with backward
// rules: a reduced gradient is reshaped to keepdim form and expanded back.
#include "autograd/autocast.h"
#include "autograd/function.h"
#include "core/error.h"
#include "core/kernels.h"
#include "core/profiler.h"
#include "autograd/ops.h"

namespace vgrad {

using autograd::Context;
using autograd::needs_grad;
using autograd::record;

namespace {

// g of the reduced shape, seen with the input's shape (a stride-0 view, no copy).
Tensor expand_back(const Tensor& g, const Shape& input_shape, const std::vector<int64_t>& axes) {
  return expand(reshape(g, kernels::reduced_shape(input_shape, axes, true)), input_shape);
}

std::vector<int64_t> axes_of(const Context& c) { return c.ints; }

int64_t count_over(const Shape& shape, const std::vector<int64_t>& axes) {
  int64_t n = 1;
  for (int64_t a : axes) n *= shape[a];
  return n;
}

}  // namespace

// sum over axes;  dx = g expanded back over the summed axes
Tensor sum(const Tensor& x, const std::vector<int64_t>& axes_in, bool keepdim) {
  VGRAD_PROFILE_OP("sum");
  if (const Tensor wide = autograd::autocast::to_float32(x); !wide.is_same(x)) return sum(wide, axes_in, keepdim);
  const auto axes = kernels::normalize_axes(axes_in, x.dim(), "sum");
  Tensor out = kernels::reduce(ReduceOp::Sum, x, axes, keepdim, 1.0, "sum");
  if (!needs_grad({x})) return out;
  Context ctx("sum");
  ctx.ints = axes;
  const Shape in_shape = x.shape();
  return record(out, {x}, std::move(ctx), [in_shape](Context& c, const Tensor& g) {
    return std::vector<Tensor>{expand_back(g, in_shape, axes_of(c))};
  });
}

// mean over axes;  dx = g/n expanded back
Tensor mean(const Tensor& x, const std::vector<int64_t>& axes_in, bool keepdim) {
  VGRAD_PROFILE_OP("mean");
  if (const Tensor wide = autograd::autocast::to_float32(x); !wide.is_same(x)) return mean(wide, axes_in, keepdim);
  if (!is_floating(x.dtype())) fail("mean: not defined for int64 tensors (convert with .to(DType::Float32))");
  const auto axes = kernels::normalize_axes(axes_in, x.dim(), "mean");
  const int64_t n = count_over(x.shape(), axes);
  if (n == 0) fail("mean: reducing {} over an empty axis", shape_str(x.shape()));
  Tensor out = kernels::reduce(ReduceOp::Sum, x, axes, keepdim, 1.0 / double(n), "mean");
  if (!needs_grad({x})) return out;
  Context ctx("mean");
  ctx.ints = axes;
  ctx.values["n"] = double(n);
  const Shape in_shape = x.shape();
  return record(out, {x}, std::move(ctx), [in_shape](Context& c, const Tensor& g) {
    return std::vector<Tensor>{expand_back(affine(g, 1.0 / c.values["n"], 0), in_shape, axes_of(c))};
  });
}

// max/min over axes;  dx = g at the extreme elements, shared equally among ties
static Tensor extreme(const Tensor& x, const std::vector<int64_t>& axes_in, bool keepdim, bool is_max) {
  const char* name = is_max ? "max" : "min";
  VGRAD_PROFILE_OP(name);
  const auto axes = kernels::normalize_axes(axes_in, x.dim(), name);
  Tensor out = kernels::reduce(is_max ? ReduceOp::Max : ReduceOp::Min, x, axes, keepdim, 1.0, name);
  if (!needs_grad({x})) return out;
  Context ctx(name);
  ctx.ints = axes;
  ctx.save_for_backward({x, out});
  return record(out, {x}, std::move(ctx), [](Context& c, const Tensor& g) {
    const Tensor input = c.saved(0), result = c.saved(1);
    const auto axes = axes_of(c);
    const Tensor mask = eq(input, expand_back(result, input.shape(), axes));
    const Tensor ties = kernels::reduce(ReduceOp::Sum, mask, axes, true, 1.0, "max backward");
    return std::vector<Tensor>{mul(expand_back(g, input.shape(), axes), div(mask, ties))};
  });
}
Tensor amax(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) { return extreme(x, axes, keepdim, true); }
Tensor amin(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) { return extreme(x, axes, keepdim, false); }

// The values of PyTorch's max(dim)/min(dim): the gradient goes to the first extreme
// (argmax's index) alone, where amax shares it among ties.
static Tensor extreme_along(const Tensor& x, int64_t axis, bool keepdim, bool is_max) {
  if (x.dim() == 0) return extreme(x, {axis}, keepdim, is_max);  // checks the axis; one element
  const char* name = is_max ? "max" : "min";
  VGRAD_PROFILE_OP(name);
  const auto axes = kernels::normalize_axes({axis}, x.dim(), name);
  Tensor out = kernels::reduce(is_max ? ReduceOp::Max : ReduceOp::Min, x, axes, keepdim, 1.0, name);
  if (!needs_grad({x})) return out;
  Context ctx(name);
  ctx.ints = axes;
  ctx.values["is_max"] = is_max;
  ctx.save_for_backward({x});
  return record(out, {x}, std::move(ctx), [](Context& c, const Tensor& g) {
    const Tensor input = c.saved(0);
    const int64_t dim = axes_of(c)[0];
    const Tensor first = kernels::reduce(c.values["is_max"] != 0 ? ReduceOp::ArgMax : ReduceOp::ArgMin, input, {dim},
                                         true, 1.0, "max backward");
    Shape along(size_t(input.dim()), 1);
    along[size_t(dim)] = input.shape()[size_t(dim)];
    // kernels::index_range, not arange: an arange uploads from the host (a wait on a GPU)
    const Tensor positions = kernels::index_range(along[size_t(dim)], input.device()).reshape(along);
    const Tensor spread = expand_back(g, input.shape(), {dim});
    return std::vector<Tensor>{where(eq(positions, first), spread, zeros_like(spread))};
  });
}
Tensor max(const Tensor& x, int64_t axis, bool keepdim) { return extreme_along(x, axis, keepdim, true); }
Tensor min(const Tensor& x, int64_t axis, bool keepdim) { return extreme_along(x, axis, keepdim, false); }

// Indices of the first extreme along one axis (int64; no gradient). normalize_axes
// also maps the axis of a 0-d tensor to none (its index is 0).
Tensor argmax(const Tensor& x, int64_t axis, bool keepdim) {
  VGRAD_PROFILE_OP("argmax");
  return kernels::reduce(ReduceOp::ArgMax, x, kernels::normalize_axes({axis}, x.dim(), "argmax"), keepdim, 1.0,
                         "argmax");
}
Tensor argmin(const Tensor& x, int64_t axis, bool keepdim) {
  VGRAD_PROFILE_OP("argmin");
  return kernels::reduce(ReduceOp::ArgMin, x, kernels::normalize_axes({axis}, x.dim(), "argmin"), keepdim, 1.0,
                         "argmin");
}

// var = sum((x - mean)²) / (n - correction), composed of differentiable ops.
Tensor var(const Tensor& x, const std::vector<int64_t>& axes_in, int64_t correction, bool keepdim) {
  VGRAD_PROFILE_OP("var");
  if (const Tensor wide = autograd::autocast::to_float32(x); !wide.is_same(x)) return var(wide, axes_in, correction, keepdim);
  const auto axes = kernels::normalize_axes(axes_in, x.dim(), "var");
  const int64_t n = count_over(x.shape(), axes);
  if (n - correction <= 0)
    fail("var: {} elements with correction {} leave no degrees of freedom (shape {})", n, correction,
         shape_str(x.shape()));
  const Tensor centered = sub(x, mean(x, axes, true));
  return affine(sum(square(centered), axes, keepdim), 1.0 / double(n - correction), 0);
}

// Sums `grad` down to `shape` (leading dims and dims of size 1);  dx = g expanded back.
Tensor sum_to(const Tensor& grad, const Shape& shape) {
  VGRAD_PROFILE_OP("sum_to");
  if (grad.shape() == shape) return grad;
  const int64_t lead = grad.dim() - static_cast<int64_t>(shape.size());
  if (lead < 0) fail("sum_to: cannot sum {} to the larger shape {}", shape_str(grad.shape()), shape_str(shape));
  std::vector<int64_t> axes;
  for (int64_t d = 0; d < grad.dim(); ++d)
    if (d < lead || (shape[d - lead] == 1 && grad.shape()[d] != 1)) axes.push_back(d);
  return reshape(sum(grad, axes, true), shape);
}

}  // namespace vgrad

// Index ops that PyTorch users reach for: gather, scatter_add, masked_fill. They are
// compositions of device-generic ops (int64 arithmetic, index_select, index_add, where), so
// they run on every device without kernels of their own and never read values on the host.
#include "autograd/function.h"
#include "autograd/ops.h"
#include "core/backend.h"
#include "core/error.h"
#include "core/kernels.h"
#include "core/profiler.h"

namespace vgrad {

using autograd::Context;
using autograd::needs_grad;
using autograd::record;

namespace {

// gather/scatter_add's operands, with 0-d ones as 1-D (as PyTorch, which lets a 0-d and a
// 1-D tensor pair up).
struct Indexed {
  Tensor table;  // x, at least 1-D
  Tensor index;  // at least 1-D
  int64_t axis;
};

Tensor at_least_1d(const Tensor& t) { return t.dim() == 0 ? t.reshape({1}) : t; }

// Checks PyTorch's shape rules: index int64 with the table's number of dims, and
// index.size(d) <= table.size(d) for d != axis (and <= src.size(d) for every d when given).
Indexed check_indexed(const char* op, const Tensor& x, int64_t axis, const Tensor& index, const Tensor* src) {
  if (index.dtype() != DType::Int64)
    fail("{}: index must be int64, got {} {}", op, dtype_name(index.dtype()), shape_str(index.shape()));
  kernels::check_same_device(x, index, op);
  Indexed in{at_least_1d(x), at_least_1d(index), wrap_axis(axis, x.dim(), op)};
  if (in.index.dim() != in.table.dim())
    fail("{}: index {} must have the same number of dims as x {}", op, shape_str(index.shape()), shape_str(x.shape()));
  for (int64_t d = 0; d < in.table.dim(); ++d)
    if (d != in.axis && in.index.shape()[d] > in.table.shape()[d])
      fail("{}: index {} is larger than x {} in dim {} ({} > {}; only dim {} may be larger)", op,
           shape_str(index.shape()), shape_str(x.shape()), d, in.index.shape()[d], in.table.shape()[d], in.axis);
  if (src == nullptr) return in;
  kernels::check_same_device(x, *src, op);
  if (src->dtype() != x.dtype())
    fail("{}: src is {}, x is {} (they must match)", op, dtype_name(src->dtype()), dtype_name(x.dtype()));
  const Tensor src1 = at_least_1d(*src);
  if (src1.dim() != in.table.dim())
    fail("{}: src {} must have the same number of dims as x {}", op, shape_str(src->shape()), shape_str(x.shape()));
  for (int64_t d = 0; d < src1.dim(); ++d)
    if (in.index.shape()[d] > src1.shape()[d])
      fail("{}: index {} is larger than src {} in dim {} ({} > {})", op, shape_str(index.shape()),
           shape_str(src->shape()), d, in.index.shape()[d], src1.shape()[d]);
  return in;
}

// The row-major position, in a contiguous table of `in.table`'s shape, of every element
// that `in.index` points at along in.axis: index·stride(axis) + Σ_{d≠axis} i_d·stride(d),
// as a 1-D int64 tensor on the index's device. The index values are range-checked first
// (naming `op`, the value and the size; lazily on a GPU), so a bad one never becomes a
// position inside the table; on a GPU, where the ops run on before the error is thrown,
// int64 arithmetic wraps and index_select/index_add skip any position outside the table.
Tensor flat_positions(const char* op, const Indexed& in) {
  const Tensor flat_index = kernels::contiguous(in.index).reshape({in.index.numel()});
  const int axis = static_cast<int>(in.axis);
  backend_for(in.index.device())
      .check_index({.op = op, .limit = in.table.shape()[axis], .dim = axis}, flat_index.view());
  NoGradGuard no_grad;
  const Strides strides = contiguous_strides(in.table.shape());
  Tensor positions = in.index * static_cast<double>(strides[axis]);
  for (int64_t d = 0; d < in.index.dim(); ++d) {
    if (d == in.axis || in.index.shape()[d] == 1) continue;  // coordinate 0 adds nothing
    Shape along_d(static_cast<size_t>(in.index.dim()), 1);
    along_d[d] = in.index.shape()[d];
    const Tensor coordinate = kernels::index_range(in.index.shape()[d], in.index.device());
    positions = positions + coordinate.reshape(along_d) * static_cast<double>(strides[d]);
  }
  return positions.reshape({in.index.numel()});
}

// The part of src that index covers: its leading index.size(d) entries in every dim.
Tensor covered_part(const Tensor& src, const Shape& index_shape) {
  Tensor part = src;
  for (int64_t d = 0; d < src.dim(); ++d)
    if (src.shape()[d] != index_shape[d]) part = narrow(part, d, 0, index_shape[d]);
  return part;
}

}  // namespace

// gather(x, axis, index) -> index's shape: x read at the flat positions of index's
// elements (index_select on flattened x);  dx = index_add of g into zeros = scatter_add.
Tensor gather(const Tensor& x, int64_t axis, const Tensor& index) {
  VGRAD_PROFILE_OP("gather");
  const Indexed in = check_indexed("gather", x, axis, index, nullptr);
  const Tensor positions = flat_positions("gather", in);
  return index_select(reshape(in.table, {in.table.numel()}), 0, positions).reshape(index.shape());
}

// scatter_add(x, axis, index, src) -> x's shape: a copy of x with src's covered part
// added at the flat positions (index_add; repeats accumulate);
//   dx = g,   dsrc = gather(g, axis, index) in src's covered part, 0 elsewhere
Tensor scatter_add(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src) {
  VGRAD_PROFILE_OP("scatter_add");
  const Indexed in = check_indexed("scatter_add", x, axis, index, &src);
  const Tensor positions = flat_positions("scatter_add", in);
  Tensor out;
  {
    NoGradGuard no_grad;
    out = clone(in.table);
    const Tensor added =
        kernels::contiguous(covered_part(at_least_1d(src), in.index.shape())).reshape({positions.numel()});
    backend_for(x.device()).index_add(out.reshape({out.numel()}).view(), 0, positions.view(), added.view());
  }
  out = out.reshape(x.shape());
  if (!needs_grad({x, src})) return out;
  Context ctx("scatter_add");
  ctx.save_for_backward({index});
  const Shape src_shape = src.shape();
  return record(out, {x, src}, std::move(ctx), [axis, src_shape](Context& c, const Tensor& g) {
    const Tensor& index = c.saved(0);
    Tensor gathered = gather(g, axis, index);
    if (index.shape() == src_shape) return std::vector<Tensor>{g, gathered};
    Tensor dsrc = zeros(src_shape, {.dtype = g.dtype(), .device = g.device()});
    covered_part(at_least_1d(dsrc), at_least_1d(index).shape()).copy_(gathered.reshape(at_least_1d(index).shape()));
    return std::vector<Tensor>{g, dsrc};
  });
}

// masked_fill(x, mask, value) = where(mask, value, x), shapes broadcast;  dx = g where mask is 0
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  VGRAD_PROFILE_OP("masked_fill");
  kernels::check_same_device(x, mask, "masked_fill");
  broadcast_shapes(x.shape(), mask.shape(), "masked_fill");  // so that a shape error names this op
  return where(mask, full({}, value, {.dtype = x.dtype(), .device = x.device()}), x);
}

}  // namespace vgrad

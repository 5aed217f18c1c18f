// Non-differentiable kernels: output allocation, broadcasting, promotion, dispatch.
#include "core/kernels.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <utility>

#include "core/creation.h"
#include "core/error.h"
#include "core/grad_mode.h"

namespace vgrad::kernels {

void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  if (a.device() != b.device())
    fail("{}: tensors on different devices ({} and {}); move one with .to(device)", op, a.device().str(),
         b.device().str());
}

View broadcast_view(const Tensor& t, const Shape& shape) {
  View v = t.view();
  const int64_t ndim = static_cast<int64_t>(shape.size()), lead = ndim - t.dim();
  if (ndim > kMaxDims) fail("tensor: {} dims exceed the maximum of {}", ndim, kMaxDims);
  v.ndim = static_cast<int>(ndim);
  for (int64_t d = 0; d < ndim; ++d) {
    const int64_t src = d - lead;
    const int64_t size = src >= 0 ? t.shape()[src] : 1;
    v.shape[d] = shape[d];
    v.strides[d] = (src < 0 || size == 1) ? 0 : t.strides()[src];
  }
  return v;
}

Tensor empty_like(const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); }

Tensor cast(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  Tensor out = Tensor::empty(x.shape(), dtype, x.device());
  backend_for(x.device()).copy(x.view(), out.view());
  return out;
}

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  Tensor out = empty_like(x);
  backend_for(x.device()).copy(x.view(), out.view());
  return out;
}

Tensor unary(UnaryOp op, const Tensor& x, double a, double b) {
  Tensor out = empty_like(x);
  backend_for(x.device()).unary(op, x.view(), out.view(), a, b);
  return out;
}

void binary_into(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, const char* name) {
  check_same_device(a, b, name);
  check_same_device(a, out, name);
  const Tensor ac = cast(a, out.dtype()), bc = cast(b, out.dtype());
  backend_for(out.device()).binary(op, broadcast_view(ac, out.shape()), broadcast_view(bc, out.shape()), out.view());
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b, const char* name) {
  check_same_device(a, b, name);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(shape, promote(a.dtype(), b.dtype()), a.device());
  binary_into(op, a, b, out, name);
  return out;
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_same_device(cond, a, "where");
  check_same_device(a, b, "where");
  const Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  const DType dtype = promote(a.dtype(), b.dtype());
  Tensor out = Tensor::empty(shape, dtype, a.device());
  // NOTE: casting cond itself could turn a nonzero into 0 (0.5 to int64, 1e-300 to
  // float32), so a cond of another dtype becomes a 0/1 mask (cond != 0) first.
  Tensor cc = cond;
  if (cond.dtype() != dtype) {
    const Tensor zero = Tensor::empty({}, cond.dtype(), cond.device());
    backend_for(cond.device()).fill(zero.view(), 0.0);
    cc = cast(binary(BinaryOp::Ne, cond, zero, "where"), dtype);
  }
  const Tensor ac = cast(a, dtype), bc = cast(b, dtype);
  backend_for(out.device()).where(broadcast_view(cc, shape), broadcast_view(ac, shape), broadcast_view(bc, shape),
                                  out.view());
  return out;
}

std::vector<int64_t> normalize_axes(const std::vector<int64_t>& axes, int64_t ndim, const char* op) {
  std::vector<int64_t> out;
  if (axes.empty()) {
    for (int64_t d = 0; d < ndim; ++d) out.push_back(d);
    return out;
  }
  for (int64_t axis : axes) out.push_back(wrap_axis(axis, ndim, op));
  std::sort(out.begin(), out.end());
  if (std::adjacent_find(out.begin(), out.end()) != out.end()) fail("{}: axis listed twice", op);
  if (ndim == 0) out.clear();
  return out;
}

Shape reduced_shape(const Shape& shape, const std::vector<int64_t>& axes, bool keepdim) {
  Shape out;
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
    const bool reduced = std::binary_search(axes.begin(), axes.end(), d);
    if (!reduced) out.push_back(shape[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

Tensor reduce(ReduceOp op, const Tensor& x, const std::vector<int64_t>& axes, bool keepdim, double scale,
              const char* name) {
  const bool arg = op == ReduceOp::ArgMax || op == ReduceOp::ArgMin;
  // Only an empty reduced axis has no extreme: max of (3, 0) over axis 0 is an empty (0,), as in NumPy.
  for (int64_t axis : axes)
    if (x.shape()[axis] == 0 && op != ReduceOp::Sum)
      fail("{}: cannot reduce over an empty axis {} (shape {})", name, axis, shape_str(x.shape()));
  const Shape kept = reduced_shape(x.shape(), axes, true);
  Tensor out = Tensor::empty(kept, arg ? DType::Int64 : x.dtype(), x.device());
  backend_for(x.device()).reduce(op, x.view(), out.view(), scale);
  return keepdim ? out : make_view(out, reduced_shape(x.shape(), axes, false),
                                   contiguous_strides(reduced_shape(x.shape(), axes, false)), 0);
}

Tensor index_range(int64_t n, Device device) {
  if (n < 0) fail("index_range: negative length {}", n);
  static std::mutex mutex;
  static auto* ranges = new std::map<std::pair<int, int>, Tensor>();
  std::lock_guard lock(mutex);
  Tensor& range = (*ranges)[{static_cast<int>(device.type), device.index}];
  if (!range.defined() || range.numel() < n) {
    // A shorter range is kept, never freed: a CUDA graph captured earlier reads its address
    // at every replay (in all, less than twice the longest range).
    static auto* outgrown = new std::vector<Tensor>();
    if (range.defined()) outgrown->push_back(range);
    const int64_t length = std::max<int64_t>({n, range.defined() ? 2 * range.numel() : 0, 64});
    NoGradGuard no_grad;
    range = arange(0.0, double(length), 1.0, {.dtype = DType::Int64, .device = device});
  }
  return make_view(range, {n}, {1}, range.offset());
}

}  // namespace vgrad::kernels

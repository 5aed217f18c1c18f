// Shape helpers and NumPy broadcasting.
#include "core/shape.h"

#include <algorithm>

#include "core/error.h"

namespace vgrad {

int64_t numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, d, &n)) {
      // [2^62, 2^62, 0] overflows on the way but has no elements.
      if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return 0;
      fail("shape {}: its element count overflows int64", truncated(shape_str(shape)));
    }
  return n;
}

// The stride of dim i is the product of the dims after it; the product of all of them is no stride.
bool contiguous_strides_fit(const Shape& shape) {
  int64_t stride = 1;
  for (size_t i = shape.size(); i-- > 1;)
    if (__builtin_mul_overflow(stride, shape[i], &stride)) return false;
  return true;
}

Strides contiguous_strides(const Shape& shape) {
  if (!contiguous_strides_fit(shape))
    fail("shape {}: its contiguous strides overflow int64 (the product of its trailing dims is too large)",
         truncated(shape_str(shape)));
  Strides strides(shape.size());
  int64_t stride = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    if (i > 0) stride *= shape[i];
  }
  return strides;
}

std::string shape_str(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t ndim = std::max(a.size(), b.size());
  Shape out(ndim);
  for (size_t i = 0; i < ndim; ++i) {
    // Align trailing dims: position i counts from the left of the longer shape.
    const int64_t da = i + a.size() >= ndim ? a[i + a.size() - ndim] : 1;
    const int64_t db = i + b.size() >= ndim ? b[i + b.size() - ndim] : 1;
    if (da != db && da != 1 && db != 1)
      fail("{}: cannot broadcast {} with {} (dim {}: {} vs {})", op, shape_str(a), shape_str(b), i, da, db);
    out[i] = da == 1 ? db : da;
  }
  return out;
}

int64_t wrap_axis(int64_t axis, int64_t ndim, const char* op) {
  const int64_t lo = ndim == 0 ? -1 : -ndim, hi = ndim == 0 ? 0 : ndim - 1;
  if (axis < lo || axis > hi) fail("{}: axis {} out of range for a tensor of {} dims", op, axis, ndim);
  return axis < 0 ? axis + std::max<int64_t>(ndim, 1) : axis;
}

int64_t wrap_existing_axis(int64_t axis, int64_t ndim, const char* op) {
  if (ndim == 0) fail("{}: axis {} out of range for a tensor of 0 dims", op, axis);
  return wrap_axis(axis, ndim, op);
}

}  // namespace vgrad

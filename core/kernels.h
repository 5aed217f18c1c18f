// Non-differentiable tensor kernels: allocate the output, apply broadcasting and
// dtype promotion, check devices, and call the device's Backend. The differentiable
// ops in autograd/ops/ are built on these; custom ops may use them too.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace vgrad::kernels {

// Throws "OP: tensors on different devices (cpu and cuda:0)".
void check_same_device(const Tensor& a, const Tensor& b, const char* op);
// `t` seen with `shape` (t's shape must broadcast to it): 0 strides on broadcast dims.
View broadcast_view(const Tensor& t, const Shape& shape);
Tensor empty_like(const Tensor& t);

Tensor cast(const Tensor& x, DType dtype);  // returns x itself when the dtype matches
Tensor contiguous(const Tensor& x);         // returns x itself when already contiguous
Tensor unary(UnaryOp op, const Tensor& x, double a = 0, double b = 0);
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b, const char* name);
// out = op(a, b) with a and b broadcast to out's shape and converted to its dtype.
void binary_into(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, const char* name);
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
// Reduces over `axes` (already wrapped, sorted, unique; empty = all). Sum is scaled by `scale`.
Tensor reduce(ReduceOp op, const Tensor& x, const std::vector<int64_t>& axes, bool keepdim, double scale,
              const char* name);
// 0..n-1 as a read-only int64 view on `device`, cut from one range per device that is
// kept and grows (doubling) when a longer one is asked for. arange copies host values, which
// on a GPU is a host wait (and is refused inside a CUDA graph capture), so ops that need
// positions on every call (one_hot, gather, scatter_add) upload only when the range grows.
// Never freed (a static destructor would outlive the CUDA backends). Do not write to it.
Tensor index_range(int64_t n, Device device);
// Wraps, sorts and de-duplicates user axes; empty means all.
std::vector<int64_t> normalize_axes(const std::vector<int64_t>& axes, int64_t ndim, const char* op);
// The keepdim shape of reducing `shape` over `axes`.
Shape reduced_shape(const Shape& shape, const std::vector<int64_t>& axes, bool keepdim);

}  // namespace vgrad::kernels

// The Tensor method forms of the differentiable ops (x.sum(), x.reshape(...)): each
// calls the free function defined with its backward rule in this folder.
#include "autograd/ops.h"
#include "core/error.h"

namespace vgrad {

Tensor Tensor::reshape(const Shape& s) const { return vgrad::reshape(*this, s); }
Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  if (dim() == 0) return reshape({1});
  const int64_t start = wrap_axis(start_dim, dim(), "flatten"), end = wrap_axis(end_dim, dim(), "flatten");
  if (start > end) fail("flatten: start_dim {} is after end_dim {}", start_dim, end_dim);
  Shape s(shape().begin(), shape().begin() + start);
  int64_t merged = 1;
  for (int64_t d = start; d <= end; ++d) merged *= shape()[d];
  s.push_back(merged);
  s.insert(s.end(), shape().begin() + end + 1, shape().end());
  return reshape(s);
}
Tensor Tensor::transpose(int64_t d0, int64_t d1) const { return vgrad::transpose(*this, d0, d1); }
Tensor Tensor::t() const {
  if (dim() > 2) fail("t: expects a tensor of at most 2 dims, got {}; use transpose(dim0, dim1)", shape_str(shape()));
  return dim() < 2 ? *this : vgrad::transpose(*this, 0, 1);
}
Tensor Tensor::permute(const std::vector<int64_t>& dims) const { return vgrad::permute(*this, dims); }
Tensor Tensor::squeeze(int64_t axis) const { return vgrad::squeeze(*this, axis); }
Tensor Tensor::squeeze() const {  // a view, one size-1 dim at a time (reshape would copy a strided tensor)
  Tensor out = *this;
  for (int64_t d = dim() - 1; d >= 0; --d)
    if (shape()[d] == 1) out = out.squeeze(d);
  return out;
}
Tensor Tensor::unsqueeze(int64_t axis) const { return vgrad::unsqueeze(*this, axis); }
Tensor Tensor::narrow(int64_t axis, int64_t start, int64_t length) const {
  return vgrad::narrow(*this, axis, start, length);
}
Tensor Tensor::slice(int64_t axis, int64_t start, int64_t end, int64_t step) const {
  return vgrad::slice(*this, axis, start, end, step);
}
Tensor Tensor::select(int64_t axis, int64_t index) const {
  const int64_t a = wrap_existing_axis(axis, dim(), "select");
  const int64_t i = index < 0 ? index + shape()[a] : index;
  if (i < 0 || i >= shape()[a])
    fail("select: index {} out of range for axis {} of size {} (shape {})", index, a, shape()[a], shape_str(shape()));
  return vgrad::narrow(*this, a, i, 1).squeeze(a);
}
Tensor Tensor::expand(const Shape& s) const { return vgrad::expand(*this, s); }
Tensor Tensor::index_select(int64_t axis, const Tensor& index) const { return vgrad::index_select(*this, axis, index); }
std::vector<Tensor> Tensor::split(int64_t split_size, int64_t axis) const {
  return vgrad::split(*this, split_size, axis);
}
std::vector<Tensor> Tensor::split(const std::vector<int64_t>& sizes, int64_t axis) const {
  return vgrad::split(*this, sizes, axis);
}
std::vector<Tensor> Tensor::chunk(int64_t chunks, int64_t axis) const { return vgrad::chunk(*this, chunks, axis); }
Tensor Tensor::gather(int64_t axis, const Tensor& index) const { return vgrad::gather(*this, axis, index); }
Tensor Tensor::scatter_add(int64_t axis, const Tensor& index, const Tensor& src) const {
  return vgrad::scatter_add(*this, axis, index, src);
}
Tensor Tensor::masked_fill(const Tensor& mask, double value) const { return vgrad::masked_fill(*this, mask, value); }
Tensor Tensor::contiguous() const { return vgrad::contiguous(*this); }
Tensor Tensor::clone() const { return vgrad::clone(*this); }
Tensor Tensor::to(Device d) const { return vgrad::to_device(*this, d); }
Tensor Tensor::to(DType t) const { return vgrad::to_dtype(*this, t); }
Tensor Tensor::sum() const { return vgrad::sum(*this); }
Tensor Tensor::sum(const std::vector<int64_t>& axes, bool keepdim) const { return vgrad::sum(*this, axes, keepdim); }
Tensor Tensor::mean() const { return vgrad::mean(*this); }
Tensor Tensor::mean(const std::vector<int64_t>& axes, bool keepdim) const { return vgrad::mean(*this, axes, keepdim); }
Tensor Tensor::max() const { return vgrad::amax(*this); }
Tensor Tensor::max(int64_t axis, bool keepdim) const { return vgrad::max(*this, axis, keepdim); }
Tensor Tensor::min() const { return vgrad::amin(*this); }
Tensor Tensor::min(int64_t axis, bool keepdim) const { return vgrad::min(*this, axis, keepdim); }
Tensor Tensor::argmax(int64_t axis, bool keepdim) const { return vgrad::argmax(*this, axis, keepdim); }
Tensor Tensor::argmin(int64_t axis, bool keepdim) const { return vgrad::argmin(*this, axis, keepdim); }
Tensor Tensor::var(const std::vector<int64_t>& axes, int64_t correction, bool keepdim) const {
  return vgrad::var(*this, axes, correction, keepdim);
}
Tensor Tensor::var() const { return vgrad::var(*this); }
Tensor Tensor::matmul(const Tensor& other) const { return vgrad::matmul(*this, other); }
Tensor Tensor::exp() const { return vgrad::exp(*this); }
Tensor Tensor::log() const { return vgrad::log(*this); }
Tensor Tensor::sqrt() const { return vgrad::sqrt(*this); }
Tensor Tensor::abs() const { return vgrad::abs(*this); }
Tensor Tensor::relu() const { return vgrad::relu(*this); }
Tensor Tensor::sigmoid() const { return vgrad::sigmoid(*this); }
Tensor Tensor::tanh() const { return vgrad::tanh(*this); }
Tensor Tensor::pow(double exponent) const { return vgrad::pow(*this, exponent); }
Tensor Tensor::clamp(double lo, double hi) const { return vgrad::clamp(*this, lo, hi); }
Tensor Tensor::softmax(int64_t axis) const { return vgrad::softmax(*this, axis); }
Tensor Tensor::log_softmax(int64_t axis) const { return vgrad::log_softmax(*this, axis); }

}  // namespace vgrad

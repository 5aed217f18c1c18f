// Tensor: construction, access, printing, in-place writes and the method forms
// of the free-function ops (which live, with their gradients, in autograd/ops/).
#include "core/tensor.h"

#include <cstring>
#include <ostream>

#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "core/error.h"
#include "core/kernels.h"
#include "core/ops.h"

namespace vgrad {

TensorImpl& Tensor::impl() const {
  if (!impl_) fail("tensor: use of an undefined tensor (default-constructed, or a grad never computed)");
  return *impl_;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  if (shape.size() > static_cast<size_t>(kMaxDims))
    fail("tensor: {} dims exceed the maximum of {}", shape.size(), kMaxDims);
  for (size_t d = 0; d < shape.size(); ++d)
    if (shape[d] < 0) fail("tensor: negative size {} in shape {} (dim {})", shape[d], shape_str(shape), d);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(vgrad::numel(shape)) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor make_view(const Tensor& base, Shape shape, Strides strides, int64_t offset) {
  // Kernels see a View with kMaxDims slots: a deeper view (reshape, unsqueeze) is refused here.
  if (shape.size() > static_cast<size_t>(kMaxDims))
    fail("tensor: {} dims exceed the maximum of {} (shape {})", shape.size(), kMaxDims, shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.storage();
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

int64_t Tensor::size(int64_t axis) const { return shape()[wrap_existing_axis(axis, dim(), "size")]; }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t d = dim() - 1; d >= 0; --d) {
    if (shape()[d] != 1 && strides()[d] != expected) return false;
    expected *= shape()[d];
  }
  return true;
}

void* Tensor::data_ptr() const {
  return static_cast<char*>(impl().storage->data()) + offset() * static_cast<int64_t>(dtype_size(dtype()));
}

template <class T> T* Tensor::data() const {
  if (dtype() != dtype_of<T>())
    fail("data: tensor is {}, asked for {}", dtype_name(dtype()), dtype_name(dtype_of<T>()));
  if (!device().is_cpu()) fail("data: tensor is on {}; copy it with .to(vgrad::kCPU) first", device().str());
  return static_cast<T*>(data_ptr());
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template int64_t* Tensor::data<int64_t>() const;

View Tensor::view() const {
  View v;
  v.data = data_ptr();
  v.dtype = dtype();
  v.ndim = static_cast<int>(dim());
  for (int d = 0; d < v.ndim; ++d) {
    v.shape[d] = shape()[d];
    v.strides[d] = strides()[d];
  }
  return v;
}

double Tensor::item() const {
  if (numel() != 1) fail("item: tensor of shape {} has {} elements, expected exactly 1", shape_str(shape()), numel());
  return to_vector<double>()[0];
}

template <class T> std::vector<T> Tensor::to_vector() const {
  Tensor host = kernels::contiguous(kernels::cast(detach(), dtype_of<T>()));
  std::vector<T> out(static_cast<size_t>(numel()));
  if (!out.empty()) backend_for(device()).copy_to_host(out.data(), host.data_ptr(), out.size() * sizeof(T));
  return out;
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;

namespace {

// int64 is printed from int64 values: exact beyond 2^53 (and no double -> int64 overflow).
std::string format_value(int64_t v) { return fmt::format("{}", v); }
std::string format_value(double v) { return fmt::format("{:.4g}", v); }

// Nested brackets like NumPy; past 1000 elements each dim shows its 3 first and last.
template <class T>
void print_values(std::string& out, const std::vector<T>& values, const Shape& shape, size_t dim, int64_t base,
                  bool abbreviate) {
  if (shape.empty()) {
    out += format_value(values[0]);
    return;
  }
  const int64_t n = shape[dim];
  int64_t inner = 1;
  for (size_t d = dim + 1; d < shape.size(); ++d) inner *= shape[d];
  out += '[';
  for (int64_t i = 0; i < n; ++i) {
    if (abbreviate && n > 6 && i == 3) {
      out += dim + 1 == shape.size() ? "..., " : "...,\n ";
      i = n - 4;
      continue;
    }
    if (dim + 1 == shape.size()) {
      out += format_value(values[base + i]);
    } else {
      print_values(out, values, shape, dim + 1, base + i * inner, abbreviate);
    }
    if (i + 1 < n) out += dim + 1 == shape.size() ? ", " : ",\n ";
  }
  out += ']';
}

}  // namespace

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  std::string out = "tensor(";
  if (dtype() == DType::Int64) print_values(out, to_vector<int64_t>(), shape(), 0, 0, numel() > 1000);
  else print_values(out, to_vector<double>(), shape(), 0, 0, numel() > 1000);
  out += fmt::format(", shape={}, dtype={}", shape_str(shape()), dtype_name(dtype()));
  if (!device().is_cpu()) out += ", device=" + device().str();
  if (requires_grad()) out += ", requires_grad";
  return out + ")";
}

std::ostream& operator<<(std::ostream& os, const Tensor& tensor) { return os << tensor.str(); }

// ---- autograd ----

Tensor& Tensor::requires_grad_(bool enabled) {
  if (enabled && !is_floating(dtype()))
    fail("requires_grad: only floating-point tensors can require gradients (this one is {})", dtype_name(dtype()));
  if (!enabled && !is_leaf()) fail("requires_grad: cannot turn gradients off on a non-leaf tensor; use detach()");
  impl().requires_grad = enabled;
  return *this;
}

Tensor Tensor::grad() const { return Tensor(impl().grad); }

void Tensor::set_grad(const Tensor& grad) {
  if (grad.defined() && (grad.shape() != shape() || grad.dtype() != dtype() || grad.device() != device()))
    fail("set_grad: gradient {} {} on {} does not match tensor {} {} on {}", shape_str(grad.shape()),
         dtype_name(grad.dtype()), grad.device().str(), shape_str(shape()), dtype_name(dtype()), device().str());
  impl().grad = grad.impl_shared();
}

void Tensor::zero_grad(bool set_to_none) {
  if (!impl().grad) return;
  if (set_to_none) impl().grad.reset();
  else Tensor(impl().grad).fill_(0.0);
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  autograd::backward({*this}, {gradient}, retain_graph);
}

Tensor Tensor::detach() const { return make_view(*this, shape(), strides(), offset()); }

// ---- in place ----

namespace {
// In-place ops are not recorded, so while recording they are refused on any tensor that
// requires grad: on a leaf, and on an op's output too, where the gradient would silently
// ignore the change (y = x + 1; y.mul_(2) would give dL/dx = 1) unless a rule saved y.
void check_in_place(const Tensor& t, const char* op) {
  if (t.requires_grad() && autograd::GradMode::is_enabled())
    fail("{}: a {} that requires grad cannot be changed in place while recording (in-place ops are not "
         "differentiable; use the out-of-place op, or wrap the update in vgrad::NoGradGuard)",
         op, t.is_leaf() ? "leaf tensor" : "tensor computed by an op");
}
}  // namespace

Tensor& Tensor::fill_(double value) {
  check_in_place(*this, "fill_");
  backend_for(device()).fill(view(), value);
  impl().storage->bump_version();
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_in_place(*this, "copy_");
  broadcast_shapes(src.shape(), shape(), "copy_");  // checks compatibility
  if (broadcast_shapes(src.shape(), shape(), "copy_") != shape())
    fail("copy_: cannot copy {} into {}", shape_str(src.shape()), shape_str(shape()));
  Tensor source = src.device() == device() ? src : src.to(device());
  backend_for(device()).copy(kernels::broadcast_view(source, shape()), view());
  impl().storage->bump_version();
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  check_in_place(*this, "add_");
  const Tensor scaled = alpha == 1.0 ? other : kernels::unary(UnaryOp::Affine, other, alpha, 0.0);
  if (broadcast_shapes(shape(), other.shape(), "add_") != shape())
    fail("add_: cannot add {} into {} in place", shape_str(other.shape()), shape_str(shape()));
  kernels::binary_into(BinaryOp::Add, *this, scaled, *this, "add_");
  impl().storage->bump_version();
  return *this;
}

Tensor& Tensor::mul_(double value) {
  check_in_place(*this, "mul_");
  backend_for(device()).unary(UnaryOp::Affine, view(), view(), value, 0.0);
  impl().storage->bump_version();
  return *this;
}

// ---- method forms ----
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
Tensor Tensor::contiguous() const { return vgrad::contiguous(*this); }
Tensor Tensor::clone() const { return vgrad::clone(*this); }
Tensor Tensor::to(Device d) const { return vgrad::to_device(*this, d); }
Tensor Tensor::to(DType t) const { return vgrad::to_dtype(*this, t); }
Tensor Tensor::sum() const { return vgrad::sum(*this); }
Tensor Tensor::sum(const std::vector<int64_t>& axes, bool keepdim) const { return vgrad::sum(*this, axes, keepdim); }
Tensor Tensor::mean() const { return vgrad::mean(*this); }
Tensor Tensor::mean(const std::vector<int64_t>& axes, bool keepdim) const { return vgrad::mean(*this, axes, keepdim); }
Tensor Tensor::max() const { return vgrad::amax(*this); }
Tensor Tensor::max(int64_t axis, bool keepdim) const { return vgrad::amax(*this, {axis}, keepdim); }
Tensor Tensor::min() const { return vgrad::amin(*this); }
Tensor Tensor::min(int64_t axis, bool keepdim) const { return vgrad::amin(*this, {axis}, keepdim); }
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

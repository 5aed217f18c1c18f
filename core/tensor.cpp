// Tensor: construction, access, printing and in-place writes. The method forms of
// the differentiable ops (x.sum(), x.view(...)) are defined in autograd/ops/.
#include "core/tensor.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <ostream>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/grad_mode.h"
#include "core/int64_scalar.h"
#include "core/kernels.h"

namespace vgrad {

TensorImpl& Tensor::impl() const {
  if (!impl_) fail("tensor: use of an undefined tensor (default-constructed, or a grad never computed)");
  return *impl_;
}

namespace {

// A contiguous tensor over `storage` (made by the caller from the checked shape's bytes).
template <class MakeStorage> Tensor empty_over(const Shape& shape, DType dtype, MakeStorage make_storage) {
  if (shape.size() > static_cast<size_t>(kMaxDims))
    fail("tensor: {} dims exceed the maximum of {}", shape.size(), kMaxDims);
  for (size_t d = 0; d < shape.size(); ++d)
    if (shape[d] < 0) fail("tensor: negative size {} in shape {} (dim {})", shape[d], shape_str(shape), d);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = make_storage(static_cast<size_t>(vgrad::numel(shape)) * dtype_size(dtype));
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

}  // namespace

// From the device's allocator, or a CUDA graph's pool during its capture (Storage asks).
Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  return empty_over(shape, dtype, [&](size_t bytes) { return std::make_shared<Storage>(bytes, device); });
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device, CachingAllocator& pool) {
  return empty_over(shape, dtype, [&](size_t bytes) { return std::make_shared<Storage>(bytes, device, pool); });
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
template BFloat16* Tensor::data<BFloat16>() const;
template Float16* Tensor::data<Float16>() const;

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

uint64_t Tensor::add_post_accumulate_grad_hook(std::function<void(TensorImpl& leaf)> hook) {
  if (!is_leaf() || !requires_grad())
    fail("add_post_accumulate_grad_hook: tensor {} is not a leaf that requires grad (its .grad is never accumulated)",
         shape_str(shape()));
  static std::atomic<uint64_t> next_id{1};
  const uint64_t id = next_id++;
  impl().post_accumulate_grad_hooks.emplace_back(id, std::move(hook));
  return id;
}

void Tensor::remove_post_accumulate_grad_hook(uint64_t id) {
  std::erase_if(impl().post_accumulate_grad_hooks, [id](const auto& entry) { return entry.first == id; });
}

Tensor Tensor::detach() const { return make_view(*this, shape(), strides(), offset()); }

// ---- in place ----

namespace {

// The dims of size > 1 as (size, stride): a size-1 dim names no second element, so its
// stride says nothing about where the elements are.
std::vector<std::pair<int64_t, int64_t>> spanning_dims(const Tensor& t) {
  std::vector<std::pair<int64_t, int64_t>> dims;
  for (int64_t d = 0; d < t.dim(); ++d)
    if (t.shape()[d] > 1) dims.emplace_back(t.shape()[d], t.strides()[d]);
  return dims;
}

// Each element its own address and no holes between them: taken by increasing stride, the
// dims' strides are 1, n0, n0·n1, ... (PyTorch's is_non_overlapping_and_dense).
bool is_dense_without_overlap(const Tensor& t) {
  auto dims = spanning_dims(t);
  std::ranges::sort(dims, {}, [](const auto& dim) { return dim.second; });
  int64_t expected_stride = 1;
  for (const auto& [size, stride] : dims) {
    if (stride != expected_stride) return false;
    expected_stride *= size;
  }
  return true;
}

}  // namespace

bool has_internal_overlap(const Tensor& t) {
  if (t.numel() == 0) return false;  // writes nothing (PyTorch allows it too)
  for (int64_t d = 0; d < t.dim(); ++d)
    if (t.shape()[d] > 1 && t.strides()[d] == 0) return true;
  return false;
}

bool overlaps_partially(const Tensor& a, const Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0 || a.storage() != b.storage()) return false;
  if (!is_dense_without_overlap(a) || !is_dense_without_overlap(b)) return false;
  // Dense: a view covers numel elements from its first one. Byte offsets in the one storage.
  const auto begin_a = a.offset() * static_cast<int64_t>(dtype_size(a.dtype()));
  const auto begin_b = b.offset() * static_cast<int64_t>(dtype_size(b.dtype()));
  const auto end_a = begin_a + a.numel() * static_cast<int64_t>(dtype_size(a.dtype()));
  const auto end_b = begin_b + b.numel() * static_cast<int64_t>(dtype_size(b.dtype()));
  if (end_a <= begin_b || end_b <= begin_a) return false;
  const bool same_view = begin_a == begin_b && a.dtype() == b.dtype() && spanning_dims(a) == spanning_dims(b);
  return !same_view;
}

void check_no_internal_overlap(const Tensor& destination, const char* op) {
  if (has_internal_overlap(destination))
    fail(
        "{}: more than one element of the destination {} (strides {}) is the same memory location; clone() it "
        "first",
        op, shape_str(destination.shape()), shape_str(destination.strides()));
}

namespace {

// The destination and an operand it reads (`role`: "source", "addend") share memory
// partially: the loop would read elements it has already overwritten, in an order that
// depends on the device and the vector width (and a GPU's memcpy is undefined for it).
void check_no_partial_overlap(const Tensor& destination, const Tensor& operand, const char* role, const char* op) {
  if (overlaps_partially(destination, operand))
    fail(
        "{}: the {} {} (strides {}) and the destination {} (strides {}) overlap in memory (partially); clone() the "
        "{} first",
        op, role, shape_str(operand.shape()), shape_str(operand.strides()), shape_str(destination.shape()),
        shape_str(destination.strides()), role);
}

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
  check_no_internal_overlap(*this, "copy_");
  check_no_partial_overlap(*this, src, "source", "copy_");
  Tensor source = src.device() == device() ? src : src.to(device());
  backend_for(device()).copy(kernels::broadcast_view(source, shape()), view());
  impl().storage->bump_version();
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  check_in_place(*this, "add_");
  if (broadcast_shapes(shape(), other.shape(), "add_") != shape())
    fail("add_: cannot add {} into {} in place", shape_str(other.shape()), shape_str(shape()));
  // As PyTorch: int64 + a floating tensor is floating, which an int64 tensor cannot hold
  // (writing it would drop the fractions).
  if (!is_floating(dtype()) && is_floating(other.dtype()))
    fail("add_: int64 tensor plus a {} tensor gives {}, which cannot be stored in place; use x + other",
         dtype_name(other.dtype()), dtype_name(other.dtype()));
  check_no_internal_overlap(*this, "add_");
  // Against the user's tensor: the scaled copy below never shares memory with anything.
  check_no_partial_overlap(*this, other, "addend", "add_");
  // alpha scales the addend in its own dtype: an int64 addend with an alpha that is not an
  // int64 value (0.5, Inf) is scaled in this tensor's floating dtype, and refused for an int64
  // tensor (as PyTorch refuses a floating alpha for integral tensors).
  Tensor addend = other;
  if (!is_floating(other.dtype()) && !scalar::is_int64_value(alpha)) {
    if (!is_floating(dtype()))
      fail("add_: alpha {} on an int64 tensor must be a whole number in int64's range; use x + other * {}", alpha,
           alpha);
    addend = kernels::cast(other, dtype());
  }
  const Tensor scaled = alpha == 1.0 ? addend : kernels::unary(UnaryOp::Affine, addend, alpha, 0.0);
  kernels::binary_into(BinaryOp::Add, *this, scaled, *this, "add_");
  impl().storage->bump_version();
  return *this;
}

Tensor& Tensor::mul_(double value) {
  check_in_place(*this, "mul_");
  // As PyTorch: an int64 tensor times a fractional scalar is float32, which cannot be
  // written back in place.
  if (!is_floating(dtype()) && !scalar::is_int64_value(value))
    fail("mul_: int64 tensor times {} gives float32, which cannot be stored in place; use x * {}", value, value);
  check_no_internal_overlap(*this, "mul_");
  backend_for(device()).unary(UnaryOp::Affine, view(), view(), value, 0.0);
  impl().storage->bump_version();
  return *this;
}

}  // namespace vgrad

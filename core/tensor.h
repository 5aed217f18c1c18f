// Tensor: a shared handle to a strided view of a Storage, with its autograd state.
// Copying a Tensor copies the handle (like torch::Tensor); clone() copies the data.
// The differentiable ops are declared in autograd/ops.h; they and the method forms
// below are defined with their backward rules in autograd/ops/.
#pragma once
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "core/backend.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/shape.h"
#include "core/storage.h"

namespace vgrad {

namespace autograd {
class Node;
}

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Strides strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::Float32;

  // Autograd state. grad_fn is set on tensors an op produced while recording.
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<autograd::Node> grad_fn;
  // Run by the engine once per backward pass, after the pass's last gradient for this
  // leaf was added into .grad (PyTorch's post-accumulate-grad hook): data parallelism
  // starts a bucket's all-reduce from here while the rest of backward runs. Keyed by id.
  std::vector<std::pair<uint64_t, std::function<void(TensorImpl& leaf)>>> post_accumulate_grad_hooks;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Uninitialised storage of the given shape (contents unspecified).
  static Tensor empty(const Shape& shape, DType dtype = DType::Float32, Device device = kCPU);
  // The same from `pool`, which hands out `device` memory and outlives the tensor (the
  // DataLoader's page-locked staging, a GPU's upload pool: Backend::upload_allocator).
  static Tensor empty(const Shape& shape, DType dtype, Device device, CachingAllocator& pool);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Strides& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t size(int64_t axis) const;
  int64_t numel() const { return vgrad::numel(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  bool is_contiguous() const;
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  TensorImpl* impl_ptr() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_shared() const { return impl_; }

  // Raw access to the first element; checks the dtype (and, for data(), the device).
  void* data_ptr() const;
  template <class T> T* data() const;
  View view() const;  // the kernel-level description of this tensor

  // Host values. item() needs exactly one element.
  double item() const;
  template <class T> T item() const {
    if constexpr (std::is_integral_v<T>) {
      (void)item();  // checks the element count
      return static_cast<T>(to_vector<int64_t>()[0]);  // exact beyond 2^53, unlike a double
    } else {
      return static_cast<T>(item());
    }
  }
  template <class T> std::vector<T> to_vector() const;
  std::string str() const;  // shape, dtype, device and values (abbreviated when large)

  // ---- autograd ----
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& requires_grad_(bool enabled = true);
  Tensor grad() const;  // undefined until a backward() reached this tensor
  void set_grad(const Tensor& grad);
  // Drops .grad (the default, as PyTorch's set_to_none): the next backward writes a
  // fresh gradient from the allocator cache instead of zero-filling and adding.
  // set_to_none=false zeros the buffer in place instead.
  void zero_grad(bool set_to_none = true);
  std::shared_ptr<autograd::Node> grad_fn() const { return impl().grad_fn; }
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  // Reverse-mode from this tensor. gradient may be omitted only for one-element tensors.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  Tensor detach() const;  // shares storage, cut from the graph
  // See TensorImpl::post_accumulate_grad_hooks; leaves that require grad only. Returns
  // the id that removes it (removing an unknown id does nothing).
  uint64_t add_post_accumulate_grad_hook(std::function<void(TensorImpl& leaf)> hook);
  void remove_post_accumulate_grad_hook(uint64_t id);
  uint64_t version() const { return impl().storage->version(); }

  // ---- shape and views (differentiable; views share storage) ----
  Tensor reshape(const Shape& shape) const;
  Tensor view(const Shape& shape) const;  // like reshape, but never copies (error if it would)
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor transpose(int64_t dim0, int64_t dim1) const;
  Tensor t() const;  // transpose of a 2-D tensor
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor squeeze(int64_t axis) const;
  Tensor squeeze() const;
  Tensor unsqueeze(int64_t axis) const;
  Tensor narrow(int64_t axis, int64_t start, int64_t length) const;
  Tensor slice(int64_t axis, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t axis, int64_t index) const;
  Tensor operator[](int64_t index) const { return select(0, index); }
  Tensor expand(const Shape& shape) const;
  Tensor index_select(int64_t axis, const Tensor& index) const;
  // PyTorch's split/chunk (pieces are views, as narrow), gather, scatter_add, masked_fill
  // (a mask of any dtype, nonzero = fill); see autograd/ops.h.
  std::vector<Tensor> split(int64_t split_size, int64_t axis = 0) const;
  std::vector<Tensor> split(const std::vector<int64_t>& sizes, int64_t axis = 0) const;
  std::vector<Tensor> chunk(int64_t chunks, int64_t axis = 0) const;
  Tensor gather(int64_t axis, const Tensor& index) const;
  Tensor scatter_add(int64_t axis, const Tensor& index, const Tensor& src) const;
  Tensor masked_fill(const Tensor& mask, double value) const;
  Tensor contiguous() const;
  Tensor clone() const;
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;

  // ---- math (differentiable) ----
  Tensor sum() const;
  Tensor sum(const std::vector<int64_t>& axes, bool keepdim = false) const;
  Tensor mean() const;
  Tensor mean(const std::vector<int64_t>& axes, bool keepdim = false) const;
  Tensor max() const;                                    // ties share the gradient (amax), as PyTorch's max()
  Tensor max(int64_t axis, bool keepdim = false) const;  // the gradient goes to the first maximum, as max(dim)
  Tensor min() const;
  Tensor min(int64_t axis, bool keepdim = false) const;
  Tensor argmax(int64_t axis, bool keepdim = false) const;  // not differentiable
  Tensor argmin(int64_t axis, bool keepdim = false) const;
  Tensor var(const std::vector<int64_t>& axes, int64_t correction = 1, bool keepdim = false) const;
  Tensor var() const;
  Tensor matmul(const Tensor& other) const;
  Tensor exp() const;
  Tensor log() const;
  Tensor sqrt() const;
  Tensor abs() const;
  Tensor relu() const;
  Tensor sigmoid() const;
  Tensor tanh() const;
  Tensor pow(double exponent) const;
  Tensor clamp(double min, double max) const;
  Tensor softmax(int64_t axis) const;
  Tensor log_softmax(int64_t axis) const;

  // ---- in place (not differentiable on tensors that require grad; bump the version) ----
  // copy_, add_, mul_, uniform_ and normal_ refuse to write overlapping memory, by
  // PyTorch's rules (README, "Semantics"; has_internal_overlap and overlaps_partially
  // below); fill_ does not check, as PyTorch: writing one value many times is harmless.
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }
  Tensor& copy_(const Tensor& src);  // broadcasts src to this shape; converts dtype/device
  Tensor& add_(const Tensor& other, double alpha = 1.0);
  Tensor& mul_(double value);

 private:
  TensorImpl& impl() const;
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& tensor);

// Makes a tensor sharing `base`'s storage with a new shape/strides/offset (no autograd).
Tensor make_view(const Tensor& base, Shape shape, Strides strides, int64_t offset);

// ---- memory overlap of in-place writes: PyTorch's rules (aten/src/ATen/MemoryOverlap.cpp) ----
// True when two elements of `t` are one memory location: a dim of size > 1 with stride 0,
// as expand() makes (and `t` has elements). Other self-overlapping layouts, which only
// make_view can build, are not examined (PyTorch's "too hard": allowed).
bool has_internal_overlap(const Tensor& t);
// True when `a` and `b` share some memory without being the same view. Examined only when
// both are dense without gaps (each element its own address, no holes; otherwise PyTorch's
// "too hard", allowed: x.select(1, 0) and x.select(1, 1) interleave but never collide) and
// in one storage: then their byte ranges intersect, and they differ in the first element,
// the dtype, or the sizes and strides of the dims of size > 1. NOTE: PyTorch compares the
// raw strides, so it also refuses views that differ only in size-1 dims
// (x.unsqueeze(0).add_(x)); vgrad allows them: each element is read where it is written.
bool overlaps_partially(const Tensor& a, const Tensor& b);
// Throws "OP: more than one element of the destination [4] (strides [0]) is the same
// memory location; clone() it first" when has_internal_overlap(destination).
void check_no_internal_overlap(const Tensor& destination, const char* op);

}  // namespace vgrad

// Shape ops. Views (reshape of contiguous data, transpose, permute, squeeze,
// unsqueeze, narrow, slice, expand) share storage; each backward puts the
// gradient back in the input's layout.
#include <algorithm>
#include <numeric>

#include "autograd/function.h"
#include "autograd/ops.h"
#include "core/error.h"
#include "core/kernels.h"
#include "core/profiler.h"

namespace vgrad {

using autograd::Context;
using autograd::needs_grad;
using autograd::record;

namespace {

Shape infer_shape(const Shape& requested, int64_t count, const Shape& from, const char* op) {
  Shape shape = requested;
  int64_t known = 1, infer = -1;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == -1) {
      if (infer >= 0) fail("{}: only one dimension can be -1 in {}", op, shape_str(requested));
      infer = static_cast<int64_t>(d);
    } else if (shape[d] < 0) {
      fail("{}: negative size in {}", op, shape_str(requested));
    } else {
      known *= shape[d];
    }
  }
  if (infer >= 0) {
    if (known == 0 || count % known != 0)
      fail("{}: cannot reshape {} ({} elements) to {}", op, shape_str(from), count, shape_str(requested));
    shape[infer] = count / known;
  }
  if (numel(shape) != count)
    fail("{}: cannot reshape {} ({} elements) to {} ({} elements)", op, shape_str(from), count, shape_str(shape),
         numel(shape));
  return shape;
}

// Gradient of a view op that only rearranged dims: reshape g back.
Tensor record_reshape_back(Tensor out, const Tensor& x, const char* name) {
  if (!needs_grad({x})) return out;
  const Shape in_shape = x.shape();
  return record(out, {x}, Context(name), [in_shape](Context&, const Tensor& g) {
    return std::vector<Tensor>{reshape(g, in_shape)};
  });
}

}  // namespace

// reshape;  dx = reshape(g, x.shape). A view when x is contiguous, else a copy.
Tensor reshape(const Tensor& x, const Shape& shape_in) {
  VGRAD_PROFILE_OP("reshape");
  const Shape shape = infer_shape(shape_in, x.numel(), x.shape(), "reshape");
  if (shape == x.shape() && !needs_grad({x})) return x;
  const Tensor source = kernels::contiguous(x);
  Tensor out = make_view(source, shape, contiguous_strides(shape), source.offset());
  return record_reshape_back(out, x, "reshape");
}

Tensor Tensor::view(const Shape& shape) const {
  if (!is_contiguous())
    fail("view: tensor of shape {} is not contiguous; use reshape() (which copies) or contiguous() first",
         shape_str(this->shape()));
  return vgrad::reshape(*this, shape);
}

// permute;  dx = permute(g, inverse)
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  VGRAD_PROFILE_OP("permute");
  if (static_cast<int64_t>(dims.size()) != x.dim())
    fail("permute: {} dims given for a tensor of shape {}", dims.size(), shape_str(x.shape()));
  std::vector<int64_t> order(dims.size()), inverse(dims.size(), -1);
  Shape shape(dims.size());
  Strides strides(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    order[i] = wrap_axis(dims[i], x.dim(), "permute");
    if (inverse[order[i]] != -1) fail("permute: dim {} repeated", order[i]);
    inverse[order[i]] = static_cast<int64_t>(i);
    shape[i] = x.shape()[order[i]];
    strides[i] = x.strides()[order[i]];
  }
  Tensor out = make_view(x, shape, strides, x.offset());
  if (!needs_grad({x})) return out;
  return record(out, {x}, Context("permute"), [inverse](Context&, const Tensor& g) {
    return std::vector<Tensor>{permute(g, inverse)};
  });
}

// transpose(dim0, dim1): a permute that swaps two dims
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1) {
  std::vector<int64_t> order(static_cast<size_t>(x.dim()));
  std::iota(order.begin(), order.end(), int64_t{0});
  const int64_t a0 = wrap_axis(dim0, x.dim(), "transpose"), a1 = wrap_axis(dim1, x.dim(), "transpose");
  if (a0 != a1) std::swap(order[a0], order[a1]);  // (a 0-d tensor has no order to swap)
  return permute(x, order);
}

// squeeze(axis): drops a size-1 dim (a no-op view if it is not 1, as PyTorch)
Tensor squeeze(const Tensor& x, int64_t axis) {
  VGRAD_PROFILE_OP("squeeze");
  const int64_t a = wrap_axis(axis, x.dim(), "squeeze");
  if (x.dim() == 0) return x;  // as PyTorch
  Shape shape = x.shape();
  Strides strides = x.strides();
  if (shape[a] != 1) return x;
  shape.erase(shape.begin() + a);
  strides.erase(strides.begin() + a);
  return record_reshape_back(make_view(x, shape, strides, x.offset()), x, "squeeze");
}

// unsqueeze(axis): inserts a size-1 dim
Tensor unsqueeze(const Tensor& x, int64_t axis) {
  VGRAD_PROFILE_OP("unsqueeze");
  const int64_t a = wrap_axis(axis, x.dim() + 1, "unsqueeze");
  Shape shape = x.shape();
  Strides strides = x.strides();
  const int64_t stride = a < x.dim() ? x.strides()[a] * x.shape()[a] : 1;
  shape.insert(shape.begin() + a, 1);
  strides.insert(strides.begin() + a, stride);
  return record_reshape_back(make_view(x, shape, strides, x.offset()), x, "unsqueeze");
}

// slice(axis, start, end, step);  dx = zeros with g written into the slice
Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end, int64_t step) {
  VGRAD_PROFILE_OP("slice");
  const int64_t a = wrap_existing_axis(axis, x.dim(), "slice");
  const int64_t size = x.shape()[a];
  if (step <= 0) fail("slice: step must be positive, got {}", step);
  auto clip = [size](int64_t i) { return std::clamp(i < 0 ? i + size : i, int64_t{0}, size); };
  const int64_t lo = clip(start), hi = std::max(clip(end), clip(start));
  Shape shape = x.shape();
  Strides strides = x.strides();
  shape[a] = (hi - lo + step - 1) / step;
  strides[a] = x.strides()[a] * step;
  Tensor out = make_view(x, shape, strides, x.offset() + lo * x.strides()[a]);
  if (!needs_grad({x})) return out;
  const Shape in_shape = x.shape();
  return record(out, {x}, Context("slice"), [in_shape, a, lo, hi, step](Context&, const Tensor& g) {
    Tensor dx = zeros(in_shape, {.dtype = g.dtype(), .device = g.device()});
    slice(dx, a, lo, hi, step).copy_(g);
    return std::vector<Tensor>{dx};
  });
}

// narrow(axis, start, length): a contiguous slice, with its range checked
Tensor narrow(const Tensor& x, int64_t axis, int64_t start, int64_t length) {
  const int64_t a = wrap_existing_axis(axis, x.dim(), "narrow");
  const int64_t s = start < 0 ? start + x.shape()[a] : start;
  if (s < 0 || length < 0 || s + length > x.shape()[a])
    fail("narrow: range [{}, {}) out of bounds for axis {} of size {} (shape {})", start, start + length, a,
         x.shape()[a], shape_str(x.shape()));
  return slice(x, a, s, s + length, 1);
}

// expand: size-1 dims repeat with stride 0;  dx = sum_to(g, x.shape)
Tensor expand(const Tensor& x, const Shape& shape_in) {
  VGRAD_PROFILE_OP("expand");
  Shape shape = shape_in;
  const int64_t lead = static_cast<int64_t>(shape.size()) - x.dim();
  if (lead < 0) fail("expand: cannot expand {} to fewer dims {}", shape_str(x.shape()), shape_str(shape_in));
  Strides strides(shape.size(), 0);
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
    if (d >= lead && shape[d] == -1) shape[d] = x.shape()[d - lead];  // -1 keeps an existing dim
    if (shape[d] < 0) fail("expand: invalid size {} in {} (dim {})", shape[d], shape_str(shape_in), d);
    if (d < lead) continue;
    const int64_t size = x.shape()[d - lead];
    if (size == shape[d]) strides[d] = x.strides()[d - lead];
    else if (size != 1)
      fail("expand: cannot expand {} to {} (dim {}: {} vs {})", shape_str(x.shape()), shape_str(shape_in), d, size,
           shape[d]);
  }
  Tensor out = make_view(x, shape, strides, x.offset());
  if (!needs_grad({x})) return out;
  const Shape in_shape = x.shape();
  return record(out, {x}, Context("expand"), [in_shape](Context&, const Tensor& g) {
    return std::vector<Tensor>{sum_to(g, in_shape)};
  });
}

// index_select(axis, index): gathers slices;  dx = zeros with g added back at index (index_add)
Tensor index_select(const Tensor& x, int64_t axis, const Tensor& index) {
  VGRAD_PROFILE_OP("index_select");
  const int64_t a = wrap_existing_axis(axis, x.dim(), "index_select");
  if (index.dtype() != DType::Int64 || index.dim() != 1)
    fail("index_select: index must be a 1-D int64 tensor, got {} {}", shape_str(index.shape()), dtype_name(index.dtype()));
  kernels::check_same_device(x, index, "index_select");
  Shape shape = x.shape();
  shape[a] = index.numel();
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  backend_for(x.device()).index_select(x.view(), static_cast<int>(a), index.view(), out.view());
  if (!needs_grad({x})) return out;
  Context ctx("index_select");
  ctx.save_for_backward({index});
  const Shape in_shape = x.shape();
  return record(out, {x}, std::move(ctx), [in_shape, a](Context& c, const Tensor& g) {
    Tensor dx = zeros(in_shape, {.dtype = g.dtype(), .device = g.device()});
    const Tensor gc = kernels::contiguous(g);
    backend_for(g.device()).index_add(dx.view(), static_cast<int>(a), c.saved(0).view(), gc.view());
    return std::vector<Tensor>{dx};
  });
}

// contiguous: x itself when already contiguous, else a copy;  dx = g
Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  return clone(x);
}

// clone: a contiguous copy;  dx = g
Tensor clone(const Tensor& x) {
  VGRAD_PROFILE_OP("clone");
  Tensor out = kernels::empty_like(x);
  backend_for(x.device()).copy(x.view(), out.view());
  if (!needs_grad({x})) return out;
  return record(out, {x}, Context("clone"), [](Context&, const Tensor& g) { return std::vector<Tensor>{g}; });
}

// cat along axis;  the inputs' gradients are g split at their sizes
Tensor cat(const std::vector<Tensor>& tensors, int64_t axis) {
  VGRAD_PROFILE_OP("cat");
  if (tensors.empty()) fail("cat: no tensors given");
  const Tensor& first = tensors[0];
  if (first.dim() == 0) fail("cat: 0-d tensors cannot be concatenated (unsqueeze them first)");
  const int64_t a = wrap_axis(axis, first.dim(), "cat");
  Shape shape = first.shape();
  shape[a] = 0;
  DType dtype = first.dtype();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    kernels::check_same_device(first, t, "cat");
    if (t.dim() != first.dim()) fail("cat: tensor {} has shape {}, expected {} dims", i, shape_str(t.shape()), first.dim());
    for (int64_t d = 0; d < t.dim(); ++d)
      if (d != a && t.shape()[d] != first.shape()[d])
        fail("cat: tensor {} has shape {}, incompatible with {} (dim {})", i, shape_str(t.shape()),
             shape_str(first.shape()), d);
    shape[a] += t.shape()[a];
    dtype = promote(dtype, t.dtype());
  }
  Tensor out = Tensor::empty(shape, dtype, first.device());
  std::vector<int64_t> sizes;
  int64_t offset = 0;
  {
    NoGradGuard no_grad;
    for (const Tensor& t : tensors) {
      narrow(out, a, offset, t.shape()[a]).copy_(t);
      offset += t.shape()[a];
      sizes.push_back(t.shape()[a]);
    }
  }
  if (!needs_grad(tensors)) return out;
  return record(out, tensors, Context("cat"), [a, sizes](Context&, const Tensor& g) { return split(g, sizes, a); });
}

// stack along a new axis: cat of the unsqueezed inputs;  each input's gradient is its
// slice of g (through cat and unsqueeze)
Tensor stack(const std::vector<Tensor>& tensors, int64_t axis) {
  VGRAD_PROFILE_OP("stack");
  if (tensors.empty()) fail("stack: no tensors given");
  const Shape& shape = tensors[0].shape();
  const int64_t a = wrap_axis(axis, tensors[0].dim() + 1, "stack");
  std::vector<Tensor> pieces;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].shape() != shape)
      fail("stack: tensor {} has shape {}, tensor 0 has {} (all must be equal)", i, shape_str(tensors[i].shape()),
           shape_str(shape));
    pieces.push_back(unsqueeze(tensors[i], a));
  }
  return cat(pieces, a);
}

// split into pieces of the given sizes along axis: narrow views;  each piece's gradient
// goes back into its range of x
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis) {
  const int64_t a = wrap_existing_axis(axis, x.dim(), "split");
  const int64_t size = x.shape()[a];
  int64_t total = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] < 0) fail("split: size {} (position {}) is negative in sizes {}", sizes[i], i, shape_str(sizes));
    if (sizes[i] > size - total)  // (checked before adding: no overflow)
      fail("split: sizes {} sum to more than {}, the size of axis {} of {}", shape_str(sizes), size, a,
           shape_str(x.shape()));
    total += sizes[i];
  }
  if (total != size)
    fail("split: sizes {} sum to {}, not to {}, the size of axis {} of {}", shape_str(sizes), total, size, a,
         shape_str(x.shape()));
  std::vector<Tensor> pieces;
  int64_t start = 0;
  for (int64_t piece : sizes) {
    pieces.push_back(narrow(x, a, start, piece));
    start += piece;
  }
  return pieces;
}

// split into pieces of split_size, the last one smaller; an empty axis gives one empty piece
std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t axis) {
  const int64_t a = wrap_existing_axis(axis, x.dim(), "split");
  const int64_t size = x.shape()[a];
  if (split_size < 0 || (split_size == 0 && size > 0))
    fail("split: split_size {} must be positive (0 only for an empty axis; axis {} of {} has size {})", split_size, a,
         shape_str(x.shape()), size);
  const int64_t count = split_size == 0 ? 1 : std::max<int64_t>(size / split_size + (size % split_size != 0), 1);
  std::vector<int64_t> sizes(static_cast<size_t>(count), split_size);
  sizes.back() = size - split_size * (count - 1);
  return split(x, sizes, a);
}

// chunk into pieces of ceil(size / chunks), as torch.chunk: may give fewer than `chunks`;
// an empty axis gives `chunks` empty pieces
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t axis) {
  if (chunks <= 0) fail("chunk: chunks must be positive, got {}", chunks);
  const int64_t a = wrap_existing_axis(axis, x.dim(), "chunk");
  const int64_t size = x.shape()[a];
  if (size == 0) return split(x, std::vector<int64_t>(static_cast<size_t>(chunks), 0), a);
  return split(x, size / chunks + (size % chunks != 0), a);
}

// to(device): a copy on the other device;  dx = g moved back
Tensor to_device(const Tensor& x, Device device) {
  VGRAD_PROFILE_OP("to_device");
  if (x.device() == device) return x;
  const Tensor source = kernels::contiguous(x);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), device);
  const size_t bytes = static_cast<size_t>(x.numel()) * dtype_size(x.dtype());
  if (bytes > 0) {
    if (source.device().is_cpu()) {
      backend_for(device).copy_from_host(out.data_ptr(), source.data_ptr(), bytes);
    } else if (device.is_cpu()) {
      backend_for(source.device()).copy_to_host(out.data_ptr(), source.data_ptr(), bytes);
    } else {  // between two GPUs: through the host
      std::vector<char> host(bytes);
      backend_for(source.device()).copy_to_host(host.data(), source.data_ptr(), bytes);
      backend_for(device).copy_from_host(out.data_ptr(), host.data(), bytes);
    }
  }
  if (!needs_grad({x})) return out;
  const Device from = x.device();
  return record(out, {x}, Context("to"), [from](Context&, const Tensor& g) {
    return std::vector<Tensor>{to_device(g, from)};
  });
}

// to(dtype);  dx = g converted back
Tensor to_dtype(const Tensor& x, DType dtype) {
  VGRAD_PROFILE_OP("to_dtype");
  if (x.dtype() == dtype) return x;
  if (x.requires_grad() && !is_floating(dtype) && autograd::GradMode::is_enabled())
    fail("to: converting a tensor that requires grad to {} would cut the gradient; detach() it first",
         dtype_name(dtype));
  Tensor out = kernels::cast(x, dtype);
  if (!needs_grad({x})) return out;
  const DType from = x.dtype();
  return record(out, {x}, Context("to"), [from](Context&, const Tensor& g) {
    return std::vector<Tensor>{kernels::cast(g, from)};
  });
}

}  // namespace vgrad

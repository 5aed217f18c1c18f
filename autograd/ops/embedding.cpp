// Embedding lookup: a row gather whose gradient is a scatter-add (index_add), so
// repeated indices accumulate and only the rows looked up are touched.
#include "autograd/function.h"
#include "core/error.h"
#include "core/kernels.h"
#include "core/profiler.h"
#include "autograd/ops.h"

namespace vgrad {

using autograd::Context;
using autograd::needs_grad;
using autograd::record;

// weight (V, D)[indices (any shape, int64)] -> (indices..., D);
//   dweight = index_add of g's rows at indices, with row padding_idx kept at 0
Tensor embedding(const Tensor& weight, const Tensor& indices, int64_t padding_idx) {
  VGRAD_PROFILE_OP("embedding");
  if (weight.dim() != 2) fail("embedding: weight must be 2-D (num_embeddings, dim), got {}", shape_str(weight.shape()));
  if (indices.dtype() != DType::Int64)
    fail("embedding: indices must be int64, got {} {}", shape_str(indices.shape()), dtype_name(indices.dtype()));
  kernels::check_same_device(weight, indices, "embedding");
  const int64_t rows = weight.shape()[0], dim = weight.shape()[1];
  if (padding_idx != kNoPadding) {
    if (padding_idx < -rows || padding_idx >= rows)
      fail("embedding: padding_idx {} out of range for {} embeddings", padding_idx, rows);
    if (padding_idx < 0) padding_idx += rows;  // counts from the end, as in PyTorch
  }
  const Tensor flat = kernels::contiguous(indices).reshape({indices.numel()});
  Tensor rows_out = Tensor::empty({indices.numel(), dim}, weight.dtype(), weight.device());
  backend_for(weight.device()).index_select(weight.view(), 0, flat.view(), rows_out.view());
  Shape out_shape = indices.shape();
  out_shape.push_back(dim);
  Tensor out = rows_out.reshape(out_shape);
  if (!needs_grad({weight})) return out;
  Context ctx("embedding");
  ctx.save_for_backward({flat});
  const Shape weight_shape = weight.shape();
  return record(out, {weight}, std::move(ctx), [weight_shape, padding_idx, dim](Context& c, const Tensor& g) {
    Tensor dweight = zeros(weight_shape, {.dtype = g.dtype(), .device = g.device()});
    const Tensor grad_rows = kernels::contiguous(g).reshape({-1, dim});
    backend_for(g.device()).index_add(dweight.view(), 0, c.saved(0).view(), grad_rows.view());
    if (padding_idx != kNoPadding) dweight.select(0, padding_idx).fill_(0.0);
    return std::vector<Tensor>{dweight};
  });
}

}  // namespace vgrad

// softmax and log_softmax along any axis, stable for large logits (the row max
// is subtracted first). The kernel works on the last axis; other axes are moved there.
#include "autograd/autocast.h"
#include "autograd/function.h"
#include "core/error.h"
#include "core/kernels.h"
#include "core/profiler.h"
#include "autograd/ops.h"

namespace vgrad {

using autograd::Context;
using autograd::needs_grad;
using autograd::record;

namespace {

// Runs `kernel(in, out)` on x with `axis` moved last and contiguous, and moves it back.
template <class Kernel>
Tensor along_last(const Tensor& x, int64_t axis, Kernel kernel) {
  const bool last = axis == x.dim() - 1 || x.dim() == 0;
  const Tensor moved = kernels::contiguous(last ? x : transpose(x.detach(), axis, -1));
  Tensor out = kernels::empty_like(moved);
  if (moved.numel() > 0) kernel(moved, out);
  return last ? out : transpose(out, axis, -1);
}

// y = softmax(x) or log_softmax(x);  dx = y·(g − Σ g·y)  or  g − softmax·Σ g
Tensor softmax_op(const Tensor& x, int64_t axis_in, bool log) {
  const char* name = log ? "log_softmax" : "softmax";
  VGRAD_PROFILE_OP(name);
  if (const Tensor wide = autograd::autocast::to_float32(x); !wide.is_same(x)) return softmax_op(wide, axis_in, log);
  if (!is_floating(x.dtype())) fail("{}: not defined for {} tensors", name, dtype_name(x.dtype()));
  const int64_t axis = wrap_axis(axis_in, x.dim(), name);
  // A 0-d tensor is one class; the kernel needs a last dim to work along.
  if (x.dim() == 0) return reshape(softmax_op(reshape(x, {1}), 0, log), {});
  Tensor out = along_last(x, axis, [&](const Tensor& in, const Tensor& y) {
    backend_for(in.device()).softmax(in.view(), y.view(), log);
  });
  if (!needs_grad({x})) return out;
  Context ctx(name);
  ctx.save_for_backward({out});
  ctx.values["log"] = log;
  ctx.ints = {axis};
  return record(out, {x}, std::move(ctx), [](Context& c, const Tensor& g) {
    const Tensor y = c.saved(0);
    const int64_t axis = c.ints[0];
    const bool last = axis == y.dim() - 1 || y.dim() == 0;
    const Tensor ym = kernels::contiguous(last ? y : transpose(y, axis, -1));
    const Tensor gm = kernels::contiguous(last ? g : transpose(g, axis, -1));
    Tensor dx = kernels::empty_like(ym);
    if (ym.numel() > 0) backend_for(y.device()).softmax_backward(ym.view(), gm.view(), dx.view(), c.values["log"] != 0);
    return std::vector<Tensor>{last ? dx : transpose(dx, axis, -1)};
  });
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t axis) { return softmax_op(x, axis, false); }
Tensor log_softmax(const Tensor& x, int64_t axis) { return softmax_op(x, axis, true); }

}  // namespace vgrad

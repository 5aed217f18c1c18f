// record() and saved-tensor version checks.
#include "autograd/function.h"

#include "autograd/anomaly.h"
#include "core/error.h"

namespace vgrad::autograd {

void Context::save_for_backward(const std::vector<Tensor>& tensors) {
  for (const Tensor& t : tensors)
    saved_.push_back({t.defined() ? t.detach() : Tensor(), t.defined() ? t.version() : 0});
}

Tensor Context::saved(size_t i) const {
  if (i >= saved_.size()) {
    if (saved_.empty()) fail("{}: backward through a graph whose saved tensors were freed; call backward(..., "
                             "/*retain_graph=*/true) to backward twice", op_);
    fail("{}: saved tensor {} requested, {} saved", op_, i, saved_.size());
  }
  const SavedTensor& s = saved_[i];
  if (s.tensor.defined() && s.tensor.version() != s.version)
    fail("{}: a tensor saved for backward was modified in place (version {}, saved at version {}); "
         "the gradient would be wrong. Clone it before changing it in place.",
         op_, s.tensor.version(), s.version);
  return s.tensor;
}

std::vector<Tensor> Node::apply(const Tensor& grad_output) {
  if (released_)
    fail("{}: backward through a graph that was already freed; pass retain_graph=true to the first "
         "backward() to run backward twice", name());
  return backward_(ctx_, grad_output);
}

void Node::release() {
  ctx_.release();
  backward_ = nullptr;
  released_ = true;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

Tensor record(Tensor out, const std::vector<Tensor>& inputs, Context ctx, BackwardFn backward) {
  if (!needs_grad(inputs)) return out;
  if (AnomalyMode::is_enabled()) check_forward_output(ctx.op(), out, inputs);
  std::vector<Edge> edges;
  edges.reserve(inputs.size());
  for (const Tensor& t : inputs) {
    Edge edge;
    if (t.defined()) {  // inactive inputs keep their shape too, for anomaly messages
      edge.shape = t.shape();
      edge.dtype = t.dtype();
    }
    if (t.defined() && t.requires_grad()) {
      if (t.grad_fn()) edge.node = t.grad_fn();
      else edge.leaf = t.impl_shared();
    }
    ctx.input_needs_grad.push_back(edge.active());
    edges.push_back(std::move(edge));
  }
  // A view returned by a rule-less op may share an impl with its input; always hand out a fresh impl.
  TensorImpl* impl = out.impl_ptr();
  for (const Tensor& t : inputs)
    if (t.defined() && t.impl_ptr() == impl) {
      out = make_view(out, out.shape(), out.strides(), out.offset());
      impl = out.impl_ptr();
      break;
    }
  impl->requires_grad = true;
  impl->grad_fn = std::make_shared<Node>(std::move(ctx), std::move(backward), std::move(edges));
  return out;
}

}  // namespace vgrad::autograd

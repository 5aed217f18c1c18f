// Losses, dropout and attention, each with its backward beside its forward.
#include "nn/functional.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "autograd/autocast.h"
#include "autograd/function.h"
#include "core/error.h"
#include "core/grad_mode.h"
#include "core/kernels.h"
#include "core/profiler.h"

namespace vgrad::nn::functional {

using autograd::Context;
using autograd::needs_grad;
using autograd::record;

namespace {

// The mean of no losses is 0/0: refused as mean() of an empty tensor is, naming
// the loss (Reduction::Sum of an empty batch is a plain 0).
void refuse_empty_mean(const Tensor& input, Reduction reduction, const char* op) {
  if (reduction == Reduction::Mean && input.numel() == 0)
    fail("{}: empty batch (input {}): the mean over no elements is undefined (Reduction::Sum gives 0)", op,
         shape_str(input.shape()));
}

// Per-row or per-element losses, reduced as asked.
Tensor reduce_loss(const Tensor& losses, Reduction reduction) {
  if (reduction == Reduction::None) return losses;
  if (reduction == Reduction::Sum) return sum(losses);
  return mean(losses);
}

// The elementwise losses' first checks: input (called `what` in the message: "input",
// "logits") and target of one shape, and no mean over an empty batch.
void check_same_shape(const Tensor& input, const Tensor& target, Reduction reduction, const char* op, const char* what) {
  if (input.shape() != target.shape())
    fail("{}: {} {} and target {} differ in shape", op, what, shape_str(input.shape()), shape_str(target.shape()));
  refuse_empty_mean(input, reduction, op);
}

void check_targets(const Tensor& input, const Tensor& target, const char* op) {
  if (input.dim() != 2) fail("{}: expects input (N, C), got {}", op, shape_str(input.shape()));
  if (target.dtype() != DType::Int64) fail("{}: targets must be int64 class indices, got {}", op, dtype_name(target.dtype()));
  if (target.dim() != 1 || target.shape()[0] != input.shape()[0])
    fail("{}: targets {} do not match input {} (expected [{}])", op, shape_str(target.shape()),
         shape_str(input.shape()), input.shape()[0]);
  kernels::check_same_device(input, target, op);
}

}  // namespace

Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) { return x.flatten(start_dim, end_dim); }

// x * mask, mask = keep/(1-p);  dx = g * mask (through mul)
Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  VGRAD_PROFILE_OP("dropout");
  if (p < 0 || p > 1) fail("dropout: probability {} outside [0, 1]", p);
  if (!training || p == 0) return x;
  Tensor mask = kernels::empty_like(x);
  backend_for(x.device()).dropout_mask(mask.view(), p, (gen ? *gen : default_generator()).state());
  return mul(x, mask);
}

// x (N, C, ...) · mask (N, C, 1, ...);   dx = g · mask
Tensor dropout2d(const Tensor& x, double p, bool training, Generator* gen) {
  VGRAD_PROFILE_OP("dropout2d");
  if (p < 0 || p > 1) fail("dropout2d: probability {} outside [0, 1]", p);
  if (x.dim() < 2) fail("dropout2d: input must be (N, C, ...), got {}", shape_str(x.shape()));
  if (!training || p == 0) return x;
  Shape mask_shape(size_t(x.dim()), 1);
  mask_shape[0] = x.shape()[0], mask_shape[1] = x.shape()[1];
  Tensor mask = Tensor::empty(mask_shape, x.dtype(), x.device());
  backend_for(x.device()).dropout_mask(mask.view(), p, (gen ? *gen : default_generator()).state());
  return mul(x, mask);
}

namespace {

// y = x·scale + shift with scale = weight/√(var + eps), shift = bias − mean·scale, all
// broadcast from the statistics' keepdim shape: two passes over x after the statistics,
// and the autograd of these few ops is the normalization's exact gradient.
Tensor normalize(const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor& weight, const Tensor& bias,
                 double eps) {
  Tensor scale = pow(var + eps, -0.5);
  if (weight.defined()) scale = scale * weight;
  Tensor shift = -(mean * scale);
  if (bias.defined()) shift = shift + bias;
  return x * scale + shift;
}

// A per-channel (C) tensor seen as (C, 1, ...) against x (N, C, ...).
Tensor per_channel(const Tensor& t, int64_t ndim) {
  if (!t.defined()) return t;
  Shape shape(size_t(ndim - 1), 1);
  shape[0] = t.numel();
  return reshape(t, shape);
}

void check_channels(const char* op, const char* what, const Tensor& t, int64_t channels, const Tensor& x) {
  if (t.defined() && (t.dim() != 1 || t.shape()[0] != channels))
    fail("{}: {} {} should be [{}] for input {} ({} channels)", op, what, shape_str(t.shape()), channels,
         shape_str(x.shape()), channels);
}

View view_or_empty(const Tensor& t) { return t.defined() ? t.view() : View{}; }

// Training-mode batch norm through the device's fused kernel (Backend::batch_norm): the
// output, and the batch's mean and biased var (C) for the running statistics; nothing
// where the device has none (CUDA) or the operands need the composed path's promotion.
//   x̂ = (x − mean)·invstd;  dx = w·invstd/M·(M·g − Σg − x̂·Σg·x̂),  dw = Σg·x̂,  db = Σg
struct FusedBatchNorm {
  Tensor out, mean, var;
};
std::optional<FusedBatchNorm> fused_batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  for (const Tensor* t : {&weight, &bias})
    if (t->defined() && (t->dtype() != x.dtype() || t->device() != x.device())) return std::nullopt;
  const int64_t channels = x.shape()[1];
  const Tensor xc = kernels::contiguous(x.detach());
  const Tensor w = weight.defined() ? kernels::contiguous(weight.detach()) : Tensor();
  const Tensor b = bias.defined() ? kernels::contiguous(bias.detach()) : Tensor();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({channels}, x.dtype(), x.device()), var = Tensor::empty({channels}, x.dtype(), x.device());
  if (!backend_for(x.device()).batch_norm(xc.view(), view_or_empty(w), view_or_empty(b), eps, out.view(), mean.view(),
                                          var.view()))
    return std::nullopt;
  if (!needs_grad({x, weight, bias})) return FusedBatchNorm{out, mean, var};
  Context ctx("batch_norm");
  ctx.save_for_backward({xc, mean, var, w});
  out = record(out, {x, weight, bias}, std::move(ctx), [eps](Context& c, const Tensor& dout) {
    const Tensor xs = c.saved(0), w = c.saved(3), dy = kernels::contiguous(dout);
    const int64_t channels = xs.shape()[1];
    Tensor dx = Tensor::empty(xs.shape(), xs.dtype(), xs.device());
    Tensor dw = Tensor::empty({channels}, xs.dtype(), xs.device()), db = Tensor::empty({channels}, xs.dtype(), xs.device());
    backend_for(xs.device()).batch_norm_backward(dy.view(), xs.view(), c.saved(1).view(), c.saved(2).view(),
                                                 view_or_empty(w), eps, dx.view(), dw.view(), db.view());
    return std::vector<Tensor>{c.needs_input_grad(0) ? dx : Tensor(), c.needs_input_grad(1) ? dw : Tensor(),
                               c.needs_input_grad(2) ? db : Tensor()};
  });
  return FusedBatchNorm{out, mean, var};
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, double momentum, double eps) {
  VGRAD_PROFILE_OP("batch_norm");
  if (const auto wide = autograd::autocast::to_float32(x, weight, bias); wide.changed)
    return batch_norm(wide.first, running_mean, running_var, wide.second, wide.third, training, momentum, eps);
  if (x.dim() < 2) fail("batch_norm: input must be (N, C, ...), got {}", shape_str(x.shape()));
  const int64_t channels = x.shape()[1];
  check_channels("batch_norm", "weight", weight, channels, x);
  check_channels("batch_norm", "bias", bias, channels, x);
  check_channels("batch_norm", "running_mean", running_mean, channels, x);
  check_channels("batch_norm", "running_var", running_var, channels, x);
  std::vector<int64_t> axes{0};
  for (int64_t d = 2; d < x.dim(); ++d) axes.push_back(d);
  const int64_t n = x.numel() / std::max<int64_t>(channels, 1);
  Tensor mean, var;
  if (training) {
    if (n <= 1) fail("batch_norm: training needs more than one value per channel, got input {}", shape_str(x.shape()));
    const std::optional<FusedBatchNorm> fused = fused_batch_norm(x, weight, bias, eps);
    if (fused) {
      mean = fused->mean;
      var = fused->var;
    } else {
      mean = vgrad::mean(x, axes, true);
      var = vgrad::var(x, axes, 0, true);
    }
    if (running_mean.defined() && running_var.defined()) {
      NoGradGuard no_grad;
      Tensor rm = running_mean, rv = running_var;
      rm.mul_(1 - momentum).add_(mean.detach().reshape({channels}), momentum);
      rv.mul_(1 - momentum).add_(var.detach().reshape({channels}), momentum * double(n) / double(n - 1));
    }
    if (fused) return fused->out;
  } else {
    if (!running_mean.defined() || !running_var.defined())
      fail("batch_norm: evaluation needs running_mean and running_var (or use batch statistics: training=true)");
    mean = per_channel(running_mean, x.dim()).to(x.dtype());
    var = per_channel(running_var, x.dim()).to(x.dtype());
  }
  return normalize(x, mean, var, per_channel(weight, x.dim()), per_channel(bias, x.dim()), eps);
}

Tensor layer_norm(const Tensor& x, int64_t normalized_dims, const Tensor& weight, const Tensor& bias, double eps) {
  VGRAD_PROFILE_OP("layer_norm");
  if (const auto wide = autograd::autocast::to_float32(x, weight, bias); wide.changed)
    return layer_norm(wide.first, normalized_dims, wide.second, wide.third, eps);
  if (normalized_dims < 1 || normalized_dims > x.dim())
    fail("layer_norm: cannot normalize the last {} dims of input {}", normalized_dims, shape_str(x.shape()));
  const Shape normalized(x.shape().end() - normalized_dims, x.shape().end());
  for (const Tensor* t : {&weight, &bias})
    if (t->defined() && t->shape() != normalized)
      fail("layer_norm: {} {} should match the normalized shape {} of input {}", t == &weight ? "weight" : "bias",
           shape_str(t->shape()), shape_str(normalized), shape_str(x.shape()));
  std::vector<int64_t> axes;
  for (int64_t d = x.dim() - normalized_dims; d < x.dim(); ++d) axes.push_back(d);
  return normalize(x, mean(x, axes, true), var(x, axes, 0, true), weight, bias, eps);
}

Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias, double eps) {
  VGRAD_PROFILE_OP("group_norm");
  if (const auto wide = autograd::autocast::to_float32(x, weight, bias); wide.changed)
    return group_norm(wide.first, groups, wide.second, wide.third, eps);
  if (x.dim() < 2) fail("group_norm: input must be (N, C, ...), got {}", shape_str(x.shape()));
  const int64_t channels = x.shape()[1];
  if (groups < 1 || channels % groups != 0)
    fail("group_norm: {} groups do not divide the {} channels of input {}", groups, channels, shape_str(x.shape()));
  check_channels("group_norm", "weight", weight, channels, x);
  check_channels("group_norm", "bias", bias, channels, x);
  const Tensor grouped = reshape(x, {x.shape()[0], groups, -1});
  const Tensor y = reshape(normalize(grouped, mean(grouped, {2}, true), var(grouped, {2}, 0, true), Tensor(),
                                     Tensor(), eps),
                           x.shape());
  Tensor out = weight.defined() ? y * per_channel(weight, x.dim()) : y;
  return bias.defined() ? out + per_channel(bias, x.dim()) : out;
}

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask) {
  VGRAD_PROFILE_OP("scaled_dot_product_attention");
  if (q.dim() < 2 || k.dim() < 2 || v.dim() < 2)
    fail("scaled_dot_product_attention: q {}, k {}, v {} need at least 2 dims", shape_str(q.shape()),
         shape_str(k.shape()), shape_str(v.shape()));
  const int64_t d = q.shape()[q.dim() - 1];
  Tensor scores = affine(matmul(q, transpose(k, -2, -1)), 1.0 / std::sqrt(double(d)), 0.0);
  if (!mask.defined()) return matmul(softmax(scores, -1), v);
  // NOTE: a query row whose keys are all masked has no softmax (0/0). With −inf
  // there it gave NaN, and its NaN gradient reached every value row. Instead the
  // blocked score is the dtype's lowest finite value (exp of it minus a row's
  // max is exactly 0, so rows with any key kept are unchanged) and the weights are
  // multiplied by the mask: an all-masked row gets zero weights, a zero output
  // and zero gradients, as in PyTorch.
  const TensorOptions options{.dtype = scores.dtype(), .device = scores.device()};
  // NOTE: float32's lowest would round to -inf in bfloat16: each dtype gets its own.
  const double lowest = scores.dtype() == DType::Float64    ? std::numeric_limits<double>::lowest()
                        : scores.dtype() == DType::BFloat16 ? -double(float(BFloat16::from_bits(0x7f7f)))
                        : scores.dtype() == DType::Float16  ? -65504.0
                                                            : double(std::numeric_limits<float>::lowest());
  const Tensor keep = where(mask, full({}, 1.0, options), full({}, 0.0, options));
  const Tensor weights = mul(softmax(where(mask, scores, full({}, lowest, options)), -1), keep);
  return matmul(weights, v);
}

// loss_i = −Σ_c q_ic log softmax(x_i)_c, q = (1−s)·onehot + s/C;   dlogits = (softmax − q)·dL/dloss_i
Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction, double label_smoothing) {
  VGRAD_PROFILE_OP("cross_entropy");
  if (const Tensor wide = autograd::autocast::to_float32(logits); !wide.is_same(logits)) return cross_entropy(wide, target, reduction, label_smoothing);
  check_targets(logits, target, "cross_entropy");
  refuse_empty_mean(logits, reduction, "cross_entropy");
  if (!is_floating(logits.dtype())) fail("cross_entropy: logits must be floating point, got {}", dtype_name(logits.dtype()));
  if (label_smoothing < 0 || label_smoothing > 1) fail("cross_entropy: label_smoothing {} outside [0, 1]", label_smoothing);
  const Tensor x = kernels::contiguous(logits);
  const int64_t rows = x.shape()[0];
  Tensor probs = kernels::empty_like(x);
  Tensor loss_rows = Tensor::empty({rows}, x.dtype(), x.device());
  backend_for(x.device()).cross_entropy(x.view(), target.view(), label_smoothing, probs.view(), loss_rows.view());
  Tensor out = loss_rows;
  if (reduction != Reduction::None) {
    const double scale = reduction == Reduction::Mean ? 1.0 / double(std::max<int64_t>(rows, 1)) : 1.0;
    out = kernels::reduce(ReduceOp::Sum, loss_rows, {0}, false, scale, "cross_entropy");
  }
  if (!needs_grad({logits})) return out;
  Context ctx("cross_entropy");
  ctx.save_for_backward({probs, target});
  ctx.values["smoothing"] = label_smoothing;
  ctx.values["scale"] = reduction == Reduction::Mean ? 1.0 / double(std::max<int64_t>(rows, 1)) : 1.0;
  ctx.values["per_row"] = reduction == Reduction::None;
  return record(out, {logits}, std::move(ctx), [](Context& c, const Tensor& g) {
    const Tensor p = c.saved(0), t = c.saved(1);
    Tensor dx = kernels::empty_like(p);
    Backend& backend = backend_for(p.device());
    const bool per_row = c.values["per_row"] != 0;
    // On the CPU the upstream scalar is read directly (one pass); on a GPU it stays
    // on the device and multiplies in, so backward never waits for the host.
    if (!per_row && g.device().is_cpu()) {
      backend.cross_entropy_backward(p.view(), t.view(), c.values["smoothing"], c.values["scale"] * g.item(), dx.view());
      return std::vector<Tensor>{dx};
    }
    backend.cross_entropy_backward(p.view(), t.view(), c.values["smoothing"], c.values["scale"], dx.view());
    return std::vector<Tensor>{mul(dx, per_row ? unsqueeze(g, 1) : g)};
  });
}

Tensor one_hot(const Tensor& target, int64_t classes, DType dtype) {
  if (target.dtype() != DType::Int64) fail("one_hot: targets must be int64, got {}", dtype_name(target.dtype()));
  if (classes < 0) fail("one_hot: classes must be >= 0, got {}", classes);
  return kernels::cast(eq(unsqueeze(target, -1), kernels::index_range(classes, target.device())), dtype);
}

// −Σ_i log_probs[i, t_i] / N;  the gradient flows through the one-hot product
Tensor nll_loss(const Tensor& log_probs, const Tensor& target, Reduction reduction) {
  VGRAD_PROFILE_OP("nll_loss");
  if (const Tensor wide = autograd::autocast::to_float32(log_probs); !wide.is_same(log_probs)) return nll_loss(wide, target, reduction);
  check_targets(log_probs, target, "nll_loss");
  refuse_empty_mean(log_probs, reduction, "nll_loss");
  const int64_t classes = log_probs.shape()[1];
  const Tensor picked = sum(mul(log_probs, one_hot(target, classes, log_probs.dtype())), {1});
  // A bad target only zeroes its row of one_hot; on a GPU it is reported at the next host
  // read (Backend::check_index), so a step with nll_loss makes no host wait.
  backend_for(target.device()).check_index({.op = "nll_loss", .limit = classes, .class_targets = true}, target.view());
  return reduce_loss(neg(picked), reduction);
}

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  VGRAD_PROFILE_OP("mse_loss");
  if (const auto wide = autograd::autocast::to_float32(input, target); wide.changed)
    return mse_loss(wide.first, wide.second, reduction);
  check_same_shape(input, target, reduction, "mse_loss", "input");
  return reduce_loss(square(sub(input, target)), reduction);
}

// max(x,0) − x·y + log(1 + e^−|x|);   dx = (sigmoid(x) − y)·g,   dy = −x·g
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target, Reduction reduction) {
  VGRAD_PROFILE_OP("binary_cross_entropy_with_logits");
  if (const auto wide = autograd::autocast::to_float32(logits, target); wide.changed)
    return binary_cross_entropy_with_logits(wide.first, wide.second, reduction);
  check_same_shape(logits, target, reduction, "binary_cross_entropy_with_logits", "logits");
  Tensor elementwise;
  {
    NoGradGuard no_grad;
    const Tensor softplus = log(affine(exp(neg(abs(logits))), 1.0, 1.0));
    elementwise = add(sub(relu(logits), mul(logits, target)), softplus);
  }
  if (needs_grad({logits, target})) {
    Context ctx("binary_cross_entropy_with_logits");
    ctx.save_for_backward({logits, target});
    elementwise = record(elementwise, {logits, target}, std::move(ctx), [](Context& c, const Tensor& g) {
      const Tensor x = c.saved(0), y = c.saved(1);
      return std::vector<Tensor>{c.needs_input_grad(0) ? mul(g, sub(sigmoid(x), y)) : Tensor(),
                                 c.needs_input_grad(1) ? mul(g, neg(x)) : Tensor()};
    });
  }
  return reduce_loss(elementwise, reduction);
}

}  // namespace vgrad::nn::functional

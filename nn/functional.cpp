// Losses, dropout and attention, each with its backward beside its forward.
#include "nn/functional.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
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

// The reduction a loss accepts (BatchMean is kl_div's alone, as in PyTorch), and no mean of
// no losses (0/0): refused as mean() of an empty tensor is, naming the loss (Reduction::Sum of
// an empty batch is a plain 0).
void check_reduction(const Tensor& input, Reduction reduction, const char* op, bool batch_mean_allowed = false) {
  if (reduction == Reduction::BatchMean && !batch_mean_allowed)
    fail("{}: Reduction::BatchMean is kl_div's alone (as in PyTorch); use Mean or Sum", op);
  if ((reduction == Reduction::Mean || reduction == Reduction::BatchMean) && input.numel() == 0)
    fail("{}: empty batch (input {}): the mean over no elements is undefined (Reduction::Sum gives 0)", op,
         shape_str(input.shape()));
}

// Per-row or per-element losses, reduced as asked; BatchMean divides the sum by the first dim.
Tensor reduce_loss(const Tensor& losses, Reduction reduction) {
  if (reduction == Reduction::None) return losses;
  if (reduction == Reduction::Sum) return sum(losses);
  if (reduction == Reduction::BatchMean) return sum(losses) / double(losses.dim() == 0 ? 1 : losses.shape()[0]);
  return mean(losses);
}

// The elementwise losses' first checks: input (called `what` in the message: "input",
// "logits") and target of one shape, and the reduction.
void check_same_shape(const Tensor& input, const Tensor& target, Reduction reduction, const char* op, const char* what,
                      bool batch_mean_allowed = false) {
  if (input.shape() != target.shape())
    fail("{}: {} {} and target {} differ in shape", op, what, shape_str(input.shape()), shape_str(target.shape()));
  kernels::check_same_device(input, target, op);
  check_reduction(input, reduction, op, batch_mean_allowed);
}

void check_targets(const Tensor& input, const Tensor& target, const char* op) {
  if (input.dim() != 2) fail("{}: expects input (N, C) or (N, C, d1, ...), got {}", op, shape_str(input.shape()));
  if (target.dtype() != DType::Int64) fail("{}: targets must be int64 class indices, got {}", op, dtype_name(target.dtype()));
  if (target.dim() != 1 || target.shape()[0] != input.shape()[0])
    fail("{}: targets {} do not match input {} (expected [{}])", op, shape_str(target.shape()),
         shape_str(input.shape()), input.shape()[0]);
  if (input.shape()[1] == 0)
    fail("{}: input {} has no classes (C = 0): no target can name a class", op, shape_str(input.shape()));
  kernels::check_same_device(input, target, op);
}

// A class loss over input (N, C, d1..dk) and targets (N, d1..dk), as PyTorch's: `loss` of each
// position, the classes moved last and the positions flattened to rows (N·d1⋯dk, C); None
// gives the losses as (N, d1..dk). A bad target's "row" counts positions in that order.
template <class Loss> Tensor over_positions(const Tensor& input, const Tensor& target, Reduction reduction,
                                            const char* op, const Loss& loss) {
  Shape positions = input.shape();
  positions.erase(positions.begin() + 1);
  if (target.shape() != positions)
    fail("{}: targets {} do not match input {} (expected {}: the input without its class dim 1)", op,
         shape_str(target.shape()), shape_str(input.shape()), shape_str(positions));
  std::vector<int64_t> classes_last(size_t(input.dim()));
  std::iota(classes_last.begin(), classes_last.end(), 0);
  std::rotate(classes_last.begin() + 1, classes_last.begin() + 2, classes_last.end());
  const Tensor rows = permute(input, classes_last).reshape({-1, input.shape()[1]});
  const Tensor out = loss(rows, target.reshape({-1}));
  return reduction == Reduction::None ? out.reshape(positions) : out;
}

// weight (C), one per class of input (N, C), floating and on input's device; undefined is fine.
void check_class_weight(const Tensor& weight, const Tensor& input, const char* op) {
  if (!weight.defined()) return;
  if (weight.dim() != 1 || weight.shape()[0] != input.shape()[1])
    fail("{}: weight {} should be [{}], one per class of input {}", op, shape_str(weight.shape()), input.shape()[1],
         shape_str(input.shape()));
  if (!is_floating(weight.dtype())) fail("{}: weight must be floating point, got {}", op, dtype_name(weight.dtype()));
  kernels::check_same_device(input, weight, op);
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

namespace {

Tensor zero_like_scalar(const Tensor& t) { return zeros({}, {.dtype = t.dtype(), .device = t.device()}); }

// Class targets (N) of a loss over (N, C): `pick` (N, C) is 1 at [i, t_i] of each counted row;
// with ignore_index, `keep` (N) is 1 where a row counts (undefined without: every row does).
// The range check sees an ignored row as class 0, so only the other bad targets are refused
// (on a GPU at the next host read: Backend::check_index), each named with its row and value.
struct ClassTargets {
  Tensor keep, pick;
  // losses with an ignored row's entry 0 (a where, not a product: its gradient stays 0 too)
  Tensor kept(const Tensor& losses, const Tensor& zero) const {
    return keep.defined() ? where(keep, losses, zero) : losses;
  }
};
ClassTargets class_targets(const Tensor& target, int64_t classes, std::optional<int64_t> ignore_index, const char* op) {
  const Tensor keep = ignore_index ? ne(target, double(*ignore_index)) : Tensor();
  backend_for(target.device())
      .check_index({.op = op, .limit = classes, .class_targets = true},
                   (keep.defined() ? mul(target, keep) : target).view());
  Tensor pick = eq(unsqueeze(target, -1), kernels::index_range(classes, target.device()));
  // An ignore_index outside [0, C) never equals a class: its rows of `pick` are already 0.
  if (ignore_index && *ignore_index >= 0 && *ignore_index < classes) pick = mul(pick, unsqueeze(keep, -1));
  return {keep, pick};
}

// Row losses and the mean's denominator (undefined when every row counts with weight 1).
struct RowLosses {
  Tensor losses, denominator;
};
// Without a denominator (every row counts, weight 1) Mean is the plain mean.
Tensor reduce_rows(const RowLosses& rows, Reduction reduction) {
  return reduction == Reduction::Mean && rows.denominator.defined() ? div(sum(rows.losses), rows.denominator)
                                                                    : reduce_loss(rows.losses, reduction);
}

// loss_i = −w[t_i]·log_probs[i, t_i] (w = 1 without weight), 0 for an ignored row;
// denominator Σ w[t_i] over the counted rows.
// NOTE: the target's log-probability is picked by selection (where), never by a product with
// a one-hot: another class's −inf (a masked logit) times 0 would be NaN. Its gradient is the
// same: g at [i, t_i], 0 elsewhere.
RowLosses nll_rows(const Tensor& log_probs, const ClassTargets& targets, const Tensor& weight) {
  const Tensor zero = zero_like_scalar(log_probs);
  const Tensor picked = sum(where(targets.pick, log_probs, zero), {1});
  if (!weight.defined()) {
    if (!targets.keep.defined()) return {neg(picked), Tensor()};
    return {neg(picked), kernels::cast(sum(targets.keep), log_probs.dtype())};
  }
  const Tensor row_weight = sum(where(targets.pick, kernels::cast(weight.detach(), log_probs.dtype()), zero), {1});
  // NOTE: the where keeps an ignored row's gradient 0 when every row is ignored: Mean's 1/Σw is
  // then inf, and inf times its weight 0 would be NaN (PyTorch: a NaN loss, zero gradients).
  return {targets.kept(neg(mul(row_weight, picked)), zero), sum(row_weight)};
}

// The fused log-softmax + NLL kernel (Backend::cross_entropy) over targets all in range.
// loss_i = −Σ_c q_ic log softmax(x_i)_c, q = (1−s)·onehot + s/C;   dlogits = (softmax − q)·dL/dloss_i
Tensor fused_cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction, double label_smoothing) {
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

// Whether a row's target may be ignore_index (none without one). On the CPU the targets are in
// host memory and a look at them costs no wait and no op; on a GPU it would be a host wait, so
// a GPU given an ignore_index always assumes it may.
bool may_ignore_a_row(const Tensor& target, std::optional<int64_t> ignore_index) {
  if (!ignore_index) return false;
  if (!target.device().is_cpu()) return true;
  const View targets = target.view();
  const int64_t* value = targets.ptr<int64_t>();
  for (int64_t i = 0; i < targets.numel(); ++i)
    if (value[i * targets.strides[0]] == *ignore_index) return true;
  return false;
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction, double label_smoothing,
                     const Tensor& weight, std::optional<int64_t> ignore_index) {
  VGRAD_PROFILE_OP("cross_entropy");
  if (const Tensor wide = autograd::autocast::to_float32(logits); !wide.is_same(logits))
    return cross_entropy(wide, target, reduction, label_smoothing, weight, ignore_index);
  if (logits.dim() > 2)
    return over_positions(logits, target, reduction, "cross_entropy", [&](const Tensor& rows, const Tensor& t) {
      return cross_entropy(rows, t, reduction, label_smoothing, weight, ignore_index);
    });
  check_targets(logits, target, "cross_entropy");
  check_reduction(logits, reduction, "cross_entropy");
  if (!is_floating(logits.dtype()))
    fail("cross_entropy: logits must be floating point, got {}", dtype_name(logits.dtype()));
  if (label_smoothing < 0 || label_smoothing > 1)
    fail("cross_entropy: label_smoothing {} outside [0, 1]", label_smoothing);
  check_class_weight(weight, logits, "cross_entropy");
  const int64_t rows = logits.shape()[0], classes = logits.shape()[1];
  if (!weight.defined() && (rows == 0 || !may_ignore_a_row(target, ignore_index)))
    return fused_cross_entropy(logits, target, reduction, label_smoothing);
  const Tensor zero = zero_like_scalar(logits);
  if (!weight.defined()) {
    // The fused kernel's per-row losses with an ignored row's target seen as class 0 (so its
    // range check passes it), then masked out: the mean counts the rows kept (PyTorch's,
    // smoothing term included).
    const Tensor keep = ne(target, double(*ignore_index));
    const Tensor row_losses = fused_cross_entropy(logits, mul(target, keep), Reduction::None, label_smoothing);
    return reduce_rows({where(keep, row_losses, zero), kernels::cast(sum(keep), logits.dtype())}, reduction);
  }
  const ClassTargets targets = class_targets(target, classes, ignore_index, "cross_entropy");
  // With class weights, composed as PyTorch: (1 − s)·nll + (s/C)·smooth, the smoothing term
  // −Σ_c w_c·log p_ic per kept row, reduced with nll's denominator Σ w[t_i].
  const Tensor log_probs = log_softmax(logits, 1);
  const RowLosses nll = nll_rows(log_probs, targets, weight);
  if (label_smoothing == 0) return reduce_rows(nll, reduction);
  const Tensor w = kernels::cast(weight.detach(), logits.dtype());
  const RowLosses smooth{targets.kept(neg(sum(mul(log_probs, w), {1})), zero), nll.denominator};
  return add(reduce_rows(nll, reduction) * (1 - label_smoothing),
             reduce_rows(smooth, reduction) * (label_smoothing / double(classes)));
}

Tensor one_hot(const Tensor& target, int64_t classes, DType dtype) {
  if (target.dtype() != DType::Int64) fail("one_hot: targets must be int64, got {}", dtype_name(target.dtype()));
  if (classes < 0) fail("one_hot: classes must be >= 0, got {}", classes);
  // As PyTorch, a class outside [0, classes) is refused (it made an all-zero row); on a GPU at
  // the next host read, as the losses' targets. "row" counts the targets in row-major order.
  backend_for(target.device())
      .check_index({.op = "one_hot", .limit = classes, .class_targets = true},
                   kernels::contiguous(target).reshape({target.numel()}).view());
  return kernels::cast(eq(unsqueeze(target, -1), kernels::index_range(classes, target.device())), dtype);
}

// −Σ_i w[t_i]·log_probs[i, t_i] / Σ_i w[t_i];  the gradient reaches log_probs[i, t_i] only
Tensor nll_loss(const Tensor& log_probs, const Tensor& target, Reduction reduction, const Tensor& weight,
                std::optional<int64_t> ignore_index) {
  VGRAD_PROFILE_OP("nll_loss");
  if (const Tensor wide = autograd::autocast::to_float32(log_probs); !wide.is_same(log_probs))
    return nll_loss(wide, target, reduction, weight, ignore_index);
  if (log_probs.dim() > 2)
    return over_positions(log_probs, target, reduction, "nll_loss", [&](const Tensor& rows, const Tensor& t) {
      return nll_loss(rows, t, reduction, weight, ignore_index);
    });
  check_targets(log_probs, target, "nll_loss");
  check_reduction(log_probs, reduction, "nll_loss");
  check_class_weight(weight, log_probs, "nll_loss");
  // A bad target only zeroes its row of `pick`; on a GPU it is reported at the next host
  // read (Backend::check_index), so a step with nll_loss makes no host wait.
  const ClassTargets targets = class_targets(target, log_probs.shape()[1], ignore_index, "nll_loss");
  return reduce_rows(nll_rows(log_probs, targets, weight), reduction);
}

namespace {

// A pointwise loss: losses(input, target) per element after autocast's float32 and the shape
// and reduction checks, reduced as asked; its gradient is the composition's.
template <class Losses> Tensor pointwise_loss(const char* op, const Tensor& input, const Tensor& target,
                                              Reduction reduction, const Losses& losses,
                                              bool batch_mean_allowed = false) {
  VGRAD_PROFILE_OP(op);
  if (const auto wide = autograd::autocast::to_float32(input, target); wide.changed)
    return pointwise_loss(op, wide.first, wide.second, reduction, losses, batch_mean_allowed);
  check_same_shape(input, target, reduction, op, "input", batch_mean_allowed);
  return reduce_loss(losses(input, target), reduction);
}

// d = |x − y|:  quadratic·d² below threshold, linear·(d − threshold/2) from it on: smooth_l1
// (quadratic 0.5/beta, linear 1) and huber (quadratic 0.5, linear delta). Both branches are
// finite for a finite d, so where's selected gradient is the piecewise one.
Tensor quadratic_then_linear(const Tensor& input, const Tensor& target, double threshold, double quadratic,
                             double linear) {
  const Tensor d = abs(sub(input, target));
  // The quadratic branch on d clamped to the threshold: at d = Inf its unpicked 0 gradient
  // would otherwise meet square's 2·Inf and give NaN (PyTorch gives ±1 there).
  return where(lt(d, threshold), square(clamp(d, 0.0, threshold)) * quadratic,
               affine(d, linear, -linear * 0.5 * threshold));
}

}  // namespace

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  return pointwise_loss("mse_loss", input, target, reduction,
                        [](const Tensor& x, const Tensor& y) { return square(sub(x, y)); });
}

// |x − y|;  dx = sign(x − y)·g (0 where equal, as PyTorch), through abs
Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  return pointwise_loss("l1_loss", input, target, reduction,
                        [](const Tensor& x, const Tensor& y) { return abs(sub(x, y)); });
}

Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, Reduction reduction, double beta) {
  if (!(beta >= 0)) fail("smooth_l1_loss: beta {} must be >= 0 (0 is l1_loss)", beta);
  return pointwise_loss("smooth_l1_loss", input, target, reduction, [beta](const Tensor& x, const Tensor& y) {
    // beta = 0 is l1 (as PyTorch), with no 0/0 from the quadratic branch.
    return beta == 0 ? abs(sub(x, y)) : quadratic_then_linear(x, y, beta, 0.5 / beta, 1.0);
  });
}

Tensor huber_loss(const Tensor& input, const Tensor& target, Reduction reduction, double delta) {
  if (!(delta > 0)) fail("huber_loss: delta {} must be > 0", delta);
  return pointwise_loss("huber_loss", input, target, reduction, [delta](const Tensor& x, const Tensor& y) {
    return quadratic_then_linear(x, y, delta, 0.5, delta);
  });
}

// (1 − y)·x + m + log(e^−m + e^(−x−m)), m = max(−x, 0): PyTorch's formula. One of the two
// exponentials is e^0 = 1 and the other e^−|x|, so the log is log1p(e^−|x|) for finite x; at
// x = ±inf the sum (1 − y)·x + m is PyTorch's inf (x = +inf) or NaN (x = −inf, −inf + inf).
//   dx = (sigmoid(x) − y)·g,   dy = −x·g
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target, Reduction reduction) {
  VGRAD_PROFILE_OP("binary_cross_entropy_with_logits");
  if (const auto wide = autograd::autocast::to_float32(logits, target); wide.changed)
    return binary_cross_entropy_with_logits(wide.first, wide.second, reduction);
  check_same_shape(logits, target, reduction, "binary_cross_entropy_with_logits", "logits");
  Tensor elementwise;
  {
    NoGradGuard no_grad;
    // NOTE: exp's input is kept finite: e^−1000 is 0 in float32 and float64 as e^−inf is, and
    // the CPU's xsimd exp converts an infinite input to an integer (UB; seen by UBSan).
    const Tensor softplus = log1p(exp(clamp(neg(abs(logits)), -1000.0, 0.0)));
    elementwise = add(add(mul(affine(target, -1.0, 1.0), logits), relu(neg(logits))), softplus);
  }
  if (needs_grad({logits, target})) {
    Context ctx("binary_cross_entropy_with_logits");
    ctx.save_for_backward({logits, target});
    elementwise = record(elementwise, {logits, target}, std::move(ctx), [](Context& c, const Tensor& g) {
      const Tensor x = c.saved(0), y = c.saved(1);
      // sigmoid(±1000) is exactly sigmoid(±inf), with no infinity reaching exp (see above).
      return std::vector<Tensor>{c.needs_input_grad(0) ? mul(g, sub(sigmoid(clamp(x, -1000.0, 1000.0)), y)) : Tensor(),
                                 c.needs_input_grad(1) ? mul(g, neg(x)) : Tensor()};
    });
  }
  return reduce_loss(elementwise, reduction);
}

// −(y·max(log x, −100) + (1 − y)·max(log(1 − x), −100));
//   dx = g·(x − y)/max(x·(1 − x), 1e−12),   dy = g·(log(1 − x) − log x)   (PyTorch's rules)
Tensor binary_cross_entropy(const Tensor& input, const Tensor& target, Reduction reduction) {
  VGRAD_PROFILE_OP("binary_cross_entropy");
  if (const auto wide = autograd::autocast::to_float32(input, target); wide.changed)
    return binary_cross_entropy(wide.first, wide.second, reduction);
  check_same_shape(input, target, reduction, "binary_cross_entropy", "input");
  if (!is_floating(input.dtype()))
    fail("binary_cross_entropy: input must be floating point probabilities, got {}", dtype_name(input.dtype()));
  constexpr double kLogFloor = -100, kInf = std::numeric_limits<double>::infinity();
  Tensor elementwise;
  {
    NoGradGuard no_grad;
    // 1 where an input lies outside [0, 1] or is NaN, as flags for the lazy range check.
    const Tensor outside = kernels::cast(ne(mul(ge(input, 0.0), le(input, 1.0)), 1.0), DType::Int64);
    backend_for(input.device())
        .check_index({.op = "binary_cross_entropy", .limit = 1, .probabilities = true},
                     kernels::contiguous(outside).reshape({-1}).view());
    const Tensor log_x = clamp(log(input), kLogFloor, kInf), log_1mx = clamp(log1p(neg(input)), kLogFloor, kInf);
    elementwise = neg(add(mul(target, log_x), mul(affine(target, -1.0, 1.0), log_1mx)));
  }
  if (needs_grad({input, target})) {
    Context ctx("binary_cross_entropy");
    ctx.save_for_backward({input, target});
    elementwise = record(elementwise, {input, target}, std::move(ctx), [](Context& c, const Tensor& g) {
      const Tensor x = c.saved(0), y = c.saved(1);
      const Tensor floor = full({}, 1e-12, {.dtype = x.dtype(), .device = x.device()});
      return std::vector<Tensor>{
          c.needs_input_grad(0) ? mul(g, div(sub(x, y), maximum(mul(x, affine(x, -1.0, 1.0)), floor))) : Tensor(),
          c.needs_input_grad(1) ? mul(g, sub(log1p(neg(x)), log(x))) : Tensor()};
    });
  }
  return reduce_loss(elementwise, reduction);
}

// log_target: e^t·(t − x);  else xlogy(t, t) − t·x, with 0·log 0 = 0 (a negative t gives
// NaN, as PyTorch). The gradients come from the composition: dx = −t·g (−e^t·g).
Tensor kl_div(const Tensor& input, const Tensor& target, Reduction reduction, bool log_target) {
  const auto pointwise = [log_target](const Tensor& x, const Tensor& t) {
    if (log_target) return mul(exp(t), sub(t, x));
    const Tensor is_zero = eq(t, 0.0), zero = zero_like_scalar(t);
    const Tensor one = full({}, 1.0, {.dtype = t.dtype(), .device = t.device()});
    // log of 1 where t = 0, so neither value nor gradient sees log 0.
    const Tensor xlogx = where(is_zero, zero, mul(t, log(where(is_zero, one, t))));
    return sub(xlogx, mul(t, x));
  };
  return pointwise_loss("kl_div", input, target, reduction, pointwise, /*batch_mean_allowed=*/true);
}

}  // namespace vgrad::nn::functional

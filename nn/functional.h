// nn's functional forms: activations, dropout, attention and losses. Stateless;
// the layer classes in layers.h call these. Shape legend: N batch, D features, C classes.
#pragma once
#include <optional>

#include "autograd/ops.h"

namespace vgrad::nn::functional {

using vgrad::adaptive_avg_pool2d;
using vgrad::avg_pool2d;
using vgrad::conv1d;
using vgrad::conv2d;
using vgrad::embedding;
using vgrad::gelu;
using vgrad::leaky_relu;
using vgrad::linear;
using vgrad::linear_relu;
using vgrad::log_softmax;
using vgrad::max_pool2d;
using vgrad::relu;
using vgrad::sigmoid;
using vgrad::softmax;
using vgrad::tanh;

Tensor flatten(const Tensor& x, int64_t start_dim = 1, int64_t end_dim = -1);
// Zeroes each element with probability p and scales the rest by 1/(1-p); identity when !training.
Tensor dropout(const Tensor& x, double p, bool training, Generator* gen = nullptr);

// Zeroes whole channels of x (N, C, ...) with probability p, scaling the rest by 1/(1-p).
Tensor dropout2d(const Tensor& x, double p, bool training, Generator* gen = nullptr);

// ---- normalization; statistics are biased (divide by n), as PyTorch normalizes ----
// x (N, C, ...) normalized per channel over N and the spatial dims, then ·weight + bias
// (C each, or undefined). Training uses the batch's statistics and, when running_mean
// and running_var are given, updates them in place: r = (1 − momentum)·r + momentum·s,
// with the unbiased (n − 1) batch variance, as PyTorch. Evaluation uses the running ones.
Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, double momentum = 0.1, double eps = 1e-5);
// Normalizes over the last normalized_dims dims (weight and bias have their shape).
Tensor layer_norm(const Tensor& x, int64_t normalized_dims, const Tensor& weight, const Tensor& bias,
                  double eps = 1e-5);
// x (N, C, ...) normalized over each group of C/groups channels and the spatial dims;
// weight and bias are per channel (C).
Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias, double eps = 1e-5);

// softmax(q·kᵀ/√d + mask)·v over the last axis. q (…, L, d), k (…, S, d), v (…, S, d_v);
// mask (broadcast to (…, L, S)): nonzero keeps a position, zero removes it. A query
// row whose keys are all masked gets a zero output row and zero gradients (as in
// PyTorch), not NaN.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask = Tensor());

// On an empty batch (N = 0) every loss refuses Reduction::Mean with a vgrad::Error,
// as mean() of an empty tensor does (PyTorch returns NaN there, which then trains
// silently into NaN weights); Reduction::Sum gives 0 and None an empty tensor.
// BatchMean (Σ / N, N = the first dim) is kl_div's alone, as in PyTorch; the others refuse it.
enum class Reduction { Mean, Sum, None, BatchMean };
// PyTorch's default ignore_index. vgrad ignores no target unless asked (pass this, or any
// value): a GPU cannot see whether a target equals it without a host wait, so the check costs
// launches on every call, and a target of -100 is refused as out of range instead.
constexpr int64_t kPyTorchIgnoreIndex = -100;
// log-softmax + NLL over logits (N, C) and int64 targets (N), or per position over logits
// (N, C, d1, ...) and targets (N, d1, ...) as PyTorch's (None gives (N, d1, ...)). Its gradient is
// (softmax − onehot)/N (smoothed targets with label_smoothing). Targets are checked, except
// those equal to ignore_index. weight (C, optional, never differentiated) scales each row by
// weight[t_i]; Mean is then PyTorch's Σ w[t_i]·loss_i / Σ w[t_i] over the rows not ignored, and
// with label_smoothing the smoothing term is −Σ_c w_c·log p_ic, as in PyTorch. With every row
// ignored, Mean is NaN (0/0, as PyTorch) and the gradient zero. Without weight and
// ignore_index, the fused kernel alone runs; with ignore_index, a row whose target equals it
// is masked out of the fused kernel's per-row losses (on the CPU only when a target does: the
// targets are in host memory).
Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction = Reduction::Mean,
                     double label_smoothing = 0.0, const Tensor& weight = Tensor(),
                     std::optional<int64_t> ignore_index = std::nullopt);
// −weight[t_i]·log_probs[i, t_i] (weight 1 if undefined), 0 for an ignored row, averaged
// (log_probs (N, C) or (N, C, d1, ...) with targets (N) or (N, d1, ...), as cross_entropy)
// (Σ / Σ w[t_i], as cross_entropy) or summed over rows.
Tensor nll_loss(const Tensor& log_probs, const Tensor& target, Reduction reduction = Reduction::Mean,
                const Tensor& weight = Tensor(), std::optional<int64_t> ignore_index = std::nullopt);
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean);
// |input − target|; subgradient 0 where they are equal (as PyTorch).
Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean);
// d = |input − target|:  0.5·d²/beta where d < beta, else d − 0.5·beta;  beta = 0 is l1_loss.
Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean,
                      double beta = 1.0);
// d = |input − target|:  0.5·d² where d < delta, else delta·(d − 0.5·delta);  delta > 0.
Tensor huber_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean, double delta = 1.0);
// Stable: (1 − y)·x + m + log(e^−m + e^(−x−m)), m = max(−x, 0) (PyTorch's formula, its
// infinities too);  its gradient is sigmoid(x) − y.
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target,
                                        Reduction reduction = Reduction::Mean);
// On probabilities: −(y·max(log x, −100) + (1 − y)·max(log(1 − x), −100)), PyTorch's clamped
// logs; dx = (x − y)/max(x·(1 − x), 1e−12) as PyTorch. An input outside [0, 1] (or NaN) is
// refused, naming its flat index: at once on the CPU, at the next host read on a GPU
// (Backend::check_index, no host wait).
Tensor binary_cross_entropy(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean);
// KL(target ‖ exp(input)) pointwise, input log-probabilities: target·(log target − input) with
// 0·log 0 = 0, or with log_target (target given as log-probabilities) e^target·(target − input).
// Mean is the elementwise mean (PyTorch's "mean"); BatchMean, Σ / N, is the true KL divergence
// per sample and PyTorch's recommended reduction.
Tensor kl_div(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean,
              bool log_target = false);
// (N) int64 -> (N, C) one-hot in dtype.
Tensor one_hot(const Tensor& target, int64_t classes, DType dtype = DType::Float32);

}  // namespace vgrad::nn::functional

// Every loss is reachable as nn::<loss> (as in PyTorch's torch::nn::functional, also nn::F::<loss>).
namespace vgrad::nn {
namespace F = functional;
using functional::binary_cross_entropy;
using functional::binary_cross_entropy_with_logits;
using functional::cross_entropy;
using functional::huber_loss;
using functional::kl_div;
using functional::kPyTorchIgnoreIndex;
using functional::l1_loss;
using functional::mse_loss;
using functional::nll_loss;
using functional::one_hot;
using functional::Reduction;
using functional::smooth_l1_loss;
}  // namespace vgrad::nn

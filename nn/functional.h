// nn's functional forms: activations, dropout, attention and losses. Stateless;
// the layer classes in layers.h call these. Shape legend: N batch, D features, C classes.
#pragma once
#include "autograd/ops.h"

namespace vgrad::nn::functional {

using vgrad::gelu;
using vgrad::leaky_relu;
using vgrad::linear;
using vgrad::log_softmax;
using vgrad::relu;
using vgrad::sigmoid;
using vgrad::softmax;
using vgrad::tanh;

Tensor flatten(const Tensor& x, int64_t start_dim = 1, int64_t end_dim = -1);
// Zeroes each element with probability p and scales the rest by 1/(1-p); identity when !training.
Tensor dropout(const Tensor& x, double p, bool training, Generator* gen = nullptr);

// softmax(q·kᵀ/√d + mask)·v over the last axis. q (…, L, d), k (…, S, d), v (…, S, d_v);
// mask (broadcast to (…, L, S)): nonzero keeps a position, zero removes it. A query
// row whose keys are all masked gets a zero output row and zero gradients (as in
// PyTorch), not NaN.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask = Tensor());

// On an empty batch (N = 0) every loss refuses Reduction::Mean with a vgrad::Error,
// as mean() of an empty tensor does (PyTorch returns NaN there, which then trains
// silently into NaN weights); Reduction::Sum gives 0 and None an empty tensor.
enum class Reduction { Mean, Sum, None };
// Fused log-softmax + NLL over logits (N, C) and int64 targets (N). Its gradient is
// (softmax − onehot)/N (smoothed targets with label_smoothing). Targets are checked.
Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction = Reduction::Mean,
                     double label_smoothing = 0.0);
// −log_probs[i, target[i]], averaged (or summed) over rows.
Tensor nll_loss(const Tensor& log_probs, const Tensor& target, Reduction reduction = Reduction::Mean);
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean);
// Stable: max(x,0) − x·y + log(1 + e^−|x|);  its gradient is sigmoid(x) − y.
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target,
                                        Reduction reduction = Reduction::Mean);
// (N) int64 -> (N, C) one-hot in dtype.
Tensor one_hot(const Tensor& target, int64_t classes, DType dtype = DType::Float32);

}  // namespace vgrad::nn::functional

// Every loss is reachable as nn::<loss> (as in PyTorch's torch::nn::functional, also nn::F::<loss>).
namespace vgrad::nn {
namespace F = functional;
using functional::binary_cross_entropy_with_logits;
using functional::cross_entropy;
using functional::mse_loss;
using functional::nll_loss;
using functional::one_hot;
using functional::Reduction;
}  // namespace vgrad::nn

// Autocast's per-thread state and casting policy, which the ops consult (users enter
// it with amp::Autocast, amp/autocast.h). Here in autograd, not amp/, because the ops
// that follow it live here and in nn, and arrows point down. What it is not: a
// dispatcher. Each listed op calls to_low or to_float32 on its inputs at entry.
//   low dtype (bfloat16/float16): matmul, linear, einsum, attention's products,
//     conv1d, conv2d (to_low on input, weight and bias at entry)
//   float32: softmax, log_softmax, losses, batch_norm, layer_norm, group_norm, exp,
//     log, pow, sum, mean, var
//   everything else: the usual promotion to the widest input
#pragma once
#include <cstddef>

#include "core/tensor.h"

namespace vgrad::autograd::autocast {

bool is_enabled();
DType low_dtype();  // meaningful while enabled
// Sets the state (amp::Autocast does, restoring it afterwards). Leaving autocast, or
// switching dtype, clears the cast cache.
void set_state(bool enabled, DType low_dtype);

// For the low-precision ops: a float32 x in the low dtype (float64, int64 and tensors
// already 16-bit pass unchanged, as PyTorch). Leaves that require grad (weights) are
// cast once and cached, keyed by identity and version, so a step casts each weight
// once; the cast is differentiable, and the gradient reaches the float32 weight. The cache
// does not own the casts: one lives while the graph (or the caller) uses it, and linear
// and matmul let a weight's cast go in backward once dx is computed (autograd/ops/matmul.cpp).
Tensor to_low(const Tensor& x);
// For the float32 ops: a 16-bit x widened to float32 (differentiably).
Tensor to_float32(const Tensor& x);
// The same for an op's tensor operands together: a binary op's two, or a layer's input,
// weight and bias (linear, conv, the norms; an undefined one stays undefined). `changed`
// says whether any was cast, and the op then calls itself again on the cast operands:
//   if (const auto wide = autocast::to_float32(a, b); wide.changed) return op(wide.first, wide.second);
//   if (const auto low = autocast::to_low(x, weight, bias); low.changed) return op(low.first, low.second, low.third);
struct CastOperands {
  Tensor first, second, third;  // third stays undefined for a pair
  bool changed = false;
};
CastOperands to_low(const Tensor& a, const Tensor& b, const Tensor& c = Tensor());
CastOperands to_float32(const Tensor& a, const Tensor& b, const Tensor& c = Tensor());

// Drops the cached weight casts (optimizer steps and leaving autocast do).
void clear_cache();
size_t cache_bytes();  // of the cached casts still alive

// Turns autocast off for a scope: the engine runs backward rules under it, so a rule's
// ops keep the dtypes the forward chose.
class Suspend {
 public:
  Suspend();
  ~Suspend();
  Suspend(const Suspend&) = delete;
  Suspend& operator=(const Suspend&) = delete;

 private:
  bool enabled_;
};

}  // namespace vgrad::autograd::autocast

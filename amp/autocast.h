// amp::Autocast: mixed precision for a scope. Inside it, matmul, linear, einsum and
// attention's products (conv, when it exists) run in the low dtype, softmax,
// log_softmax, losses, exp/log/pow and reductions in float32, and the rest promote as
// usual; weights stay float32 (master weights), each cast once per step. Out-of-place
// ops only. The policy and cache are autograd/autocast.h's; this is the user's guard.
// Unlike PyTorch, whose cache holds every cast until the region ends, a cast lives only
// while the graph uses it (a training step's peak memory stays at float32's, not 1.7x it);
// a no_grad forward under autocast (evaluation) casts the weights it uses each time.
//
//   { vgrad::amp::Autocast autocast(vgrad::DType::BFloat16);
//     loss = nn::cross_entropy(model(x), y); }   // float32 loss
//   loss.backward();
#pragma once
#include "autograd/autocast.h"

namespace vgrad::amp {

class Autocast {
 public:
  explicit Autocast(DType low_dtype = DType::BFloat16, bool enabled = true)
      : previous_enabled_(autograd::autocast::is_enabled()), previous_dtype_(autograd::autocast::low_dtype()) {
    autograd::autocast::set_state(enabled, low_dtype);
  }
  ~Autocast() { autograd::autocast::set_state(previous_enabled_, previous_dtype_); }
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  bool previous_enabled_;
  DType previous_dtype_;
};

}  // namespace vgrad::amp

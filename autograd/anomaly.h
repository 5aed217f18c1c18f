// Anomaly detection: while a DetectAnomalyGuard is alive (per thread, like grad mode),
// every op's forward output and every backward gradient is checked for NaN/Inf, and
// the first op that produced one is named with its input shapes. Off, it costs one
// flag test per op. Like torch.autograd.detect_anomaly, it is a debugging aid: on, each
// check reads the whole tensor (one reduction, and a device-to-host sync on a GPU).
#pragma once
#include <string>
#include <vector>

#include "autograd/node.h"
#include "core/tensor.h"

namespace vgrad::autograd {

// Inline, so that "off" is one thread-local load and branch in record() and the engine.
class AnomalyMode {
 public:
  static bool is_enabled() { return enabled_; }
  static void set_enabled(bool enabled) { enabled_ = enabled; }

 private:
  static inline thread_local bool enabled_ = false;
};

class DetectAnomalyGuard {
 public:
  explicit DetectAnomalyGuard(bool enabled = true) : previous_(AnomalyMode::is_enabled()) {
    AnomalyMode::set_enabled(enabled);
  }
  ~DetectAnomalyGuard() { AnomalyMode::set_enabled(previous_); }
  DetectAnomalyGuard(const DetectAnomalyGuard&) = delete;
  DetectAnomalyGuard& operator=(const DetectAnomalyGuard&) = delete;

 private:
  bool previous_;
};

// "NaN", "Inf" or "" for a finite (or integer) tensor.
const char* non_finite_kind(const Tensor& t);

// Throws when `output` of `op` holds a NaN or Inf: "anomaly: log produced NaN in its
// forward output [3] (inputs: [3])".
void check_forward_output(const std::string& op, const Tensor& output, const std::vector<Tensor>& inputs);
// Throws when `gradient`, which `node`'s backward rule gave its input `input`, holds a NaN or Inf.
void check_backward_gradient(const Node& node, const Tensor& gradient, size_t input);

}  // namespace vgrad::autograd

namespace vgrad {
using autograd::DetectAnomalyGuard;
}  // namespace vgrad

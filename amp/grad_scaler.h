// amp::GradScaler: loss scaling for float16 training, with PyTorch's defaults and
// behaviour. The loss is multiplied by the scale so small float16 gradients do not
// flush to zero; gradients are unscaled before the step (and before clipping, with
// unscale_); a step whose gradients hold an Inf or NaN is skipped and the scale backs
// off; after growth_interval clean steps it grows. bfloat16 has float32's range and
// runs without it.
//
//   amp::GradScaler scaler;
//   scaler.scale(loss).backward();
//   scaler.unscale_(sgd);                        // optional: before clip_grad_norm
//   scaler.step(sgd);                            // skipped on Inf/NaN
//   scaler.update();
//
// The Inf/NaN test accumulates on the device and is read once per step (in step()),
// never per parameter: one pass over each gradient unscales it and checks the result
// (Backend::unscale_and_check; on a GPU one launch per dtype for all of them).
// Deliberate difference: PyTorch checks the values before unscaling, so with a scale below
// 1 a finite gradient that overflows when unscaled steps there and is skipped here.
//
// CUDA graphs, PyTorch's recipe: capture the forward, scale(loss) and backward, and call
// unscale_/step/update eagerly after each replay. scale() multiplies by the scale as a
// float32 tensor on the loss's device (made at the first eager scale() there, refilled by
// update() when the scale changes, with no host wait), so every replay reads the current
// scale. unscale_, step, update and load_state_dict read or write the scale on the host:
// refused in a capture.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "optim/optimizer.h"

namespace vgrad::amp {

struct GradScalerOptions {
  double init_scale = 65536.0;  // 2^16
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  bool enabled = true;  // false: every call passes through (scale 1, plain steps)
};

class GradScaler {
 public:
  explicit GradScaler(GradScalerOptions options = {});
  // Not copyable: a copy would share the scale's device tensors, so one's update() would
  // change the other's scale().
  GradScaler(const GradScaler&) = delete;
  GradScaler& operator=(const GradScaler&) = delete;
  GradScaler(GradScaler&&) = default;
  GradScaler& operator=(GradScaler&&) = default;

  Tensor scale(const Tensor& loss) const;  // loss * scale (the scale's tensor on loss's device)
  // Divides the optimizer's gradients by the scale in place and records whether any is
  // Inf/NaN (on the device: no host read). Once per optimizer between update()s.
  void unscale_(optim::Optimizer& optimizer);
  // Unscales if unscale_ was not called, then steps unless a gradient overflowed.
  // Returns whether the optimizer stepped. The one host read of the step is here.
  bool step(optim::Optimizer& optimizer);
  // Backs the scale off if any step() since the last update() saw Inf/NaN, else counts
  // a clean step and grows the scale every growth_interval of them.
  void update();

  // PyTorch's scaler.state_dict(): "scale", "growth_factor", "backoff_factor", "growth_interval"
  // and "_growth_tracker"; empty when disabled. Refused between unscale_()/step() and update(),
  // where the step's overflow verdict is not in it yet. train::TrainingState saves it.
  std::map<std::string, double> state_dict() const;
  // Restores the scale, the growth tracker and the options from state_dict()'s map (a disabled
  // scaler ignores it, as PyTorch's). Throws, naming the key and why, and changes nothing,
  // where check_state_dict does.
  void load_state_dict(const std::map<std::string, double>& state);
  // Throws what load_state_dict(state) would (an empty map, a missing key, a value out of
  // range, between unscale_()/step() and update()); changes nothing.
  void check_state_dict(const std::map<std::string, double>& state) const;

  double get_scale() const { return options_.enabled ? scale_ : 1.0; }
  int64_t growth_tracker() const { return growth_tracker_; }
  bool is_enabled() const { return options_.enabled; }

 private:
  struct PerOptimizer {
    bool unscaled = false, stepped = false;
    std::vector<Tensor> found_inf;  // one float32 flag per device: 1 when a gradient held Inf/NaN
    bool found_inf_host = false;
  };
  static bool any_found(const PerOptimizer& state);  // reads the flags (one host read each)
  // The scale as a float32 0-dim tensor on `device` (the top of the file); made at the first
  // call there, which must not be inside a CUDA graph capture.
  const Tensor& scale_on(Device device) const;
  void set_scale(float scale);  // scale_ and every device's copy of it
  GradScalerOptions options_;
  float scale_;  // float32, as PyTorch's scale tensor
  int64_t growth_tracker_ = 0;
  std::map<const optim::Optimizer*, PerOptimizer> per_optimizer_;
  mutable std::vector<Tensor> scale_tensors_;  // one per device that scale() saw
};

}  // namespace vgrad::amp

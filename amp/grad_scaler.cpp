// GradScaler: PyTorch's loss-scaling algorithm (torch.amp.GradScaler and its
// _amp_update_scale_ kernel), with the Inf/NaN flag kept on the device until step().
#include "amp/grad_scaler.h"

#include <cmath>

#include "autograd/ops.h"
#include "core/backend.h"
#include "core/error.h"
#include "core/grad_mode.h"

namespace vgrad::amp {

GradScaler::GradScaler(GradScalerOptions options) : options_(options), scale_(float(options.init_scale)) {
  if (!(options.init_scale > 0) || !std::isfinite(options.init_scale))
    fail("GradScaler: init_scale {} must be positive and finite", options.init_scale);
  if (!(options.growth_factor > 1.0)) fail("GradScaler: growth_factor {} must be > 1", options.growth_factor);
  if (!(options.backoff_factor > 0.0 && options.backoff_factor < 1.0))
    fail("GradScaler: backoff_factor {} must be in (0, 1)", options.backoff_factor);
  if (options.growth_interval < 1) fail("GradScaler: growth_interval {} must be >= 1", options.growth_interval);
}

Tensor GradScaler::scale(const Tensor& loss) const {
  if (!options_.enabled) return loss;
  if (loss.device().is_cuda() && backend_for(loss.device()).capture_pool() != nullptr)
    fail("GradScaler: scale() inside a CUDA graph capture: the scale {} is a host value every replay would repeat, "
         "and step() reads the device",
         scale_);
  return loss * double(scale_);
}

void GradScaler::unscale_(optim::Optimizer& optimizer) {
  if (!options_.enabled) return;
  PerOptimizer& state = per_optimizer_[&optimizer];
  if (state.unscaled) fail("GradScaler: unscale_() was already called on this optimizer since the last update()");
  if (state.stepped) fail("GradScaler: unscale_() is being called after step(); call update() first");
  NoGradGuard no_grad;
  // PyTorch's inverse: 1/scale in double, then float32.
  const double inverse = double(float(1.0 / double(scale_)));
  Tensor found;
  for (const Tensor& param : optimizer.params()) {
    Tensor grad = param.grad();
    if (!grad.defined()) continue;
    grad.mul_(inverse);
    // Σ(g·0) is 0 for finite gradients and NaN once any element is Inf or NaN: an exact
    // flag that stays on the device (summing g itself could overflow to a false Inf).
    const Tensor flag = sum(grad * 0.0).to(DType::Float32);
    found = found.defined() ? found + flag : flag;
  }
  state.found_inf = found;
  state.unscaled = true;
}

bool GradScaler::step(optim::Optimizer& optimizer) {
  if (!options_.enabled) {
    optimizer.step();
    return true;
  }
  PerOptimizer& state = per_optimizer_[&optimizer];
  if (state.stepped) fail("GradScaler: step() was already called on this optimizer since the last update()");
  if (!state.unscaled) unscale_(optimizer);
  state.found_inf_host = state.found_inf.defined() && std::isnan(state.found_inf.item());  // the one host read
  state.stepped = true;
  if (state.found_inf_host) return false;
  optimizer.step();
  return true;
}

void GradScaler::update() {
  if (!options_.enabled) return;
  bool found_inf = false, any = false;
  for (const auto& [optimizer, state] : per_optimizer_) {
    if (!state.unscaled) continue;
    any = true;
    // unscale_ without step(): read the flag here (still once per step).
    found_inf = found_inf || (state.stepped ? state.found_inf_host
                                            : state.found_inf.defined() && std::isnan(state.found_inf.item()));
  }
  if (!any) fail("GradScaler: update() without a step(): no gradients were unscaled since the last update()");
  per_optimizer_.clear();
  // PyTorch's _amp_update_scale_, on a float32 scale.
  if (found_inf) {
    scale_ = float(double(scale_) * options_.backoff_factor);
    growth_tracker_ = 0;
  } else if (++growth_tracker_ == options_.growth_interval) {
    const float grown = float(double(scale_) * options_.growth_factor);
    if (std::isfinite(grown)) scale_ = grown;
    growth_tracker_ = 0;
  }
}

}  // namespace vgrad::amp

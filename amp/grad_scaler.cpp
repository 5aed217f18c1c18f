// GradScaler: PyTorch's loss-scaling algorithm (torch.amp.GradScaler and its
// _amp_update_scale_ kernel), with the Inf/NaN flag kept on the device until step().
#include "amp/grad_scaler.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <utility>
#include <vector>

#include "autograd/ops.h"
#include "core/backend.h"
#include "core/creation.h"
#include "core/error.h"
#include "core/grad_mode.h"

namespace vgrad::amp {

bool GradScaler::any_found(const PerOptimizer& state) {
  bool found = false;
  for (const Tensor& flag : state.found_inf) found = found || flag.item() != 0.0;
  return found;
}

namespace {

// `what` names the caller in the errors.
void check_options(const GradScalerOptions& options, const char* what) {
  if (!(options.growth_factor > 1.0) || !std::isfinite(options.growth_factor))
    fail("{}: growth_factor {} must be finite and > 1", what, options.growth_factor);
  if (!(options.backoff_factor > 0.0 && options.backoff_factor < 1.0))
    fail("{}: backoff_factor {} must be in (0, 1)", what, options.backoff_factor);
  if (options.growth_interval < 1) fail("{}: growth_interval {} must be >= 1", what, options.growth_interval);
}

// Refuses `call` while a CUDA graph captures on `device`: it reads or writes the scale (or the
// gradients' overflow flag) on the host, which a replay would not do again.
void refuse_in_capture(Device device, const char* call) {
  if (device.is_cuda() && backend_for(device).capture_pool() != nullptr)
    fail(
        "GradScaler: {} inside a CUDA graph capture on {}: it works with the scale on the host, which replays "
        "would not; capture the forward, scale(loss) and backward, and call unscale_/step/update after each replay",
        call, device.str());
}

const char* const kStateKeys[] = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"};

// A whole number in [low, high] (the map holds doubles, as PyTorch's state_dict holds Python numbers).
int64_t whole_number(const std::map<std::string, double>& state, const char* key, double low, double high) {
  const double value = state.at(key);
  if (!(value >= low && value <= high) || std::floor(value) != value)
    fail("GradScaler: load_state_dict: '{}' is {}, not a whole number in [{}, {}]", key, value, low, high);
  return int64_t(value);
}

}  // namespace

GradScaler::GradScaler(GradScalerOptions options) : options_(options), scale_(float(options.init_scale)) {
  if (!(options.init_scale > 0) || !std::isfinite(options.init_scale))
    fail("GradScaler: init_scale {} must be positive and finite", options.init_scale);
  check_options(options, "GradScaler");
}

std::map<std::string, double> GradScaler::state_dict() const {
  if (!options_.enabled) return {};
  if (!per_optimizer_.empty())
    fail(
        "GradScaler: state_dict() between unscale_()/step() and update(): that step's overflow is not in the "
        "scale yet; call update() first");
  return {{"scale", double(scale_)},
          {"growth_factor", options_.growth_factor},
          {"backoff_factor", options_.backoff_factor},
          {"growth_interval", double(options_.growth_interval)},
          {"_growth_tracker", double(growth_tracker_)}};
}

void GradScaler::check_state_dict(const std::map<std::string, double>& state) const {
  if (!options_.enabled) return;
  for (const Tensor& t : scale_tensors_) refuse_in_capture(t.device(), "load_state_dict()");
  if (!per_optimizer_.empty())
    fail("GradScaler: load_state_dict() between unscale_()/step() and update(); call update() first");
  if (state.empty())
    fail("GradScaler: load_state_dict() of an empty state, as a disabled GradScaler's state_dict() gives");
  for (const char* key : kStateKeys)
    if (!state.count(key)) fail("GradScaler: load_state_dict: key '{}' is missing", key);
  for (const auto& [key, value] : state)
    if (std::find(std::begin(kStateKeys), std::end(kStateKeys), key) == std::end(kStateKeys))
      fail("GradScaler: load_state_dict: unexpected key '{}' (value {})", key, value);
  const double scale = state.at("scale");
  // The scale is float32, as PyTorch's scale tensor: any other value was not saved by a scaler.
  if (!(scale > 0) || !std::isfinite(scale) || double(float(scale)) != scale)
    fail("GradScaler: load_state_dict: 'scale' is {}, not a positive finite float32 value", scale);
  const int64_t interval = whole_number(state, "growth_interval", 1, 0x1p53);
  check_options({.growth_factor = state.at("growth_factor"),
                 .backoff_factor = state.at("backoff_factor"),
                 .growth_interval = interval},
                "GradScaler: load_state_dict");
  (void)whole_number(state, "_growth_tracker", 0, double(interval - 1));
}

void GradScaler::load_state_dict(const std::map<std::string, double>& state) {
  check_state_dict(state);
  if (!options_.enabled) return;
  set_scale(float(state.at("scale")));
  growth_tracker_ = int64_t(state.at("_growth_tracker"));
  options_.growth_factor = state.at("growth_factor");
  options_.backoff_factor = state.at("backoff_factor");
  options_.growth_interval = int64_t(state.at("growth_interval"));
}

const Tensor& GradScaler::scale_on(Device device) const {
  for (const Tensor& t : scale_tensors_)
    if (t.device() == device) return t;
  if (device.is_cuda() && backend_for(device).capture_pool() != nullptr)
    fail(
        "GradScaler: the first scale() on {} inside a CUDA graph capture: the scale's tensor that replays read is "
        "made eagerly; run a step eagerly first (a warm-up)",
        device.str());
  scale_tensors_.push_back(full({}, double(scale_), {.dtype = DType::Float32, .device = device}));
  return scale_tensors_.back();
}

void GradScaler::set_scale(float scale) {
  if (scale == scale_) return;
  scale_ = scale;
  NoGradGuard no_grad;
  for (Tensor& t : scale_tensors_) t.fill_(double(scale_));  // stream-ordered: no host wait
}

Tensor GradScaler::scale(const Tensor& loss) const {
  if (!options_.enabled) return loss;
  const Tensor scaled = loss * scale_on(loss.device());
  // As PyTorch's loss * 0-d float32 scale: a 16-bit loss with dims stays 16-bit (a 0-d one
  // becomes float32 there too).
  return loss.dim() > 0 && scaled.dtype() != loss.dtype() ? scaled.to(loss.dtype()) : scaled;
}

void GradScaler::unscale_(optim::Optimizer& optimizer) {
  if (!options_.enabled) return;
  for (const Tensor& param : optimizer.params()) refuse_in_capture(param.device(), "unscale_()");
  PerOptimizer& state = per_optimizer_[&optimizer];
  if (state.unscaled) fail("GradScaler: unscale_() was already called on this optimizer since the last update()");
  if (state.stepped) fail("GradScaler: unscale_() is being called after step(); call update() first");
  NoGradGuard no_grad;
  // PyTorch's inverse: 1/scale in double, then float32.
  const double inverse = double(float(1.0 / double(scale_)));
  // One call per device through the backend (Backend::unscale_and_check; on a GPU one launch
  // per dtype), the gradients of each device together, into one float32 flag per device
  // that stays there until step().
  std::vector<std::pair<Tensor, std::vector<Tensor>>> devices;  // (flag, gradients)
  for (const Tensor& param : optimizer.params()) {
    Tensor grad = param.grad();
    if (!grad.defined()) continue;
    auto group =
        std::find_if(devices.begin(), devices.end(), [&](const auto& d) { return d.first.device() == grad.device(); });
    if (group == devices.end())
      group = devices.insert(devices.end(), {zeros({}, {.dtype = DType::Float32, .device = grad.device()}), {}});
    group->second.push_back(grad);
  }
  state.found_inf.clear();
  for (auto& [flag, grads] : devices) {
    std::vector<View> views;
    std::vector<std::pair<Tensor, Tensor>> write_back;  // (gradient, its contiguous copy): rare
    for (const Tensor& grad : grads) {
      if (grad.is_contiguous()) {
        views.push_back(grad.view());
      } else {
        write_back.emplace_back(grad, grad.contiguous());
        views.push_back(write_back.back().second.view());
      }
      grad.storage()->bump_version();
    }
    backend_for(flag.device()).unscale_and_check(views.data(), views.size(), inverse, flag.view());
    for (auto& [grad, copy] : write_back) grad.copy_(copy);
    state.found_inf.push_back(flag);
  }
  state.unscaled = true;
}

bool GradScaler::step(optim::Optimizer& optimizer) {
  if (!options_.enabled) {
    optimizer.step();
    return true;
  }
  for (const Tensor& param : optimizer.params()) refuse_in_capture(param.device(), "step()");
  PerOptimizer& state = per_optimizer_[&optimizer];
  if (state.stepped) fail("GradScaler: step() was already called on this optimizer since the last update()");
  if (!state.unscaled) unscale_(optimizer);
  state.found_inf_host = any_found(state);  // the one host read per device
  state.stepped = true;
  if (state.found_inf_host) return false;
  optimizer.step();
  return true;
}

void GradScaler::update() {
  if (!options_.enabled) return;
  for (const Tensor& t : scale_tensors_) refuse_in_capture(t.device(), "update()");
  bool found_inf = false, any = false;
  for (const auto& [optimizer, state] : per_optimizer_) {
    if (!state.unscaled) continue;
    any = true;
    // unscale_ without step(): read the flag here (still once per step).
    found_inf = found_inf || (state.stepped ? state.found_inf_host : any_found(state));
  }
  if (!any) fail("GradScaler: update() without a step(): no gradients were unscaled since the last update()");
  per_optimizer_.clear();
  // PyTorch's _amp_update_scale_, on a float32 scale.
  if (found_inf) {
    set_scale(float(double(scale_) * options_.backoff_factor));
    growth_tracker_ = 0;
  } else if (++growth_tracker_ == options_.growth_interval) {
    const float grown = float(double(scale_) * options_.growth_factor);
    if (std::isfinite(grown)) set_scale(grown);
    growth_tracker_ = 0;
  }
}

}  // namespace vgrad::amp

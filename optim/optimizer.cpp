// Optimizer steps as fused backend kernels; clipping; gradient accumulation.
#include "optim/optimizer.h"

#include <cmath>

#include "core/grad_mode.h"
#include "core/error.h"
#include "core/profiler.h"

namespace vgrad::optim {
namespace {

void check_param(const Tensor& p, size_t index, const char* optimizer) {
  if (!p.is_contiguous()) fail("{}: parameter {} is not contiguous", optimizer, index);
  if (!is_floating(p.dtype())) fail("{}: parameter {} is {}, not floating point", optimizer, index, dtype_name(p.dtype()));
  if (!p.requires_grad()) fail("{}: parameter {} does not require grad", optimizer, index);
}

// The gradient of p as the fused kernels need it: contiguous, same dtype/device.
Tensor grad_for_update(const Tensor& p, size_t index, const char* optimizer) {
  Tensor g = p.grad();
  if (!g.defined()) return g;
  if (g.shape() != p.shape() || g.device() != p.device() || g.dtype() != p.dtype())
    fail("{}: gradient of parameter {} is {} {} on {}, parameter is {} {} on {}", optimizer, index,
         shape_str(g.shape()), dtype_name(g.dtype()), g.device().str(), shape_str(p.shape()), dtype_name(p.dtype()),
         p.device().str());
  return g.contiguous();
}

Tensor state_tensor(const std::map<std::string, Tensor>& state, const std::string& key, const Tensor& like,
                    const char* optimizer) {
  auto it = state.find(key);
  if (it == state.end()) return Tensor();
  if (it->second.shape() != like.shape())
    fail("{}: checkpoint key '{}' has shape {}, parameter is {}", optimizer, key, shape_str(it->second.shape()),
         shape_str(like.shape()));
  return it->second.to(like.dtype()).to(like.device()).contiguous().clone();
}

}  // namespace

Optimizer::Optimizer(std::vector<Tensor> params, double lr) : params_(std::move(params)), lr_(lr) {
  if (lr < 0) fail("optimizer: learning rate {} is negative", lr);
}

void Optimizer::zero_grad(bool set_to_none) {
  for (Tensor& p : params_) p.zero_grad(set_to_none);
}

SGD::SGD(std::vector<Tensor> params, SGDOptions options)
    : Optimizer(std::move(params), options.lr), options_(options), momentum_buffers_(params_.size()) {
  if (options.momentum < 0) fail("SGD: momentum {} is negative", options.momentum);
  if (options.nesterov && (options.momentum <= 0 || options.dampening != 0))
    fail("SGD: Nesterov momentum needs momentum > 0 and dampening 0");
  for (size_t i = 0; i < params_.size(); ++i) check_param(params_[i], i, "SGD");
}

void SGD::step() {
  VGRAD_PROFILE_OP("SGD.step");
  NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    const Tensor g = grad_for_update(p, i, "SGD");
    if (!g.defined()) continue;
    SgdParams args{lr_, options_.momentum, options_.dampening, options_.weight_decay, options_.nesterov, false};
    if (options_.momentum != 0 && !momentum_buffers_[i].defined()) {
      momentum_buffers_[i] = Tensor::empty(p.shape(), p.dtype(), p.device());
      args.first_step = true;
    }
    const View buffer = momentum_buffers_[i].defined() ? momentum_buffers_[i].view() : View{};
    backend_for(p.device()).sgd_update(p.view(), g.view(), buffer, args);
    p.storage()->bump_version();
  }
}

std::map<std::string, Tensor> SGD::state_dict() const {
  std::map<std::string, Tensor> state;
  for (size_t i = 0; i < params_.size(); ++i)
    if (momentum_buffers_[i].defined()) state["state." + std::to_string(i) + ".momentum_buffer"] = momentum_buffers_[i];
  return state;
}

void SGD::load_state_dict(const std::map<std::string, Tensor>& state) {
  for (size_t i = 0; i < params_.size(); ++i)
    momentum_buffers_[i] = state_tensor(state, "state." + std::to_string(i) + ".momentum_buffer", params_[i], "SGD");
}

Adam::Adam(std::vector<Tensor> params, AdamOptions options, bool decoupled)
    : Optimizer(std::move(params), options.lr), options_(options), decoupled_(decoupled),
      steps_(params_.size(), 0), exp_avg_(params_.size()), exp_avg_sq_(params_.size()) {
  if (options.beta1 < 0 || options.beta1 >= 1 || options.beta2 < 0 || options.beta2 >= 1)
    fail("{}: betas ({}, {}) must be in [0, 1)", name(), options.beta1, options.beta2);
  if (options.eps < 0) fail("{}: eps {} is negative", name(), options.eps);
  for (size_t i = 0; i < params_.size(); ++i) check_param(params_[i], i, "Adam");
}

void Adam::step() {
  VGRAD_PROFILE_OP("Adam.step");
  NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    const Tensor g = grad_for_update(p, i, "Adam");
    if (!g.defined()) continue;
    if (!exp_avg_[i].defined()) {
      exp_avg_[i] = zeros(p.shape(), {.dtype = p.dtype(), .device = p.device()});
      exp_avg_sq_[i] = zeros(p.shape(), {.dtype = p.dtype(), .device = p.device()});
    }
    const AdamParams args{lr_, options_.beta1, options_.beta2, options_.eps, options_.weight_decay, decoupled_, ++steps_[i]};
    backend_for(p.device()).adam_update(p.view(), g.view(), exp_avg_[i].view(), exp_avg_sq_[i].view(), args);
    p.storage()->bump_version();
  }
}

std::map<std::string, Tensor> Adam::state_dict() const {
  std::map<std::string, Tensor> state;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!exp_avg_[i].defined()) continue;
    state["state." + std::to_string(i) + ".step"] = scalar_tensor(double(steps_[i]), {.dtype = DType::Int64});
    state["state." + std::to_string(i) + ".exp_avg"] = exp_avg_[i];
    state["state." + std::to_string(i) + ".exp_avg_sq"] = exp_avg_sq_[i];
  }
  return state;
}

void Adam::load_state_dict(const std::map<std::string, Tensor>& state) {
  // Older checkpoints hold one global "step" for all parameters.
  auto global = state.find("step");
  for (size_t i = 0; i < params_.size(); ++i) {
    auto it = state.find("state." + std::to_string(i) + ".step");
    if (it == state.end()) it = global;
    steps_[i] = it == state.end() ? 0 : it->second.item<int64_t>();
    exp_avg_[i] = state_tensor(state, "state." + std::to_string(i) + ".exp_avg", params_[i], name().c_str());
    exp_avg_sq_[i] = state_tensor(state, "state." + std::to_string(i) + ".exp_avg_sq", params_[i], name().c_str());
  }
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  NoGradGuard no_grad;
  double total = 0;
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (g.defined()) total += backend_for(g.device()).sum_of_squares(g.contiguous().view());
  }
  const double norm = std::sqrt(total);
  if (norm > max_norm && norm > 0) {
    const double scale = max_norm / (norm + 1e-6);
    for (const Tensor& p : params)
      if (p.grad().defined()) p.grad().mul_(scale);
  }
  return norm;
}

GradientAccumulation::GradientAccumulation(Optimizer& optimizer, int64_t steps) : optimizer_(optimizer), steps_(steps) {
  if (steps < 1) fail("GradientAccumulation: steps must be at least 1, got {}", steps);
}

bool GradientAccumulation::backward(const Tensor& loss) {
  (steps_ == 1 ? loss : loss / double(steps_)).backward();
  if (++pending_ < steps_) return false;
  flush();
  return true;
}

void GradientAccumulation::flush() {
  if (pending_ == 0) return;
  optimizer_.step();
  optimizer_.zero_grad();
  pending_ = 0;
}

}  // namespace vgrad::optim

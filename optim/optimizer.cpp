// Optimizer steps as fused backend kernels; clipping; gradient accumulation.
#include "optim/optimizer.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "autograd/autocast.h"
#include "autograd/node.h"
#include "core/error.h"
#include "core/grad_mode.h"
#include "core/profiler.h"

namespace vgrad::optim {
namespace {

void check_param(const Tensor& p, size_t index, const char* optimizer) {
  if (!p.is_contiguous()) fail("{}: parameter {} is not contiguous", optimizer, index);
  if (!is_floating(p.dtype())) fail("{}: parameter {} is {}, not floating point", optimizer, index, dtype_name(p.dtype()));
  if (!p.requires_grad()) fail("{}: parameter {} does not require grad", optimizer, index);
  // As PyTorch: a computed tensor gets no .grad from backward() (its leaves do), so it
  // would never be updated.
  if (!p.is_leaf())
    fail(
        "{}: parameter {} is not a leaf tensor (computed by {}): its gradient is not kept, so it would never be "
        "updated; optimize the tensor it was computed from, or detach().requires_grad_() a copy",
        optimizer, index, p.grad_fn()->name());
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

// True while a CUDA graph capture records work on the device of any of `params`
// (core/cuda_graph.h): a step recorded there replays its host scalars unchanged.
bool capturing(const std::vector<Tensor>& params) {
  for (const Tensor& p : params)
    if (p.defined() && p.device().is_cuda() && backend_for(p.device()).capture_pool() != nullptr) return true;
  return false;
}

void update_many(Backend& backend, const std::vector<SgdUpdate>& updates) { backend.sgd_update_many(updates); }
void update_many(Backend& backend, const std::vector<AdamUpdate>& updates) { backend.adam_update_many(updates); }

// What every step does around its fused kernels: no recording, a fresh weight-cast cache
// (the weights change: the next forward casts them afresh), one many-parameter update per
// device over the parameters with a gradient (`entry(p, g, i)` makes each one's Update; CUDA
// runs them in one launch per dtype), and then a version bump for the tensors saved from
// each updated p.
// Returns the indices of the parameters it updated.
template <class Update, class MakeEntry>
std::vector<size_t> update_all(std::vector<Tensor>& params, const std::string& optimizer, MakeEntry&& entry) {
  NoGradGuard no_grad;
  autograd::autocast::clear_cache();
  struct DeviceUpdates {
    Device device;
    std::vector<Update> updates;
  };
  std::vector<DeviceUpdates> devices;
  std::vector<Tensor> grads;  // alive until the updates have run (contiguous copies among them)
  std::vector<size_t> updated;
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor& p = params[i];
    const Tensor g = grad_for_update(p, i, optimizer.c_str());
    if (!g.defined()) continue;
    auto it =
        std::find_if(devices.begin(), devices.end(), [&](const DeviceUpdates& d) { return d.device == p.device(); });
    if (it == devices.end()) it = devices.insert(devices.end(), DeviceUpdates{p.device(), {}});
    it->updates.push_back(entry(p, g, i));
    grads.push_back(g);
    updated.push_back(i);
  }
  for (const DeviceUpdates& d : devices) update_many(backend_for(d.device), d.updates);
  for (size_t i : updated) params[i].storage()->bump_version();
  return updated;
}

std::string state_key(size_t index, const std::string& buffer) {
  return "state." + std::to_string(index) + "." + buffer;
}

// A state dict's tensors by parameter and buffer. Every key must be "state.<i>.<buffer>" for a
// listed parameter i and a buffer in `buffers`; `global` names one key outside that form that
// the optimizer reads itself (Adam's older "step"), or is empty.
std::vector<std::map<std::string, Tensor>> state_by_parameter(const std::map<std::string, Tensor>& state, size_t count,
                                                              const std::vector<std::string>& buffers,
                                                              const std::string& global, const std::string& optimizer,
                                                              const Optimizer::StateKeyName& key_name) {
  std::vector<std::map<std::string, Tensor>> by_parameter(count);
  for (const auto& [key, value] : state) {
    if (!global.empty() && key == global) continue;
    const auto [index, buffer] = split_state_key(key);
    if (buffer.empty() || index >= count)
      fail("{}: checkpoint key '{}' is not state.<parameter index>.<buffer> for one of its {} parameters", optimizer,
           truncated(key), count);
    if (std::find(buffers.begin(), buffers.end(), buffer) == buffers.end())
      fail("{}: checkpoint key '{}': unknown state '{}' ({} keeps {})", optimizer, truncated(key_name(index, buffer)),
           truncated(buffer), optimizer, fmt::join(buffers, ", "));
    by_parameter[index].emplace(buffer, value);
  }
  return by_parameter;
}

// A momentum buffer or moment must be floating and of its parameter's shape.
void check_state_buffer(const Tensor& value, const Tensor& param, const std::string& key,
                        const std::string& optimizer) {
  if (value.shape() != param.shape())
    fail("{}: checkpoint key '{}' has shape {}, parameter is {}", optimizer, key, shape_str(value.shape()),
         shape_str(param.shape()));
  if (!is_floating(value.dtype()))
    fail("{}: checkpoint key '{}' is {}, not floating point", optimizer, key, dtype_name(value.dtype()));
}

// Adam's step count from a checkpoint: one whole number in [1, kMaxStep], int64 as vgrad writes
// it or floating as PyTorch does; the next step adds one, which must not overflow.
int64_t step_count(const Tensor& value, const std::string& key, const std::string& optimizer) {
  constexpr int64_t kMaxStep = std::numeric_limits<int64_t>::max() - 1;
  if (value.numel() != 1)
    fail("{}: checkpoint key '{}' has shape {}: a step count is one number", optimizer, key, shape_str(value.shape()));
  if (value.dtype() == DType::Int64) {
    const int64_t step = value.item<int64_t>();
    if (step < 1 || step > kMaxStep)
      fail("{}: checkpoint key '{}' is step {}: a step count with moments is a whole number in [1, {}]", optimizer, key,
           step, kMaxStep);
    return step;
  }
  const double step = value.item<double>();
  // 2^63 is the first double past int64's range; every double below it converts exactly.
  if (!(step >= 1 && step < 0x1p63) || step != std::floor(step))
    fail("{}: checkpoint key '{}' is step {}: a step count with moments is a whole number in [1, {}]", optimizer, key,
         step, kMaxStep);
  return static_cast<int64_t>(step);
}

// Where a parameter kept state that the checkpoint drops, after a CUDA graph captured a step:
// its replays go on updating that memory and cannot start a fresh state (SGD's first step, Adam's
// zero moments), so the load is an error naming the key.
void refuse_dropping_captured_state(const std::vector<Tensor>& kept,
                                    const std::vector<std::map<std::string, Tensor>>& loaded, const std::string& buffer,
                                    const std::string& optimizer) {
  for (size_t i = 0; i < kept.size(); ++i)
    if (kept[i].defined() && !loaded[i].count(buffer))
      fail(
          "{}: load_state_dict: the checkpoint has no 'state.{}.{}', but parameter {} has that state and a CUDA "
          "graph captured step() updates it in place; its replays cannot start it afresh",
          optimizer, i, buffer, i);
}

// A checked state buffer of each parameter (undefined where it has none) in its parameter's
// dtype and device.
std::vector<Tensor> state_tensors(const std::vector<std::map<std::string, Tensor>>& by_parameter,
                                  const std::string& buffer, const std::vector<Tensor>& params) {
  std::vector<Tensor> loaded(params.size());
  for (size_t i = 0; i < params.size(); ++i)
    if (auto it = by_parameter[i].find(buffer); it != by_parameter[i].end())
      loaded[i] = it->second.to(params[i].dtype()).to(params[i].device()).contiguous().clone();
  return loaded;
}

// Capturable optimizers copy loaded state into the buffers they have (a captured step reads
// that memory), others take the loaded tensors; no state (undefined) stays none.
void take_state(std::vector<Tensor>& kept, std::vector<Tensor> loaded, bool in_place) {
  NoGradGuard no_grad;
  for (size_t i = 0; i < kept.size(); ++i) {
    if (in_place && kept[i].defined() && loaded[i].defined())
      kept[i].copy_(loaded[i]);
    else
      kept[i] = std::move(loaded[i]);
  }
}

// PyTorch's `if not 0.0 <= value` (so NaN fails), and finite (PyTorch takes inf).
void check_non_negative(double value, const char* what, const std::string& optimizer) {
  if (std::isnan(value) || std::isinf(value)) fail("{}: {} {} is not a finite number", optimizer, what, value);
  if (value < 0) fail("{}: {} {} is negative", optimizer, what, value);
}

void check_lr(double lr, const std::string& optimizer) { check_non_negative(lr, "learning rate", optimizer); }

void check_options(const SGDOptions& options) {
  check_lr(options.lr, "SGD");
  check_non_negative(options.momentum, "momentum", "SGD");
  check_non_negative(options.dampening, "dampening", "SGD");
  check_non_negative(options.weight_decay, "weight_decay", "SGD");
  if (options.nesterov && (options.momentum <= 0 || options.dampening != 0))
    fail("SGD: Nesterov momentum needs momentum > 0 and dampening 0");
}

void check_options(const AdamOptions& options, const std::string& optimizer) {
  check_lr(options.lr, optimizer);
  if (!(0.0 <= options.beta1 && options.beta1 < 1.0) || !(0.0 <= options.beta2 && options.beta2 < 1.0))
    fail("{}: betas ({}, {}) must be in [0, 1)", optimizer, options.beta1, options.beta2);
  check_non_negative(options.eps, "eps", optimizer);
  check_non_negative(options.weight_decay, "weight_decay", optimizer);
}

// Copies the values whose names `fields` knows into the matching fields; any other name is an error.
template <class Options>
Options with_hyperparameters(Options options, const std::map<std::string, double>& values,
                             const std::map<std::string, double Options::*>& fields, const std::string& optimizer) {
  for (const auto& [key, value] : values) {
    auto field = fields.find(key);
    if (field == fields.end()) fail("{}: unknown hyper-parameter '{}'", optimizer, truncated(key));
    options.*(field->second) = value;
  }
  return options;
}

}  // namespace

std::pair<size_t, std::string> split_state_key(const std::string& key) {
  const std::string prefix = "state.";
  const size_t dot = key.find('.', prefix.size());
  size_t index = 0;
  if (key.rfind(prefix, 0) != 0 || dot == std::string::npos ||
      std::from_chars(key.data() + prefix.size(), key.data() + dot, index).ptr != key.data() + dot)
    return {0, ""};
  return {index, key.substr(dot + 1)};
}

Optimizer::Optimizer(std::vector<Tensor> params, double lr, const char* kind, bool capturable)
    : params_(std::move(params)), lr_(lr) {
  if (params_.empty())
    fail("{}: no parameters to optimize (the parameter list is empty)", kind);
  check_lr(lr, kind);
  // A step updates every parameter at once (one launch on a GPU): one listed twice would race.
  std::map<const void*, size_t> seen;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].defined() || params_[i].numel() == 0) continue;
    const auto [first, fresh] = seen.emplace(params_[i].view().data, i);
    if (!fresh)
      fail("{}: parameter {} is parameter {} again (each parameter may be listed once)", kind, i, first->second);
  }
  if (!capturable) return;
  // One device holds the lr (and Adam's counts) that every kernel of a step reads.
  const Tensor* first = nullptr;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].defined()) continue;
    if (first == nullptr)
      first = &params_[i];
    else if (params_[i].device() != first->device())
      fail("{}: capturable needs all parameters on one device: parameter {} is on {}, parameter {} on {}", kind,
           size_t(first - params_.data()), first->device().str(), i, params_[i].device().str());
  }
  if (first != nullptr) lr_on_device_ = full({}, lr, {.dtype = DType::Float64, .device = first->device()});
}

bool Optimizer::capturing() const { return vgrad::optim::capturing(params_); }

const double* Optimizer::lr_source() const {
  return capturable() ? static_cast<const double*>(lr_on_device_.view().data) : nullptr;
}

void Optimizer::check_capturable_device() const {
  if (!capturable()) return;
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].defined() && params_[i].device() != lr_on_device_.device())
      fail(
          "{}: step() with capturable: parameter {} is on {}, but the lr and step counts live on {}, where the "
          "parameters were when the optimizer was made; make the optimizer after moving the model",
          name(), i, params_[i].device().str(), lr_on_device_.device().str());
}

void Optimizer::refuse_in_capture(const char* what, const char* why) const {
  if (capturable() && capturing())
    fail("{}: {} inside a CUDA graph capture: {}; call it between replays", name(), what, why);
}

void Optimizer::refuse_fixed_after_capture(const std::map<std::string, double>& values) const {
  if (!captured_) return;
  const std::map<std::string, double> now = hyperparameters();
  for (const auto& [key, value] : values) {
    auto it = now.find(key);
    if (key != "lr" && it != now.end() && it->second != value)
      fail(
          "{}: load_hyperparameters changes {} from {} to {} after a CUDA graph captured step(): its replays keep "
          "{}; only lr may change",
          name(), key, it->second, value, it->second);
  }
}

void Optimizer::refuse_after_capture(const char* what) const {
  if (captured_)
    fail(
        "{}: {} after a CUDA graph captured step(): its replays keep lr {} and the state they captured; make the "
        "optimizer with capturable = true (its lr and state on the device), or a new optimizer and capture again",
        name(), what, lr_);
}

void Optimizer::set_lr(double lr) {
  if (capturable()) {
    refuse_in_capture("set_lr");
    check_lr(lr, name());
    NoGradGuard no_grad;
    lr_on_device_.fill_(lr);  // stream-ordered: the steps queued before it keep the old lr
    lr_ = lr;
    return;
  }
  refuse_after_capture("set_lr");
  check_lr(lr, name());
  lr_ = lr;
}

void Optimizer::load_hyperparameters(const std::map<std::string, double>& values) {
  for (const auto& [key, value] : values) {
    if (key != "lr") fail("{}: unknown hyper-parameter '{}'", name(), truncated(key));
    set_lr(value);
  }
}

void Optimizer::zero_grad(bool set_to_none) {
  for (Tensor& p : params_) p.zero_grad(set_to_none);
}

SGD::SGD(std::vector<Tensor> params, SGDOptions options)
    : Optimizer(std::move(params), options.lr, "SGD", options.capturable),
      options_(options),
      momentum_buffers_(params_.size()) {
  check_options(options);
  for (size_t i = 0; i < params_.size(); ++i) check_param(params_[i], i, "SGD");
}

std::map<std::string, double> SGD::hyperparameters() const {
  return {{"lr", lr_},
          {"momentum", options_.momentum},
          {"dampening", options_.dampening},
          {"weight_decay", options_.weight_decay},
          {"nesterov", options_.nesterov ? 1.0 : 0.0}};
}

void SGD::load_hyperparameters(const std::map<std::string, double>& values) {
  if (capturable()) {
    refuse_in_capture("load_hyperparameters");
    refuse_fixed_after_capture(values);
  } else {
    refuse_after_capture("load_hyperparameters");
  }
  std::map<std::string, double> numbers = values;
  bool nesterov = options_.nesterov;
  if (auto it = numbers.find("nesterov"); it != numbers.end()) {
    if (it->second != 0 && it->second != 1) fail("SGD: hyper-parameter nesterov is {}, not 0 or 1", it->second);
    nesterov = it->second != 0;
    numbers.erase(it);
  }
  SGDOptions current = options_;
  current.lr = lr_;  // options_.lr is the initial lr; a scheduler may have changed lr_
  SGDOptions options = with_hyperparameters(current, numbers,
                                            {{"lr", &SGDOptions::lr},
                                             {"momentum", &SGDOptions::momentum},
                                             {"dampening", &SGDOptions::dampening},
                                             {"weight_decay", &SGDOptions::weight_decay}},
                                            "SGD");
  options.nesterov = nesterov;
  check_options(options);
  options_ = options;
  set_lr(options.lr);
}

void SGD::step() {
  VGRAD_PROFILE_OP("SGD.step");
  check_capturable_device();
  const bool in_capture = capturing();
  if (in_capture) {
    // The momentum (and without capturable, lr) is the same at every replay; the first step is not.
    for (size_t i = 0; i < params_.size(); ++i)
      if (options_.momentum != 0 && params_[i].grad().defined() && !momentum_buffers_[i].defined())
        fail(
            "SGD: step() inside a CUDA graph capture is the first step of parameter {}: its momentum buffer starts "
            "there, and every replay would start it again; run a step before capturing",
            i);
  }
  update_all<SgdUpdate>(params_, "SGD", [&](Tensor& p, const Tensor& g, size_t i) {
    SgdParams args{lr_,   options_.momentum, options_.dampening, options_.weight_decay, options_.nesterov,
                   false, lr_source()};
    if (options_.momentum != 0 && !momentum_buffers_[i].defined()) {
      momentum_buffers_[i] = Tensor::empty(p.shape(), p.dtype(), p.device());
      args.first_step = true;
    }
    const View buffer = momentum_buffers_[i].defined() ? momentum_buffers_[i].view() : View{};
    return SgdUpdate{p.view(), g.view(), buffer, args};
  });
  if (in_capture) captured_ = true;  // only once the step was recorded: a refused one fixes nothing
}

std::map<std::string, Tensor> SGD::state_dict() const {
  std::map<std::string, Tensor> state;
  for (size_t i = 0; i < params_.size(); ++i)
    if (momentum_buffers_[i].defined()) state["state." + std::to_string(i) + ".momentum_buffer"] = momentum_buffers_[i];
  return state;
}

void SGD::check_state_dict(const std::map<std::string, Tensor>& state, const StateKeyName& key_name) const {
  if (capturable())
    refuse_in_capture("load_state_dict");
  else
    refuse_after_capture("load_state_dict");
  const StateKeyName name = key_name ? key_name : StateKeyName(state_key);
  const auto by_parameter = state_by_parameter(state, params_.size(), {"momentum_buffer"}, "", "SGD", name);
  for (size_t i = 0; i < params_.size(); ++i)
    if (auto it = by_parameter[i].find("momentum_buffer"); it != by_parameter[i].end())
      check_state_buffer(it->second, params_[i], name(i, "momentum_buffer"), "SGD");
  if (captured_) refuse_dropping_captured_state(momentum_buffers_, by_parameter, "momentum_buffer", "SGD");
}

void SGD::load_state_dict(const std::map<std::string, Tensor>& state) {
  check_state_dict(state);
  const auto by_parameter = state_by_parameter(state, params_.size(), {"momentum_buffer"}, "", "SGD", state_key);
  take_state(momentum_buffers_, state_tensors(by_parameter, "momentum_buffer", params_), capturable());
}

Adam::Adam(std::vector<Tensor> params, AdamOptions options, bool decoupled)
    : Optimizer(std::move(params), options.lr, decoupled ? "AdamW" : "Adam", options.capturable),
      options_(options),
      decoupled_(decoupled),
      steps_(params_.size(), 0),
      exp_avg_(params_.size()),
      exp_avg_sq_(params_.size()) {
  check_options(options, name());
  for (size_t i = 0; i < params_.size(); ++i) check_param(params_[i], i, name().c_str());
  if (capturable()) {
    const Device device = lr_on_device_.device();
    step_counts_ = zeros({int64_t(params_.size())}, {.dtype = DType::Int64, .device = device});
    one_step_ = ones({}, {.dtype = DType::Int64, .device = device});
  }
}

std::map<std::string, double> Adam::hyperparameters() const {
  return {{"lr", lr_},
          {"beta1", options_.beta1},
          {"beta2", options_.beta2},
          {"eps", options_.eps},
          {"weight_decay", options_.weight_decay}};
}

void Adam::load_hyperparameters(const std::map<std::string, double>& values) {
  if (capturable()) {
    refuse_in_capture("load_hyperparameters");
    refuse_fixed_after_capture(values);
  }
  AdamOptions current = options_;
  current.lr = lr_;  // options_.lr is the initial lr; a scheduler may have changed lr_
  const AdamOptions options = with_hyperparameters(current, values,
                                                   {{"lr", &AdamOptions::lr},
                                                    {"beta1", &AdamOptions::beta1},
                                                    {"beta2", &AdamOptions::beta2},
                                                    {"eps", &AdamOptions::eps},
                                                    {"weight_decay", &AdamOptions::weight_decay}},
                                                   name());
  check_options(options, name());
  options_ = options;
  set_lr(options.lr);
}

void Adam::step() {
  VGRAD_PROFILE_OP("Adam.step");
  check_capturable_device();
  const bool in_capture = capturing();
  if (in_capture && !capturable())
    fail(
        "{}: step() inside a CUDA graph capture: its step count and bias corrections are host values every replay "
        "would repeat unchanged; make it with capturable = true (AdamOptions), or capture the forward and backward "
        "only",
        name());
  if (in_capture)
    for (size_t i = 0; i < params_.size(); ++i)
      if (params_[i].grad().defined() && !exp_avg_[i].defined())
        fail(
            "{}: step() inside a CUDA graph capture is the first step of parameter {}: its moments start there at "
            "zero, and every replay would start them again; run a step before capturing",
            name(), i);
  // Capturable: the kernels read the lr and each count from the device (the count before
  // this step: AdamParams::step_source), then the updated parameters' counts advance there.
  const auto* counts = capturable() ? static_cast<const int64_t*>(step_counts_.view().data) : nullptr;
  std::vector<int64_t> steps = steps_;  // committed once the updates have run
  const std::vector<size_t> updated =
      update_all<AdamUpdate>(params_, name(), [&](Tensor& p, const Tensor& g, size_t i) {
        if (!exp_avg_[i].defined()) {
          exp_avg_[i] = zeros(p.shape(), {.dtype = p.dtype(), .device = p.device()});
          exp_avg_sq_[i] = zeros(p.shape(), {.dtype = p.dtype(), .device = p.device()});
        }
        AdamParams args{lr_, options_.beta1, options_.beta2, options_.eps, options_.weight_decay, decoupled_};
        args.lr_source = lr_source();
        if (counts != nullptr)
          args.step_source = counts + i;
        else
          args.step = ++steps[i];
        return AdamUpdate{p.view(), g.view(), exp_avg_[i].view(), exp_avg_sq_[i].view(), args};
      });
  if (!capturable()) {
    steps_ = std::move(steps);
    return;
  }
  advance_step_counts(updated);
  if (in_capture) captured_ = true;  // only once the step was recorded
}

// One add per run of consecutive updated parameters: one launch when all have a gradient.
void Adam::advance_step_counts(const std::vector<size_t>& updated) {
  NoGradGuard no_grad;
  for (size_t begin = 0; begin < updated.size();) {
    size_t end = begin + 1;
    while (end < updated.size() && updated[end] == updated[end - 1] + 1) ++end;
    step_counts_.narrow(0, int64_t(updated[begin]), int64_t(end - begin)).add_(one_step_);
    begin = end;
  }
}

std::map<std::string, Tensor> Adam::state_dict() const {
  std::map<std::string, Tensor> state;
  if (capturable()) refuse_in_capture("state_dict", "it reads the step counts back to the host");
  // Capturable: the counts the device holds (one host read).
  const std::vector<int64_t> steps = capturable() ? step_counts_.to_vector<int64_t>() : steps_;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!exp_avg_[i].defined()) continue;
    state["state." + std::to_string(i) + ".step"] = scalar_tensor(double(steps[i]), {.dtype = DType::Int64});
    state["state." + std::to_string(i) + ".exp_avg"] = exp_avg_[i];
    state["state." + std::to_string(i) + ".exp_avg_sq"] = exp_avg_sq_[i];
  }
  return state;
}

namespace {
const std::vector<std::string> kAdamState = {"exp_avg", "exp_avg_sq", "step"};
}  // namespace

std::vector<int64_t> Adam::checked_state(const std::map<std::string, Tensor>& state, const StateKeyName& key_name,
                                         std::vector<std::map<std::string, Tensor>>& by_parameter) const {
  if (capturable()) refuse_in_capture("load_state_dict");
  const StateKeyName name = key_name ? key_name : StateKeyName(state_key);
  // Older checkpoints hold one global "step" for all parameters.
  by_parameter = state_by_parameter(state, params_.size(), kAdamState, "step", this->name(), name);
  // Read only for a parameter with moments and no step of its own: a file saved before the
  // first step holds "step" 0 and no moments, and loads as no state.
  const auto global = state.find("step");
  bool global_read = false;
  const auto global_step = [&] {
    global_read = true;
    return step_count(global->second, "step", this->name());
  };
  std::vector<int64_t> steps(params_.size(), 0);
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& buffers = by_parameter[i];
    if (buffers.empty()) continue;  // no state yet: the first step starts it
    // The moments and their count only make sense together: zero moments with a count of
    // 1000 would skip the bias correction of the first steps.
    for (const std::string& buffer : kAdamState)
      if (!buffers.count(buffer) && !(buffer == "step" && global != state.end()))
        fail("{}: the checkpoint has {} of parameter {} but no '{}' (exp_avg, exp_avg_sq and step go together)",
             this->name(), name(i, buffers.begin()->first), i, name(i, buffer));
    check_state_buffer(buffers.at("exp_avg"), params_[i], name(i, "exp_avg"), this->name());
    check_state_buffer(buffers.at("exp_avg_sq"), params_[i], name(i, "exp_avg_sq"), this->name());
    auto step = buffers.find("step");
    steps[i] = step == buffers.end() ? global_step() : step_count(step->second, name(i, "step"), this->name());
  }
  const auto is_zero = [](const Tensor& t) {
    return t.numel() == 1 && (is_floating(t.dtype()) ? t.item<double>() == 0 : t.item<int64_t>() == 0);
  };
  if (global != state.end() && !global_read && !is_zero(global->second))
    fail("{}: checkpoint key 'step' is {} {} with no moments: a file saved before the first step holds step 0",
         this->name(), shape_str(global->second.shape()), dtype_name(global->second.dtype()));
  if (captured_) {
    refuse_dropping_captured_state(exp_avg_, by_parameter, "exp_avg", this->name());
    refuse_dropping_captured_state(exp_avg_sq_, by_parameter, "exp_avg_sq", this->name());
  }
  return steps;
}

void Adam::check_state_dict(const std::map<std::string, Tensor>& state, const StateKeyName& key_name) const {
  std::vector<std::map<std::string, Tensor>> by_parameter;
  (void)checked_state(state, key_name, by_parameter);
}

void Adam::load_state_dict(const std::map<std::string, Tensor>& state) {
  std::vector<std::map<std::string, Tensor>> by_parameter;
  std::vector<int64_t> steps = checked_state(state, {}, by_parameter);
  take_state(exp_avg_, state_tensors(by_parameter, "exp_avg", params_), capturable());
  take_state(exp_avg_sq_, state_tensors(by_parameter, "exp_avg_sq", params_), capturable());
  if (capturable()) {
    NoGradGuard no_grad;
    step_counts_.copy_(tensor(steps));  // in place: a captured step reads these counts
  } else {
    steps_ = std::move(steps);
  }
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  NoGradGuard no_grad;
  // The gradients of each device in one sum_of_squares: one host read per GPU, however
  // many parameters. Devices in the order they first appear; on the CPU the sum is taken
  // in parameter order, as before.
  std::vector<std::pair<Device, std::vector<Tensor>>> by_device;
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    auto group = std::find_if(by_device.begin(), by_device.end(), [&](const auto& d) { return d.first == g.device(); });
    if (group == by_device.end()) group = by_device.insert(by_device.end(), {g.device(), {}});
    group->second.push_back(g.contiguous());
  }
  double total = 0;
  for (const auto& [device, grads] : by_device) {
    std::vector<View> views;
    for (const Tensor& g : grads) views.push_back(g.view());
    total += backend_for(device).sum_of_squares(views.data(), views.size());
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
  if (ready_)
    fail("GradientAccumulation: backward() on a complete group of {} micro-batches; call step() when backward() "
         "or finish() returns true",
         pending_);
  (steps_ == 1 ? loss : loss / double(steps_)).backward();
  ready_ = ++pending_ == steps_;
  return ready_;
}

bool GradientAccumulation::finish() {
  if (ready_) return true;
  if (pending_ == 0) return false;
  // Each of the k' pending losses was scaled by 1/k: k/k' makes the sum their mean.
  const double scale = double(steps_) / double(pending_);
  NoGradGuard no_grad;
  for (const Tensor& p : optimizer_.params())
    if (p.grad().defined()) p.grad().mul_(scale);
  ready_ = true;
  return true;
}

void GradientAccumulation::step() {
  if (!ready_)
    fail("GradientAccumulation: step() with {} of {} micro-batches accumulated; step when backward() returns true, "
         "or call finish() first to rescale a partial group",
         pending_, steps_);
  optimizer_.step();
  optimizer_.zero_grad();
  pending_ = 0;
  ready_ = false;
}

void GradientAccumulation::restore_pending(int64_t pending) {
  if (pending < 0 || pending >= steps_)
    fail("GradientAccumulation: pending count {} out of range for {} steps per update", pending, steps_);
  pending_ = pending;
  ready_ = false;
}

}  // namespace vgrad::optim

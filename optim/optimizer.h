// Optimizers over a list of parameters: SGD (momentum, dampening, Nesterov,
// weight decay), Adam and AdamW, with PyTorch's exact update rules. Each step is
// one many-parameter update per device (Backend::sgd_update_many / adam_update_many: on a
// GPU one fused launch per dtype, PyTorch's fused/foreach form; on the CPU one fused loop
// per parameter), with no host trips. A parameter may be listed only once.
//
// capturable = true (AdamOptions: PyTorch's name; SGDOptions: a vgrad extension) lets a CUDA graph capture the
// whole training step, step() included, and replay it with an lr a scheduler changes between
// replays (core/cuda_graph.h, docs/gpu.md "Capturable optimizers"). The scalars that vary
// between steps then live in memory on the parameters' device (all parameters on one device):
// the lr (one float64) and Adam's step counts (one int64 per parameter). The kernels read them
// when they run; Adam's counts advance on the device (one small launch per step, after the
// update), so no host value changes between replays. Adam's bias corrections are computed
// from the read count in double where the step runs, as the host path does (PyTorch's
// capturable Adam computes them in the parameter dtype: a deliberate difference; on a GPU the
// device's pow may move them by an ulp of a double, see docs/gpu.md). set_lr writes the
// device lr (a stream-ordered fill, no host wait), also after a capture; it is refused
// inside one (it would be recorded). The other hyper-parameters are kernel arguments, fixed
// once a step was captured. load_state_dict copies into the existing state in place;
// state_dict reads Adam's counts back (a host read). A parameter's first step (Adam's zero
// moments, SGD's first momentum buffer) cannot be captured: run warm-up steps first, as in
// PyTorch. Off (the default), steps take the same path and give the same bits as before; on
// the CPU both give the same bits.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/ops.h"

namespace vgrad::optim {

// Optimizer::state_dict's "state.<index>.<buffer>" as (index, buffer); buffer is empty when
// the key is not of that form.
std::pair<size_t, std::string> split_state_key(const std::string& key);

class Optimizer {
 public:
  // How a state tensor is named in errors, by parameter index and buffer: its key
  // ("state.<i>.<buffer>") by default; a training checkpoint names it by parameter.
  using StateKeyName = std::function<std::string(size_t index, const std::string& buffer)>;

  // `kind` names the optimizer in the constructor's errors (name() is not callable yet).
  // capturable: the lr lives on the parameters' device (see the top of this file).
  Optimizer(std::vector<Tensor> params, double lr, const char* kind, bool capturable = false);
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  // Drops every gradient (set_to_none, the default) or zeros it in place; see Tensor::zero_grad.
  void zero_grad(bool set_to_none = true);
  double lr() const { return lr_; }
  // A negative, NaN or infinite lr is an error naming the optimizer. Capturable: a device
  // fill, allowed after a CUDA graph captured step() (the next replay uses it), refused inside
  // a capture.
  void set_lr(double lr);
  bool capturable() const { return lr_on_device_.defined(); }
  const std::vector<Tensor>& params() const { return params_; }
  // State for checkpoints: "state.<i>.<buffer>" tensors (Adam: also "state.<i>.step").
  virtual std::map<std::string, Tensor> state_dict() const = 0;
  // All or nothing: it checks the whole state first (check_state_dict).
  virtual void load_state_dict(const std::map<std::string, Tensor>& state) = 0;
  // The checks of load_state_dict, changing nothing: every key a buffer this optimizer keeps
  // (an unknown one, "momentum_bufer", is an error, not a fresh start) of a listed
  // parameter; each buffer floating and of its parameter's shape; Adam's exp_avg,
  // exp_avg_sq and step present together, its step one whole number in [1, 2^63 - 2] (so
  // the next step's count cannot overflow); and the capture rules of load_state_dict.
  virtual void check_state_dict(const std::map<std::string, Tensor>& state,
                                const StateKeyName& key_name = {}) const = 0;
  // Hyper-parameters by name ("lr", "momentum", ...), for training checkpoints. Loading
  // checks them as the constructor does (and changes nothing when one is refused); a missing
  // name keeps its value, an unknown one is an error.
  virtual std::map<std::string, double> hyperparameters() const { return {{"lr", lr_}}; }
  virtual void load_hyperparameters(const std::map<std::string, double>& values);
  virtual std::string name() const = 0;

 protected:
  // Throws "<name>: <what> after a CUDA graph captured step() ..." once a step was captured
  // (core/cuda_graph.h): a replay would silently keep the old value.
  void refuse_after_capture(const char* what) const;
  // Capturable: throws "<name>: <what> inside a CUDA graph capture: <why>; call it between replays".
  void refuse_in_capture(const char* what, const char* why = "it would be recorded and repeated by every replay") const;
  // Capturable, after a captured step: throws when `values` changes a hyper-parameter other
  // than lr (the replays keep the one they captured).
  void refuse_fixed_after_capture(const std::map<std::string, double>& values) const;
  // True while a CUDA graph captures work on the parameters' device.
  bool capturing() const;
  // Capturable: where the kernels read the lr (SgdParams/AdamParams::lr_source); else null.
  const double* lr_source() const;
  // Capturable: throws unless every parameter is on the device of the lr (and Adam's counts),
  // which is where the parameters were when the optimizer was made.
  void check_capturable_device() const;

  std::vector<Tensor> params_;
  double lr_;              // capturable: the host copy of the device lr (both set only by set_lr)
  bool captured_ = false;  // a CUDA graph captured step(): state (and without capturable, lr) is fixed
  Tensor lr_on_device_;    // capturable: a float64 scalar on the parameters' device; else undefined
};

// Options are checked as PyTorch does, in its `0.0 <= x` form so NaN fails: lr, momentum,
// dampening and weight_decay >= 0, betas in [0, 1), eps >= 0. vgrad also refuses infinities
// (PyTorch takes them, and the first step makes every weight inf or NaN).
struct SGDOptions {
  double lr = 0.01;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
  bool capturable = false;  // a whole step, with a changing lr, may be captured in a CUDA graph (top of file)
};

// g ← g + wd·p;  b ← g (first step) or μ·b + (1−τ)·g;  g ← g + μ·b (Nesterov) or b;  p ← p − lr·g
class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, SGDOptions options);
  void step() override;
  std::map<std::string, Tensor> state_dict() const override;
  void load_state_dict(const std::map<std::string, Tensor>& state) override;
  void check_state_dict(const std::map<std::string, Tensor>& state, const StateKeyName& key_name = {}) const override;
  std::map<std::string, double> hyperparameters() const override;
  void load_hyperparameters(const std::map<std::string, double>& values) override;
  std::string name() const override { return "SGD"; }
  const SGDOptions& options() const { return options_; }

 private:
  SGDOptions options_;
  std::vector<Tensor> momentum_buffers_;  // undefined until a parameter's first step
};

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool capturable = false;  // a whole step, with a changing lr, may be captured in a CUDA graph (top of file)
};

// m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  p ← p − lr·m̂/(√v̂ + ε). Adam adds wd·p to g;
// AdamW (decoupled=true) multiplies p by 1 − lr·wd first.
class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, AdamOptions options, bool decoupled = false);
  void step() override;
  std::map<std::string, Tensor> state_dict() const override;
  void load_state_dict(const std::map<std::string, Tensor>& state) override;
  void check_state_dict(const std::map<std::string, Tensor>& state, const StateKeyName& key_name = {}) const override;
  std::map<std::string, double> hyperparameters() const override;
  void load_hyperparameters(const std::map<std::string, double>& values) override;
  std::string name() const override { return decoupled_ ? "AdamW" : "Adam"; }

 private:
  AdamOptions options_;
  bool decoupled_;
  // Per parameter, as in PyTorch: a count advances only on steps where that parameter
  // has a gradient, so one that joins late gets step-1 bias correction. Capturable: the
  // counts are step_counts_ (int64, one per parameter, on the device) and steps_ is unused.
  std::vector<int64_t> steps_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
  Tensor step_counts_, one_step_;  // capturable: the counts, and the int64 1 added to them
  // check_state_dict's work: the state by parameter and buffer, and each parameter's step count (0: no state).
  std::vector<int64_t> checked_state(const std::map<std::string, Tensor>& state, const StateKeyName& key_name,
                                     std::vector<std::map<std::string, Tensor>>& by_parameter) const;
  void advance_step_counts(const std::vector<size_t>& updated);
};

class AdamW : public Adam {
 public:
  AdamW(std::vector<Tensor> params, AdamOptions options) : Adam(std::move(params), options, true) {}
};

// Scales all gradients so their global L2 norm is at most max_norm; returns the norm before.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

// Gradient accumulation: k micro-batches of size B/k, then one step, equal one batch of
// size B. backward() scales each micro-batch loss by 1/k and says when a group of k is
// complete; the program then calls step(), so clipping and per-step schedulers go between:
//
//   optim::GradientAccumulation accumulate(sgd, 4);
//   for (auto& [x, y] : loader)
//     if (accumulate.backward(nn::cross_entropy(model(x), y))) {
//       optim::clip_grad_norm(model.parameters(), 1.0);
//       accumulate.step();
//     }
//   if (accumulate.finish()) {  // a partial group at the end of the epoch
//     optim::clip_grad_norm(model.parameters(), 1.0);
//     accumulate.step();
//   }
class GradientAccumulation {
 public:
  GradientAccumulation(Optimizer& optimizer, int64_t steps);
  // Backward of loss / k. True when this micro-batch completes a group: call step() next
  // (a further backward() before step() is an error, as the group would silently grow).
  [[nodiscard]] bool backward(const Tensor& loss);
  // For the end of an epoch: when k' (0 < k' < k) micro-batches are pending, scales their
  // summed gradients by k/k', so they hold the mean over those k' (as one smaller batch
  // would), and returns true: call step() next. False when nothing is pending.
  [[nodiscard]] bool finish();
  // Steps the optimizer on a complete group (from backward() or finish()) and drops the
  // gradients. Stepping an incomplete group is an error naming the count.
  void step();
  int64_t steps() const { return steps_; }      // k: micro-batches per optimizer step
  int64_t pending() const { return pending_; }  // micro-batches accumulated since the last step
  bool ready() const { return ready_; }         // a complete group awaits step()
  // For resuming: the gradients of those micro-batches must be restored alongside.
  void restore_pending(int64_t pending);

 private:
  Optimizer& optimizer_;
  int64_t steps_;
  int64_t pending_ = 0;
  bool ready_ = false;
};

}  // namespace vgrad::optim

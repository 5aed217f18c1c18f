// Module: named parameters and submodules (dotted names such as "fc1.weight"),
// train/eval mode, device moves and state dicts. A custom layer is a few lines:
//
//   // y = x * gamma, gamma (D) broadcast over (N, D)
//   struct Scale : vgrad::nn::Module {
//     explicit Scale(int64_t d) : gamma(register_parameter("gamma", vgrad::ones({d}))) {}
//     vgrad::Tensor forward(const vgrad::Tensor& x) override { return x * gamma; }
//     vgrad::Tensor gamma;
//   };
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/ops.h"

namespace vgrad::nn {

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  virtual Tensor forward(const Tensor& input);
  Tensor operator()(const Tensor& input) { return forward(input); }
  // "Linear(784 -> 256)"; used with the module's path in error messages.
  virtual std::string describe() const { return "Module"; }

  std::vector<Tensor> parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const { return children_; }
  // State that is not trained (BatchNorm's running statistics): in state_dict, moved by to().
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  // The dotted path of this module in the model ("net.fc2"), empty for the root.
  const std::string& path() const { return path_; }

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad(bool set_to_none = true);  // see Tensor::zero_grad
  // Moves every parameter (and its gradient) in place: handles held elsewhere,
  // by an optimizer or a member, see the moved tensor.
  Module& to(Device device);
  // Converts every floating-point parameter (and its gradient) to a floating dtype in place,
  // as to(Device) does: module.to(DType::Float64) for gradcheck. Convert before creating
  // an optimizer: its state buffers keep the dtype they were made with.
  Module& to(DType dtype);

  std::map<std::string, Tensor> state_dict() const;
  // Copies values into the parameters. strict: every key must match both ways.
  // Errors name the key and the shapes. All or nothing: every key, shape and dtype is
  // checked (check_state_dict) before the first value is copied.
  void load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);
  // The checks of load_state_dict, changing nothing: with strict, no key missing and none
  // unexpected; each value of the entry's shape, and floating where the entry is floating
  // and int64 where it is int64 (PyTorch's copy_ would convert: a float checkpoint in an
  // integer buffer silently truncates, so vgrad refuses the mix).
  void check_state_dict(const std::map<std::string, Tensor>& state, bool strict = true) const;

 protected:
  Tensor register_parameter(const std::string& name, Tensor tensor, bool requires_grad = true);
  Tensor register_buffer(const std::string& name, Tensor tensor);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }
  // "net.fc2 (Linear 256->10)": where an error happened, for messages.
  std::string where() const;

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> module);
  void set_path(const std::string& path);
  void collect(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out) const;
  void collect_buffers(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out) const;
  std::vector<std::pair<std::string, Tensor>> state_entries() const;  // parameters, then buffers

  std::vector<std::pair<std::string, Tensor>> parameters_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  std::string path_;
  bool training_ = true;
};

// A module whose forward takes other arguments than one tensor: (x, mask), (q, k, v),
// (x, a double). Derive from MultiInput<Self> instead of Module and write forward with
// any signature (an overload set, default arguments); module(args...) calls it:
//
//   // mean of x (N, L, D) over the positions where mask (N, L) is 1 -> (N, D)
//   struct MaskedMean : vgrad::nn::MultiInput<MaskedMean> {
//     using MultiInput::forward;  // see the NOTE below
//     vgrad::Tensor forward(const vgrad::Tensor& x, const vgrad::Tensor& mask) {
//       const vgrad::Tensor m = mask.unsqueeze(-1);
//       return vgrad::sum(x * m, {1}) / vgrad::sum(m, {1});
//     }
//   };
//   vgrad::Tensor pooled = pool(x, mask);   // or (*pool)(x, mask) through a shared_ptr
//
// It is a Module in every other way: named parameters, submodules, state_dict, to(),
// train/eval. Sequential calls the virtual forward(const Tensor&): a MultiInput module
// runs there only if it also has that overload (else the error names it).
// NOTE: a forward(x, mask) hides Module's virtual forward(const Tensor&), which clang's
// and GCC 13's -Wall report (-Woverloaded-virtual); `using MultiInput::forward;` keeps it
// visible and silences that, and a one-tensor call then reaches Module's clear error.
template <class Self>
class MultiInput : public Module {
 public:
  template <class... Args>
  decltype(auto) operator()(Args&&... args) {
    return static_cast<Self&>(*this).forward(std::forward<Args>(args)...);
  }
};

}  // namespace vgrad::nn

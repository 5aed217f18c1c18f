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

  std::map<std::string, Tensor> state_dict() const;
  // Copies values into the parameters. strict: every key must match both ways.
  // Errors name the key and the shapes.
  void load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);

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

}  // namespace vgrad::nn

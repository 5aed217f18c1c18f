// Module bookkeeping: registration, traversal, modes, device moves, state dicts.
#include "nn/module.h"

#include <algorithm>

#include "core/error.h"
#include "core/grad_mode.h"

namespace vgrad::nn {

Tensor Module::forward(const Tensor&) {
  fail("{}: forward() is not implemented for one tensor (override forward(const Tensor&); a MultiInput module's "
       "forward takes other arguments: call it as module(args...), not from Sequential)",
       where());
}

std::string Module::where() const { return path_.empty() ? describe() : fmt::format("{} ({})", path_, describe()); }

Tensor Module::register_parameter(const std::string& name, Tensor tensor, bool requires_grad) {
  if (name.empty() || name.find('.') != std::string::npos) fail("register_parameter: bad name '{}'", name);
  for (const auto& [existing, t] : parameters_)
    if (existing == name) fail("register_parameter: '{}' registered twice in {}", name, where());
  if (requires_grad && !tensor.requires_grad()) tensor.requires_grad_(true);
  parameters_.emplace_back(name, tensor);
  return tensor;
}

Tensor Module::register_buffer(const std::string& name, Tensor tensor) {
  if (name.empty() || name.find('.') != std::string::npos) fail("register_buffer: bad name '{}'", name);
  for (const auto& [existing, t] : buffers_)
    if (existing == name) fail("register_buffer: '{}' registered twice in {}", name, where());
  buffers_.emplace_back(name, tensor);
  return tensor;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
  if (!module) fail("register_module: '{}' is null", name);
  if (name.empty() || name.find('.') != std::string::npos) fail("register_module: bad name '{}'", name);
  for (const auto& [existing, m] : children_)
    if (existing == name) fail("register_module: '{}' registered twice in {}", name, where());
  children_.emplace_back(name, module);
  module->set_path(path_.empty() ? name : path_ + "." + name);
}

void Module::set_path(const std::string& path) {
  path_ = path;
  for (auto& [name, child] : children_) child->set_path(path + "." + name);
}

void Module::collect(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out) const {
  for (const auto& [name, t] : parameters_) out.emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", out);
}

void Module::collect_buffers(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out) const {
  for (const auto& [name, t] : buffers_) out.emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) child->collect_buffers(prefix + name + ".", out);
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect_buffers("", out);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::state_entries() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", out);
  collect_buffers("", out);
  return out;
}

// A tensor registered under several names (weight tying) is listed once, under its
// first name, as in PyTorch: an optimizer must not step it twice. state_dict keeps all names.
std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> all, out;
  collect("", all);
  for (auto& entry : all) {
    bool seen = false;
    for (const auto& kept : out) seen = seen || kept.second.is_same(entry.second);
    if (!seen) out.push_back(std::move(entry));
  }
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::zero_grad(bool set_to_none) {
  for (Tensor& t : parameters()) t.zero_grad(set_to_none);
}

namespace {

// Swaps the storage under the shared impl, so every handle (an optimizer's, a member's) follows.
void replace_data(Tensor& t, const Tensor& converted) {
  TensorImpl& impl = *t.impl_ptr();
  impl.storage = converted.storage();
  impl.strides = converted.strides();
  impl.offset = converted.offset();
  impl.dtype = converted.dtype();
}

}  // namespace

Module& Module::to(Device device) {
  NoGradGuard no_grad;
  std::vector<Tensor> tensors = parameters();
  for (auto& [name, t] : named_buffers()) tensors.push_back(t);
  for (Tensor& t : tensors) {
    if (t.device() == device) continue;
    replace_data(t, t.detach().to(device));
    TensorImpl& impl = *t.impl_ptr();
    if (impl.grad) impl.grad = Tensor(impl.grad).to(device).impl_shared();
  }
  return *this;
}

Module& Module::to(DType dtype) {
  if (!is_floating(dtype))
    fail("{}: to({}): parameters must stay floating point (float32 or float64)", where(), dtype_name(dtype));
  NoGradGuard no_grad;
  for (Tensor& t : parameters()) {
    if (t.dtype() == dtype || !is_floating(t.dtype())) continue;
    replace_data(t, t.detach().to(dtype));
    TensorImpl& impl = *t.impl_ptr();
    if (impl.grad) impl.grad = Tensor(impl.grad).to(dtype).impl_shared();
  }
  return *this;
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> out;
  for (auto& [name, t] : state_entries()) out.emplace(name, t.detach());
  return out;
}

void Module::check_state_dict(const std::map<std::string, Tensor>& state, bool strict) const {
  const std::vector<std::pair<std::string, Tensor>> entries = state_entries();
  for (const auto& [name, t] : entries) {
    auto it = state.find(name);
    if (it == state.end()) {
      if (strict) fail("load_state_dict: missing key '{}' (expected shape {})", name, shape_str(t.shape()));
      continue;
    }
    if (it->second.shape() != t.shape())
      fail("load_state_dict: key '{}' has shape {}, the model expects {}", name, shape_str(it->second.shape()),
           shape_str(t.shape()));
    if (is_floating(it->second.dtype()) != is_floating(t.dtype()))
      fail("load_state_dict: key '{}' is {}, the model's entry is {} (floating and integer values do not mix)", name,
           dtype_name(it->second.dtype()), dtype_name(t.dtype()));
  }
  if (!strict) return;
  for (const auto& [name, value] : state) {
    const bool known =
        std::any_of(entries.begin(), entries.end(), [&name = name](const auto& entry) { return entry.first == name; });
    if (!known)
      fail("load_state_dict: unexpected key '{}' (shape {}) not in the model", name, shape_str(value.shape()));
  }
}

void Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  check_state_dict(state, strict);  // all of it first: a refused state changes nothing
  NoGradGuard no_grad;
  for (const auto& [name, t] : state_entries()) {
    auto it = state.find(name);
    if (it == state.end()) continue;
    Tensor target = t.detach();
    target.copy_(it->second.to(t.dtype()));
  }
}

}  // namespace vgrad::nn

// nn::gradcheck: converts the module to float64, checks inputs and parameters, converts back.
#include "nn/gradcheck.h"

#include "core/error.h"

namespace vgrad::nn {

autograd::GradcheckReport gradcheck(Module& module, const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                                    const std::vector<Tensor>& inputs, autograd::GradcheckOptions options) {
  std::vector<std::pair<std::string, Tensor>> parameters;
  DType original = DType::Float64;
  bool first = true;
  for (const auto& [name, p] : module.named_parameters()) {
    if (!is_floating(p.dtype())) continue;
    if (!first && p.dtype() != original)
      fail("gradcheck: module has {} and {} parameters ('{}'); convert it with to() first", dtype_name(original),
           dtype_name(p.dtype()), name);
    original = p.dtype();
    first = false;
    if (p.requires_grad()) parameters.emplace_back(name, p);  // frozen ones are not checked
  }
  // Back to the original dtype however the check ends (a failed check may throw).
  struct Restore {
    Module& module;
    DType dtype;
    ~Restore() { module.to(dtype); }
  } restore{module, original};
  module.to(DType::Float64);
  return autograd::gradcheck(fn, inputs, options, parameters);
}

autograd::GradcheckReport gradcheck(Module& module, const Tensor& input, autograd::GradcheckOptions options) {
  return gradcheck(
      module, [&module](const std::vector<Tensor>& in) { return module(in[0]); }, {input}, options);
}

}  // namespace vgrad::nn

// Gradient checking for a whole module: its gradients with respect to its inputs and
// every parameter, against central differences in float64 (autograd/gradcheck.h does
// the work). Not for training code: it runs the module twice per checked element.
#pragma once
#include <functional>
#include <vector>

#include "autograd/gradcheck.h"
#include "nn/module.h"

namespace vgrad::nn {

// The module is converted with to(DType::Float64) for the check and back afterwards
// (float32 -> float64 -> float32 is exact), so a float32 model is checked as it is; its
// .grad buffers are left alone. fn calls the module, with any number of inputs:
//
//   auto report = nn::gradcheck(block, [&](const std::vector<Tensor>& in) { return block(in[0], in[1]); },
//                               {x, mask});
//
// fn must be deterministic: call eval() first when the module has Dropout. A module whose
// parameters mix float32 and float64 is an error (convert it with to() first).
autograd::GradcheckReport gradcheck(Module& module, const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                                    const std::vector<Tensor>& inputs, autograd::GradcheckOptions options = {});
// One input: checks module(input).
autograd::GradcheckReport gradcheck(Module& module, const Tensor& input, autograd::GradcheckOptions options = {});

}  // namespace vgrad::nn

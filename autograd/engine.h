// The reverse-mode engine: topological order, gradient accumulation with +=,
// unbroadcasting to each input's shape, and no recording while it runs.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace vgrad::autograd {

// Backpropagates from `roots`, each seeded with its gradient (an undefined gradient
// means 1 and needs a one-element root). Gradients add into leaves' .grad.
void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& gradients = {},
              bool retain_graph = false);

// Gradients of `outputs` with respect to `inputs`, returned instead of accumulated
// into .grad (like torch.autograd.grad). Used by gradcheck. An input no gradient
// reaches (not used to compute the outputs) is an error, or with allow_unused an
// undefined Tensor in its place, as in PyTorch.
std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& gradients = {}, bool retain_graph = false,
                         bool allow_unused = false);

}  // namespace vgrad::autograd

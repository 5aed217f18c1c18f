// Optimizer state (momentum buffers, Adam moments, steps) as a safetensors file of
// its own, beside the model's (nn/checkpoint.h); the optimizer's kind and lr go in
// the metadata, so loading the state of another optimizer is refused.
#pragma once
#include <string>

#include "optim/optimizer.h"

namespace vgrad::optim {

void save(const Optimizer& optimizer, const std::string& path);
// Errors name the file, and the key or the optimizer kind that does not match. All or
// nothing: the whole state (Optimizer::check_state_dict) and the lr (a number, read whole,
// finite and >= 0) are checked before either changes.
void load(Optimizer& optimizer, const std::string& path);

}  // namespace vgrad::optim

// Checkpoints as safetensors files with PyTorch-style names ("fc1.weight"), so a
// model trained in vgrad loads in PyTorch (safetensors.torch.load_file) and back.
// Writes are atomic: a crash mid-save never destroys the previous checkpoint.
#pragma once
#include <map>
#include <string>

#include "nn/module.h"

namespace vgrad::safetensors {
struct File;
}  // namespace vgrad::safetensors

namespace vgrad::nn {

// Tensors to and from a safetensors file (float32 "F32", float64 "F64", int64 "I64", bfloat16
// "BF16", float16 "F16": files PyTorch writes and reads, tests/nn/test_checkpoint.cpp).
void save_tensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                  const std::map<std::string, std::string>& metadata = {});
std::map<std::string, Tensor> load_tensors(const std::string& path);
// The tensors of a file already read (safetensors::load), for a caller that reads its
// metadata too; `path` names the file in errors.
std::map<std::string, Tensor> tensors_of(const safetensors::File& file, const std::string& path);

// The model's parameters (its state_dict).
void save(const Module& module, const std::string& path);
// Errors name the key: missing, unexpected, of the wrong shape or kind of dtype (and the
// file). Every key is checked before the first parameter changes.
void load(Module& module, const std::string& path);

}  // namespace vgrad::nn

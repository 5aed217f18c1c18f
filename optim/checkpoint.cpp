// Optimizer checkpoints: state_dict tensors plus the optimizer's name and lr.
#include "optim/checkpoint.h"

#include "core/error.h"
#include "core/safetensors.h"
#include "nn/checkpoint.h"

namespace vgrad::optim {

void save(const Optimizer& optimizer, const std::string& path) {
  nn::save_tensors(path, optimizer.state_dict(),
                   {{"optimizer", optimizer.name()}, {"lr", fmt::format("{}", optimizer.lr())}, {"producer", "vgrad"}});
}

void load(Optimizer& optimizer, const std::string& path) {
  const safetensors::File file = safetensors::load(path);
  auto it = file.metadata.find("optimizer");
  if (it == file.metadata.end() || it->second != optimizer.name())
    fail("checkpoint: {}: holds state of optimizer '{}', not {}", path,
         it == file.metadata.end() ? "(none)" : it->second, optimizer.name());
  auto lr = file.metadata.find("lr");
  if (lr != file.metadata.end()) optimizer.set_lr(std::stod(lr->second));
  try {
    optimizer.load_state_dict(nn::load_tensors(path));
  } catch (const Error& e) {
    fail("checkpoint: {}: {}", path, e.what());
  }
}

}  // namespace vgrad::optim

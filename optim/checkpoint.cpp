// Optimizer checkpoints: state_dict tensors plus the optimizer's name and lr.
#include "optim/checkpoint.h"

#include <charconv>
#include <optional>

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
         it == file.metadata.end() ? "(none)" : truncated(it->second), optimizer.name());
  std::optional<double> lr;
  if (auto text = file.metadata.find("lr"); text != file.metadata.end()) {
    double value = 0;
    const std::string& s = text->second;
    const auto [end, error] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (error != std::errc() || end != s.data() + s.size())
      fail("checkpoint: {}: metadata key 'lr' is '{}', not a number", path, truncated(s));
    lr = value;
  }
  // All or nothing: the state is checked first, then set_lr checks the lr before it changes it,
  // and then the checked state cannot be refused.
  const std::map<std::string, Tensor> state = nn::tensors_of(file, path);
  try {
    optimizer.check_state_dict(state);
    if (lr) optimizer.set_lr(*lr);
    optimizer.load_state_dict(state);
  } catch (const Error& e) {
    fail("checkpoint: {}: {}", path, e.what());
  }
}

}  // namespace vgrad::optim

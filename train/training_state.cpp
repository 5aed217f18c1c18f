// Saving and restoring a TrainingState. Loading reads and checks the whole file against
// the objects before changing any of them.
#include "train/training_state.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "autograd/ops.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "nn/checkpoint.h"

#ifndef VGRAD_VERSION
#define VGRAD_VERSION "unknown"
#endif

namespace vgrad::train {
namespace {

constexpr const char* kFormatKey = "vgrad.training_state";
constexpr const char* kFormatVersion = "1";
const std::string kOptimizerPrefix = "optimizer.";
const std::string kGradPrefix = "grad.";
const std::string kScalerPrefix = "scaler.";

bool starts_with(const std::string& text, const std::string& prefix) { return text.rfind(prefix, 0) == 0; }

// Doubles print as the shortest text that reads back to the same bits, so a resumed run
// writes the same metadata bytes as an uninterrupted one.
std::string number_text(double value) { return fmt::format("{}", value); }

// Typed reads of the metadata, each error naming the file and the key.
class Metadata {
 public:
  Metadata(const std::string& path, const std::map<std::string, std::string>& values) : path_(path), values_(values) {}

  std::optional<std::string> find(const std::string& key) const {
    auto it = values_.find(key);
    if (it == values_.end()) return std::nullopt;
    return it->second;
  }
  std::string text(const std::string& key) const {
    auto value = find(key);
    if (!value) fail("checkpoint: {}: metadata key '{}' is missing", path_, key);
    return *value;
  }
  template <class T> T number(const std::string& key) const {
    const std::string value = text(key);
    T parsed{};
    const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), parsed);
    if (error != std::errc() || end != value.data() + value.size())
      fail("checkpoint: {}: metadata key '{}' is '{}', not a number", path_, key, truncated(value));
    // from_chars reads "nan" and "inf"; no value vgrad writes is either.
    if constexpr (std::is_floating_point_v<T>)
      if (!std::isfinite(parsed))
        fail("checkpoint: {}: metadata key '{}' is '{}', not a finite number", path_, key, truncated(value));
    return parsed;
  }
  // Every "<prefix><name>" key, by name.
  std::map<std::string, std::string> with_prefix(const std::string& prefix) const {
    std::map<std::string, std::string> out;
    for (const auto& [key, value] : values_)
      if (starts_with(key, prefix)) out[key.substr(prefix.size())] = value;
    return out;
  }

 private:
  const std::string& path_;
  const std::map<std::string, std::string>& values_;
};

// The model's parameter name for each of the optimizer's parameters, by identity.
std::vector<std::string> optimizer_parameter_names(const nn::Module& model, const optim::Optimizer& optimizer) {
  const auto named = model.named_parameters();
  std::vector<std::string> names;
  for (size_t i = 0; i < optimizer.params().size(); ++i) {
    const Tensor& p = optimizer.params()[i];
    const std::string* found = nullptr;
    for (const auto& [name, t] : named)
      if (t.is_same(p)) found = &name;
    if (!found)
      fail("training state: {} parameter {} ({}) is not a parameter of the model, so it has no name to save "
           "its state under",
           optimizer.name(), i, shape_str(p.shape()));
    names.push_back(*found);
  }
  return names;
}

std::map<std::string, std::string> loader_configuration(const data::DataLoader& loader) {
  const data::LoaderOptions& options = loader.options();
  return {{"loader.samples", std::to_string(loader.dataset_size())},
          {"loader.batch_size", std::to_string(options.batch_size)},
          {"loader.shuffle", options.shuffle ? "1" : "0"},
          {"loader.seed", std::to_string(options.seed)},
          {"loader.drop_last", options.drop_last ? "1" : "0"}};
}

}  // namespace

const char* vgrad_version() { return VGRAD_VERSION; }

void check_can_save(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (path.empty()) fail("checkpoint: the path is empty");
  if (fs::is_directory(path, ec)) fail("checkpoint: {}: is a directory, not a file name", path);
  const fs::path directory = fs::path(path).has_parent_path() ? fs::path(path).parent_path() : fs::path(".");
  if (!fs::exists(directory, ec)) fail("checkpoint: {}: directory {} does not exist", path, directory.string());
  if (!fs::is_directory(directory, ec)) fail("checkpoint: {}: {} is not a directory", path, directory.string());
  // Creating a file is the only honest test: permissions, read-only mounts and quotas all show here.
  const std::string probe = path + ".probe." + std::to_string(::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0)
    fail("checkpoint: {}: cannot create files in directory {}: {}", path, directory.string(), std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
}

void save_training_state(const std::string& path, const TrainingState& state) {
  if (!state.model) fail("training state: {}: no model to save (TrainingState::model is null)", path);
  std::map<std::string, Tensor> tensors = state.model->state_dict();
  std::map<std::string, std::string> metadata{{"format", "pt"},  // safetensors.torch reads the model as before
                                              {"producer", "vgrad"},
                                              {"vgrad.version", VGRAD_VERSION},
                                              {kFormatKey, kFormatVersion},
                                              {"epoch", std::to_string(state.epoch)},
                                              {"step", std::to_string(state.step)}};
  const ModelInfo& info = state.info;
  for (const auto& [key, value] : info.architecture) metadata["architecture." + key] = value;
  metadata["input.mean"] = number_text(info.input_mean);
  metadata["input.std"] = number_text(info.input_std);
  metadata["classes"] = std::to_string(info.num_classes);
  if (!info.program.empty()) metadata["program"] = info.program;

  if (state.optimizer) {
    const std::vector<std::string> names = optimizer_parameter_names(*state.model, *state.optimizer);
    metadata["optimizer"] = state.optimizer->name();
    for (const auto& [key, value] : state.optimizer->hyperparameters()) metadata["optimizer." + key] = number_text(value);
    // "state.<i>.<buffer>" becomes "optimizer.<name>.<buffer>": a checkpoint survives a change of parameter order.
    for (const auto& [key, value] : state.optimizer->state_dict()) {
      const auto [index, buffer] = optim::split_state_key(key);
      if (index >= names.size() || buffer.empty())
        fail("training state: {}: {} state key '{}' is not of the form state.<parameter index>.<buffer>", path,
             state.optimizer->name(), key);
      tensors[kOptimizerPrefix + names[index] + "." + buffer] = value;
    }
  }
  if (state.scheduler) {
    metadata["scheduler.count"] = std::to_string(state.scheduler->count());
    metadata["scheduler.base_lr"] = number_text(state.scheduler->base_lr());
  }
  if (state.accumulation) {
    if (state.accumulation->ready())
      fail("training state: {}: a complete group of {} micro-batches awaits GradientAccumulation::step(); "
           "save after stepping",
           path, state.accumulation->pending());
    metadata["accumulation.steps"] = std::to_string(state.accumulation->steps());
    metadata["accumulation.pending"] = std::to_string(state.accumulation->pending());
    // Mid-group, the summed gradients of the pending micro-batches are state too.
    if (state.accumulation->pending() > 0)
      for (const auto& [name, p] : state.model->named_parameters())
        if (p.grad().defined()) tensors[kGradPrefix + name] = p.grad();
  }
  if (state.loader) {
    metadata.merge(loader_configuration(*state.loader));
    const data::LoaderPosition position = state.loader->position();
    metadata["loader.epoch"] = std::to_string(position.epoch);
    metadata["loader.batch"] = std::to_string(position.batch);
  }
  if (state.scaler)
    for (const auto& [key, value] : state.scaler->state_dict()) metadata[kScalerPrefix + key] = number_text(value);
  const RandomState& rng = default_generator().state();
  metadata["rng.seed"] = std::to_string(rng.seed);
  metadata["rng.offset"] = std::to_string(rng.offset);
  nn::save_tensors(path, tensors, metadata);
}

void load_training_state(const std::string& path, TrainingState& state) {
  if (!state.model) fail("training state: {}: no model to load into (TrainingState::model is null)", path);
  const safetensors::File file = safetensors::load(path);
  const Metadata meta(path, file.metadata);
  if (!meta.find(kFormatKey))
    fail("checkpoint: {}: not a training checkpoint (no '{}' metadata); a weights-only file loads with nn::load",
         path, kFormatKey);
  if (meta.text(kFormatKey) != kFormatVersion)
    fail("checkpoint: {}: training-state format {} is not the one this vgrad reads ({})", path,
         truncated(meta.text(kFormatKey)), kFormatVersion);
  const std::map<std::string, Tensor> tensors = nn::tensors_of(file, path);  // the file is read once

  // ---- read and check everything; nothing changes until all of it passes ----
  std::map<std::string, Tensor> model_tensors, grads;
  std::map<std::string, Tensor> optimizer_tensors;  // by "<name>.<buffer>"
  for (const auto& [key, value] : tensors) {
    if (starts_with(key, kOptimizerPrefix)) optimizer_tensors[key.substr(kOptimizerPrefix.size())] = value;
    else if (starts_with(key, kGradPrefix)) grads[key.substr(kGradPrefix.size())] = value;
    else model_tensors[key] = value;
  }
  const auto named = state.model->named_parameters();
  std::map<std::string, Tensor> parameters(named.begin(), named.end());
  try {
    state.model->check_state_dict(model_tensors, true);
  } catch (const Error& e) {
    fail("checkpoint: {}: {}", path, e.what());
  }
  for (const auto& [name, g] : grads) {
    auto it = parameters.find(name);
    if (it == parameters.end() || it->second.shape() != g.shape() || !is_floating(g.dtype()))
      fail("checkpoint: {}: gradient 'grad.{}' {} {} matches no parameter of the model", path, truncated(name),
           dtype_name(g.dtype()), shape_str(g.shape()));
  }

  std::map<std::string, Tensor> optimizer_state;  // positional, as Optimizer::load_state_dict wants
  std::map<std::string, double> hyperparameters;
  if (state.optimizer) {
    const std::string kind = meta.find("optimizer").value_or("(none)");
    if (kind != state.optimizer->name())
      fail("checkpoint: {}: holds the state of optimizer '{}', not {}", path, truncated(kind), state.optimizer->name());
    for (const auto& [key, value] : meta.with_prefix("optimizer.")) hyperparameters[key] = meta.number<double>("optimizer." + key);
    const std::vector<std::string> names = optimizer_parameter_names(*state.model, *state.optimizer);
    for (const auto& [key, value] : optimizer_tensors) {
      // The longest parameter name that prefixes the key owns it ("fc1.weight" in "fc1.weight.exp_avg").
      std::optional<size_t> owner;
      for (size_t i = 0; i < names.size(); ++i)
        if (starts_with(key, names[i] + ".") && (!owner || names[i].size() > names[*owner].size())) owner = i;
      if (!owner)
        fail("checkpoint: {}: optimizer state 'optimizer.{}' belongs to no parameter of this {}", path, truncated(key),
             state.optimizer->name());
      const std::string buffer = key.substr(names[*owner].size() + 1);
      optimizer_state["state." + std::to_string(*owner) + "." + buffer] = value;
    }
    // Every buffer known, of its parameter's shape and dtype, the ones that go together
    // together, Adam's steps in range: checked here, so applying it below cannot fail.
    try {
      state.optimizer->check_state_dict(optimizer_state, [&names](size_t index, const std::string& buffer) {
        return kOptimizerPrefix + names[index] + "." + truncated(buffer);
      });
    } catch (const Error& e) {
      fail("checkpoint: {}: {}", path, e.what());
    }
  }
  const int64_t scheduler_count = state.scheduler ? meta.number<int64_t>("scheduler.count") : 0;
  const double scheduler_base_lr = state.scheduler ? meta.number<double>("scheduler.base_lr") : 0.0;
  if (scheduler_count < 0 || !std::isfinite(scheduler_base_lr) || scheduler_base_lr < 0)
    fail("checkpoint: {}: scheduler count {} / base lr {} out of range", path, scheduler_count, scheduler_base_lr);
  int64_t pending = 0;
  if (state.accumulation) {
    const auto steps = meta.number<int64_t>("accumulation.steps");
    if (steps != state.accumulation->steps())
      fail("checkpoint: {}: saved with gradient accumulation over {} micro-batches, this run uses {}", path, steps,
           state.accumulation->steps());
    pending = meta.number<int64_t>("accumulation.pending");
    if (pending < 0 || pending >= steps)
      fail("checkpoint: {}: accumulation.pending {} out of range for {} steps", path, pending, steps);
    // Pending micro-batches are their summed gradients: without them a resumed group would
    // step on the remaining micro-batches alone, scaled as if all had run.
    if (pending > 0 && grads.empty())
      fail(
          "checkpoint: {}: accumulation.pending is {}, but the file holds no 'grad.<parameter>' tensors of those "
          "micro-batches",
          path, pending);
    if (pending == 0 && !grads.empty())
      fail("checkpoint: {}: holds gradient 'grad.{}', but accumulation.pending is 0", path,
           truncated(grads.begin()->first));
  }
  data::LoaderPosition position;
  if (state.loader) {
    for (const auto& [key, expected] : loader_configuration(*state.loader))
      if (meta.text(key) != expected)
        fail(
            "checkpoint: {}: the data loader was saved with {} = {}, this one has {}; its position would not "
            "mean the same samples",
            path, key, truncated(meta.text(key)), expected);
    position = {meta.number<int64_t>("loader.epoch"), meta.number<int64_t>("loader.batch")};
    if (position.epoch < 0 || position.batch < 0 || position.batch >= std::max<int64_t>(state.loader->num_batches(), 1))
      fail("checkpoint: {}: loader position (epoch {}, batch {}) out of range for {} batches per epoch", path,
           position.epoch, position.batch, state.loader->num_batches());
  }
  std::map<std::string, double> scaler_state;  // empty for a disabled scaler, which ignores it
  if (state.scaler && state.scaler->is_enabled()) {
    const std::map<std::string, std::string> saved = meta.with_prefix(kScalerPrefix);
    if (saved.empty())
      fail(
          "checkpoint: {}: holds no GradScaler state (it was saved by a run without float16 loss scaling), and "
          "this run scales its loss",
          path);
    for (const auto& [key, value] : saved) scaler_state[key] = meta.number<double>(kScalerPrefix + key);
    try {
      state.scaler->check_state_dict(scaler_state);
    } catch (const Error& e) {
      fail("checkpoint: {}: {}", path, e.what());
    }
  }
  const RandomState rng{meta.number<uint64_t>("rng.seed"), meta.number<uint64_t>("rng.offset")};
  const int64_t epoch = meta.number<int64_t>("epoch"), step = meta.number<int64_t>("step");
  if (epoch < 0 || step < 0)
    fail("checkpoint: {}: epoch {} and step {} count what was done: neither may be negative", path, epoch, step);
  ModelInfo info;
  info.architecture = meta.with_prefix("architecture.");
  info.input_mean = meta.number<double>("input.mean");
  info.input_std = meta.number<double>("input.std");
  info.num_classes = meta.number<int64_t>("classes");
  info.program = meta.find("program").value_or("");

  // ---- apply: hyper-parameters first, the one step that checks values (and changes nothing if it throws);
  // everything after it was checked above ----
  try {
    if (state.optimizer) state.optimizer->load_hyperparameters(hyperparameters);
  } catch (const Error& e) {
    fail("checkpoint: {}: {}", path, e.what());
  }
  state.model->load_state_dict(model_tensors, true);
  if (state.optimizer) state.optimizer->load_state_dict(optimizer_state);
  if (state.scheduler) state.scheduler->restore(scheduler_count, scheduler_base_lr);
  if (state.accumulation) {
    state.accumulation->restore_pending(pending);
    for (auto& [name, p] : parameters) {
      auto it = grads.find(name);
      if (it == grads.end()) p.zero_grad();
      else p.set_grad(it->second.to(p.dtype()).to(p.device()));
    }
  }
  if (state.loader) state.loader->restore(position);
  if (state.scaler) state.scaler->load_state_dict(scaler_state);
  default_generator().state() = rng;
  state.epoch = epoch;
  state.step = step;
  state.info = std::move(info);
}

}  // namespace vgrad::train

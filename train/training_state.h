// A training checkpoint: everything a program needs to continue a run exactly where
// it stopped (model, optimizer state and hyper-parameters, scheduler, accumulation,
// loader position, loss scale, global RNG, epoch and step) in one safetensors file, plus
// what a user needs to use the model elsewhere. Above optim/, amp/ and data/; it owns none
// of them.
//
//   train::TrainingState state{.model = &model, .optimizer = &sgd, .loader = &loader};
//   if (resuming) train::load_training_state(path, state);   // state.epoch says where to go on
//   ... after each epoch: ++state.epoch; train::save_training_state(path, state);
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "amp/grad_scaler.h"
#include "data/loader.h"
#include "nn/module.h"
#include "optim/optimizer.h"
#include "optim/scheduler.h"

namespace vgrad::train {

// Metadata for using the model outside this program (saved, and read back on load).
struct ModelInfo {
  std::map<std::string, std::string> architecture{};  // e.g. {"layers", "784,256,128,10"}, {"activation", "relu"}
  double input_mean = 0.0, input_std = 1.0;         // inputs were fed as (x − mean) / std
  int64_t num_classes = 0;                          // 0: not a classifier
  std::string program{};                            // what trained it ("mnist_mlp")
};

// What changes while a program trains. `model` is required; the other pointers may be null,
// and what is null is neither saved nor restored. epoch and step are the caller's counters.
struct TrainingState {
  nn::Module* model = nullptr;
  optim::Optimizer* optimizer = nullptr;
  optim::Scheduler* scheduler = nullptr;
  optim::GradientAccumulation* accumulation = nullptr;
  data::DataLoader* loader = nullptr;
  amp::GradScaler* scaler = nullptr;  // float16 loss scaling; a disabled one is neither saved nor restored
  int64_t epoch = 0;  // epochs completed
  int64_t step = 0;   // optimizer steps taken
  ModelInfo info{};
};

// Writes the state to `path` atomically. The file's layout:
//   "fc1.weight", ...                  the model, under its plain names (loads in PyTorch as before)
//   "optimizer.<param>.<buffer>"       optimizer state keyed by parameter name, not position
//   "grad.<param>"                     only while accumulation has micro-batches pending
//   metadata                           optimizer kind and hyper-parameters, scheduler count, accumulation,
//                                      loader position and configuration, GradScaler ("scaler.<key>" of
//                                      its state_dict), RNG state, epoch, step,
//                                      ModelInfo ("architecture.<key>", "input.mean", ...), vgrad version
// Same state, same bytes: the file holds no time stamp and no path.
void save_training_state(const std::string& path, const TrainingState& state);

// Restores everything `state` points to, and its epoch, step and info, from `path`.
// The whole file is read and checked against the objects first (parameter names and
// shapes, optimizer kind, every optimizer state tensor, finite hyper-parameters in range,
// pending accumulation with its gradients, loader configuration, epoch and step >= 0), so
// a refused file changes nothing; errors name the file and the key, and quote at most 64
// characters of a bad value.
void load_training_state(const std::string& path, TrainingState& state);

// Fails now, naming the path and why, if a checkpoint cannot be written to `path` later:
// its directory is missing, is not a directory or is not writable, or `path` is a directory.
// Programs call it before training, not after the first epoch. It leaves no file behind.
void check_can_save(const std::string& path);

// The version of vgrad that saved a file (from the CMake project version).
const char* vgrad_version();

}  // namespace vgrad::train

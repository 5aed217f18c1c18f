// CUDA Graph capture of a training step, opt-in (PyTorch's torch.cuda.CUDAGraph): the
// step's kernels are recorded once and each replay() launches them all at once, with no
// host work per op and no host wait. Defined in cuda/graph.cpp (a build without CUDA throws).
//
//   Tensor x = zeros({64, 784}, {.device = gpu}), y = ...;   // static inputs, made before
//   for (int i = 0; i < 3; ++i) step();                      // warm-up: eager steps first
//   cuda::Graph graph;
//   Tensor loss;
//   graph.capture([&] {                                      // records; runs no kernel
//     sgd.zero_grad();
//     loss = nn::cross_entropy(model(x), y);
//     loss.backward();
//     sgd.step();
//   });
//   for (auto& [bx, by] : loader) {
//     x.copy_(bx); y.copy_(by);                              // the next batch, in place
//     graph.replay();                                        // loss now holds its loss
//   }
//
// What a replay cannot change is refused during capture with an error naming it, never
// replayed stale: a host wait or read (item(), to(kCPU), a copy from host memory,
// synchronize(), clip_grad_norm), random numbers (dropout: the same mask each replay),
// Adam's step without capturable (its bias corrections are host values), GradScaler's
// unscale_/step/update (its scale() may be captured, amp/grad_scaler.h), and a parameter's
// first step (SGD's momentum buffer, Adam's moments start there). After a step
// of an optimizer without capturable is captured, changing its lr or loading its state is
// refused; with capturable = true (optim/optimizer.h) its lr and Adam's step counts live on
// the device, so set_lr and schedulers work between replays. Tensors made during capture (outputs, gradients) live in
// the graph's private memory pool, which the graph keeps until it and they are gone.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>

#include "core/allocator.h"
#include "core/device.h"

namespace vgrad::cuda {

class Graph {
 public:
  Graph();
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // Runs `step` on the host once while the GPU's stream records what it queues (no kernel
  // runs). Waits once before, so pending work and index checks are done. A step that
  // throws ends the capture, keeps nothing, and rethrows.
  void capture(const std::function<void()>& step, Device device = cuda_device(0));
  // Queues the recorded work again, on the same memory. No host wait.
  void replay();
  // Waits for the last replay, then drops the recorded work and the graph's hold on its
  // pool (so does the destructor). Not inside another capture.
  void reset();
  bool captured() const;
  int64_t replay_count() const;
  // The kernels the captured graph launches per replay (its kernel nodes), for tests and
  // profiling: what a step costs in launches. 0 before capture().
  int64_t kernel_count() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// The memory of every live graph pool on GPU `index` (reserved: in use plus cached), for
// tests and profiling: 0 once every graph and every tensor it made are gone.
MemoryStats graph_pool_stats(int index);

}  // namespace vgrad::cuda

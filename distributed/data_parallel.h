// DistributedDataParallel: one model replica per rank, each on its share of the
// global batch; gradients are averaged across ranks so every replica takes the same
// optimizer step. Not a Module itself: the wrapped module keeps its parameter names.
//
//   distributed::DistributedDataParallel ddp(model, comm);   // rank 0's parameters everywhere
//   for (auto& [x, y] : loader) {                             // loader: num_replicas/rank set
//     nn::cross_entropy(ddp(x), y).backward();                // buckets all-reduce during backward
//     ddp.finish_gradient_sync();                             // averaged .grad on every rank
//     sgd.step(); sgd.zero_grad();
//   }
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "distributed/communicator.h"
#include "nn/module.h"
#include "optim/optimizer.h"

namespace vgrad::distributed {

struct DataParallelOptions {
  // Gradients travel in buckets of about this many bytes (PyTorch's 25 MB), filled in
  // reverse parameter order: the last layers' gradients are ready first in backward.
  size_t bucket_cap_bytes = size_t(25) << 20;
  // The first bucket is small so that communication starts early in backward.
  size_t first_bucket_cap_bytes = size_t(1) << 20;
  // false: every bucket is all-reduced in finish_gradient_sync(), after backward (no
  // overlap; for measuring what overlap saves).
  bool overlap = true;
};

// Time and bytes of gradient averaging since construction (or reset_stats()).
struct SyncStats {
  int64_t syncs = 0;                 // finish_gradient_sync() calls that averaged gradients
  int64_t bytes_all_reduced = 0;     // per rank, summed over syncs
  double all_reduce_seconds = 0;     // inside the communicator's all_reduce
  double wait_seconds = 0;           // finish_gradient_sync() waiting for buckets still in flight
};

class DistributedDataParallel {
 public:
  // Broadcasts rank 0's parameters to every rank, after checking that every rank's
  // model has the same parameter names and shapes (an error names the first that differs).
  DistributedDataParallel(nn::Module& module, std::shared_ptr<Communicator> communicator,
                          DataParallelOptions options = {});
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  Tensor operator()(const Tensor& input) { return module_.forward(input); }
  nn::Module& module() const { return module_; }
  Communicator& communicator() const { return *communicator_; }

  // Waits for every bucket's all-reduce and writes the averaged gradients into .grad.
  // Call it after backward() and before the optimizer step. A parameter that received
  // no gradient in this backward is refused with an error naming it (unused parameters
  // are not supported: every rank must produce a gradient for every parameter).
  void finish_gradient_sync();

  // While one is alive, backward() accumulates into .grad without communicating: the
  // micro-batches of gradient accumulation. The backward after it averages the sum.
  class NoSyncGuard {
   public:
    explicit NoSyncGuard(DistributedDataParallel& ddp) : ddp_(&ddp) { ddp.no_sync_depth_++; }
    ~NoSyncGuard() { ddp_->no_sync_depth_--; }
    NoSyncGuard(const NoSyncGuard&) = delete;
    NoSyncGuard& operator=(const NoSyncGuard&) = delete;

   private:
    DistributedDataParallel* ddp_;
  };
  [[nodiscard]] NoSyncGuard no_sync() { return NoSyncGuard(*this); }

  // Gradient accumulation across ranks, with the global batch split over ranks and micro-batches:
  //   if (ddp.backward(accumulation, loss)) accumulation.step();       // each micro-batch
  //   if (ddp.finish_accumulation(accumulation)) accumulation.step();  // end of the epoch
  // backward() runs accumulation.backward(loss) (loss / K) under no_sync() for the first K-1
  // micro-batches of a group and, on the K-th, lets the buckets all-reduce the group's summed
  // gradients and waits for them (finish_gradient_sync()). True when the group is complete.
  [[nodiscard]] bool backward(optim::GradientAccumulation& accumulation, const Tensor& loss);
  // A partial group at the end of an epoch (every rank has the same number of micro-batches):
  // accumulation.finish() rescales it, then its gradients, accumulated under no_sync(), are
  // all-reduced here. True when a group awaits accumulation.step().
  [[nodiscard]] bool finish_accumulation(optim::GradientAccumulation& accumulation);
  // Averages the gradients .grad holds now across ranks, as if the backward that made them had
  // run outside no_sync(). Every parameter must have a gradient.
  void sync_gradients();

  // The buckets' parameter names, in the order their all-reduces start.
  std::vector<std::vector<std::string>> bucket_parameter_names() const;
  const SyncStats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }

 private:
  struct Bucket {
    std::vector<size_t> parameters;  // indices into parameters_
    std::vector<int64_t> offsets;    // of each parameter in `flat`
    Tensor flat;                     // the gradients, packed; all-reduced in place
    size_t waiting = 0;              // parameters whose gradient is not ready yet in this round
    bool launched = false;
  };
  void on_gradient_ready(size_t parameter);
  void launch(size_t bucket);
  void all_reduce_bucket(size_t bucket);
  void communicate();  // the communication thread: all-reduces launched buckets in index order
  void check_same_model_everywhere();

  nn::Module& module_;
  std::shared_ptr<Communicator> communicator_;
  DataParallelOptions options_;
  std::vector<std::pair<std::string, Tensor>> parameters_;
  std::vector<size_t> bucket_of_;   // per parameter
  std::vector<bool> ready_;         // per parameter, this round
  std::vector<uint64_t> hook_ids_;  // per parameter
  std::vector<Bucket> buckets_;
  int no_sync_depth_ = 0;
  SyncStats stats_;

  // The communication thread and what it shares with the hooks (Bucket::launched too).
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable queued_, done_;
  size_t completed_ = 0;  // buckets all-reduced this round: 0 .. completed_ - 1
  std::exception_ptr error_;
  double all_reduce_seconds_ = 0;  // accumulated by the thread, under mutex_
  bool stopping_ = false;
};

}  // namespace vgrad::distributed

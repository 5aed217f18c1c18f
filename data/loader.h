// DataLoader: shuffled (seeded) mini-batches of a Dataset, gathered by a
// background thread one batch ahead, optionally delivered on a GPU. One iteration
// at a time: a nested loop over the same loader is an error, not a shorter epoch.
// The prefetch thread gathers CPU batches into a few buffers it reuses (no allocation
// per batch); a buffer is reused only once nothing outside the loader refers to it, so a
// batch the caller keeps is never overwritten (the loader allocates a fresh one instead).
// On a GPU it gathers into page-locked staging buffers instead and uploads each batch on
// the device's copy stream; next() makes the compute stream wait for that copy on the GPU,
// so the host never waits for the compute stream per batch (docs/gpu.md, "Streams").
//
//   data::DataLoader loader(train, {.batch_size = 64, .shuffle = true, .seed = 1});
//   for (auto& [x, y] : loader) { ... }   // x (N, D) float32, y (N) int64
#pragma once
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "core/backend.h"
#include "data/dataset.h"

namespace vgrad::data {

struct LoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = true;
  uint64_t seed = 0;     // epoch e shuffles with seed + e: same seed, same orders
  bool drop_last = false;
  Device device = kCPU;  // batches are moved here (a GPU: uploaded by the prefetch thread)
  int prefetch = 2;      // batches prepared ahead (0: gather on the calling thread, a new batch each time)
  // Distributed training: every rank shuffles alike (same seed) and takes its share of
  // each global batch of batch_size samples: rank r of R gets the r-th contiguous slice
  // (sizes differ by at most one), so the ranks together see exactly the batches of
  // single-process training. num_batches() counts global batches.
  int64_t num_replicas = 1;
  int64_t rank = 0;
};

// Where a loader stands, for resuming: the shuffle is a function of (seed, epoch), so
// the epoch index and the batches already delivered from it say everything.
struct LoaderPosition {
  int64_t epoch = 0;  // the epoch the next batch comes from
  int64_t batch = 0;  // batches of that epoch already delivered
  bool operator==(const LoaderPosition&) const = default;
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  int64_t num_batches() const;
  int64_t dataset_size() const { return dataset_->size(); }
  int64_t epoch() const { return epoch_; }
  const LoaderOptions& options() const { return options_; }
  // The sample order of epoch `epoch` (for tests and reproducibility).
  Tensor epoch_order(int64_t epoch) const;

  // Valid inside a loop too: after the body has used batch k, position().batch is k + 1
  // (after the last batch, the next epoch at batch 0).
  LoaderPosition position() const;
  // The next iteration starts at `position` (refused while an iteration runs).
  void restore(const LoaderPosition& position);

  // Move-only: the iterator begin() returns owns the running iteration, and ending
  // (or leaving the loop early) frees the loader for the next one.
  class Iterator {
   public:
    Iterator(DataLoader* loader, uint64_t iteration) : loader_(loader), iteration_(iteration), end_(iteration == 0) {}
    Iterator(Iterator&& other) noexcept;
    Iterator(const Iterator&) = delete;
    Iterator& operator=(const Iterator&) = delete;
    Iterator& operator=(Iterator&&) = delete;
    ~Iterator();
    Batch& operator*() { return current_; }
    Iterator& operator++();
    bool operator!=(const Iterator& other) const { return end_ != other.end_; }

   private:
    DataLoader* loader_;
    uint64_t iteration_;  // 0 for end() and moved-from iterators
    bool end_;
    Batch current_;
  };
  // Starts an epoch (a new shuffle); iterating again starts the next one.
  Iterator begin();
  Iterator end() { return Iterator(this, 0); }

 private:
  // A batch ready to hand out, and on a GPU the fence of its upload.
  struct Prepared {
    Batch batch;
    std::shared_ptr<DeviceFence> uploaded;
  };
  // Page-locked host tensors a GPU batch is gathered into, and the fence of the upload
  // that last read them (the host waits for it before gathering into them again).
  struct Staging {
    Batch host;
    std::shared_ptr<DeviceFence> uploaded;
  };

  std::optional<Batch> next();
  Tensor batch_indices(int64_t index) const;  // this rank's sample indices of global batch `index`
  Batch make_batch(int64_t index) const;
  int64_t buffer_rows() const;  // the rows of a reused buffer: this rank's largest share of a batch
  Batch gather_into_buffer(int64_t index);  // make_batch's CPU batch, into a reused buffer (prefetch thread)
  Prepared assemble_batch(int64_t index);    // the same, uploaded to a GPU through staging when asked
  Prepared upload_batch(int64_t index);
  void wait_for_uploads() noexcept;  // the staging buffers are free (stop)
  void stop();
  void finish_iteration(uint64_t iteration);

  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions options_;
  int64_t epoch_ = 0;        // epochs begun
  int64_t start_batch_ = 0;  // where the next epoch starts (set by restore)
  Tensor order_;
  int64_t next_batch_ = 0;  // consumer position
  uint64_t iterations_ = 0;        // iterations begun, numbering them from 1
  uint64_t running_iteration_ = 0;  // the one in progress, 0 when none
  // Prefetch thread state.
  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable ready_, space_;
  std::deque<Prepared> queue_;
  std::exception_ptr error_;
  bool stop_ = false;
  // The prefetch thread's reusable batches (prefetch + 3: the queue, the batch being
  // filled, and the consumer's current and next); only that thread touches them.
  std::vector<Batch> buffers_;
  size_t next_buffer_ = 0;
  // On a GPU, prefetch + 1 staging buffers used in turn (only the prefetch thread, and
  // stop() after joining it, touch them).
  std::vector<Staging> staging_;
  size_t next_staging_ = 0;
};

}  // namespace vgrad::data

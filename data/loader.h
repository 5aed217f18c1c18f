// DataLoader: shuffled (seeded) mini-batches of a Dataset, gathered by a
// background thread one batch ahead, optionally delivered on a GPU.
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

#include "data/dataset.h"

namespace vgrad::data {

struct LoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = true;
  uint64_t seed = 0;     // epoch e shuffles with seed + e: same seed, same orders
  bool drop_last = false;
  Device device = kCPU;  // batches are moved here by the prefetch thread
  int prefetch = 2;      // batches prepared ahead (0: gather on the calling thread)
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  int64_t num_batches() const;
  int64_t epoch() const { return epoch_; }
  const LoaderOptions& options() const { return options_; }
  // The sample order the next epoch will use (for tests and reproducibility).
  Tensor epoch_order(int64_t epoch) const;

  class Iterator {
   public:
    Iterator(DataLoader* loader, bool end) : loader_(loader), end_(end) {}
    Batch& operator*() { return current_; }
    Iterator& operator++();
    bool operator!=(const Iterator& other) const { return end_ != other.end_; }

   private:
    friend class DataLoader;
    DataLoader* loader_;
    bool end_;
    Batch current_;
  };
  // Starts an epoch (a new shuffle); iterating again starts the next one.
  Iterator begin();
  Iterator end() { return Iterator(this, true); }

 private:
  std::optional<Batch> next();
  Batch make_batch(int64_t index) const;
  void stop();

  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions options_;
  int64_t epoch_ = 0;
  Tensor order_;
  int64_t next_batch_ = 0;  // consumer position
  // Prefetch thread state.
  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable ready_, space_;
  std::deque<Batch> queue_;
  std::exception_ptr error_;
  bool stop_ = false;
};

}  // namespace vgrad::data

// The loader's epoch order, batch gathering, and the prefetch thread.
#include "data/loader.h"

#include "core/grad_mode.h"
#include "core/error.h"

namespace vgrad::data {

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options)
    : dataset_(std::move(dataset)), options_(options) {
  if (!dataset_) fail("DataLoader: dataset is null");
  if (options_.batch_size < 1) fail("DataLoader: batch_size must be at least 1, got {}", options_.batch_size);
  if (options_.prefetch < 0) fail("DataLoader: prefetch must be >= 0, got {}", options_.prefetch);
}

DataLoader::~DataLoader() { stop(); }

int64_t DataLoader::num_batches() const {
  const int64_t n = dataset_->size(), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

Tensor DataLoader::epoch_order(int64_t epoch) const {
  if (!options_.shuffle) return arange(dataset_->size());
  Generator gen(options_.seed + uint64_t(epoch));
  return randperm(dataset_->size(), &gen);
}

Batch DataLoader::make_batch(int64_t index) const {
  NoGradGuard no_grad;
  const int64_t start = index * options_.batch_size;
  const int64_t count = std::min(options_.batch_size, dataset_->size() - start);
  Batch batch = dataset_->get_batch(order_.narrow(0, start, count));
  if (!options_.device.is_cpu()) batch = {batch.input.to(options_.device), batch.target.to(options_.device)};
  return batch;
}

void DataLoader::stop() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  space_.notify_all();
  if (worker_.joinable()) worker_.join();
  queue_.clear();
  stop_ = false;
  error_ = nullptr;
}

DataLoader::Iterator DataLoader::begin() {
  stop();
  order_ = epoch_order(epoch_++);
  next_batch_ = 0;
  if (options_.prefetch > 0) {
    worker_ = std::thread([this] {
      try {
        for (int64_t i = 0; i < num_batches(); ++i) {
          Batch batch = make_batch(i);
          std::unique_lock lock(mutex_);
          space_.wait(lock, [&] { return stop_ || int64_t(queue_.size()) < options_.prefetch; });
          if (stop_) return;
          queue_.push_back(std::move(batch));
          ready_.notify_one();
        }
      } catch (...) {
        std::lock_guard lock(mutex_);
        error_ = std::current_exception();
        ready_.notify_one();
      }
    });
  }
  Iterator it(this, false);
  ++it;
  return it;
}

std::optional<Batch> DataLoader::next() {
  if (next_batch_ >= num_batches()) return std::nullopt;
  const int64_t index = next_batch_++;
  if (options_.prefetch == 0) return make_batch(index);
  std::unique_lock lock(mutex_);
  ready_.wait(lock, [&] { return !queue_.empty() || error_; });
  if (queue_.empty() && error_) std::rethrow_exception(error_);
  Batch batch = std::move(queue_.front());
  queue_.pop_front();
  space_.notify_one();
  return batch;
}

DataLoader::Iterator& DataLoader::Iterator::operator++() {
  std::optional<Batch> batch = loader_->next();
  if (batch) current_ = std::move(*batch);
  else end_ = true;
  return *this;
}

}  // namespace vgrad::data

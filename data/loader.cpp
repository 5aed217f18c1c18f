// The loader's epoch order, batch gathering, the page-locked staging and uploads of GPU
// batches, and the prefetch thread.
#include "data/loader.h"

#include <algorithm>
#include <atomic>

#include "core/grad_mode.h"
#include "core/error.h"

namespace vgrad::data {

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, LoaderOptions options)
    : dataset_(std::move(dataset)), options_(options) {
  if (!dataset_) fail("DataLoader: dataset is null");
  if (options_.batch_size < 1) fail("DataLoader: batch_size must be at least 1, got {}", options_.batch_size);
  if (options_.prefetch < 0) fail("DataLoader: prefetch must be >= 0, got {}", options_.prefetch);
  if (options_.num_replicas < 1 || options_.rank < 0 || options_.rank >= options_.num_replicas)
    fail("DataLoader: rank {} of num_replicas {}: need num_replicas >= 1 and 0 <= rank < num_replicas", options_.rank,
         options_.num_replicas);
  // Every rank's share of every batch must hold a sample, or its loss would be a mean of nothing.
  const int64_t last = dataset_->size() % options_.batch_size;
  if (options_.batch_size < options_.num_replicas || (!options_.drop_last && last != 0 && last < options_.num_replicas))
    fail("DataLoader: a global batch of {} samples cannot be split across {} ranks (batch_size {}, {} samples{}); "
         "use a batch_size of at least num_replicas{}",
         options_.batch_size < options_.num_replicas ? options_.batch_size : last, options_.num_replicas,
         options_.batch_size, dataset_->size(), options_.batch_size < options_.num_replicas ? "" : ": the last batch",
         options_.batch_size < options_.num_replicas ? "" : ", or drop_last");
}

DataLoader::~DataLoader() { stop(); }

int64_t DataLoader::num_batches() const {
  const int64_t n = dataset_->size(), b = options_.batch_size;
  return options_.drop_last ? n / b : n / b + (n % b != 0);  // not (n + b - 1) / b: it overflows for a huge b
}

Tensor DataLoader::epoch_order(int64_t epoch) const {
  if (!options_.shuffle) return arange(dataset_->size());
  Generator gen(options_.seed + uint64_t(epoch));
  return randperm(dataset_->size(), &gen);
}

Tensor DataLoader::batch_indices(int64_t index) const {
  const int64_t global_start = index * options_.batch_size;
  const int64_t global_count = std::min(options_.batch_size, dataset_->size() - global_start);
  // This rank's contiguous slice: the first global_count % R ranks take one sample more.
  const int64_t replicas = options_.num_replicas, rank = options_.rank;
  const int64_t share = global_count / replicas, extra = global_count % replicas;
  const int64_t start = global_start + rank * share + std::min(rank, extra);
  const int64_t count = share + (rank < extra ? 1 : 0);
  return order_.narrow(0, start, count);
}

Batch DataLoader::make_batch(int64_t index) const {
  NoGradGuard no_grad;
  Batch batch = dataset_->get_batch(batch_indices(index));
  if (!options_.device.is_cpu()) batch = {batch.input.to(options_.device), batch.target.to(options_.device)};
  return batch;
}

namespace {

// Nothing outside the loader refers to this tensor's memory: no copy of its handle, no
// view of its storage (a view the caller kept, an autograd graph that saved it).
bool unreferenced(const Tensor& t) {
  if (!t.defined()) return true;
  if (t.impl_shared().use_count() != 1 || t.storage().use_count() != 1) return false;
  // The counts were read relaxed: order the consumer's last reads before our writes.
  std::atomic_thread_fence(std::memory_order_acquire);
  return true;
}

// The page-locked host memory of the staging buffers (cuda::pinned_alloc: ordinary memory
// where CUDA is unavailable). Never destroyed: a loader may be, at exit, after it.
CachingAllocator& pinned_pool() {
  static auto* unlimited = new MemoryLimit();  // host memory outside any device's pools
  static auto* pool = new CachingAllocator([](size_t bytes, int, bool) { return cuda::pinned_alloc(bytes); },
                                           [](void* ptr, int) { cuda::pinned_free(ptr); }, 0, *unlimited);
  return *pool;
}

bool is_staged(const Tensor& t) { return t.defined() && &t.storage()->pool() == &pinned_pool(); }

// `t` (on the CPU) in the page-locked buffer `staged`: where the dataset gathered it, or
// copied there, `staged` replaced first by one of `capacity` rows when it does not fit.
Tensor stage(const Tensor& t, Tensor& staged, int64_t capacity) {
  if (is_staged(staged) && t.storage() == staged.storage() && t.is_contiguous()) return t;
  const int64_t rows = t.dim() > 0 ? t.shape()[0] : 0;
  const bool fits = is_staged(staged) && staged.dtype() == t.dtype() && staged.dim() == t.dim() &&
                    (t.dim() == 0 || (staged.shape()[0] >= rows &&
                                      std::equal(t.shape().begin() + 1, t.shape().end(), staged.shape().begin() + 1)));
  if (!fits) {
    Shape shape = t.shape();
    if (t.dim() > 0) shape[0] = std::max(rows, capacity);
    staged = Tensor::empty(shape, t.dtype(), kCPU, pinned_pool());
  }
  const Tensor out = t.dim() == 0 || rows == staged.shape()[0] ? staged : staged.narrow(0, 0, rows);
  cpu_backend().copy(t.view(), out.view());
  return out;
}

size_t nbytes(const Tensor& t) { return static_cast<size_t>(t.numel()) * dtype_size(t.dtype()); }

}  // namespace

int64_t DataLoader::buffer_rows() const {
  // No batch holds more than the dataset: a batch_size of 2^63 - 1 must not size the buffer.
  const int64_t rows = std::min(options_.batch_size, dataset_->size()), replicas = options_.num_replicas;
  return rows / replicas + (rows % replicas != 0);
}

DataLoader::Prepared DataLoader::assemble_batch(int64_t index) {
  if (options_.device.is_cpu()) return {gather_into_buffer(index), nullptr};
  return upload_batch(index);
}

// The batch's CPU tensors go into a staging buffer (gathered there directly by datasets
// that gather into a buffer), and from there to fresh tensors of the device's upload pool
// in one upload on its copy stream. Gathering into a staging buffer again first waits for
// the upload that last read it (prefetch + 1 batches ago: normally long done).
DataLoader::Prepared DataLoader::upload_batch(int64_t index) {
  NoGradGuard no_grad;
  staging_.resize(size_t(options_.prefetch) + 1);
  Staging& slot = staging_[next_staging_];
  next_staging_ = (next_staging_ + 1) % staging_.size();
  if (slot.uploaded) {
    slot.uploaded->wait_host();
    slot.uploaded.reset();
  }
  const Batch gathered = dataset_->get_batch_into(batch_indices(index), slot.host, buffer_rows());
  if (!gathered.input.device().is_cpu() || !gathered.target.device().is_cpu())  // a dataset on the device
    return {{gathered.input.to(options_.device), gathered.target.to(options_.device)}, nullptr};
  const Tensor input = stage(gathered.input, slot.host.input, buffer_rows());
  const Tensor target = stage(gathered.target, slot.host.target, buffer_rows());
  Backend& device = backend_for(options_.device);
  Batch batch{Tensor::empty(input.shape(), input.dtype(), options_.device, device.upload_allocator()),
              Tensor::empty(target.shape(), target.dtype(), options_.device, device.upload_allocator())};
  const HostCopy copies[] = {{batch.input.data_ptr(), input.data_ptr(), nbytes(input)},
                             {batch.target.data_ptr(), target.data_ptr(), nbytes(target)}};
  slot.uploaded = std::make_shared<DeviceFence>(device.upload(copies));
  return {std::move(batch), slot.uploaded};
}

void DataLoader::wait_for_uploads() noexcept {
  for (Staging& slot : staging_) {
    try {
      if (slot.uploaded) slot.uploaded->wait_host();
    } catch (...) {  // a failed copy no longer reads the buffer; the device error shows at its next use
    }
    slot.uploaded.reset();
  }
}

Batch DataLoader::gather_into_buffer(int64_t index) {
  NoGradGuard no_grad;
  buffers_.resize(size_t(options_.prefetch) + 3);
  // The next free buffer in turn; if the caller holds all of them, give up the oldest
  // (the caller keeps its tensors) and let the dataset allocate a fresh one.
  size_t chosen = next_buffer_;
  for (size_t k = 0; k < buffers_.size(); ++k) {
    const size_t i = (next_buffer_ + k) % buffers_.size();
    if (unreferenced(buffers_[i].input) && unreferenced(buffers_[i].target)) {
      chosen = i;
      break;
    }
    if (k + 1 == buffers_.size()) buffers_[chosen] = Batch{};
  }
  next_buffer_ = (chosen + 1) % buffers_.size();
  return dataset_->get_batch_into(batch_indices(index), buffers_[chosen], buffer_rows());
}

void DataLoader::stop() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  space_.notify_all();
  if (worker_.joinable()) worker_.join();
  queue_.clear();
  wait_for_uploads();
  stop_ = false;
  error_ = nullptr;
}

LoaderPosition DataLoader::position() const {
  if (running_iteration_ == 0) return {epoch_, start_batch_};
  if (next_batch_ >= num_batches()) return {epoch_, 0};
  return {epoch_ - 1, next_batch_};
}

void DataLoader::restore(const LoaderPosition& position) {
  if (running_iteration_ != 0)
    fail("DataLoader: restore() while an iteration is running (epoch {}, batch {} of {})", epoch_ - 1, next_batch_,
         num_batches());
  if (position.epoch < 0 || position.batch < 0 || position.batch >= std::max<int64_t>(num_batches(), 1))
    fail("DataLoader: position (epoch {}, batch {}) out of range for {} batches per epoch", position.epoch,
         position.batch, num_batches());
  epoch_ = position.epoch;
  start_batch_ = position.batch;
}

void DataLoader::finish_iteration(uint64_t iteration) {
  if (iteration != 0 && iteration == running_iteration_) running_iteration_ = 0;
}

DataLoader::Iterator DataLoader::begin() {
  // NOTE: a second begin() would restart the shared position and silently end the outer loop early.
  if (running_iteration_ != 0)
    fail("DataLoader: a second iteration started while one is running (epoch {}, batch {} of {}); a loader "
         "runs one loop at a time: finish or leave the outer loop first, or use a second DataLoader",
         epoch_ - 1, next_batch_, num_batches());
  stop();
  order_ = epoch_order(epoch_++);
  next_batch_ = start_batch_;
  start_batch_ = 0;
  running_iteration_ = ++iterations_;
  if (options_.prefetch > 0) {
    worker_ = std::thread([this, first = next_batch_] {
      try {
        for (int64_t i = first; i < num_batches(); ++i) {
          Prepared batch = assemble_batch(i);
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
  Iterator it(this, running_iteration_);
  ++it;
  return it;
}

std::optional<Batch> DataLoader::next() {
  if (next_batch_ >= num_batches()) {
    running_iteration_ = 0;
    return std::nullopt;
  }
  const int64_t index = next_batch_++;
  if (options_.prefetch == 0) return make_batch(index);
  std::unique_lock lock(mutex_);
  ready_.wait(lock, [&] { return !queue_.empty() || error_; });
  if (queue_.empty() && error_) std::rethrow_exception(error_);
  Prepared prepared = std::move(queue_.front());
  queue_.pop_front();
  space_.notify_one();
  lock.unlock();
  // The compute stream waits (on the GPU) for the upload before the caller's first kernel reads it.
  if (prepared.uploaded) prepared.uploaded->make_compute_wait();
  return std::move(prepared.batch);
}

DataLoader::Iterator::Iterator(Iterator&& other) noexcept
    : loader_(other.loader_), iteration_(other.iteration_), end_(other.end_), current_(std::move(other.current_)) {
  other.iteration_ = 0;
}

DataLoader::Iterator::~Iterator() { loader_->finish_iteration(iteration_); }

DataLoader::Iterator& DataLoader::Iterator::operator++() {
  std::optional<Batch> batch = loader_->next();
  if (batch) current_ = std::move(*batch);
  else end_ = true;
  return *this;
}

}  // namespace vgrad::data

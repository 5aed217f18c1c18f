// DistributedDataParallel: buckets, the backward hooks that fill them, and the
// communication thread that all-reduces them while the rest of backward runs.
#include "distributed/data_parallel.h"

#include <chrono>

#include "core/creation.h"
#include "core/error.h"
#include "core/grad_mode.h"

namespace vgrad::distributed {

DistributedDataParallel::DistributedDataParallel(nn::Module& module, std::shared_ptr<Communicator> communicator,
                                                 DataParallelOptions options)
    : module_(module), communicator_(std::move(communicator)), options_(options) {
  if (!communicator_) fail("DistributedDataParallel: the communicator is null");
  for (auto& [name, parameter] : module_.named_parameters())
    if (parameter.requires_grad()) parameters_.emplace_back(name, parameter);
  check_same_model_everywhere();
  for (auto& [name, parameter] : module_.named_parameters()) communicator_->broadcast(parameter.detach(), 0);

  // Reverse order: backward reaches the last layers first. A bucket holds one dtype on one device.
  bucket_of_.resize(parameters_.size());
  size_t bucket_bytes = 0;
  for (size_t i = parameters_.size(); i-- > 0;) {
    const Tensor& parameter = parameters_[i].second;
    const size_t bytes = size_t(parameter.numel()) * dtype_size(parameter.dtype());
    const size_t cap = buckets_.size() <= 1 ? options_.first_bucket_cap_bytes : options_.bucket_cap_bytes;
    const bool fits = !buckets_.empty() && bucket_bytes + bytes <= cap &&
                      parameters_[buckets_.back().parameters.front()].second.dtype() == parameter.dtype() &&
                      parameters_[buckets_.back().parameters.front()].second.device() == parameter.device();
    if (!fits) {
      buckets_.emplace_back();
      bucket_bytes = 0;
    }
    Bucket& bucket = buckets_.back();
    bucket.offsets.push_back(bucket_bytes / dtype_size(parameter.dtype()));
    bucket.parameters.push_back(i);
    bucket_bytes += bytes;
    bucket_of_[i] = buckets_.size() - 1;
  }
  for (Bucket& bucket : buckets_) {
    const Tensor& first = parameters_[bucket.parameters.front()].second;
    const Tensor& last = parameters_[bucket.parameters.back()].second;
    bucket.flat = Tensor::empty({bucket.offsets.back() + last.numel()}, first.dtype(), first.device());
    bucket.waiting = bucket.parameters.size();
  }
  ready_.assign(parameters_.size(), false);
  for (size_t i = 0; i < parameters_.size(); ++i)
    hook_ids_.push_back(parameters_[i].second.add_post_accumulate_grad_hook([this, i](TensorImpl&) { on_gradient_ready(i); }));
  if (options_.overlap && communicator_->world_size() > 1) thread_ = std::thread([this] { communicate(); });
}

DistributedDataParallel::~DistributedDataParallel() {
  for (size_t i = 0; i < parameters_.size(); ++i) parameters_[i].second.remove_post_accumulate_grad_hook(hook_ids_[i]);
  {
    // NOTE: buckets already launched must still go out: the peers launched them too and
    // wait in those all-reduces (a round left unfinished by an error, say).
    std::unique_lock lock(mutex_);
    if (thread_.joinable())
      done_.wait(lock, [&] { return error_ || completed_ >= buckets_.size() || !buckets_[completed_].launched; });
    stopping_ = true;
  }
  queued_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void DistributedDataParallel::check_same_model_everywhere() {
  // (count, elements, hash of names, shapes and dtypes) per rank: a different model on
  // one rank would otherwise pair unrelated buffers in the all-reduces.
  uint64_t hash = 1469598103934665603ull;  // FNV-1a
  auto mix = [&hash](const std::string& text) {
    for (unsigned char c : text) hash = (hash ^ c) * 1099511628211ull;
  };
  int64_t elements = 0;
  for (const auto& [name, parameter] : module_.named_parameters()) {
    mix(name + shape_str(parameter.shape()) + dtype_name(parameter.dtype()));
    elements += parameter.numel();
  }
  const int64_t count = int64_t(module_.named_parameters().size());
  Tensor mine = tensor(std::vector<int64_t>{count, elements, int64_t(hash)}, {3});
  const std::vector<int64_t> all = communicator_->all_gather(mine.to(communicator_->device())).to_vector<int64_t>();
  for (int rank = 1; rank < communicator_->world_size(); ++rank)
    if (!std::equal(all.begin(), all.begin() + 3, all.begin() + 3 * rank))
      fail("DistributedDataParallel: rank {}'s model differs from rank 0's: {} parameters ({} elements) against {} "
           "({} elements), or the same counts under other names, shapes or dtypes; every rank must build the same model",
           rank, all[3 * rank], all[3 * rank + 1], all[0], all[1]);
}

void DistributedDataParallel::on_gradient_ready(size_t parameter) {
  if (no_sync_depth_ > 0) return;
  if (ready_[parameter])
    fail("DistributedDataParallel: {}'s gradient arrived twice before finish_gradient_sync() (backward() ran twice); "
         "wrap the micro-batches that only accumulate in no_sync()",
         parameters_[parameter].first);
  ready_[parameter] = true;
  const size_t bucket = bucket_of_[parameter];
  if (--buckets_[bucket].waiting == 0) launch(bucket);
}

void DistributedDataParallel::launch(size_t index) {
  Bucket& bucket = buckets_[index];
  if (communicator_->world_size() == 1 || !thread_.joinable()) bucket.launched = true;
  if (communicator_->world_size() == 1) return;
  NoGradGuard no_grad;
  for (size_t j = 0; j < bucket.parameters.size(); ++j) {
    const Tensor grad = parameters_[bucket.parameters[j]].second.grad();
    bucket.flat.narrow(0, bucket.offsets[j], grad.numel()).copy_(grad.reshape({grad.numel()}));
  }
  if (!thread_.joinable()) return;  // no overlap: finish_gradient_sync() all-reduces
  {
    std::lock_guard lock(mutex_);  // the thread reads `launched`
    bucket.launched = true;
  }
  queued_.notify_one();
}

void DistributedDataParallel::all_reduce_bucket(size_t index) {
  const auto start = std::chrono::steady_clock::now();
  try {
    communicator_->all_reduce(buckets_[index].flat, Reduction::Sum);
  } catch (const std::exception& e) {
    const Bucket& bucket = buckets_[index];
    fail("DistributedDataParallel: all-reduce of gradient bucket {} ({} parameters from {}, {} elements) failed: {}",
         index, bucket.parameters.size(), parameters_[bucket.parameters.front()].first, bucket.flat.numel(), e.what());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::lock_guard lock(mutex_);
  all_reduce_seconds_ += seconds;
}

void DistributedDataParallel::communicate() {
  // Buckets go out in index order on every rank (collectives must pair up), whatever
  // order their gradients became ready in.
  std::unique_lock lock(mutex_);
  while (true) {
    queued_.wait(lock, [&] {
      return stopping_ || (!error_ && completed_ < buckets_.size() && buckets_[completed_].launched);
    });
    if (stopping_) return;
    const size_t index = completed_;
    lock.unlock();
    std::exception_ptr error;
    try {
      all_reduce_bucket(index);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    error_ = error;
    ++completed_;
    done_.notify_all();
  }
}

void DistributedDataParallel::finish_gradient_sync() {
  if (no_sync_depth_ > 0)
    fail("DistributedDataParallel: finish_gradient_sync() inside no_sync(): gradients are not being synchronised "
         "there; call it after the backward() that follows the no_sync() scope");
  const auto start = std::chrono::steady_clock::now();
  // Buckets that were all launched from the first on; the thread stops at the first gap.
  size_t launched_prefix = 0;
  while (launched_prefix < buckets_.size() && buckets_[launched_prefix].launched) ++launched_prefix;
  std::exception_ptr error;
  if (thread_.joinable()) {
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return completed_ >= launched_prefix || error_; });
    error = std::exchange(error_, nullptr);
    stats_.all_reduce_seconds += std::exchange(all_reduce_seconds_, 0.0);
  }
  stats_.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // Every parameter must have had its gradient this round.
  std::vector<std::string> missing;
  for (size_t i = 0; i < parameters_.size(); ++i)
    if (!ready_[i]) missing.push_back(parameters_[i].first);
  auto reset_round = [&] {
    std::lock_guard lock(mutex_);
    std::fill(ready_.begin(), ready_.end(), false);
    for (Bucket& bucket : buckets_) {
      bucket.launched = false;
      bucket.waiting = bucket.parameters.size();
    }
    completed_ = 0;
  };
  if (error) {
    reset_round();
    std::rethrow_exception(error);
  }
  if (!missing.empty()) {
    reset_round();
    fail("DistributedDataParallel: parameter {}{} received no gradient since the last finish_gradient_sync() "
         "(rank {}): {}; unused parameters are not supported (every rank must produce every gradient, or the "
         "all-reduces would not pair up): leave them out of the model or give them requires_grad=false",
         missing.front(), missing.size() > 1 ? fmt::format(" (and {} more)", missing.size() - 1) : "",
         communicator_->rank(),
         missing.size() == parameters_.size() ? "no backward() ran since then" : "it was not used in the forward pass");
  }
  if (communicator_->world_size() > 1) {
    NoGradGuard no_grad;
    const double scale = 1.0 / communicator_->world_size();
    for (size_t index = 0; index < buckets_.size(); ++index) {
      Bucket& bucket = buckets_[index];
      if (!thread_.joinable()) all_reduce_bucket(index);
      bucket.flat.mul_(scale);
      for (size_t j = 0; j < bucket.parameters.size(); ++j) {
        Tensor grad = parameters_[bucket.parameters[j]].second.grad();
        grad.copy_(bucket.flat.narrow(0, bucket.offsets[j], grad.numel()).view(grad.shape()));
      }
      stats_.bytes_all_reduced += bucket.flat.numel() * int64_t(dtype_size(bucket.flat.dtype()));
    }
    if (!thread_.joinable()) {
      std::lock_guard lock(mutex_);
      stats_.all_reduce_seconds += std::exchange(all_reduce_seconds_, 0.0);
    }
    ++stats_.syncs;
  }
  reset_round();
}

bool DistributedDataParallel::backward(optim::GradientAccumulation& accumulation, const Tensor& loss) {
  if (accumulation.pending() + 1 < accumulation.steps()) {
    auto no_sync_scope = no_sync();  // not the group's last micro-batch: accumulate locally
    return accumulation.backward(loss);
  }
  const bool complete = accumulation.backward(loss);
  finish_gradient_sync();
  return complete;
}

bool DistributedDataParallel::finish_accumulation(optim::GradientAccumulation& accumulation) {
  if (accumulation.ready()) return true;  // complete, and synchronised by backward()
  if (!accumulation.finish()) return false;
  sync_gradients();
  return true;
}

void DistributedDataParallel::sync_gradients() {
  if (no_sync_depth_ > 0) fail("DistributedDataParallel: sync_gradients() inside no_sync()");
  for (size_t i = 0; i < parameters_.size(); ++i)
    if (!parameters_[i].second.grad().defined())
      fail("DistributedDataParallel: sync_gradients(): parameter {} has no gradient (rank {}); unused parameters are "
           "not supported",
           parameters_[i].first, communicator_->rank());
  // What the backward hooks would have done, for every parameter whose hook has not fired this round.
  for (size_t i = 0; i < parameters_.size(); ++i)
    if (!ready_[i]) on_gradient_ready(i);
  finish_gradient_sync();
}

std::vector<std::vector<std::string>> DistributedDataParallel::bucket_parameter_names() const {
  std::vector<std::vector<std::string>> names;
  for (const Bucket& bucket : buckets_) {
    names.emplace_back();
    for (size_t parameter : bucket.parameters) names.back().push_back(parameters_[parameter].first);
  }
  return names;
}

}  // namespace vgrad::distributed

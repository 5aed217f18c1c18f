// Storage: memory from the device's caching allocator (or a CUDA graph's pool), returned to it on destruction.
#include "core/storage.h"

#include "core/allocator.h"
#include "core/backend.h"

namespace vgrad {

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  Backend& backend = backend_for(device);
  graph_pool_ = backend.capture_pool();
  pool_ = graph_pool_ ? graph_pool_.get() : &backend.allocator();
  data_ = pool_->allocate(nbytes == 0 ? 1 : nbytes);
}

Storage::Storage(size_t nbytes, Device device, CachingAllocator& pool) : pool_(&pool), nbytes_(nbytes), device_(device) {
  data_ = pool_->allocate(nbytes == 0 ? 1 : nbytes);
}

Storage::~Storage() { pool_->deallocate(data_, nbytes_ == 0 ? 1 : nbytes_); }

}  // namespace vgrad

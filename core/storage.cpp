// Storage: memory from the device's caching allocator, returned to it on destruction.
#include "core/storage.h"

#include "core/backend.h"

namespace vgrad {

Storage::Storage(size_t nbytes, Device device) : Storage(nbytes, device, backend_for(device).allocator()) {}

Storage::Storage(size_t nbytes, Device device, CachingAllocator& pool) : pool_(&pool), nbytes_(nbytes), device_(device) {
  data_ = pool_->allocate(nbytes == 0 ? 1 : nbytes);
}

Storage::~Storage() { pool_->deallocate(data_, nbytes_ == 0 ? 1 : nbytes_); }

}  // namespace vgrad

// Storage: memory from the device's caching allocator (or a CUDA graph's pool), returned to it on destruction.
#include "core/storage.h"

#include "core/allocator.h"
#include "core/backend.h"

namespace vgrad {

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  Backend& backend = backend_for(device);
  pool_ = backend.capture_pool();
  data_ = (pool_ ? *pool_ : backend.allocator()).allocate(nbytes == 0 ? 1 : nbytes);
}

Storage::~Storage() {
  CachingAllocator& allocator = pool_ ? *pool_ : backend_for(device_).allocator();
  allocator.deallocate(data_, nbytes_ == 0 ? 1 : nbytes_);
}

}  // namespace vgrad

// Storage: memory from the device's caching allocator, returned to it on destruction.
#include "core/storage.h"

#include "core/backend.h"

namespace vgrad {

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  data_ = backend_for(device).allocator().allocate(nbytes == 0 ? 1 : nbytes);
}

Storage::~Storage() { backend_for(device_).allocator().deallocate(data_, nbytes_ == 0 ? 1 : nbytes_); }

}  // namespace vgrad

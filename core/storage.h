// A reference-counted block of device memory shared by a tensor and its views,
// with the version counter that autograd uses to detect in-place changes.
// Memory comes from the device's caching allocator (see allocator.h), never malloc, or
// from a pool the creator names (a GPU's upload pool, page-locked host memory).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/device.h"

namespace vgrad {

class CachingAllocator;

class Storage {
 public:
  // Allocates from the device's caching allocator (a CUDA graph's pool during its capture).
  Storage(size_t nbytes, Device device);
  // From `pool` (which must hand out `device` memory and outlive the storage).
  Storage(size_t nbytes, Device device, CachingAllocator& pool);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  const CachingAllocator& pool() const { return *pool_; }

  // Bumped by every in-place write; autograd compares it with the value saved.
  uint64_t version() const { return version_; }
  void bump_version() { ++version_; }

 private:
  CachingAllocator* pool_;  // where data_ came from and goes back
  // The CUDA graph pool pool_ is, kept alive while this storage lives (Backend::capture_pool);
  // null otherwise.
  std::shared_ptr<CachingAllocator> graph_pool_;
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  uint64_t version_ = 0;
};

}  // namespace vgrad

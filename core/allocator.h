// Caching allocators: freed blocks are kept in per-size free lists and reused,
// so a steady-state training step makes no system allocation (malloc/cudaMalloc).
// The counters are public so tests and benchmarks can check exactly that, and they are
// the memory accounting users know from torch.cuda.memory_allocated & co: bytes held by
// live tensors (rounded to the cache's block sizes), their peak, and bytes reserved.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "core/device.h"

namespace vgrad {

struct MemoryStats {
  uint64_t system_allocations = 0;  // calls that reached malloc / cudaMalloc
  uint64_t cache_hits = 0;          // allocations served from the cache
  uint64_t bytes_in_use = 0;        // held by live storages
  uint64_t peak_bytes_in_use = 0;
  uint64_t bytes_cached = 0;        // free blocks kept for reuse
  // Held from the system: in use plus cached (torch.cuda.memory_reserved).
  uint64_t bytes_reserved() const { return bytes_in_use + bytes_cached; }
};

// Size-bucketed cache over a raw allocate/free pair. Thread-safe.
class CachingAllocator {
 public:
  using RawAlloc = void* (*)(size_t bytes, int device_index);
  using RawFree = void (*)(void* ptr, int device_index);
  CachingAllocator(RawAlloc raw_alloc, RawFree raw_free, int device_index);
  ~CachingAllocator();

  void* allocate(size_t bytes);
  void deallocate(void* ptr, size_t bytes);
  void release_cached();  // returns every cached block to the system
  MemoryStats stats() const;
  void reset_peak();  // the peak restarts from the bytes in use now
  static size_t round_size(size_t bytes);  // the bucket a request falls in

 private:
  RawAlloc raw_alloc_;
  RawFree raw_free_;
  int device_index_;
  mutable std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_blocks_;
  MemoryStats stats_;
};

MemoryStats memory_stats(Device device);
void empty_cache(Device device);
// Per device, as PyTorch's torch.cuda.* of the same names (for the CPU too).
inline uint64_t memory_allocated(Device device) { return memory_stats(device).bytes_in_use; }
inline uint64_t max_memory_allocated(Device device) { return memory_stats(device).peak_bytes_in_use; }
inline uint64_t memory_reserved(Device device) { return memory_stats(device).bytes_reserved(); }
void reset_peak_memory(Device device);
// A few lines: allocated now and peak, reserved and cached, system allocations and cache
// hits (a short torch.cuda.memory_summary).
std::string memory_summary(Device device);

}  // namespace vgrad

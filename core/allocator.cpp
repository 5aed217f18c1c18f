// The caching allocator: per-size free lists over a raw allocate/free pair (each device supplies its own).
#include "core/allocator.h"

#include <cstdlib>
#include <new>

#include "core/backend.h"
#include "core/error.h"
#include "core/profiler.h"

namespace vgrad {

CachingAllocator::CachingAllocator(RawAlloc raw_alloc, RawFree raw_free, int device_index)
    : raw_alloc_(raw_alloc), raw_free_(raw_free), device_index_(device_index) {}

CachingAllocator::~CachingAllocator() { release_cached(); }

// Small blocks round to 512 bytes; larger ones to 1/8 of their power of two, so
// the waste stays under 12.5% while batch-shaped buffers share buckets.
size_t CachingAllocator::round_size(size_t bytes) {
  if (bytes <= 512) return 512;
  size_t power = 1;
  while (power < bytes) power <<= 1;
  const size_t step = power >= 4096 ? power / 8 : 512;
  return (bytes + step - 1) / step * step;
}

void* CachingAllocator::allocate(size_t bytes) {
  const size_t size = round_size(bytes);
  profiler::note_allocation(static_cast<int64_t>(bytes));
  std::lock_guard lock(mutex_);
  void* ptr = nullptr;
  auto it = free_blocks_.find(size);
  if (it != free_blocks_.end() && !it->second.empty()) {
    ptr = it->second.back();
    it->second.pop_back();
    stats_.cache_hits++;
    stats_.bytes_cached -= size;
  } else {
    ptr = raw_alloc_(size, device_index_);
    if (ptr == nullptr && stats_.bytes_cached > 0) {  // out of memory: give the cache back and retry
      for (auto& [block_size, blocks] : free_blocks_)
        for (void* block : blocks) raw_free_(block, device_index_);
      free_blocks_.clear();
      stats_.bytes_cached = 0;
      ptr = raw_alloc_(size, device_index_);
    }
    if (ptr == nullptr) fail("allocator: out of memory allocating {} bytes ({} bytes in use)", size, stats_.bytes_in_use);
    stats_.system_allocations++;
  }
  stats_.bytes_in_use += size;
  if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  return ptr;
}

void CachingAllocator::deallocate(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  profiler::note_deallocation(static_cast<int64_t>(bytes));
  const size_t size = round_size(bytes);
  std::lock_guard lock(mutex_);
  free_blocks_[size].push_back(ptr);
  stats_.bytes_in_use -= size;
  stats_.bytes_cached += size;
}

void CachingAllocator::release_cached() {
  std::lock_guard lock(mutex_);
  for (auto& [size, blocks] : free_blocks_)
    for (void* block : blocks) raw_free_(block, device_index_);
  free_blocks_.clear();
  stats_.bytes_cached = 0;
}

MemoryStats CachingAllocator::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard lock(mutex_);
  stats_.peak_bytes_in_use = stats_.bytes_in_use;
}

MemoryStats memory_stats(Device device) { return backend_for(device).allocator().stats(); }
void empty_cache(Device device) { backend_for(device).allocator().release_cached(); }
void reset_peak_memory(Device device) { backend_for(device).allocator().reset_peak(); }

std::string memory_summary(Device device) {
  const MemoryStats s = memory_stats(device);
  const auto mb = [](uint64_t bytes) { return double(bytes) / (1024.0 * 1024.0); };
  return fmt::format(
      "memory on {}: allocated {:.2f} MiB (peak {:.2f} MiB), reserved {:.2f} MiB ({:.2f} MiB cached, free for "
      "reuse)\n  system allocations {}, served from the cache {}\n",
      device.str(), mb(s.bytes_in_use), mb(s.peak_bytes_in_use), mb(s.bytes_reserved()), mb(s.bytes_cached),
      s.system_allocations, s.cache_hits);
}

}  // namespace vgrad

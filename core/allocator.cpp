// The caching allocator: per-size free lists over a raw allocate/free pair (each device
// supplies its own), and the pending list of a pool with fences.
#include "core/allocator.h"

#include <cstdlib>
#include <new>
#include <utility>

#include "core/backend.h"
#include "core/error.h"
#include "core/profiler.h"

namespace vgrad {

bool MemoryLimit::try_hold(uint64_t bytes) {
  uint64_t held = held_.load();
  do {
    const uint64_t limit = limit_.load();
    if (limit != 0 && (held > limit || bytes > limit - held)) return false;
  } while (!held_.compare_exchange_weak(held, held + bytes));
  return true;
}

CachingAllocator::CachingAllocator(RawAlloc raw_alloc, RawFree raw_free, int device_index, MemoryLimit& limit,
                                   const FenceHooks* fences)
    : raw_alloc_(raw_alloc), raw_free_(raw_free), device_index_(device_index), limit_(limit), fences_(fences) {}

CachingAllocator::~CachingAllocator() {
  std::lock_guard lock(mutex_);
  if (!pending_.empty()) collect_pending_locked(true);
  release_free_locked();
}

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
  std::unique_lock lock(mutex_);
  if (!pending_.empty()) collect_pending_locked(false);
  void* ptr = nullptr;
  auto it = free_blocks_.find(size);
  if (it != free_blocks_.end() && !it->second.empty()) {
    ptr = it->second.back();
    it->second.pop_back();
    stats_.cache_hits++;
    stats_.bytes_cached -= size;
  } else {
    ptr = system_allocate_locked(size, false);
    if (ptr == nullptr) {
      // Out of memory: wait for the pending blocks, give this pool's cache and the
      // siblings' back, and retry once.
      if (keep_cache_why_ == nullptr && stats_.bytes_cached > 0) {
        collect_pending_locked(true);
        release_free_locked();
      }
      if (keep_cache_why_ == nullptr && !siblings_.empty()) {
        lock.unlock();  // a sibling running out at the same time releases this pool
        // A sibling that keeps its cache now (a capture began meanwhile) gives nothing back.
        for (CachingAllocator* sibling : siblings_) (void)sibling->release_cached();
        lock.lock();
      }
      ptr = system_allocate_locked(size, true);
    }
    if (ptr == nullptr && limit_.limit() != 0 && size + limit_.held() > limit_.limit())
      fail(
          "allocator: out of memory allocating {} bytes: the device's memory limit is {} bytes and {} are held from "
          "the system ({} in use in this pool; set_memory_limit changes the limit)",
          size, limit_.limit(), limit_.held(), stats_.bytes_in_use);
    if (ptr == nullptr) fail("allocator: out of memory allocating {} bytes ({} bytes in use)", size, stats_.bytes_in_use);
    stats_.system_allocations++;
  }
  stats_.bytes_in_use += size;
  if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  return ptr;
}

void* CachingAllocator::system_allocate_locked(size_t size, bool last_try) {
  if (!limit_.try_hold(size)) return nullptr;
  void* ptr = nullptr;
  try {
    ptr = raw_alloc_(size, device_index_, last_try);
  } catch (...) {
    limit_.release(size);
    throw;
  }
  if (ptr == nullptr) limit_.release(size);
  return ptr;
}

void CachingAllocator::deallocate(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  profiler::note_deallocation(static_cast<int64_t>(bytes));
  const size_t size = round_size(bytes);
  void* fence = fences_ != nullptr ? fences_->record(device_index_) : nullptr;
  std::lock_guard lock(mutex_);
  stats_.bytes_in_use -= size;
  stats_.bytes_cached += size;
  if (fence == nullptr) {
    free_blocks_[size].push_back(ptr);
    return;
  }
  // NOTE: a push_back that throws (no host memory) would lose the block and leak the
  // fence; wait for it instead, so the block is simply free.
  try {
    pending_.push_back({ptr, size, fence});
    stats_.bytes_pending += size;
  } catch (...) {
    fences_->wait(fence, device_index_);
    fences_->release(fence, device_index_);
    free_blocks_[size].push_back(ptr);
  }
}

// Oldest first, stopping at the first fence not done: a pool's fences are recorded on one
// stream, so they are done in order, and polling stays O(1) per allocation however far
// the device is behind.
void CachingAllocator::collect_pending_locked(bool wait) {
  while (!pending_.empty()) {
    const PendingBlock block = pending_.front();
    if (wait) fences_->wait(block.fence, device_index_);
    else if (!fences_->done(block.fence, device_index_)) return;
    fences_->release(block.fence, device_index_);
    pending_.pop_front();
    free_blocks_[block.size].push_back(block.ptr);
    stats_.bytes_pending -= block.size;
  }
}

void CachingAllocator::release_free_locked() {
  for (auto& [size, blocks] : free_blocks_)
    for (void* block : blocks) {
      raw_free_(block, device_index_);
      limit_.release(size);
      stats_.bytes_cached -= size;
    }
  free_blocks_.clear();
}

const char* CachingAllocator::release_cached() {
  std::lock_guard lock(mutex_);
  if (keep_cache_why_ != nullptr) return keep_cache_why_;
  if (!pending_.empty()) collect_pending_locked(true);
  release_free_locked();
  return nullptr;
}

void CachingAllocator::set_siblings(std::vector<CachingAllocator*> siblings) {
  std::lock_guard lock(mutex_);
  siblings_ = std::move(siblings);
}

void CachingAllocator::keep_cache(const char* why) {
  std::lock_guard lock(mutex_);
  keep_cache_why_ = why;
}

MemoryStats CachingAllocator::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard lock(mutex_);
  stats_.peak_bytes_in_use = stats_.bytes_in_use;
}

MemoryStats& operator+=(MemoryStats& total, const MemoryStats& pool) {
  total.system_allocations += pool.system_allocations;
  total.cache_hits += pool.cache_hits;
  total.bytes_in_use += pool.bytes_in_use;
  total.peak_bytes_in_use += pool.peak_bytes_in_use;
  total.bytes_cached += pool.bytes_cached;
  total.bytes_pending += pool.bytes_pending;
  return total;
}

namespace {

template <class Visit> void for_each_pool(Device device, Visit visit) {
  for (CachingAllocator* pool : backend_for(device).pools()) visit(*pool);
}

}  // namespace

MemoryStats memory_stats(Device device) {
  MemoryStats total;
  for_each_pool(device, [&](CachingAllocator& pool) { total += pool.stats(); });
  return total;
}
void empty_cache(Device device) {
  for_each_pool(device, [&](CachingAllocator& pool) {
    if (const char* why = pool.release_cached())
      fail("empty_cache({}): nothing more was given back: {}", device.str(), why);
  });
}
void set_memory_limit(Device device, uint64_t bytes) { backend_for(device).memory_limit().set(bytes); }
uint64_t memory_limit(Device device) { return backend_for(device).memory_limit().limit(); }
void reset_peak_memory(Device device) {
  for_each_pool(device, [](CachingAllocator& pool) { pool.reset_peak(); });
}

std::string memory_summary(Device device) {
  const MemoryStats s = memory_stats(device);
  const uint64_t limit = memory_limit(device);
  const auto mb = [](uint64_t bytes) { return double(bytes) / (1024.0 * 1024.0); };
  return fmt::format(
             "memory on {}: allocated {:.2f} MiB (peak {:.2f} MiB), reserved {:.2f} MiB ({:.2f} MiB cached, free for "
             "reuse)\n  system allocations {}, served from the cache {}\n",
             device.str(), mb(s.bytes_in_use), mb(s.peak_bytes_in_use), mb(s.bytes_reserved()), mb(s.bytes_cached),
             s.system_allocations, s.cache_hits) +
         (limit != 0 ? fmt::format("  limit {:.2f} MiB (set_memory_limit)\n", mb(limit)) : std::string());
}

}  // namespace vgrad

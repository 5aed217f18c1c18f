// Caching allocators: freed blocks are kept in per-size free lists and reused,
// so a steady-state training step makes no system allocation (malloc/cudaMalloc).
// The counters are public so tests and benchmarks can check exactly that, and they are
// the memory accounting users know from torch.cuda.memory_allocated & co: bytes held by
// live tensors (rounded to the cache's block sizes), their peak, and bytes reserved.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
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
  uint64_t bytes_cached = 0;        // free blocks kept for reuse (the pending ones included)
  uint64_t bytes_pending = 0;       // of those, freed but still in use on the device (their fence is not done)
  // Held from the system: in use plus cached (torch.cuda.memory_reserved).
  uint64_t bytes_reserved() const { return bytes_in_use + bytes_cached; }
};

// A pool's fences, for blocks that the device may still use after the host frees them (a
// block of a GPU's copy-stream pool, read by kernels on its compute stream). On each free
// the pool records a fence where that use is queued, keeps the block pending, and reuses it
// only once the fence is done (docs/gpu.md, "Streams"). A pool's fences must be done in the
// order recorded (one stream): allocate polls the oldest first and stops at one not done.
// All four must not throw.
struct FenceHooks {
  void* (*record)(int device_index);             // after the work queued so far; nullptr: nothing to wait for
  bool (*done)(void* fence, int device_index);   // polled by allocate; never blocks
  void (*wait)(void* fence, int device_index);   // blocks (only when out of memory, and in release_cached)
  void (*release)(void* fence, int device_index);  // after done or wait: the fence is not used again
};

// A cap on the bytes that a device's pools hold from the system together (the device's
// reserved bytes), as torch.cuda.set_per_process_memory_fraction: an allocation beyond it is
// out of memory, handled as a refusal of the system (caches given back, one retry), with an
// error naming the limit. Counts the bytes held whether or not a limit is set. Thread-safe.
class MemoryLimit {
 public:
  void set(uint64_t bytes) { limit_.store(bytes); }  // 0: no limit
  uint64_t limit() const { return limit_.load(); }
  uint64_t held() const { return held_.load(); }
  // Counts `bytes` as held; false (counting nothing) when that would pass the limit.
  bool try_hold(uint64_t bytes);
  void release(uint64_t bytes) { held_.fetch_sub(bytes); }

 private:
  std::atomic<uint64_t> limit_{0};
  std::atomic<uint64_t> held_{0};
};

// Size-bucketed cache over a raw allocate/free pair, optionally with fences. Thread-safe.
class CachingAllocator {
 public:
  // Returns nullptr when the system has no memory. `last_try` is set on the one retry, after
  // the pool gave back what it could: a raw allocator may then throw its own error instead
  // (CUDA's names the device's free memory).
  using RawAlloc = void* (*)(size_t bytes, int device_index, bool last_try);
  using RawFree = void (*)(void* ptr, int device_index);
  // `limit`: the device's, shared by its pools; it must outlive this pool.
  CachingAllocator(RawAlloc raw_alloc, RawFree raw_free, int device_index, MemoryLimit& limit,
                   const FenceHooks* fences = nullptr);
  ~CachingAllocator();

  void* allocate(size_t bytes);
  void deallocate(void* ptr, size_t bytes);
  // Returns every cached block to the system, waiting first for the pending ones' fences,
  // and nullptr; a pool that keeps its cache (keep_cache) gives nothing back and returns why.
  const char* release_cached();
  // The device's other pools (a GPU's compute and copy-stream pools hold each other): when
  // the system refuses an allocation, this pool gives back its own cache and theirs before
  // its retry, as one cache per device would. Set before the pool is used; they must
  // outlive it. They are released without this pool's lock held, so two pools running out
  // at once cannot deadlock.
  void set_siblings(std::vector<CachingAllocator*> siblings);
  // While `why` is set, the pool gives no cache back to the system: running out, it only
  // retries (nor do its siblings give theirs), and release_cached() returns `why`. Always for a
  // CUDA graph's private pool, whose free blocks are addresses the graph's replays still
  // write; and for a GPU's other pools while a capture is underway there, as PyTorch's
  // allocator does (no cudaFree may run inside a capture). nullptr ends it; `why` must outlive
  // the setting (a string literal). The destructor gives everything back regardless.
  void keep_cache(const char* why);
  MemoryStats stats() const;
  void reset_peak();  // the peak restarts from the bytes in use now
  static size_t round_size(size_t bytes);  // the bucket a request falls in

 private:
  struct PendingBlock {
    void* ptr;
    size_t size;
    void* fence;
  };
  // With the lock held: the pending blocks whose fence is done, oldest first up to the
  // first not done (all of them, waiting, when `wait`), move to the free lists; and for
  // release, every free block goes back to the system.
  void collect_pending_locked(bool wait);
  void release_free_locked();
  // A block from the system within the limit; nullptr when refused (by either).
  void* system_allocate_locked(size_t size, bool last_try);

  RawAlloc raw_alloc_;
  RawFree raw_free_;
  int device_index_;
  MemoryLimit& limit_;
  const FenceHooks* fences_;  // nullptr: a freed block is free at once
  std::vector<CachingAllocator*> siblings_;
  const char* keep_cache_why_ = nullptr;  // keep_cache
  mutable std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_blocks_;
  std::deque<PendingBlock> pending_;  // in the order freed
  MemoryStats stats_;
};

// Stats of several pools added up (a device's compute and copy-stream pools); the peak is
// the sum of the pools' peaks, an upper bound of the device's peak.
MemoryStats& operator+=(MemoryStats& total, const MemoryStats& pool);

MemoryStats memory_stats(Device device);
// Gives every cached block of the device's pools back to the system. Refused while a pool
// keeps its cache (a GPU while a CUDA graph capture is underway there): an error saying why.
void empty_cache(Device device);
// Caps the bytes `device` holds from the system (MemoryStats::bytes_reserved of its pools and
// of its CUDA graphs' pools); 0 lifts the cap. PyTorch's
// torch.cuda.set_per_process_memory_fraction(f) is set_memory_limit(device, f * total). A cap
// below what is held already makes later system allocations fail until blocks are released.
void set_memory_limit(Device device, uint64_t bytes);
uint64_t memory_limit(Device device);  // 0: none
// Per device, as PyTorch's torch.cuda.* of the same names (for the CPU too).
inline uint64_t memory_allocated(Device device) { return memory_stats(device).bytes_in_use; }
inline uint64_t max_memory_allocated(Device device) { return memory_stats(device).peak_bytes_in_use; }
inline uint64_t memory_reserved(Device device) { return memory_stats(device).bytes_reserved(); }
void reset_peak_memory(Device device);
// A few lines: allocated now and peak, reserved and cached, system allocations and cache
// hits (a short torch.cuda.memory_summary).
std::string memory_summary(Device device);

}  // namespace vgrad

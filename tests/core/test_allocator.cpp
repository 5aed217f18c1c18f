// Tests of the caching allocator (core/allocator.h) over a counting raw allocator:
// size buckets (round_size), reuse of freed blocks, the stats counters, release_cached,
// the out-of-memory retry, and no system allocation in a steady state; a pool with fake
// fences (a GPU's upload pool: freed blocks pending until the device is done with them);
// then the CPU's own instance under tensors. The CUDA instances are tested in tests/cuda.
#include <algorithm>
#include <cstdlib>
#include <set>
#include <vector>

#include "core/allocator.h"
#include "core/backend.h"
#include "support.h"

namespace {

using vgrad::CachingAllocator;

// The raw allocator under test: counts calls, and fails on demand (out of memory).
struct Raw {
  static inline int allocations = 0;
  static inline int frees = 0;
  static inline int refusals = 0;  // how many of the next requests fail
  static inline std::set<size_t> sizes;  // every size that reached the system
  static inline std::vector<bool> last_tries;  // each request's last_try
  static void* alloc(size_t bytes, int, bool last_try) {
    last_tries.push_back(last_try);
    if (refusals > 0) {
      --refusals;
      return nullptr;
    }
    ++allocations;
    sizes.insert(bytes);
    return std::malloc(bytes);
  }
  static void free(void* ptr, int) {
    ++frees;
    std::free(ptr);
  }
};

class Allocator : public ::testing::Test {
 protected:
  void SetUp() override {
    Raw::allocations = Raw::frees = 0;
    Raw::refusals = 0;
    Raw::sizes.clear();
    Raw::last_tries.clear();
  }
  vgrad::MemoryLimit limit;  // the device's, shared by its pools
  CachingAllocator allocator{Raw::alloc, Raw::free, 0, limit};
};

TEST(AllocatorRoundSize, BucketsSmallToHalfKilobyteLargeToAnEighthOfTheirPowerOfTwo) {
  EXPECT_EQ(CachingAllocator::round_size(0), 512u);
  EXPECT_EQ(CachingAllocator::round_size(1), 512u);
  EXPECT_EQ(CachingAllocator::round_size(512), 512u);
  EXPECT_EQ(CachingAllocator::round_size(513), 1024u);
  EXPECT_EQ(CachingAllocator::round_size(4095), 4096u);
  EXPECT_EQ(CachingAllocator::round_size(4096), 4096u);
  EXPECT_EQ(CachingAllocator::round_size(4097), 5120u);  // 8192 / 8 = 1024-byte steps
  EXPECT_EQ(CachingAllocator::round_size(1 << 20), size_t{1} << 20);
  EXPECT_EQ(CachingAllocator::round_size((1 << 20) + 1), (size_t{1} << 20) + (size_t{1} << 18));
  // Never smaller than asked; above 4 KiB the step is 1/8 of the next power of two,
  // so the waste is under 1/8 of that power (under 1/4 of the request).
  for (size_t bytes = 1; bytes < (size_t{1} << 22); bytes = bytes * 3 / 2 + 7) {
    const size_t size = CachingAllocator::round_size(bytes);
    EXPECT_GE(size, bytes);
    size_t power = 1;
    while (power < bytes) power <<= 1;
    if (bytes > 4096) {
      EXPECT_LT(size - bytes, power / 8) << bytes;
    }
    EXPECT_EQ(CachingAllocator::round_size(size), size) << "a bucket size is its own bucket: " << bytes;
  }
}

TEST_F(Allocator, ReusesAFreedBlockOfTheSameBucket) {
  void* first = allocator.allocate(1000);
  allocator.deallocate(first, 1000);
  EXPECT_EQ(allocator.allocate(1000), first);
  allocator.deallocate(first, 1000);
  EXPECT_EQ(allocator.allocate(600), first) << "600 and 1000 bytes share the 1024-byte bucket";
  void* other = allocator.allocate(2000);  // another bucket: a new block
  EXPECT_NE(other, first);
  EXPECT_EQ(Raw::allocations, 2);
  EXPECT_EQ(Raw::sizes, (std::set<size_t>{1024, 2048}));
  const vgrad::MemoryStats stats = allocator.stats();
  EXPECT_EQ(stats.system_allocations, 2u);
  EXPECT_EQ(stats.cache_hits, 2u);
  allocator.deallocate(first, 600);
  allocator.deallocate(other, 2000);
}

TEST_F(Allocator, CountsBytesInUsePeakAndCached) {
  void* a = allocator.allocate(1000);  // 1024
  void* b = allocator.allocate(5000);  // 5120
  EXPECT_EQ(allocator.stats().bytes_in_use, 1024u + 5120u);
  EXPECT_EQ(allocator.stats().peak_bytes_in_use, 1024u + 5120u);
  allocator.deallocate(b, 5000);
  vgrad::MemoryStats stats = allocator.stats();
  EXPECT_EQ(stats.bytes_in_use, 1024u);
  EXPECT_EQ(stats.peak_bytes_in_use, 1024u + 5120u);
  EXPECT_EQ(stats.bytes_cached, 5120u);
  EXPECT_EQ(Raw::frees, 0) << "a freed block stays cached";
  allocator.deallocate(a, 1000);
  stats = allocator.stats();
  EXPECT_EQ(stats.bytes_in_use, 0u);
  EXPECT_EQ(stats.bytes_cached, 1024u + 5120u);
}

TEST_F(Allocator, ReleaseCachedReturnsEveryFreeBlockAndOnlyThose) {
  void* kept = allocator.allocate(100);
  for (size_t bytes : {1000, 3000, 3000, 70000}) allocator.deallocate(allocator.allocate(bytes), bytes);
  allocator.release_cached();
  EXPECT_EQ(Raw::frees, 3) << "the two 3000-byte requests shared one block";
  EXPECT_EQ(allocator.stats().bytes_cached, 0u);
  EXPECT_EQ(allocator.stats().bytes_in_use, 512u);
  void* again = allocator.allocate(1000);  // the cache is empty: back to the system
  EXPECT_EQ(allocator.stats().cache_hits, 1u);
  EXPECT_EQ(allocator.stats().system_allocations, 5u);
  allocator.deallocate(again, 1000);
  allocator.deallocate(kept, 100);
}

TEST_F(Allocator, SteadyStateMakesNoSystemAllocation) {
  // A training step's pattern: the same sizes allocated and freed every iteration.
  for (int step = 0; step < 100; ++step) {
    void* activations = allocator.allocate(64 * 256 * 4);
    void* logits = allocator.allocate(64 * 10 * 4);
    allocator.deallocate(logits, 64 * 10 * 4);
    allocator.deallocate(activations, 64 * 256 * 4);
  }
  EXPECT_EQ(Raw::allocations, 2);
  EXPECT_EQ(allocator.stats().cache_hits, 198u);
}

TEST_F(Allocator, OutOfMemoryGivesBackTheCacheAndRetries) {
  allocator.deallocate(allocator.allocate(8000), 8000);  // 8192 bytes cached
  Raw::refusals = 1;  // the system refuses the next request once
  void* block = allocator.allocate(20000);
  EXPECT_NE(block, nullptr);
  EXPECT_EQ(Raw::last_tries.back(), true) << "the retry is the raw allocator's last try";
  EXPECT_EQ(Raw::frees, 1) << "the cached block went back before the retry";
  EXPECT_EQ(allocator.stats().bytes_cached, 0u);
  EXPECT_EQ(allocator.stats().system_allocations, 2u);
  allocator.deallocate(block, 20000);
}

TEST_F(Allocator, OutOfMemoryWithNothingCachedNamesTheSizeAndLeavesNoTrace) {
  void* in_use = allocator.allocate(1000);
  Raw::refusals = 1000;
  EXPECT_ERROR(allocator.allocate(5000), "allocator: out of memory allocating 5120 bytes (1024 bytes in use)");
  Raw::refusals = 0;
  EXPECT_EQ(allocator.stats().bytes_in_use, 1024u);
  EXPECT_EQ(allocator.stats().system_allocations, 1u);
  allocator.deallocate(in_use, 1000);
}

TEST_F(Allocator, DestructionReturnsTheCache) {
  {
    CachingAllocator scoped(Raw::alloc, Raw::free, 0, limit);
    scoped.deallocate(scoped.allocate(100), 100);
    scoped.deallocate(scoped.allocate(10000), 10000);
    EXPECT_EQ(Raw::frees, 0);
  }
  EXPECT_EQ(Raw::frees, 2);
}

// Fake fences: each is a number, done once the test says the device reached it. Records
// every call, so the tests can see which fences were polled, waited for and released.
struct Fences {
  static inline int64_t recorded = 0;  // fence k is the k-th record, 1-based
  static inline int64_t reached = 0;   // fences up to this one are done
  static inline std::set<int64_t> completed;  // and these
  static inline std::vector<int64_t> waited, released;
  static inline int64_t polls = 0;
  static inline bool refuse_record = false;  // record returns nullptr (nothing to wait for)
  static int64_t number(void* fence) { return reinterpret_cast<intptr_t>(fence); }
  static void* record(int) {
    if (refuse_record) return nullptr;
    return reinterpret_cast<void*>(static_cast<intptr_t>(++recorded));
  }
  static bool done(void* fence, int) {
    ++polls;
    return number(fence) <= reached || completed.count(number(fence)) > 0;
  }
  static void wait(void* fence, int) {
    waited.push_back(number(fence));
    reached = std::max(reached, number(fence));
  }
  static void release(void* fence, int) { released.push_back(number(fence)); }
  static constexpr vgrad::FenceHooks hooks{record, done, wait, release};
};

class FencedAllocator : public Allocator {
 protected:
  void SetUp() override {
    Allocator::SetUp();
    Fences::recorded = Fences::reached = Fences::polls = 0;
    Fences::completed.clear();
    Fences::waited.clear();
    Fences::released.clear();
    Fences::refuse_record = false;
  }
  CachingAllocator pool{Raw::alloc, Raw::free, 0, limit, &Fences::hooks};
};

TEST_F(FencedAllocator, APendingBlockIsNotReusedBeforeItsFenceAndIsAfter) {
  void* block = pool.allocate(1000);
  pool.deallocate(block, 1000);  // fence 1: the device may still read the block
  EXPECT_EQ(Fences::recorded, 1);
  void* second = pool.allocate(1000);
  EXPECT_NE(second, block) << "the fence was not done: the block must not be handed out";
  EXPECT_EQ(Raw::allocations, 2);
  EXPECT_EQ(Fences::polls, 1);
  EXPECT_TRUE(Fences::waited.empty()) << "allocate polls, it never blocks while memory is left";
  Fences::reached = 1;
  void* third = pool.allocate(600);  // the same 1024-byte bucket
  EXPECT_EQ(third, block) << "its fence is done: the block is reused";
  EXPECT_EQ(Raw::allocations, 2);
  EXPECT_EQ(Fences::released, (std::vector<int64_t>{1}));
  pool.deallocate(second, 1000);
  pool.deallocate(third, 600);
}

TEST_F(FencedAllocator, PendingBlocksAreFreedInTheOrderTheirFencesWereRecorded) {
  void* a = pool.allocate(1000);
  void* b = pool.allocate(1000);
  void* c = pool.allocate(1000);
  pool.deallocate(a, 1000);  // fence 1
  pool.deallocate(b, 1000);  // fence 2
  pool.deallocate(c, 1000);  // fence 3
  Fences::reached = 2;
  EXPECT_EQ(pool.allocate(1000), b) << "fences 1 and 2 are done: a and b are free, the last freed first";
  EXPECT_EQ(pool.allocate(1000), a);
  EXPECT_EQ(Fences::released, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(pool.stats().bytes_pending, 1024u) << "c waits for fence 3";
  Fences::polls = 0;
  void* d = pool.allocate(1000);
  EXPECT_NE(d, c);
  EXPECT_EQ(Fences::polls, 1) << "polling stops at the oldest fence not done";
  // One stream finishes its fences in order, so a later one done before an earlier is not
  // looked at: the pool keeps it pending until the earlier one is done too.
  pool.deallocate(a, 1000);  // fence 4
  Fences::completed = {4};
  void* f = pool.allocate(1000);
  EXPECT_NE(f, a);
  Fences::reached = 3;
  EXPECT_EQ(Raw::allocations, 5);
  void* e = pool.allocate(1000);
  EXPECT_EQ(e, a) << "fences 3 and 4 are done: c and a are free";
  EXPECT_EQ(pool.stats().bytes_pending, 0u);
  for (void* block : {b, d, e, f}) pool.deallocate(block, 1000);
}

TEST_F(FencedAllocator, StatsCountPendingBlocksAsCachedNotInUse) {
  void* a = pool.allocate(1000);  // 1024
  void* b = pool.allocate(5000);  // 5120
  pool.deallocate(b, 5000);
  vgrad::MemoryStats stats = pool.stats();
  EXPECT_EQ(stats.bytes_in_use, 1024u);
  EXPECT_EQ(stats.bytes_cached, 5120u);
  EXPECT_EQ(stats.bytes_pending, 5120u);
  EXPECT_EQ(stats.bytes_reserved(), 1024u + 5120u);
  Fences::reached = 1;
  void* c = pool.allocate(100);  // another bucket; collects b
  stats = pool.stats();
  EXPECT_EQ(stats.bytes_pending, 0u);
  EXPECT_EQ(stats.bytes_cached, 5120u);
  EXPECT_EQ(stats.bytes_in_use, 1024u + 512u);
  EXPECT_EQ(stats.peak_bytes_in_use, 1024u + 5120u);
  EXPECT_EQ(stats.bytes_reserved(), 1024u + 512u + 5120u);
  EXPECT_EQ(pool.allocate(5000), b);
  EXPECT_EQ(pool.stats().cache_hits, 1u);
  EXPECT_EQ(pool.stats().bytes_cached, 0u);
  pool.deallocate(a, 1000);
  pool.deallocate(b, 5000);
  pool.deallocate(c, 100);
  EXPECT_EQ(pool.stats().bytes_pending, 1024u + 5120u + 512u);
  EXPECT_EQ(pool.stats().bytes_in_use, 0u);
}

TEST_F(FencedAllocator, ReleaseCachedWaitsForPendingBlocksThenFreesEverything) {
  void* a = pool.allocate(1000);
  void* b = pool.allocate(3000);
  void* kept = pool.allocate(100);
  pool.deallocate(a, 1000);  // fence 1
  pool.deallocate(b, 3000);  // fence 2
  pool.release_cached();
  EXPECT_EQ(Fences::waited, (std::vector<int64_t>{1, 2})) << "empty_cache blocks until the device is done";
  EXPECT_EQ(Fences::released, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(Raw::frees, 2);
  EXPECT_EQ(pool.stats().bytes_cached, 0u);
  EXPECT_EQ(pool.stats().bytes_pending, 0u);
  EXPECT_EQ(pool.stats().bytes_in_use, 512u);
  pool.deallocate(kept, 100);
}

TEST_F(FencedAllocator, OutOfMemoryWaitsForPendingBlocksAndRetries) {
  void* a = pool.allocate(8000);
  pool.deallocate(a, 8000);  // 8192 bytes pending behind fence 1
  Raw::refusals = 1;         // the system refuses the next request once
  void* block = pool.allocate(20000);
  EXPECT_NE(block, nullptr);
  EXPECT_EQ(Fences::waited, (std::vector<int64_t>{1})) << "only out of memory makes allocate block";
  EXPECT_EQ(Raw::frees, 1) << "the waited-for block went back to the system before the retry";
  const vgrad::MemoryStats stats = pool.stats();
  EXPECT_EQ(stats.bytes_pending, 0u);
  EXPECT_EQ(stats.bytes_cached, 0u);
  EXPECT_EQ(stats.bytes_in_use, CachingAllocator::round_size(20000));
  EXPECT_EQ(stats.system_allocations, 2u);
  pool.deallocate(block, 20000);
}

// A GPU's two pools (here `allocator` for the compute pool, `pool` for the upload pool)
// are siblings: one that runs out gives back the other's cache before its retry.
TEST_F(FencedAllocator, OutOfMemoryGivesBackTheSiblingPoolsCacheToo) {
  allocator.set_siblings({&pool});
  pool.set_siblings({&allocator});
  pool.deallocate(pool.allocate(8000), 8000);  // 8192 bytes pending in the upload pool, behind fence 1
  Raw::refusals = 1;
  void* computed = allocator.allocate(20000);  // the compute pool has nothing cached of its own
  EXPECT_NE(computed, nullptr);
  EXPECT_EQ(Fences::waited, (std::vector<int64_t>{1})) << "the sibling's pending block was waited for";
  EXPECT_EQ(Raw::frees, 1) << "and went back to the system before the retry";
  EXPECT_EQ(pool.stats().bytes_cached, 0u);
  EXPECT_EQ(pool.stats().bytes_pending, 0u);
  // The other way round: the compute pool's cache goes back when the upload pool runs out.
  allocator.deallocate(computed, 20000);
  Raw::refusals = 1;
  void* uploaded = pool.allocate(3000);
  EXPECT_NE(uploaded, nullptr);
  EXPECT_EQ(Raw::frees, 2);
  EXPECT_EQ(allocator.stats().bytes_cached, 0u);
  EXPECT_EQ(pool.stats().system_allocations, 2u);
  pool.deallocate(uploaded, 3000);
}

TEST_F(FencedAllocator, OutOfMemoryWithNoCacheAnywhereRetriesOnceAndLeavesSiblingsAlone) {
  allocator.set_siblings({&pool});
  pool.set_siblings({&allocator});
  void* in_use = pool.allocate(1000);  // in use, not cached: nothing to give back
  Raw::last_tries.clear();
  Raw::refusals = 2;
  EXPECT_ERROR(allocator.allocate(5000), "allocator: out of memory allocating 5120 bytes (0 bytes in use)");
  EXPECT_EQ(Raw::last_tries, (std::vector<bool>{false, true})) << "one try, then one last try";
  EXPECT_EQ(Raw::frees, 0);
  EXPECT_EQ(pool.stats().bytes_in_use, 1024u) << "a sibling's live blocks are untouched";
  pool.deallocate(in_use, 1000);
}

// A pool that keeps its cache (a CUDA graph's private pool; a GPU's pools during a capture)
// gives back nothing when it runs out, its own or its siblings', and only retries.
TEST_F(FencedAllocator, APoolThatKeepsItsCacheGivesNothingBackAndOnlyRetries) {
  allocator.set_siblings({&pool});
  allocator.keep_cache("a capture is underway");
  allocator.deallocate(allocator.allocate(8000), 8000);
  pool.deallocate(pool.allocate(3000), 3000);
  Raw::last_tries.clear();
  Raw::refusals = 1;
  void* block = allocator.allocate(20000);
  EXPECT_NE(block, nullptr);
  EXPECT_EQ(Raw::last_tries, (std::vector<bool>{false, true}));
  EXPECT_EQ(Raw::frees, 0) << "no cache went back";
  EXPECT_EQ(allocator.stats().bytes_cached, 8192u);
  EXPECT_EQ(pool.stats().bytes_cached, 3072u);
  EXPECT_TRUE(Fences::waited.empty()) << "nor was a sibling's fence waited for";
  allocator.deallocate(block, 20000);
  allocator.keep_cache(nullptr);  // the capture ended
  Raw::refusals = 1;
  block = allocator.allocate(40000);
  EXPECT_EQ(Raw::frees, 3) << "both pools' caches went back: 8192 + 20480 here, 3072 there";
  allocator.deallocate(block, 40000);
}

// Nor does it give its cache back when asked: release_cached says why and frees nothing, not
// even the pending blocks' (their fences are not waited for), until the keeping ends. Its
// destructor still gives everything back.
TEST_F(FencedAllocator, APoolThatKeepsItsCacheRefusesToReleaseItAndSaysWhy) {
  pool.deallocate(pool.allocate(1000), 1000);            // pending, fence 1
  allocator.deallocate(allocator.allocate(5000), 5000);  // cached
  pool.keep_cache("a capture is underway");
  allocator.keep_cache("a capture is underway");
  EXPECT_STREQ(pool.release_cached(), "a capture is underway");
  EXPECT_STREQ(allocator.release_cached(), "a capture is underway");
  EXPECT_EQ(Raw::frees, 0);
  EXPECT_TRUE(Fences::waited.empty());
  EXPECT_EQ(pool.stats().bytes_pending, 1024u);
  EXPECT_EQ(allocator.stats().bytes_cached, 5120u);
  pool.keep_cache(nullptr);
  EXPECT_EQ(pool.release_cached(), nullptr);
  EXPECT_EQ(Raw::frees, 1);
  EXPECT_EQ(Fences::waited, (std::vector<int64_t>{1}));
  {
    CachingAllocator kept(Raw::alloc, Raw::free, 0, limit);
    kept.deallocate(kept.allocate(3000), 3000);
    kept.keep_cache("a CUDA graph's private pool");
  }
  EXPECT_EQ(Raw::frees, 2) << "a kept pool's blocks go back when the pool goes";
  allocator.keep_cache(nullptr);
}

// empty_cache on a device whose pool keeps its cache (a GPU while it captures) is an error
// naming the device and the reason, and works again once the keeping ends.
TEST(EmptyCache, IsRefusedWhileAPoolOfTheDeviceKeepsItsCache) {
  vgrad::CachingAllocator& cpu_pool = vgrad::backend_for(vgrad::kCPU).allocator();
  { const vgrad::Tensor cached = vgrad::Tensor::empty({1000}, vgrad::DType::Float32, vgrad::kCPU); }
  const uint64_t cached = cpu_pool.stats().bytes_cached;
  ASSERT_GT(cached, 0u);
  cpu_pool.keep_cache("a test keeps it");
  EXPECT_ERROR(vgrad::empty_cache(vgrad::kCPU), "empty_cache(cpu): nothing more was given back: a test keeps it");
  EXPECT_EQ(cpu_pool.stats().bytes_cached, cached);
  cpu_pool.keep_cache(nullptr);
  vgrad::empty_cache(vgrad::kCPU);
  EXPECT_EQ(cpu_pool.stats().bytes_cached, 0u);
}

// The device's limit counts what both pools hold from the system; cached blocks count
// until they go back. Beyond it is out of memory, handled as the system's refusal.
TEST_F(FencedAllocator, TheMemoryLimitCapsWhatThePoolsHoldTogether) {
  allocator.set_siblings({&pool});
  pool.set_siblings({&allocator});
  limit.set(16384);
  void* a = allocator.allocate(8000);          // 8192 held
  pool.deallocate(pool.allocate(4000), 4000);  // 4096 more, cached in the upload pool
  EXPECT_EQ(limit.held(), 8192u + 4096u);
  void* b = allocator.allocate(7000);  // 7168: only fits once the upload pool's cache went back
  EXPECT_EQ(Raw::frees, 1);
  EXPECT_EQ(limit.held(), 8192u + 7168u);
  EXPECT_EQ(Raw::last_tries.back(), true);
  const int allocations = Raw::allocations;
  EXPECT_ERROR(pool.allocate(2000),
               "allocator: out of memory allocating 2048 bytes: the device's memory limit is 16384 bytes and 15360 are "
               "held from the system (0 in use in this pool; set_memory_limit changes the limit)");
  EXPECT_EQ(Raw::allocations, allocations) << "the limit refused it before the system was asked";
  EXPECT_EQ(limit.held(), 8192u + 7168u) << "a refusal holds nothing";
  limit.set(0);  // no limit
  void* c = pool.allocate(2000);
  EXPECT_EQ(limit.held(), 8192u + 7168u + 2048u);
  allocator.deallocate(a, 8000);
  allocator.deallocate(b, 7000);
  pool.deallocate(c, 2000);
  allocator.release_cached();
  pool.release_cached();
  EXPECT_EQ(limit.held(), 0u);
}

TEST(MemoryLimit, HoldsUpToTheLimitAndNotBeyond) {
  vgrad::MemoryLimit limit;
  EXPECT_TRUE(limit.try_hold(uint64_t{1} << 62)) << "no limit by default";
  limit.release(uint64_t{1} << 62);
  limit.set(100);
  EXPECT_TRUE(limit.try_hold(60));
  EXPECT_FALSE(limit.try_hold(41));
  EXPECT_TRUE(limit.try_hold(40));
  EXPECT_EQ(limit.held(), 100u);
  limit.set(50);  // below what is held: nothing more fits
  EXPECT_FALSE(limit.try_hold(1));
  limit.release(100);
  EXPECT_TRUE(limit.try_hold(50));
  EXPECT_FALSE(limit.try_hold(UINT64_MAX)) << "no overflow";
}

// The CPU device's limit through the public functions, under tensors.
TEST(MemoryLimit, TheCpuDevicesLimitRefusesATensorBeyondIt) {
  vgrad::empty_cache(vgrad::kCPU);
  const uint64_t held = vgrad::memory_reserved(vgrad::kCPU);
  vgrad::set_memory_limit(vgrad::kCPU, held + (uint64_t{1} << 20));
  EXPECT_EQ(vgrad::memory_limit(vgrad::kCPU), held + (uint64_t{1} << 20));
  EXPECT_CONTAINS(vgrad::memory_summary(vgrad::kCPU), "MiB (set_memory_limit)");
  EXPECT_ERROR(vgrad::Tensor::empty({1 << 20}, vgrad::DType::Float32, vgrad::kCPU), "the device's memory limit is");
  const vgrad::Tensor fits = vgrad::Tensor::empty({1 << 16}, vgrad::DType::Float32, vgrad::kCPU);
  EXPECT_EQ(fits.numel(), 1 << 16);
  vgrad::set_memory_limit(vgrad::kCPU, 0);
  EXPECT_FALSE(vgrad_test::contains(vgrad::memory_summary(vgrad::kCPU), "limit")) << "no limit, no line";
  EXPECT_EQ(vgrad::Tensor::empty({1 << 20}, vgrad::DType::Float32, vgrad::kCPU).numel(), 1 << 20);
}

TEST_F(FencedAllocator, NoFenceToRecordMeansTheBlockIsFreeAtOnce) {
  Fences::refuse_record = true;  // e.g. CUDA could not record one and waited for the stream instead
  void* block = pool.allocate(1000);
  pool.deallocate(block, 1000);
  EXPECT_EQ(pool.stats().bytes_pending, 0u);
  EXPECT_EQ(pool.allocate(1000), block);
  EXPECT_EQ(Fences::polls, 0);
  pool.deallocate(block, 1000);
}

TEST_F(FencedAllocator, DestructionWaitsForPendingBlocksAndReturnsThem) {
  {
    CachingAllocator scoped(Raw::alloc, Raw::free, 0, limit, &Fences::hooks);
    scoped.deallocate(scoped.allocate(100), 100);
    scoped.deallocate(scoped.allocate(10000), 10000);
    EXPECT_EQ(Raw::frees, 0);
  }
  EXPECT_EQ(Raw::frees, 2);
  EXPECT_EQ(Fences::waited, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(Fences::released, (std::vector<int64_t>{1, 2}));
}

// A tensor made from a named pool (the DataLoader's page-locked staging, a GPU's upload
// pool) takes its memory from that pool and gives it back there, not to the device's own.
TEST_F(Allocator, ATensorFromANamedPoolGivesItsMemoryBackThere) {
  const vgrad::MemoryStats cpu_before = vgrad::memory_stats(vgrad::kCPU);
  {
    vgrad::Tensor t = vgrad::Tensor::empty({4, 8}, vgrad::DType::Float32, vgrad::kCPU, allocator);
    EXPECT_EQ(&t.storage()->pool(), &allocator);
    EXPECT_EQ(allocator.stats().bytes_in_use, 512u);
    EXPECT_EQ(vgrad::memory_stats(vgrad::kCPU).bytes_in_use, cpu_before.bytes_in_use);
    t.fill_(2.5);
    EXPECT_EQ(t.sum().item(), 80.0);
    const vgrad::Tensor view = t.narrow(0, 1, 2);  // a view keeps the pool's block alive
    EXPECT_EQ(&view.storage()->pool(), &allocator);
  }
  EXPECT_EQ(allocator.stats().bytes_in_use, 0u);
  EXPECT_EQ(allocator.stats().bytes_cached, 512u);
  EXPECT_EQ(Raw::allocations, 1);
}

// The CPU backend's instance, under tensors: a loop that makes same-shape tensors is
// served from the cache after its first pass.
TEST(CpuAllocator, SameShapeTensorsReuseTheirBlocks) {
  { const vgrad::Tensor warm_up = vgrad::zeros({64, 256}); }
  const vgrad::MemoryStats before = vgrad::memory_stats(vgrad::kCPU);
  for (int i = 0; i < 20; ++i) {
    const vgrad::Tensor t = vgrad::zeros({64, 256});
    EXPECT_EQ(vgrad::memory_stats(vgrad::kCPU).bytes_in_use, before.bytes_in_use + 64 * 256 * 4);
  }
  const vgrad::MemoryStats after = vgrad::memory_stats(vgrad::kCPU);
  EXPECT_EQ(after.system_allocations, before.system_allocations);
  EXPECT_EQ(after.cache_hits, before.cache_hits + 20);
  vgrad::empty_cache(vgrad::kCPU);
  EXPECT_EQ(vgrad::memory_stats(vgrad::kCPU).bytes_cached, 0u);
}

}  // namespace

// Memory accounting on every device present: bytes allocated now and at peak, reserved
// by the caching allocator, system allocations, reset_peak_memory, the summary, and the
// profiler's peak memory per op.
#include <gtest/gtest.h>

#include "core/allocator.h"
#include "core/profiler.h"
#include "support.h"

namespace {

using namespace vgrad;

void check_accounting(Device device) {
  empty_cache(device);
  reset_peak_memory(device);
  const uint64_t base = memory_allocated(device);
  EXPECT_EQ(max_memory_allocated(device), base);
  const size_t block = CachingAllocator::round_size(1 << 20);
  const uint64_t system_before = memory_stats(device).system_allocations;
  {
    const Tensor a = Tensor::empty({1 << 18}, DType::Float32, device);  // 1 MiB
    EXPECT_EQ(memory_allocated(device), base + block);
    {
      const Tensor b = Tensor::empty({1 << 19}, DType::BFloat16, device);  // 1 MiB in 16-bit
      EXPECT_EQ(memory_allocated(device), base + 2 * block);
    }
    EXPECT_EQ(memory_allocated(device), base + block);
    EXPECT_EQ(max_memory_allocated(device), base + 2 * block);  // the peak stays after b is gone
    EXPECT_EQ(memory_reserved(device), base + 2 * block);       // b's block is cached, still reserved
  }
  EXPECT_EQ(memory_stats(device).system_allocations, system_before + 2);  // a and b, alive at once
  const Tensor again = Tensor::empty({1 << 18}, DType::Float32, device);
  EXPECT_EQ(memory_stats(device).system_allocations, system_before + 2);  // served from the cache
  reset_peak_memory(device);
  EXPECT_EQ(max_memory_allocated(device), base + block);
  const std::string summary = memory_summary(device);
  EXPECT_TRUE(vgrad_test::contains(summary, "memory on " + device.str() + ": allocated")) << summary;
  EXPECT_TRUE(vgrad_test::contains(summary, "peak")) << summary;
  EXPECT_TRUE(vgrad_test::contains(summary, "system allocations")) << summary;
}

TEST(MemoryAccounting, CpuAllocatedPeakReservedAndSummary) { check_accounting(kCPU); }

TEST(MemoryAccounting, CudaAllocatedPeakReservedAndSummary) {
  REQUIRE_GPU();
  check_accounting(cuda_device(0));
}

TEST(MemoryAccounting, ProfilerRecordsPeakMemoryPerOp) {
  const Tensor a = vgrad_test::uniform_tensor({256, 512}, 1), b = vgrad_test::uniform_tensor({512, 256}, 2);
  const Tensor x = vgrad_test::uniform_tensor({1024, 256}, 3);
  profiler::Profile profile;
  { const Tensor c = matmul(a, b); }                // keeps a 256 KiB output
  { const Tensor v = x.var({0}); }                  // temporaries (mean, centred, squared) freed inside
  profile.stop();
  int64_t matmul_peak = -1, var_peak = -1;
  for (const auto& s : profile.stats()) {
    if (s.name == "matmul") matmul_peak = s.peak_bytes;
    if (s.name == "var") var_peak = s.peak_bytes;
  }
  EXPECT_EQ(matmul_peak, 256 * 256 * 4);
  EXPECT_GE(var_peak, 1024 * 256 * 4);  // at least one (1024, 256) temporary was alive at once
  EXPECT_TRUE(vgrad_test::contains(profile.table(), "peak MB"));
}

}  // namespace

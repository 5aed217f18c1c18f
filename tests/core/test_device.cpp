// Tests of Device (core/device.h): parsing "cpu", "cuda" and "cuda:N", the forms it
// refuses (each a vgrad::Error naming the text), printing and equality. Not here:
// whether a GPU is present (tests/cuda).
#include "core/device.h"
#include "support.h"

namespace {

using vgrad::Device;
using vgrad::DeviceType;

TEST(DeviceParse, AcceptsCpuCudaAndCudaIndex) {
  EXPECT_EQ(Device("cpu"), vgrad::kCPU);
  EXPECT_TRUE(Device("cpu").is_cpu());
  const Device cuda("cuda");
  EXPECT_TRUE(cuda.is_cuda());
  EXPECT_EQ(cuda.index, 0);
  const Device third("cuda:3");
  EXPECT_EQ(third.type, DeviceType::CUDA);
  EXPECT_EQ(third.index, 3);
  EXPECT_EQ(Device("cuda:0"), vgrad::cuda_device(0));
  EXPECT_EQ(Device("cuda:12").index, 12);
  // Four digits is the cap: a GPU index past 9999 is a typo.
  EXPECT_EQ(Device("cuda:9999").index, 9999);
}

TEST(DeviceParse, RefusesEveryOtherFormNamingIt) {
  for (const std::string bad : {"", "gpu", "CPU", "Cuda", "cuda:", "cuda:x", "cuda:1x", "cuda: 1", "cuda:-1",
                                "cuda:+1", "cuda1", "cudax", " cuda", "cuda ", "cuda::1", "cuda:10000",
                                "cuda:99999999999", "cuda:99999999999999999999999"})
    EXPECT_ERROR(Device{bad}, "device: cannot parse '" + bad + "'", "expected cpu, cuda or cuda:N");
}

TEST(DeviceParse, PrintingRoundTrips) {
  EXPECT_EQ(vgrad::kCPU.str(), "cpu");
  EXPECT_EQ(vgrad::cuda_device(3).str(), "cuda:3");
  EXPECT_EQ(Device("cuda").str(), "cuda:0");
  for (const std::string text : {"cpu", "cuda:0", "cuda:7", "cuda:9999"}) EXPECT_EQ(Device(text).str(), text);
}

TEST(DeviceParse, EqualityComparesTypeAndIndex) {
  EXPECT_EQ(Device("cuda:1"), vgrad::cuda_device(1));
  EXPECT_NE(Device("cuda:1"), vgrad::cuda_device(0));
  EXPECT_NE(Device("cuda:0"), vgrad::kCPU);  // both index 0, different type
  EXPECT_EQ(Device(), vgrad::kCPU);
}

}  // namespace

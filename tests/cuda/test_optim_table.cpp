// cuda/optim_table.h, the optimizer's device tables kept between steps: the bytes a table
// holds (its chunk numbering and pointers, read back as the kernel reads them), and the
// cache that uploads a table only when its parameter set is new, with fake uploads. No GPU
// needed; the kernels that read the tables are checked by tests/cuda/test_optim_cuda.cpp.
#include "cuda/optim_table.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

namespace vgrad::cuda {
namespace {

// Fake device memory: a counter per live table, and the bytes each upload saw.
struct FakeDevice {
  int live = 0;
  std::vector<std::vector<unsigned char>> uploaded;
  TableCache::Upload upload() {
    return [this](const std::vector<unsigned char>& bytes) {
      uploaded.push_back(bytes);
      ++live;
      return std::make_shared<const DeviceTable>(uploaded.back().data(), [this] { --live; });
    };
  }
};

std::vector<TensorPointers> pointer_set(int count, uintptr_t base, int64_t size) {
  std::vector<TensorPointers> tensors;
  for (int j = 0; j < count; ++j) {
    auto* p = reinterpret_cast<unsigned char*>(base + 0x10000 * uintptr_t(j));
    tensors.push_back({p, p + 0x1000, p + 0x2000, nullptr, size + j, reinterpret_cast<const int64_t*>(p + 0x3000)});
  }
  return tensors;
}

TEST(OptimTable, HoldsTheChunkNumberingThenThePointersInWholeWords) {
  const std::vector<TensorPointers> tensors = pointer_set(3, 0x7f0000000000, 2047);  // 2047, 2048, 2049 elements
  const HostTable table = build_table(tensors, 2048);
  EXPECT_EQ(table.count, 3);
  EXPECT_EQ(table.chunks, 1 + 1 + 2);
  EXPECT_EQ(table.pointers_offset, 32u) << "3 int64 padded to 16 bytes";
  static_assert(sizeof(TensorPointers) == 48);
  EXPECT_EQ(table.bytes.size(), 176u) << "32 + 3 x 48 = 176, whole 16-byte words";
  std::vector<int64_t> first_chunk(3);
  std::memcpy(first_chunk.data(), table.bytes.data(), 3 * sizeof(int64_t));
  EXPECT_EQ(first_chunk, (std::vector<int64_t>{0, 1, 2}));
  for (size_t j = 0; j < tensors.size(); ++j) {
    TensorPointers read;
    std::memcpy(&read, table.bytes.data() + table.pointers_offset + j * sizeof(TensorPointers), sizeof read);
    EXPECT_EQ(read.param, tensors[j].param) << j;
    EXPECT_EQ(read.grad, tensors[j].grad) << j;
    EXPECT_EQ(read.state1, tensors[j].state1) << j;
    EXPECT_EQ(read.state2, nullptr) << j;
    EXPECT_EQ(read.n, tensors[j].n) << j;
    EXPECT_EQ(read.step, tensors[j].step) << j << ": a capturable Adam's step count pointer";
  }
}

TEST(OptimTable, TheSameSetIsUploadedOnceAndAnyChangeUploadsAgain) {
  FakeDevice device;
  TableCache cache(8);
  const std::vector<TensorPointers> set = pointer_set(4, 0x7f0000000000, 100);
  const HostTable table = build_table(set, 2048);
  const void* first = cache.find_or_upload(table.bytes, true, device.upload())->data();
  for (int step = 0; step < 5; ++step)
    EXPECT_EQ(cache.find_or_upload(build_table(set, 2048).bytes, true, device.upload())->data(), first) << step;
  EXPECT_EQ(cache.uploads(), 1u) << "five more steps over the same set: no upload";
  ASSERT_EQ(device.uploaded.size(), 1u);
  EXPECT_EQ(device.uploaded[0], table.bytes);

  // Each change of the set makes a new table: a moved gradient, a resized parameter, a
  // new state buffer, one more parameter (a parameter group added), a step count pointer
  // gone (the same parameters stepped by a non-capturable Adam).
  std::vector<std::vector<TensorPointers>> changed(5, set);
  changed[0][2].grad = static_cast<const unsigned char*>(changed[0][2].grad) + 512;
  changed[1][1].n += 1;
  changed[2][3].state2 = changed[2][3].state1;
  changed[3].push_back(pointer_set(1, 0x7e0000000000, 7)[0]);
  changed[4][0].step = nullptr;
  for (size_t k = 0; k < changed.size(); ++k) {
    const HostTable other = build_table(changed[k], 2048);
    EXPECT_NE(cache.find_or_upload(other.bytes, true, device.upload())->data(), first) << k;
    EXPECT_EQ(device.uploaded.back(), other.bytes) << k;
  }
  EXPECT_EQ(cache.uploads(), 6u);
  EXPECT_EQ(cache.size(), 6u);
  EXPECT_EQ(cache.find_or_upload(table.bytes, true, device.upload())->data(), first) << "the first set is still kept";
  EXPECT_EQ(cache.uploads(), 6u);
}

TEST(OptimTable, KeepsTheMostRecentlyUsedAndFreesWhenTheLastHolderGoes) {
  FakeDevice device;
  {
    TableCache cache(2);
    const auto a = build_table(pointer_set(1, 0x10000000, 5), 2048).bytes;
    const auto b = build_table(pointer_set(2, 0x20000000, 5), 2048).bytes;
    const auto c = build_table(pointer_set(3, 0x30000000, 5), 2048).bytes;
    (void)cache.find_or_upload(a, true, device.upload());
    (void)cache.find_or_upload(b, true, device.upload());
    (void)cache.find_or_upload(a, true, device.upload());  // a is now the most recent
    std::shared_ptr<const DeviceTable> held_b = cache.find_or_upload(b, true, device.upload());
    (void)cache.find_or_upload(c, true, device.upload());  // drops a (least recent)
    EXPECT_EQ(cache.size(), 2u);
    EXPECT_EQ(device.live, 2) << "a freed; b and c kept";
    (void)cache.find_or_upload(a, true, device.upload());  // a again: uploaded anew, drops b
    EXPECT_EQ(cache.uploads(), 4u);
    EXPECT_EQ(device.live, 3) << "b dropped by the cache but still held";
    held_b.reset();
    EXPECT_EQ(device.live, 2);
  }
  EXPECT_EQ(device.live, 0) << "the cache's tables go with it";
}

// A table written inside a CUDA graph capture holds nothing until the graph runs: it is
// not kept, so an eager step never reads it; the caller (the graph) holds it.
TEST(OptimTable, ATableNotKeptIsTheCallersAlone) {
  FakeDevice device;
  TableCache cache(8);
  const auto bytes = build_table(pointer_set(2, 0x40000000, 9), 2048).bytes;
  std::shared_ptr<const DeviceTable> graph_table = cache.find_or_upload(bytes, false, device.upload());
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(device.live, 1);
  const std::shared_ptr<const DeviceTable> eager = cache.find_or_upload(bytes, true, device.upload());
  EXPECT_NE(eager->data(), graph_table->data()) << "the eager step gets a table of its own";
  graph_table.reset();
  EXPECT_EQ(device.live, 1);
}

}  // namespace
}  // namespace vgrad::cuda

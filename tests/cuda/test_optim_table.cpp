// cuda/optim_table.h, the many-tensor launches' device tables kept between steps (the
// optimizer's and GradScaler's unscale): the bytes a table holds (its chunk numbering and
// pointers, read back as the kernel reads them), and the cache that uploads a table only
// when its tensor set is new, with fake uploads. No GPU needed; the kernels that read the
// tables are checked by tests/cuda/test_optim_cuda.cpp and test_reduce_cuda.cpp.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <gtest/gtest.h>
#include <memory>
#include <vector>

#include "core/backend.h"
#include "core/creation.h"
#include "cuda/optim_table.h"
#include "grad_scaler_loop.h"
#include "support.h"

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

// A table's parts read back from its bytes, as a kernel reads the device copy: the chunk
// numbering at the start, the entries at pointers_offset.
std::vector<int64_t> first_chunks_of(const HostTable& table) {
  std::vector<int64_t> first_chunk(static_cast<size_t>(table.count));
  std::memcpy(first_chunk.data(), table.bytes.data(), first_chunk.size() * sizeof(int64_t));
  return first_chunk;
}
template <class Entry> std::vector<Entry> entries_of(const HostTable& table) {
  std::vector<Entry> entries(static_cast<size_t>(table.count));
  std::memcpy(entries.data(), table.bytes.data() + table.pointers_offset, entries.size() * sizeof(Entry));
  return entries;
}

// The numbering of 3 tensors of 2047 or fewer, 2048 and 2049 elements in 2048-element chunks:
// 3 int64 padded to 16 bytes, then the entries, the whole `size` bytes.
void expect_three_tensor_numbering(const HostTable& table, size_t size) {
  EXPECT_EQ(table.count, 3);
  EXPECT_EQ(table.chunks, 1 + 1 + 2);
  EXPECT_EQ(table.pointers_offset, 32u) << "3 int64 padded to 16 bytes";
  EXPECT_EQ(table.bytes.size(), size);
  EXPECT_EQ(first_chunks_of(table), (std::vector<int64_t>{0, 1, 2}));
}

TEST(OptimTable, HoldsTheChunkNumberingThenThePointersInWholeWords) {
  const std::vector<TensorPointers> tensors = pointer_set(3, 0x7f0000000000, 2047);  // 2047, 2048, 2049 elements
  const HostTable table = build_table(tensors, 2048);
  static_assert(sizeof(TensorPointers) == 48);
  expect_three_tensor_numbering(table, 176);  // 32 + 3 x 48 = 176: whole 16-byte words
  const std::vector<TensorPointers> read = entries_of<TensorPointers>(table);
  for (size_t j = 0; j < tensors.size(); ++j) {
    EXPECT_EQ(read[j].param, tensors[j].param) << j;
    EXPECT_EQ(read[j].grad, tensors[j].grad) << j;
    EXPECT_EQ(read[j].state1, tensors[j].state1) << j;
    EXPECT_EQ(read[j].state2, nullptr) << j;
    EXPECT_EQ(read[j].n, tensors[j].n) << j;
    EXPECT_EQ(read[j].step, tensors[j].step) << j << ": a capturable Adam's step count pointer";
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

// GradScaler's unscale table: the chunk numbering, then one 16-byte (pointer, size) per
// gradient.
TEST(OptimTable, AGradientTableHoldsTheNumberingThenOneSpanPerGradient) {
  static_assert(sizeof(TensorSpan) == 16);
  std::vector<float> a(1), b(2048), c(2049);
  const std::vector<TensorSpan> spans{{a.data(), 1}, {b.data(), 2048}, {c.data(), 2049}};
  const HostTable table = build_table(spans, 2048);
  expect_three_tensor_numbering(table, 80);  // 32 + 3 x 16
  const std::vector<TensorSpan> read = entries_of<TensorSpan>(table);
  for (size_t j = 0; j < spans.size(); ++j) {
    EXPECT_EQ(read[j].data, spans[j].data) << j;
    EXPECT_EQ(read[j].n, spans[j].n) << j;
  }
}

// The unscale kernel's walk (cuda/reduce.cu, unscale_many_kernel), run on the host over a
// table's bytes: blocks take chunks in a grid-stride loop, find their gradient by binary
// search in the table and scale its elements. Every element is scaled exactly once, with the
// bits of the CPU backend's unscale, for sizes around the chunk and more chunks than blocks.
TEST(OptimTable, WalkingAGradientTableScalesEveryElementOnce) {
  const int64_t chunk = 2048;
  const std::vector<int64_t> sizes{1, 2047, 2048, 2049, 3 * 2048 + 5, 7, 10000};
  const double inverse = double(float(1.0 / 3.0));
  std::vector<Tensor> walked, reference;
  std::vector<TensorSpan> spans;
  for (size_t j = 0; j < sizes.size(); ++j) {
    reference.push_back(vgrad_test::uniform_tensor({sizes[j]}, 60 + j, -1000, 1000));
    walked.push_back(reference.back().clone());
    spans.push_back({walked.back().view().data, sizes[j]});
  }
  const HostTable table = build_table(spans, chunk);
  const std::vector<int64_t> first_chunk = first_chunks_of(table);
  const std::vector<TensorSpan> read = entries_of<TensorSpan>(table);
  std::vector<std::vector<int>> visits;
  for (int64_t n : sizes) visits.emplace_back(static_cast<size_t>(n), 0);
  const int64_t blocks = 3, threads = 256;  // fewer blocks than chunks: each loops
  ASSERT_GT(table.chunks, blocks);
  const float inv = static_cast<float>(inverse);
  for (int64_t block = 0; block < blocks; ++block)
    for (int64_t c = block; c < table.chunks; c += blocks) {
      const ChunkRange range = find_chunk(first_chunk.data(), table.count, c, chunk, [&](int j) { return read[j].n; });
      float* const g = static_cast<float*>(read[static_cast<size_t>(range.tensor)].data);
      for (int64_t thread = 0; thread < threads; ++thread)
        for (int64_t i = range.begin + thread; i < range.end; i += threads) {
          g[i] = g[i] * inv;
          ++visits[static_cast<size_t>(range.tensor)][static_cast<size_t>(i)];
        }
    }
  std::vector<View> views;
  for (const Tensor& r : reference) views.push_back(r.view());
  const Tensor flag = zeros({});
  cpu_backend().unscale_and_check(views.data(), views.size(), inverse, flag.view());
  for (size_t j = 0; j < sizes.size(); ++j) {
    EXPECT_EQ(visits[j], std::vector<int>(static_cast<size_t>(sizes[j]), 1)) << "gradient " << j;
    EXPECT_EQ(vgrad_test::vals(walked[j]), vgrad_test::vals(reference[j])) << "gradient " << j;
  }
}

// The optimizer's and unscale's tables share one cache, keyed by their bytes: a gradient set
// and a parameter set over the same gradients are different tables, each found again.
TEST(OptimTable, TablesOfBothLayoutsShareTheCacheByTheirBytes) {
  FakeDevice device;
  TableCache cache(8);
  const std::vector<TensorPointers> parameters = pointer_set(3, 0x7f0000000000, 100);
  std::vector<TensorSpan> gradients;
  for (const TensorPointers& p : parameters) gradients.push_back({const_cast<void*>(p.grad), p.n});
  const auto step = build_table(parameters, 2048).bytes, unscale = build_table(gradients, 2048).bytes;
  ASSERT_NE(step, unscale);
  const void* step_table = cache.find_or_upload(step, true, device.upload())->data();
  const void* unscale_table = cache.find_or_upload(unscale, true, device.upload())->data();
  EXPECT_NE(step_table, unscale_table);
  for (int s = 0; s < 3; ++s) {  // unscale, then step, as GradScaler::step does
    EXPECT_EQ(cache.find_or_upload(build_table(gradients, 2048).bytes, true, device.upload())->data(), unscale_table);
    EXPECT_EQ(cache.find_or_upload(build_table(parameters, 2048).bytes, true, device.upload())->data(), step_table);
  }
  EXPECT_EQ(cache.uploads(), 2u);
  ASSERT_EQ(device.uploaded.size(), 2u);
  EXPECT_EQ(device.uploaded[1], unscale);
}

// Tables in memory of a caching allocator, as CudaBackend::table keeps them.
struct PooledTables {
  CachingAllocator& pool;
  TableCache::Upload upload() {
    return [this](const std::vector<unsigned char>& bytes) {
      void* data = pool.allocate(bytes.size());
      std::memcpy(data, bytes.data(), bytes.size());
      return std::make_shared<const DeviceTable>(data,
                                                 [this, data, size = bytes.size()] { pool.deallocate(data, size); });
    };
  }
};

// The tables a training loop asks for, with the gradient blocks of real steps (the CPU's
// caching allocator, whose size buckets CUDA's shares): a 2-layer MLP under autocast and
// GradScaler, SGD with momentum, zero_grad() dropping the gradients. Each step asks for its
// unscale table, then its step table (the state buffers, which stay, left out). Returns the
// uploads after the first cycles, with the tables' memory from `pool`.
uint64_t uploads_after_warm_up(CachingAllocator& pool) {
  PooledTables tables{pool};
  TableCache cache(kTableCacheCapacity);
  uint64_t after_warm_up = 0;
  vgrad_test::grad_scaler_loop(kCPU, 30, [&](int step, const std::vector<Tensor>& params) {
    std::vector<TensorSpan> gradients;
    std::vector<TensorPointers> parameters;
    for (const Tensor& p : params) {
      gradients.push_back({p.grad().view().data, p.numel()});
      parameters.push_back({p.view().data, p.grad().view().data, nullptr, nullptr, p.numel()});
    }
    if (step == 16) after_warm_up = cache.uploads();
    (void)cache.find_or_upload(build_table(gradients, 2048).bytes, true, tables.upload());
    (void)cache.find_or_upload(build_table(parameters, 2048).bytes, true, tables.upload());
  });
  EXPECT_GE(after_warm_up, 2u);
  return cache.uploads() - after_warm_up;
}

// A GPU's tables have a pool of their own (CudaBackend's table_allocator_): there, the
// gradient sets of a training loop cycle and the cache holds the cycle. Drawn from the
// gradients' own pool, a kept table holds a block of the small buckets the gradients cycle
// through, and the sets (the tables' keys) never repeat: the reason for that pool.
TEST(OptimTable, TheBackendsCacheHoldsTheCycleOfATrainingLoopsGradientSets) {
  MemoryLimit limit;
  CachingAllocator table_pool([](size_t bytes, int, bool) { return std::malloc(bytes); },
                              [](void* ptr, int) { std::free(ptr); }, 0, limit);
  EXPECT_EQ(uploads_after_warm_up(table_pool), 0u) << "tables written after the first cycles";
  EXPECT_GT(uploads_after_warm_up(backend_for(kCPU).allocator()), 0u) << "the gradients' pool breaks the cycle";
}

}  // namespace
}  // namespace vgrad::cuda

// cuda/chunks.h, the chunk arithmetic of the many-parameter optimizer launch: walking every
// chunk covers every element of every tensor exactly once, in chunk-sized pieces, for sizes
// around the chunk size, single-element tensors and long runs of tensors. No GPU needed.
#include "cuda/chunks.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace vgrad::cuda {
namespace {

// Marks each element as find_chunk hands it out, chunk by chunk, and checks the pieces.
void expect_exact_cover(const std::vector<int64_t>& sizes, int64_t chunk_size) {
  const int count = static_cast<int>(sizes.size());
  std::vector<int64_t> first_chunk(sizes.size());
  const int64_t chunks = number_chunks(sizes.data(), count, chunk_size, first_chunk.data());
  std::vector<std::vector<int>> seen(sizes.size());
  int64_t expected_chunks = 0;
  for (size_t j = 0; j < sizes.size(); ++j) {
    seen[j].assign(static_cast<size_t>(sizes[j]), 0);
    expected_chunks += (sizes[j] + chunk_size - 1) / chunk_size;
  }
  ASSERT_EQ(chunks, expected_chunks);
  for (int64_t c = 0; c < chunks; ++c) {
    const ChunkRange r = find_chunk(first_chunk.data(), count, c, chunk_size, [&](int j) { return sizes[j]; });
    ASSERT_GE(r.tensor, 0);
    ASSERT_LT(r.tensor, count);
    ASSERT_EQ(r.begin % chunk_size, 0) << "chunk " << c;
    ASSERT_LT(r.begin, r.end) << "chunk " << c << " is empty";
    ASSERT_LE(r.end - r.begin, chunk_size);
    ASSERT_LE(r.end, sizes[r.tensor]);
    for (int64_t i = r.begin; i < r.end; ++i) ++seen[r.tensor][i];
  }
  for (size_t j = 0; j < sizes.size(); ++j)
    for (size_t i = 0; i < seen[j].size(); ++i) ASSERT_EQ(seen[j][i], 1) << "tensor " << j << " element " << i;
}

TEST(Chunks, EveryElementOfEveryTensorOnceInChunkSizedPieces) {
  expect_exact_cover({1}, 4);
  expect_exact_cover({4}, 4);
  expect_exact_cover({5}, 4);
  expect_exact_cover({3, 4, 5, 8, 9, 1, 1, 12}, 4);
  expect_exact_cover({2048, 2047, 2049, 1, 4096, 4097}, 2048);
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int64_t> size(1, 300);
  std::vector<int64_t> many(500);
  for (int64_t& n : many) n = size(rng);
  expect_exact_cover(many, 16);
  expect_exact_cover(many, 1);
}

}  // namespace
}  // namespace vgrad::cuda

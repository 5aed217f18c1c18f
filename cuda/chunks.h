// The chunk arithmetic of a many-tensor launch (cuda/optim.cu): tensors of n_j > 0 elements
// cut into chunks of `chunk_size`, numbered across all of them, so that a block given chunk c
// finds its tensor by binary search and its element range. Header-only, C++17, host/device:
// the CPU build tests it (tests/cuda/test_chunks.cpp).
#pragma once
#include <cstdint>

#include "core/kernel_types.h"

namespace vgrad::cuda {

// first_chunk[j] = the number of the first chunk of tensor j; returns the number of chunks.
inline int64_t number_chunks(const int64_t* sizes, int count, int64_t chunk_size, int64_t* first_chunk) {
  int64_t chunks = 0;
  for (int j = 0; j < count; ++j) {
    first_chunk[j] = chunks;
    chunks += (sizes[j] + chunk_size - 1) / chunk_size;
  }
  return chunks;
}

struct ChunkRange {
  int tensor;
  int64_t begin, end;  // elements [begin, end) of that tensor
};

// Where chunk `chunk` (< the number of chunks) lies: the last tensor whose first chunk is
// <= chunk (first_chunk ascends strictly: no tensor is empty), and its elements there;
// size_of(j) gives tensor j's element count.
template <class SizeOf>
VGRAD_HOST_DEVICE ChunkRange find_chunk(const int64_t* first_chunk, int count, int64_t chunk, int64_t chunk_size,
                                        SizeOf size_of) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (first_chunk[mid] <= chunk)
      lo = mid;
    else
      hi = mid - 1;
  }
  const int64_t begin = (chunk - first_chunk[lo]) * chunk_size, n = size_of(lo);
  return {lo, begin, begin + chunk_size < n ? begin + chunk_size : n};
}

}  // namespace vgrad::cuda

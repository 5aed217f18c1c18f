// The device tables of the many-tensor launches, kept between steps: the optimizer steps
// (cuda/optim.cu) and GradScaler's unscale (cuda/reduce.cu). A table lists each tensor's
// pointers (an optimizer: param, grad, state buffers; unscale: the gradient), its size and
// the chunk numbering (cuda/chunks.h); it changes only when that set does, so it is written
// to the device once and reused. Per-step scalars (lr, bias corrections, first step, the
// inverse scale) are kernel arguments, never in a table; a capturable Adam's per-parameter
// step count is read through the table's `step` pointer, its value never copied in.
// Header-only host C++17: the CPU build tests it (tests/cuda/test_optim_table.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda/chunks.h"

namespace vgrad::cuda {

// One parameter of a step: the same layout for SGD (state: momentum buffer, or null) and
// Adam (state: exp_avg, exp_avg_sq; step: a capturable Adam's step count, else null).
struct TensorPointers {
  void* param;
  const void* grad;
  void* state1;
  void* state2;
  int64_t n;                      // elements, > 0
  const int64_t* step = nullptr;  // AdamParams::step_source: differs per parameter, so not a kernel argument
};

// One gradient of GradScaler's unscale: its elements, scaled in place.
struct TensorSpan {
  void* data;
  int64_t n;  // elements, > 0
};

// A table's bytes, as the kernel reads them: first_chunk (one int64 per tensor), padded to
// 16 bytes, then one Entry (TensorPointers, TensorSpan) per tensor; the whole padded to 16
// bytes (it is written to the device in 16-byte words).
struct HostTable {
  std::vector<unsigned char> bytes;
  size_t pointers_offset = 0;
  int count = 0;
  int64_t chunks = 0;
};

inline size_t round_up16(size_t bytes) { return (bytes + 15) / 16 * 16; }

template <class Entry> HostTable build_table(const std::vector<Entry>& tensors, int64_t chunk_size) {
  static_assert(std::is_trivially_copyable_v<Entry>, "a table entry is copied as bytes");
  static_assert(alignof(Entry) <= 16 && sizeof(Entry) % 8 == 0, "the table's parts are aligned");
  HostTable table;
  table.count = static_cast<int>(tensors.size());
  std::vector<int64_t> sizes, first_chunk(tensors.size());
  for (const Entry& t : tensors) sizes.push_back(t.n);
  table.chunks = number_chunks(sizes.data(), table.count, chunk_size, first_chunk.data());
  table.pointers_offset = round_up16(first_chunk.size() * sizeof(int64_t));
  table.bytes.assign(round_up16(table.pointers_offset + tensors.size() * sizeof(Entry)), 0);
  if (!tensors.empty()) {
    std::memcpy(table.bytes.data(), first_chunk.data(), first_chunk.size() * sizeof(int64_t));
    std::memcpy(table.bytes.data() + table.pointers_offset, tensors.data(), tensors.size() * sizeof(Entry));
  }
  return table;
}

// A table in device memory; `release` gives the memory back when the last holder (the cache,
// a step in flight, a CUDA graph that captured a step reading it) lets go.
class DeviceTable {
 public:
  DeviceTable(void* data, std::function<void()> release) : data_(data), release_(std::move(release)) {}
  ~DeviceTable() {
    if (release_) release_();
  }
  DeviceTable(const DeviceTable&) = delete;
  DeviceTable& operator=(const DeviceTable&) = delete;
  void* data() const { return data_; }

 private:
  void* data_;
  std::function<void()> release_;
};

// How many tables a backend keeps. Gradients dropped by zero_grad() come back on the same
// blocks only in a cycle: the small ones share the allocator's 512-byte bucket with each
// step's scalars, so their sets repeat every few steps (every 6 for a 2-layer MLP under
// GradScaler on the CPU, tests/cuda/test_optim_table.cpp), and each set has two tables, the
// unscale's and the optimizer's. 8 made both miss on every step there; 32 holds cycles of up
// to 16 steps. A lookup compares bytes with each kept table: microseconds on the host.
constexpr size_t kTableCacheCapacity = 32;

// The tables of the last few tensor sets, keyed by their bytes (the pointers and sizes are
// the whole key: SGD and Adam over the same tensors share one), most recently used first.
// Tables of different layouts (TensorPointers, TensorSpan) share the cache: equal bytes are
// an equal table whoever reads it, and different bytes never collide. Thread-safe.
class TableCache {
 public:
  using Upload = std::function<std::shared_ptr<const DeviceTable>(const std::vector<unsigned char>& bytes)>;
  explicit TableCache(size_t capacity) : capacity_(capacity) {}

  // The device table holding `bytes`: a kept one, or a new one from `upload`. A new one is
  // kept (dropping the least recently used beyond capacity) only when `keep`: a table
  // written inside a CUDA graph capture holds nothing until the graph runs, so it is the
  // graph's alone.
  std::shared_ptr<const DeviceTable> find_or_upload(const std::vector<unsigned char>& bytes, bool keep,
                                                    const Upload& upload) {
    std::lock_guard lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it)
      if (it->first == bytes) {
        entries_.splice(entries_.begin(), entries_, it);
        return entries_.front().second;
      }
    std::shared_ptr<const DeviceTable> table = upload(bytes);
    ++uploads_;
    if (keep) {
      entries_.emplace_front(bytes, table);
      if (entries_.size() > capacity_) entries_.pop_back();
    }
    return table;
  }
  size_t size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
  }
  uint64_t uploads() const {
    std::lock_guard lock(mutex_);
    return uploads_;
  }

 private:
  size_t capacity_;
  mutable std::mutex mutex_;
  std::list<std::pair<std::vector<unsigned char>, std::shared_ptr<const DeviceTable>>> entries_;
  uint64_t uploads_ = 0;
};

}  // namespace vgrad::cuda

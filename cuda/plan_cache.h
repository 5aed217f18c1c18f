// A bounded map for per-shape plans (cuda/cudnn.cpp's convolution descriptors and
// algorithm choice): at most `capacity` entries; inserting past that drops the least
// recently used one. Shapes that change from batch to batch (variable-length input, a
// last partial batch, evaluation batches) would otherwise grow the cache without limit.
// Values are built in place and never move (std::list nodes), so a reference returned
// by find() or emplace() stays valid until that entry is evicted or erased: the next
// emplace() at the earliest. Header-only and free of CUDA, so the CPU build tests it, with
// the convolution plans' key.
// Not thread-safe: the owner locks (cudnn.cpp holds its backend's cuDNN mutex).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <tuple>
#include <utility>

#include "core/error.h"
#include "core/kernel_types.h"

namespace vgrad::cuda {

template <class Key, class Value>
class PlanCache {
 public:
  explicit PlanCache(size_t capacity) : capacity_(capacity) {
    if (capacity == 0) fail("PlanCache: capacity must be at least 1");
  }

  // The entry for `key` (now the most recently used), or nullptr.
  Value* find(const Key& key) {
    const auto found = index_.find(key);
    if (found == index_.end()) return nullptr;
    entries_.splice(entries_.begin(), entries_, found->second);
    return &found->second->second;
  }

  // A new default-constructed entry for `key` (which must not be cached), first evicting
  // the least recently used entry if the cache is full.
  Value& emplace(const Key& key) {
    if (index_.count(key) != 0) fail("PlanCache: the key is already cached");
    if (entries_.size() == capacity_) {
      index_.erase(entries_.back().first);
      entries_.pop_back();
      ++evictions_;
    }
    entries_.emplace_front(std::piecewise_construct, std::forward_as_tuple(key), std::forward_as_tuple());
    index_.emplace(key, entries_.begin());
    return entries_.front().second;
  }

  void erase(const Key& key) {
    const auto found = index_.find(key);
    if (found == index_.end()) return;
    entries_.erase(found->second);
    index_.erase(found);
  }

  size_t size() const { return entries_.size(); }
  size_t capacity() const { return capacity_; }
  size_t evictions() const { return evictions_; }

 private:
  using Entries = std::list<std::pair<const Key, Value>>;  // most recently used first
  size_t capacity_;
  size_t evictions_ = 0;
  Entries entries_;
  std::map<Key, typename Entries::iterator> index_;
};

// The key of one cuDNN convolution plan (cuda/cudnn.cpp): the pass, the dtype, every size of
// the geometry, and whether TF32 math is allowed, so that a plan chosen with TF32 is never
// reused once cuda::set_tf32_conv_enabled(false) (and the other way round). `tf32` is only
// meaningful for float32; callers pass false for the other dtypes.
using ConvPlanKey = std::array<int64_t, 17>;
inline ConvPlanKey conv_plan_key(ConvPass pass, DType dtype, const ConvGeometry& g, bool tf32) {
  const WindowGeometry& s = g.window;
  return {int64_t(pass), int64_t(dtype), s.batch,    s.channels,   s.height,     s.width,
          g.filters,     s.kernel_h,     s.kernel_w, s.stride_h,   s.stride_w,   s.pad_h,
          s.pad_w,       s.dilation_h,   s.dilation_w, g.groups,   int64_t(tf32)};
}

}  // namespace vgrad::cuda

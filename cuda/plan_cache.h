// A bounded map for per-shape plans (cuda/cudnn.cpp's convolution descriptors and
// algorithm choice): at most `capacity` entries; inserting past that drops the least
// recently used one. Shapes that change from batch to batch (variable-length input, a
// last partial batch, evaluation batches) would otherwise grow the cache without limit.
// Values are built in place and never move (std::list nodes), so a reference returned
// by find() or emplace() stays valid until that entry is evicted or erased: the next
// emplace() at the earliest. Header-only and free of CUDA, so the CPU build tests it.
// Not thread-safe: the owner locks (cudnn.cpp holds its backend's cuDNN mutex).
#pragma once

#include <cstddef>
#include <list>
#include <map>
#include <tuple>
#include <utility>

#include "core/error.h"

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

}  // namespace vgrad::cuda

// cuda/plan_cache.h: cuDNN's per-shape plan cache is bounded and evicts the least
// recently used entry; runs without a GPU (the class has no CUDA in it).
#include <gtest/gtest.h>

#include <array>
#include <stdexcept>

#include "cuda/plan_cache.h"

namespace vgrad::cuda {
namespace {

// Counts live values, like ConvPlan owning descriptors: eviction must destroy them.
struct Counted {
  static inline int live = 0;
  int value = 0;
  Counted() { ++live; }
  ~Counted() { --live; }
  Counted(const Counted&) = delete;  // as ConvPlan: built in place, never moved
  Counted& operator=(const Counted&) = delete;
};

TEST(PlanCache, EvictsTheLeastRecentlyUsedPastCapacity) {
  PlanCache<int, Counted> cache(3);
  for (int k : {1, 2, 3}) cache.emplace(k).value = 10 * k;
  ASSERT_NE(cache.find(1), nullptr);  // 1 is now the most recent; 2 the least
  cache.emplace(4).value = 40;
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(cache.evictions(), 1u);
  EXPECT_EQ(cache.find(2), nullptr);
  EXPECT_EQ(cache.find(1)->value, 10);
  EXPECT_EQ(cache.find(3)->value, 30);
  EXPECT_EQ(cache.find(4)->value, 40);
  EXPECT_EQ(Counted::live, 3);
  cache.emplace(5);  // order now 4, 3, 1 from the most recent: 1 goes
  EXPECT_EQ(cache.find(1), nullptr);
  EXPECT_NE(cache.find(3), nullptr);
  EXPECT_EQ(Counted::live, 3);
}

TEST(PlanCache, ManyShapesStayBounded) {
  using Key = std::array<int64_t, 3>;
  PlanCache<Key, Counted> cache(8);
  for (int64_t batch = 1; batch <= 1000; ++batch) {
    for (int64_t pass = 0; pass < 3; ++pass) {
      const Key key{pass, batch, 28};
      if (cache.find(key) == nullptr) cache.emplace(key).value = int(batch);
    }
  }
  EXPECT_EQ(cache.size(), 8u);
  EXPECT_EQ(Counted::live, 8);
  EXPECT_EQ(cache.evictions(), 3000u - 8u);
  EXPECT_EQ(cache.find(Key{2, 1000, 28})->value, 1000);
  EXPECT_EQ(cache.find(Key{0, 997, 28}), nullptr);  // the oldest of the last ten went
}

TEST(PlanCache, ReferencesStayValidUntilEvicted) {
  PlanCache<int, Counted> cache(2);
  Counted& first = cache.emplace(1);
  first.value = 7;
  cache.emplace(2);
  EXPECT_EQ(&first, cache.find(1));  // the node did not move when 2 was added
  EXPECT_EQ(first.value, 7);
}

TEST(PlanCache, EraseAndBadUse) {
  PlanCache<int, Counted> cache(2);
  cache.emplace(1);
  cache.erase(1);
  cache.erase(1);  // absent: nothing to do
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(Counted::live, 0);
  cache.emplace(1);
  EXPECT_THROW(cache.emplace(1), std::exception);
  EXPECT_THROW((PlanCache<int, Counted>(0)), std::exception);
}

}  // namespace
}  // namespace vgrad::cuda

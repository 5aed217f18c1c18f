// cuda/plan_cache.h: cuDNN's per-shape plan cache is bounded and evicts the least
// recently used entry, and the convolution plans' key holds every setting a plan depends
// on (TF32 included); runs without a GPU (the header has no CUDA in it).
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

// The convolution plans' key separates TF32 from float32 math, so switching TF32 off never
// finds the plan (math type, algorithm) chosen while it was on; and every size is in it.
TEST(ConvPlanKey, HoldsTheTf32SettingBesideThePassDtypeAndGeometry) {
  ConvGeometry g;
  g.window.batch = 8, g.window.channels = 16, g.window.height = 12, g.window.width = 10;
  g.window.kernel_h = g.window.kernel_w = 3, g.window.out_h = 12, g.window.out_w = 10;
  g.window.pad_h = g.window.pad_w = 1;
  g.filters = 32;
  const ConvPlanKey exact = conv_plan_key(ConvPass::Forward, DType::Float32, g, false);
  const ConvPlanKey tf32 = conv_plan_key(ConvPass::Forward, DType::Float32, g, true);
  EXPECT_NE(exact, tf32);
  PlanCache<ConvPlanKey, Counted> cache(4);
  cache.emplace(tf32).value = 1;
  EXPECT_EQ(cache.find(exact), nullptr) << "TF32 off must not reuse the TF32 plan";
  cache.emplace(exact).value = 2;
  EXPECT_EQ(cache.find(tf32)->value, 1);
  EXPECT_EQ(cache.find(exact)->value, 2);

  EXPECT_NE(conv_plan_key(ConvPass::BackwardData, DType::Float32, g, false), exact);
  EXPECT_NE(conv_plan_key(ConvPass::Forward, DType::Float64, g, false), exact);
  for (int64_t* size : {&g.window.batch, &g.window.channels, &g.window.height, &g.window.width, &g.window.kernel_h,
                        &g.window.kernel_w, &g.window.stride_h, &g.window.stride_w, &g.window.pad_h, &g.window.pad_w,
                        &g.window.dilation_h, &g.window.dilation_w, &g.filters, &g.groups}) {
    ++*size;
    EXPECT_NE(conv_plan_key(ConvPass::Forward, DType::Float32, g, false), exact);
    --*size;
  }
  EXPECT_EQ(conv_plan_key(ConvPass::Forward, DType::Float32, g, false), exact);
}

}  // namespace
}  // namespace vgrad::cuda

// Post-accumulate-grad hooks: run once per backward pass per leaf, after the pass's
// last contribution reached .grad; not for leaves no gradient reached, nor for grad().
#include <vector>

#include "autograd/engine.h"
#include "support.h"

namespace {

using namespace vgrad;

TEST(GradHooks, RunOnceAfterTheLastContributionOfThePass) {
  Tensor w = tensor({1.0f, 2.0f}, {2}).requires_grad_();
  Tensor unused = tensor({1.0f}, {1}).requires_grad_();
  std::vector<std::vector<double>> seen;  // .grad as each hook call saw it
  int unused_calls = 0;
  w.add_post_accumulate_grad_hook([&](TensorImpl& leaf) { seen.push_back(Tensor(leaf.grad).to_vector<double>()); });
  unused.add_post_accumulate_grad_hook([&](TensorImpl&) { ++unused_calls; });
  // w feeds three nodes: the hook must see the sum of all three contributions, once.
  Tensor loss = (w * 3.0f).sum() + (w * w).sum() + w.sum();
  loss.backward();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], (std::vector<double>{3 + 2 + 1, 3 + 4 + 1}));
  EXPECT_EQ(unused_calls, 0);
  (w * 2.0f).sum().backward();  // a second pass accumulates and runs the hook again
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1], (std::vector<double>{8, 10}));
}

TEST(GradHooks, RemovedHooksAndGradDoNotRunThem) {
  Tensor w = tensor({1.0f}, {1}).requires_grad_();
  int calls = 0;
  const uint64_t id = w.add_post_accumulate_grad_hook([&](TensorImpl&) { ++calls; });
  autograd::grad({(w * w).sum()}, {w});  // returns gradients, accumulates nothing
  EXPECT_EQ(calls, 0);
  w.remove_post_accumulate_grad_hook(id);
  (w * w).sum().backward();
  EXPECT_EQ(calls, 0);
  EXPECT_ERROR((w * 2.0f).add_post_accumulate_grad_hook([](TensorImpl&) {}), "not a leaf that requires grad");
}

TEST(GradHooks, RootLeafRunsItsHook) {
  Tensor w = tensor({5.0f}, {}).requires_grad_();
  int calls = 0;
  w.add_post_accumulate_grad_hook([&](TensorImpl&) { ++calls; });
  w.backward();
  EXPECT_EQ(calls, 1);
}

}  // namespace

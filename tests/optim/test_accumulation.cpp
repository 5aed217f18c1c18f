// Gradient accumulation with a visible step point: clipping between backward() and
// step() sees the whole group's gradient (so k micro-batches + clip equal one big batch
// + clip), a partial group at the end of an epoch is rescaled to its mean, and misuse
// (a group growing past k, stepping half a group) is an error that says what to call.
#include <gtest/gtest.h>

#include "support.h"
#include "vgrad.h"

namespace {

using namespace vgrad;
using vgrad_test::vals;

struct Data {
  Tensor x, y;  // x (N, 6), y (N) in [0, 3)
};
Data make_data(int64_t n, uint64_t seed) {
  Generator gen(seed);
  Tensor x = randn({n, 6}, {}, &gen);
  Tensor y = affine(rand({n}, {}, &gen), 3.0, 0.0).to(DType::Int64);
  return {x, y};
}

// Two copies of one model, each with SGD at lr 0.5: `whole` trains on whole batches, `parts`
// on micro-batches of the same data through a GradientAccumulation of k.
struct WholeAndParts {
  explicit WholeAndParts(int64_t k) : accumulate(sgd_parts, k) { parts.load_state_dict(whole.state_dict()); }
  vgrad_test::Mlp whole{6, 10, 3}, parts{6, 10, 3};
  optim::SGD sgd_whole{whole.parameters(), {.lr = 0.5}}, sgd_parts{parts.parameters(), {.lr = 0.5}};
  optim::GradientAccumulation accumulate;

  // The loss of `parts` on micro-batch m (rows m*size .. (m+1)*size) of d.
  Tensor micro_batch_loss(const Data& d, int64_t m, int64_t size) {
    return nn::cross_entropy(parts(d.x.narrow(0, size * m, size)), d.y.narrow(0, size * m, size));
  }
};

void expect_same_parameters(const nn::Module& a, const nn::Module& b, double tol) {
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) vgrad_test::expect_near_all(vals(pa[i].second), vals(pb[i].second), tol, pa[i].first.c_str());
}

// One batch of 32 with clip_grad_norm(0.05) vs 4 micro-batches of 8 with the same clip
// between backward() and step(): equal. The clip is tight (the norm is well above 0.05),
// so clipping each micro-batch, or the 1/k-scaled partial sums, would differ.
TEST(GradientAccumulation, ClippingBetweenBackwardAndStepSeesTheWholeGroup) {
  manual_seed(4);
  WholeAndParts models(4);
  const double max_norm = 0.05;
  for (int step = 0; step < 3; ++step) {
    const Data d = make_data(32, 10 + uint64_t(step));
    nn::cross_entropy(models.whole(d.x), d.y).backward();
    const double whole_norm = optim::clip_grad_norm(models.whole.parameters(), max_norm);
    EXPECT_GT(whole_norm, 4 * max_norm);  // the clip bites
    models.sgd_whole.step();
    models.sgd_whole.zero_grad();

    for (int64_t m = 0; m < 4; ++m) {
      const bool complete = models.accumulate.backward(models.micro_batch_loss(d, m, 8));
      ASSERT_EQ(complete, m == 3);
      if (complete) {
        EXPECT_NEAR(optim::clip_grad_norm(models.parts.parameters(), max_norm), whole_norm, 1e-5 * whole_norm);
        models.accumulate.step();
      }
    }
  }
  expect_same_parameters(models.whole, models.parts, 1e-6);
}

// 3 micro-batches of 8 pending out of k = 4: finish() scales the sum (each loss was /4)
// by 4/3, so the gradient is the mean over the 24 examples, exactly as one batch of 24.
TEST(GradientAccumulation, FinishRescalesAPartialGroupToItsMean) {
  manual_seed(5);
  WholeAndParts models(4);
  optim::GradientAccumulation& accumulate = models.accumulate;
  const Data d = make_data(24, 20);
  nn::cross_entropy(models.whole(d.x), d.y).backward();
  const std::vector<double> whole_grad = vals(models.whole.fc1->weight.grad());
  models.sgd_whole.step();

  for (int64_t m = 0; m < 3; ++m) EXPECT_FALSE(accumulate.backward(models.micro_batch_loss(d, m, 8)));
  EXPECT_EQ(accumulate.pending(), 3);
  EXPECT_FALSE(accumulate.ready());
  ASSERT_TRUE(accumulate.finish());
  EXPECT_TRUE(accumulate.ready());
  vgrad_test::expect_near_all(vals(models.parts.fc1->weight.grad()), whole_grad, 1e-6, "rescaled gradient");
  EXPECT_TRUE(accumulate.finish());  // idempotent until step(): no second rescale
  vgrad_test::expect_near_all(vals(models.parts.fc1->weight.grad()), whole_grad, 1e-6, "after a second finish()");
  accumulate.step();
  EXPECT_EQ(accumulate.pending(), 0);
  EXPECT_FALSE(accumulate.finish());  // nothing pending: no step due
  expect_same_parameters(models.whole, models.parts, 1e-6);
}

// A complete group is not rescaled by finish() (k/k = 1, and the flag says so).
TEST(GradientAccumulation, FinishOnACompleteGroupChangesNothing) {
  Tensor p = tensor(std::vector<double>{1, 2}, {2}).requires_grad_();
  optim::SGD sgd({p}, {.lr = 1.0});
  optim::GradientAccumulation accumulate(sgd, 2);
  EXPECT_FALSE(accumulate.backward(sum(p * 4.0)));
  EXPECT_TRUE(accumulate.backward(sum(p * 2.0)));
  EXPECT_TRUE(accumulate.finish());
  EXPECT_EQ(vals(p.grad()), (std::vector<double>{3, 3}));  // (4 + 2) / 2
  accumulate.step();
  EXPECT_EQ(vals(p), (std::vector<double>{-2, -1}));
  EXPECT_FALSE(p.grad().defined());  // dropped for the next group
}

TEST(GradientAccumulation, MisuseIsAnErrorThatSaysWhatToCall) {
  Tensor p = tensor(std::vector<double>{1, 2}, {2}).requires_grad_();
  optim::SGD sgd({p}, {.lr = 1.0});
  optim::GradientAccumulation accumulate(sgd, 3);
  EXPECT_ERROR(accumulate.step(), "step() with 0 of 3 micro-batches accumulated", "finish()");
  EXPECT_FALSE(accumulate.backward(sum(p)));
  EXPECT_ERROR(accumulate.step(), "step() with 1 of 3 micro-batches", "finish() first to rescale a partial group");
  EXPECT_EQ(vals(p), (std::vector<double>{1, 2}));  // the failed step changed nothing
  EXPECT_FALSE(accumulate.backward(sum(p)));
  EXPECT_TRUE(accumulate.backward(sum(p)));
  EXPECT_ERROR((void)accumulate.backward(sum(p)), "backward() on a complete group of 3 micro-batches", "call step()");
  accumulate.step();
  EXPECT_EQ(vals(p), (std::vector<double>{0, 1}));  // mean gradient 1, lr 1
}

}  // namespace

// Anomaly mode: the first op whose forward output or backward gradient holds a NaN or
// Inf is named with its input shapes; off, NaN flows through silently as before.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "support.h"
#include "vgrad.h"

namespace {

using namespace vgrad;

Tensor leaf(const std::vector<double>& values, const Shape& shape) {
  return tensor(values, shape, {.dtype = DType::Float64, .requires_grad = true});
}

TEST(Anomaly, OffByDefaultAndNaNFlowsThrough) {
  EXPECT_FALSE(autograd::AnomalyMode::is_enabled());
  Tensor x = leaf({-1, 2}, {2});
  const Tensor y = log(x);
  EXPECT_TRUE(std::isnan(y.to_vector<double>()[0]));
}

TEST(Anomaly, GuardIsScopedAndNests) {
  {
    DetectAnomalyGuard on;
    EXPECT_TRUE(autograd::AnomalyMode::is_enabled());
    {
      DetectAnomalyGuard off(false);
      EXPECT_FALSE(autograd::AnomalyMode::is_enabled());
    }
    EXPECT_TRUE(autograd::AnomalyMode::is_enabled());
  }
  EXPECT_FALSE(autograd::AnomalyMode::is_enabled());
}

TEST(Anomaly, ForwardNaNFromLogOfMinusOneIsNamed) {
  DetectAnomalyGuard anomaly;
  Tensor x = leaf({-1, 2, 3}, {3}), w = leaf({1, 1, 1}, {3});
  const Tensor h = x * w;  // finite: passes
  EXPECT_ERROR(log(h), "anomaly: log produced NaN in its forward output [3] (inputs: [3])");
  Tensor a = leaf({1, 2}, {2, 1}), b = leaf({0, 1}, {1, 2});
  EXPECT_ERROR(div(a, b), "anomaly: div produced Inf in its forward output [2, 2] (inputs: [2, 1], [1, 2])");
}

// sqrt(0) is a finite 0, but its derivative 1/(2·sqrt(0)) is infinite: only backward sees it.
TEST(Anomaly, BackwardOnlyInfIsNamedAtTheFirstOpThatMadeIt) {
  DetectAnomalyGuard anomaly;
  Tensor x = leaf({0, 4, 9}, {3});
  const Tensor y = (sqrt(x * 1.0) * 3.0).sum();  // backward visits sum, mul, sqrt, then mul
  EXPECT_ERROR(y.backward(), "anomaly: backward of sqrt produced Inf in the gradient of input 0 [3] (inputs: [3])");
}

// A custom op whose forward is finite and whose backward gives its second input NaN.
struct NaNBackward : autograd::Function<NaNBackward> {
  static const char* name() { return "nan_backward"; }
  static Tensor forward(autograd::Context&, const Tensor& a, const Tensor& b) { return a * b; }
  static std::vector<Tensor> backward(autograd::Context&, const Tensor& grad) {
    return {grad, grad * std::numeric_limits<double>::quiet_NaN()};
  }
};

TEST(Anomaly, BackwardNaNNamesTheOpTheInputAndAllInputShapes) {
  Tensor a = leaf({1, 2}, {2}), b = leaf({3}, {1});
  {
    DetectAnomalyGuard anomaly;
    EXPECT_ERROR(NaNBackward::apply(a, b).sum().backward(),
                 "anomaly: backward of nan_backward produced NaN in the gradient of input 1 [1] (inputs: [2], [1])");
  }
  // Off: the NaN reaches .grad silently (what the mode is for).
  NaNBackward::apply(a, b).sum().backward();
  EXPECT_TRUE(std::isnan(b.grad().to_vector<double>()[0]));
}

TEST(Anomaly, NaNSeedGradientIsNamed) {
  DetectAnomalyGuard anomaly;
  Tensor x = leaf({1, 2}, {2});
  const Tensor y = x * 2.0;
  EXPECT_ERROR(y.backward(tensor(std::vector<double>{1.0, std::nan("")}, {2})), "anomaly: the gradient given to backward()", "NaN");
}

TEST(Anomaly, CleanTrainingStepPassesWithAnomalyOn) {
  DetectAnomalyGuard anomaly;
  manual_seed(3);
  vgrad_test::Mlp model(4, 8, 3);
  const Tensor x = vgrad_test::uniform_tensor({5, 4}, 1);
  const Tensor y = tensor(std::vector<int64_t>{0, 1, 2, 0, 1}, {5});
  nn::cross_entropy(model(x), y).backward();
  EXPECT_TRUE(model.fc1->weight.grad().defined());
}

}  // namespace

// Normalizer::fit is per feature (a mean and std for every position of one example,
// over the examples), checked against hand-computed statistics; constant features are
// only centred; apply_ equals operator(); shape and fitting errors name the shapes.
#include <gtest/gtest.h>

#include <cmath>

#include "support.h"
#include "vgrad.h"

namespace {

using namespace vgrad;
using vgrad_test::expect_values;

TEST(Normalizer, FitIsPerFeatureOverTheExamples) {
  // Feature 0: 1, 3, 5 (mean 3, population std √(8/3)); feature 1: 10, 10, 40 (mean 20, std √200).
  const Tensor train = tensor({1.f, 10.f, 3.f, 10.f, 5.f, 40.f}, {3, 2});
  const data::Normalizer n = data::Normalizer::fit(train);
  EXPECT_EQ(n.mean.shape(), (Shape{2}));
  expect_values(n.mean, {3, 20});
  expect_values(n.stddev, {std::sqrt(8.0 / 3.0), std::sqrt(200.0)});
  const Tensor z = n(train);
  EXPECT_EQ(z.dtype(), DType::Float32);
  expect_values(z, {-2 / std::sqrt(8.0 / 3.0), -10 / std::sqrt(200.0), 0, -10 / std::sqrt(200.0),
                    2 / std::sqrt(8.0 / 3.0), 20 / std::sqrt(200.0)},
                1e-6);
  // Every feature of the normalised training set has mean 0 and std 1 (a scalar fit would not).
  expect_values(mean(z, {0}), {0, 0}, 1e-6);
  expect_values(mean(square(z), {0}), {1, 1}, 1e-6);
  // A single example (D) uses the same statistics.
  expect_values(n(tensor({3.f, 30.f})), {0, 10 / std::sqrt(200.0)}, 1e-6);
}

TEST(Normalizer, ImageShapedFeaturesAndConstantFeatures) {
  // (N, 1, 2): features are (1, 2); the second is constant, so it is centred with std 1.
  const Tensor train = tensor(std::vector<double>{0, 7, 2, 7}, {2, 1, 2});
  const data::Normalizer n = data::Normalizer::fit(train);
  EXPECT_EQ(n.mean.shape(), (Shape{1, 2}));
  expect_values(n.stddev, {1, 1});  // feature 0: std of {0, 2} is 1; feature 1: 0 -> 1
  const Tensor z = n(train);
  EXPECT_EQ(z.dtype(), DType::Float64);
  expect_values(z, {-1, 0, 1, 0});
}

TEST(Normalizer, InPlaceEqualsOutOfPlace) {
  const Tensor train = vgrad_test::uniform_tensor({16, 5}, 3, 0, 4);
  for (const data::Normalizer& n : {data::Normalizer::fit(train), data::Normalizer::fit_scalar(train)}) {
    Tensor copy = clone(train);
    n.apply_(copy);
    EXPECT_EQ(copy.to_vector<float>(), n(train).to_vector<float>());
  }
}

TEST(Normalizer, ErrorsNameTheShapes) {
  const data::Normalizer n = data::Normalizer::fit(vgrad_test::uniform_tensor({8, 3}, 4));
  EXPECT_ERROR(n(vgrad_test::uniform_tensor({8, 4}, 5)), "Normalizer: input [8, 4] does not end in the fitted feature shape [3]");
  EXPECT_ERROR(n(tensor(std::vector<int64_t>{1, 2, 3})), "needs a floating-point tensor, got int64");
  EXPECT_ERROR(data::Normalizer{}(tensor({1.f})), "Normalizer: not fitted");
  EXPECT_ERROR(data::Normalizer::fit(scalar_tensor(1.0)), "fit needs examples along dim 0, got shape []");
}

}  // namespace

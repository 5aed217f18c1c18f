// End-to-end convergence on small synthetic problems: an MLP learns two interleaved
// spirals (SGD with momentum, through the DataLoader) and a regression (Adam, MSE).
// Short and seeded, so they run in well under two seconds.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <vector>

#include "core/grad_mode.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "nn/functional.h"
#include "nn/layers.h"
#include "optim/optimizer.h"
#include "optim/scheduler.h"

namespace {

using namespace vgrad;

// Two spirals, one per class, each `per_class` points over 1.5 turns, with a little noise.
std::pair<Tensor, Tensor> spirals(int64_t per_class, uint64_t seed) {
  Generator gen(seed);
  const auto noise = randn({2 * per_class, 2}, {}, &gen).to_vector<float>();
  std::vector<float> x;
  std::vector<int64_t> y;
  for (int64_t c = 0; c < 2; ++c)
    for (int64_t i = 0; i < per_class; ++i) {
      const double t = 0.25 + 3.0 * M_PI * double(i) / double(per_class);  // angle
      const double r = t / (3.0 * M_PI);                                   // radius in (0, 1]
      const double angle = t + M_PI * double(c);
      const int64_t row = c * per_class + i;
      x.push_back(float(r * std::cos(angle) + 0.02 * noise[row * 2]));
      x.push_back(float(r * std::sin(angle) + 0.02 * noise[row * 2 + 1]));
      y.push_back(c);
    }
  return {tensor(x, {2 * per_class, 2}), tensor(y, {2 * per_class})};
}

double accuracy(nn::Module& model, const Tensor& x, const Tensor& y) {
  NoGradGuard no_grad;
  model.eval();
  const auto predicted = argmax(model(x), 1).to_vector<int64_t>();
  model.train();
  const auto labels = y.to_vector<int64_t>();
  int64_t correct = 0;
  for (size_t i = 0; i < labels.size(); ++i) correct += predicted[i] == labels[i];
  return double(correct) / double(labels.size());
}

TEST(Convergence, MlpLearnsTwoSpirals) {
  const auto start = std::chrono::steady_clock::now();
  manual_seed(0);
  auto [x, y] = spirals(200, 1);
  auto model = std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
      std::make_shared<nn::Linear>(2, 64), std::make_shared<nn::Tanh>(), std::make_shared<nn::Linear>(64, 64),
      std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(64, 2)});
  optim::Adam adam(model->parameters(), {.lr = 0.01});
  data::DataLoader loader(std::make_shared<data::TensorDataset>(x, y), {.batch_size = 50, .shuffle = true, .seed = 3});

  const double before = accuracy(*model, x, y);
  double first_loss = 0, last_loss = 0;
  int steps = 0;
  for (int epoch = 0; epoch < 60; ++epoch) {
    double epoch_loss = 0;
    for (auto& [xb, yb] : loader) {
      adam.zero_grad();
      Tensor loss = nn::cross_entropy((*model)(xb), yb);
      loss.backward();
      adam.step();
      epoch_loss += loss.item();
      ++steps;
    }
    epoch_loss /= double(loader.num_batches());
    if (epoch == 0) first_loss = epoch_loss;
    last_loss = epoch_loss;
  }
  const double after = accuracy(*model, x, y);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(steps, 60 * 8);
  EXPECT_LT(before, 0.8);  // not solved at initialisation
  EXPECT_GT(after, 0.95) << "train accuracy after " << steps << " steps (loss " << first_loss << " -> " << last_loss
                         << ")";
  EXPECT_LT(last_loss, 0.5 * first_loss);
  EXPECT_LT(seconds, 2.0);
}

TEST(Convergence, SgdMomentumWithScheduleLearnsBlobs) {
  // Four Gaussian blobs in 5-D, four classes; SGD + momentum + cosine schedule.
  Generator gen(5);
  const int64_t per_class = 100, classes = 4;
  const Tensor centers = randn({classes, 5}, {}, &gen) * 3.0;
  std::vector<Tensor> parts;
  std::vector<int64_t> labels;
  for (int64_t c = 0; c < classes; ++c) {
    parts.push_back(randn({per_class, 5}, {}, &gen) + centers.narrow(0, c, 1));
    for (int64_t i = 0; i < per_class; ++i) labels.push_back(c);
  }
  const Tensor x = cat(parts, 0), y = tensor(labels, {per_class * classes});
  manual_seed(6);
  nn::Sequential model{std::make_shared<nn::Linear>(5, 32), std::make_shared<nn::ReLU>(),
                       std::make_shared<nn::Linear>(32, classes)};
  optim::SGD sgd(model.parameters(), {.lr = 0.1, .momentum = 0.9});
  optim::CosineWithWarmup schedule(sgd, 10, 200);
  for (int step = 0; step < 200; ++step) {
    sgd.zero_grad();
    nn::cross_entropy(model(x), y).backward();
    sgd.step();
    schedule.step();
  }
  EXPECT_GT(accuracy(model, x, y), 0.97);
}

TEST(Convergence, RegressionWithMse) {
  // y = sin(3x) on [-1, 1]: an MLP with Adam brings the MSE far below the variance of y.
  Generator gen(7);
  const Tensor x = uniform({256, 1}, -1, 1, {}, &gen);
  std::vector<float> target;
  for (float v : x.to_vector<float>()) target.push_back(std::sin(3.0f * v));
  const Tensor y = tensor(target, {256, 1});
  const double variance = var(y, {}, 0).item();
  manual_seed(8);
  nn::Sequential model{std::make_shared<nn::Linear>(1, 32), std::make_shared<nn::Tanh>(),
                       std::make_shared<nn::Linear>(32, 1)};
  optim::Adam adam(model.parameters(), {.lr = 0.02});
  double loss = 0;
  for (int step = 0; step < 300; ++step) {
    adam.zero_grad();
    Tensor l = nn::F::mse_loss(model(x), y);
    l.backward();
    adam.step();
    loss = l.item();
  }
  EXPECT_GT(variance, 0.3);
  EXPECT_LT(loss, 0.01 * variance);
}

}  // namespace

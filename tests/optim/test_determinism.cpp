// Same seed, same bytes: two CPU training runs with one seed (initialisation,
// shuffled batches, dropout, momentum SGD or Adam) save byte-identical
// checkpoints. A different seed gives different bytes, so the check is not vacuous.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/loader.h"
#include "nn/checkpoint.h"
#include "nn/functional.h"
#include "optim/optimizer.h"
#include "support.h"

namespace {

using namespace vgrad;

std::vector<char> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// Three epochs of a small classifier; returns the saved checkpoint's bytes.
std::vector<char> train_and_save(uint64_t seed, bool adam, const std::string& path) {
  manual_seed(seed);  // initialisation and dropout draw from the default generator
  Generator data_generator(seed + 1000);
  const Tensor x = normal({192, 12}, 0.0, 1.0, {}, &data_generator);
  // Labels from the signs of the first two features: learnable, so the weights really move.
  const std::vector<float> features = x.to_vector<float>();
  std::vector<int64_t> labels(192);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = (features[i * 12] > 0) + 2 * (features[i * 12 + 1] > 0);
  const Tensor y = tensor(labels, {192});
  vgrad_test::Mlp model(12, 16, 4);
  std::unique_ptr<optim::Optimizer> optimizer;
  if (adam) optimizer = std::make_unique<optim::Adam>(model.parameters(), optim::AdamOptions{.lr = 1e-2});
  else optimizer = std::make_unique<optim::SGD>(model.parameters(), optim::SGDOptions{.lr = 0.05, .momentum = 0.9});
  data::DataLoader loader(std::make_shared<data::TensorDataset>(x, y), {.batch_size = 32, .shuffle = true, .seed = seed});
  for (int epoch = 0; epoch < 3; ++epoch)
    for (auto& [inputs, targets] : loader) {
      const Tensor loss = nn::cross_entropy(model(nn::F::dropout(inputs, 0.1, true)), targets);
      optimizer->zero_grad();
      loss.backward();
      optimizer->step();
    }
  nn::save(model, path);
  return file_bytes(path);
}

class Determinism : public vgrad_test::TempDirTest {};

TEST_F(Determinism, SameSeedSameCheckpointBytes) {
  for (const bool adam : {false, true}) {
    const auto first = train_and_save(7, adam, path("first.safetensors"));
    const auto second = train_and_save(7, adam, path("second.safetensors"));
    ASSERT_GT(first.size(), 1000u);
    EXPECT_TRUE(first == second) << (adam ? "Adam" : "SGD") << ": two runs with seed 7 saved different bytes";
    EXPECT_FALSE(first == train_and_save(8, adam, path("other.safetensors"))) << "the seed changes nothing";
  }
}

}  // namespace

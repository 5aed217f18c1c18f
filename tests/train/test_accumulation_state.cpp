// A training state cannot be saved between a completed accumulation group and its
// step(): the file could not be resumed (the group would be stepped twice or never).
#include <gtest/gtest.h>

#include "support.h"
#include "vgrad.h"

namespace {

using namespace vgrad;

class AccumulationStateTest : public vgrad_test::TempDirTest {};

TEST_F(AccumulationStateTest, SavingACompleteGroupBeforeStepIsRefused) {
  manual_seed(2);
  vgrad_test::Mlp model(4, 5, 2);
  optim::SGD sgd(model.parameters(), {.lr = 0.1});
  optim::GradientAccumulation accumulate(sgd, 2);
  train::TrainingState state{.model = &model, .optimizer = &sgd, .accumulation = &accumulate};
  const Tensor x = vgrad_test::uniform_tensor({3, 4}, 1);
  const Tensor y = tensor(std::vector<int64_t>{0, 1, 1});
  EXPECT_FALSE(accumulate.backward(nn::cross_entropy(model(x), y)));
  train::save_training_state(path("pending.safetensors"), state);  // mid-group: fine
  EXPECT_TRUE(accumulate.backward(nn::cross_entropy(model(x), y)));
  EXPECT_ERROR(train::save_training_state(path("ready.safetensors"), state), "ready.safetensors",
               "a complete group of 2 micro-batches awaits GradientAccumulation::step()");
  accumulate.step();
  train::save_training_state(path("ready.safetensors"), state);
}

}  // namespace

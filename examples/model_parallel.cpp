// Model parallelism: one model whose layers live on different devices (fc1 on the CPU,
// fc2 on the GPU when one is present), activations crossing forward and their gradients
// crossing back through to(). Trains it and checks it against the same model on one
// device. Not data parallelism (see --distributed in mnist_mlp): one process, one batch.
#include <vgrad/vgrad.h>

#include "common.h"

using namespace vgrad;

namespace {

// fc1 on `first`, fc2 on `second`: the input goes to fc1's device, the hidden activation
// to fc2's; to() is differentiable, so backward carries the gradient the other way.
struct SplitMlp : nn::Module {
  SplitMlp(int64_t in, int64_t hidden, int64_t out, Device first, Device second)
      : first(first), second(second),
        fc1(register_module("fc1", std::make_shared<nn::Linear>(in, hidden))),
        fc2(register_module("fc2", std::make_shared<nn::Linear>(hidden, out))) {
    fc1->to(first);
    fc2->to(second);
  }
  Tensor forward(const Tensor& x) override { return (*fc2)(relu((*fc1)(x.to(first))).to(second)); }
  Device first, second;
  std::shared_ptr<nn::Linear> fc1, fc2;
};

// Trains from the same seed; returns the final parameters on the CPU.
std::vector<std::vector<double>> train_split(Device first, Device second, int steps) {
  manual_seed(7);
  SplitMlp model(20, 64, 4, first, second);
  optim::SGD sgd(model.parameters(), {.lr = 0.1, .momentum = 0.9});
  Generator gen(3);
  const Tensor x = normal({256, 20}, 0, 1, {}, &gen);
  const Tensor y = argmax(matmul(x, normal({20, 4}, 0, 1, {}, &gen)), 1);
  for (int step = 0; step < steps; ++step) {
    Tensor loss = nn::cross_entropy(model(x), y.to(second));
    loss.backward();
    sgd.step();
    sgd.zero_grad();
    if (step % 25 == 0 || step + 1 == steps) spdlog::info("{} + {}: step {:3d} loss {:.4f}", first.str(), second.str(), step, loss.item());
  }
  std::vector<std::vector<double>> values;
  for (const Tensor& p : model.parameters()) values.push_back(p.to(kCPU).to_vector<double>());
  return values;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Model parallelism: fc1 and fc2 of one MLP on different devices"};
  std::string first = "cpu", second = cuda::is_available() ? "cuda:0" : "cpu";
  int steps = 100;
  app.add_option("--first", first, "device of fc1");
  app.add_option("--second", second, "device of fc2 (default: cuda:0 when a GPU is present)");
  app.add_option("--steps", steps, "SGD steps");
  CLI11_PARSE(app, argc, argv);
  return examples::run([&] {
    const auto split = train_split(Device(first), Device(second), steps);
    const auto single = train_split(kCPU, kCPU, steps);
    double worst = 0;
    for (size_t i = 0; i < split.size(); ++i)
      for (size_t j = 0; j < split[i].size(); ++j)
        worst = std::max(worst, std::abs(split[i][j] - single[i][j]) / (1 + std::abs(single[i][j])));
    spdlog::info("{} + {} against cpu alone after {} steps: largest relative difference {:.2e}", first, second, steps, worst);
    return worst < 1e-4 ? 0 : 1;
  });
}

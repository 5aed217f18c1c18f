// Fits a small MLP (1-64-64-1, Tanh) with MSE to y = sin(3x) + noise on synthetic,
// seeded data, and reports the test MSE. The smallest end-to-end regression program:
// a TensorDataset, a DataLoader, Adam (or SGD with momentum) and mse_loss.
// Exits non-zero if the final test MSE is not below --max-test-mse.
#include <cmath>
#include <vgrad/vgrad.h>

#include "common.h"

using namespace vgrad;

namespace {

struct Mlp : nn::Module {
  explicit Mlp(int64_t hidden)
      : net(register_module("net", std::make_shared<nn::Sequential>(std::initializer_list<std::shared_ptr<nn::Module>>{
                                       std::make_shared<nn::Linear>(1, hidden), std::make_shared<nn::Tanh>(),
                                       std::make_shared<nn::Linear>(hidden, hidden), std::make_shared<nn::Tanh>(),
                                       std::make_shared<nn::Linear>(hidden, 1)}))) {}
  Tensor forward(const Tensor& x) override { return (*net)(x); }
  std::shared_ptr<nn::Sequential> net;
};

// x ~ U(-1, 1) (N, 1);  y = sin(3x) + noise·ε, ε ~ N(0, 1), and the clean sin(3x).
// vgrad has no sin op, so sin(3x) is computed on the host.
struct Points {
  Tensor x, y, clean;
};
Points make_data(int64_t n, double noise, Generator& gen) {
  Tensor x = uniform({n, 1}, -1.0, 1.0, {}, &gen);
  std::vector<float> values = x.to_vector<float>();
  for (float& v : values) v = std::sin(3.0f * v);
  Tensor clean = tensor(values, {n, 1});
  return {x, clean + noise * randn({n, 1}, {}, &gen), clean};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Fit y = sin(3x) + noise with a small MLP and MSE"};
  int epochs = 200, print_every = 20;
  int64_t hidden = 64, train_size = 1024, test_size = 256, batch_size = 64;
  double lr = 5e-3, momentum = 0.9, noise = 0.1, max_test_mse = 0.02;
  std::string optimizer = "adam";
  uint64_t seed = 0;
  app.add_option("--epochs", epochs, "training epochs")->check(examples::AtLeastOne);
  app.add_option("--print-every", print_every, "print the loss every this many epochs")->check(examples::AtLeastOne);
  app.add_option("--hidden", hidden, "width of the two hidden layers")->check(examples::AtLeastOne);
  app.add_option("--train-size", train_size, "training points")->check(examples::AtLeastOne);
  app.add_option("--test-size", test_size, "test points")->check(examples::AtLeastOne);
  app.add_option("--batch-size", batch_size, "mini-batch size")->check(examples::AtLeastOne);
  app.add_option("--optimizer", optimizer, "adam or sgd")->check(CLI::IsMember({"adam", "sgd"}));
  app.add_option("--lr", lr, "learning rate");
  app.add_option("--momentum", momentum, "SGD momentum");
  app.add_option("--noise", noise, "standard deviation of the noise added to the targets");
  app.add_option("--max-test-mse", max_test_mse, "fail (exit 1) if the final test MSE is not below this");
  app.add_option("--seed", seed, "seed for data, initialisation and shuffling");
  CLI11_PARSE(app, argc, argv);

  return examples::run([&] {
    manual_seed(seed);
    Generator data_gen(seed + 1);
    const Points train_points = make_data(train_size, noise, data_gen);
    const Points test = make_data(test_size, noise, data_gen);
    auto train = std::make_shared<data::TensorDataset>(train_points.x, train_points.y);
    data::DataLoader loader(train, {.batch_size = batch_size, .shuffle = true, .seed = seed});

    Mlp model(hidden);
    std::unique_ptr<optim::Optimizer> opt;
    if (optimizer == "adam")
      opt = std::make_unique<optim::Adam>(model.parameters(), optim::AdamOptions{.lr = lr});
    else
      opt = std::make_unique<optim::SGD>(model.parameters(), optim::SGDOptions{.lr = lr, .momentum = momentum});
    // MSE on held-out noisy targets (at best about noise², the noise's variance).
    const auto test_mse = [&](const Tensor& target) {
      NoGradGuard no_grad;
      model.eval();
      const double mse = nn::F::mse_loss(model(test.x), target).item();
      model.train();
      return mse;
    };
    spdlog::info("1-{}-{}-1 Tanh MLP, {} train / {} test points, noise sd {} (MSE floor ~{:.4f}), {} lr {}", hidden,
                 hidden, train_size, test_size, noise, noise * noise, optimizer, lr);

    for (int epoch = 1; epoch <= epochs; ++epoch) {
      double loss_sum = 0;
      int64_t batches = 0;
      for (auto& [x, y] : loader) {
        Tensor loss = nn::F::mse_loss(model(x), y);
        opt->zero_grad();
        loss.backward();
        opt->step();
        loss_sum += loss.item();
        ++batches;
      }
      if (epoch == 1 || epoch % print_every == 0 || epoch == epochs)
        spdlog::info("epoch {:4d}  train MSE {:.5f}  test MSE {:.5f}", epoch, loss_sum / double(batches), test_mse(test.y));
    }
    const double final_mse = test_mse(test.y);
    spdlog::info("final test MSE {:.5f} (threshold {}, noise floor ~{:.4f}); against the noiseless sin(3x): {:.5f}",
                 final_mse, max_test_mse, noise * noise, test_mse(test.clean));
    if (!(final_mse < max_test_mse)) {
      spdlog::error("test MSE {:.5f} is not below {}", final_mse, max_test_mse);
      return 1;
    }
    return 0;
  });
}

// Trains one SGD step of a tiny model through the installed headers and library.
#include <vgrad/vgrad.h>

#include <cstdio>

int main() {
  vgrad::manual_seed(1);
  vgrad::nn::Linear layer(3, 2);
  vgrad::optim::SGD sgd(layer.parameters(), {.lr = 0.1});
  const auto x = vgrad::tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3});
  const auto y = vgrad::tensor(std::vector<int64_t>{0, 1}, {2});
  const double before = vgrad::nn::cross_entropy(layer(x), y).item();
  for (int i = 0; i < 20; ++i) {
    sgd.zero_grad();
    vgrad::nn::cross_entropy(layer(x), y).backward();
    sgd.step();
  }
  const double after = vgrad::nn::cross_entropy(layer(x), y).item();
  std::printf("consumer: loss %.4f -> %.4f\n", before, after);
  return after < before ? 0 : 1;
}

// Trains a small CNN on MNIST-format data (by default Fashion-MNIST from Debian's
// dataset-fashion-mnist package): conv 3x3 -> BatchNorm -> ReLU -> max-pool, twice,
// then fc 128 -> 10. Same flags and output as mnist_mlp; the checkpoint's tensors have
// torch.nn's names (conv1.weight, bn1.running_mean, ...) for the equivalent torch model.
#include <optional>

#include "common.h"

using namespace vgrad;

namespace {

// (N, 784) images -> (N, 1, 28, 28) -> conv(1->c1) -> pool -> conv(c1->c2) -> pool -> fc -> fc.
struct Cnn : nn::Module {
  Cnn(int64_t side, int64_t c1, int64_t c2, int64_t hidden, int64_t classes, double dropout)
      : side(side),
        conv1(register_module("conv1", std::make_shared<nn::Conv2d>(1, c1, 3, nn::Conv2dOptions{.padding = {1, 1}}))),
        bn1(register_module("bn1", std::make_shared<nn::BatchNorm2d>(c1))),
        conv2(register_module("conv2", std::make_shared<nn::Conv2d>(c1, c2, 3, nn::Conv2dOptions{.padding = {1, 1}}))),
        bn2(register_module("bn2", std::make_shared<nn::BatchNorm2d>(c2))),
        fc1(register_module("fc1", std::make_shared<nn::Linear>(c2 * (side / 4) * (side / 4), hidden))),
        drop(register_module("drop", std::make_shared<nn::Dropout>(dropout))),
        fc2(register_module("fc2", std::make_shared<nn::Linear>(hidden, classes))) {}
  Tensor forward(const Tensor& x) override {
    Tensor h = x.reshape({-1, 1, side, side});
    h = max_pool2d(relu((*bn1)((*conv1)(h))), {2, 2});
    h = max_pool2d(relu((*bn2)((*conv2)(h))), {2, 2});
    return (*fc2)((*drop)(relu((*fc1)(h.flatten(1)))));
  }
  int64_t side;
  std::shared_ptr<nn::Conv2d> conv1;
  std::shared_ptr<nn::BatchNorm2d> bn1;
  std::shared_ptr<nn::Conv2d> conv2;
  std::shared_ptr<nn::BatchNorm2d> bn2;
  std::shared_ptr<nn::Linear> fc1;
  std::shared_ptr<nn::Dropout> drop;
  std::shared_ptr<nn::Linear> fc2;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train a CNN on MNIST-format data with vgrad"};
  std::vector<int64_t> channels{16, 32};
  int64_t hidden = 128;
  double dropout = 0.25;
  examples::TrainingFlags flags{.epochs = 6, .lr = 1e-3, .optimizer = "adam", .lr_schedule = "cosine"};
  app.add_option("--channels", channels, "channels of the two conv layers")->delimiter(',')->expected(2);
  app.add_option("--hidden", hidden, "width of the hidden fully connected layer")->check(examples::AtLeastOne);
  app.add_option("--dropout", dropout, "dropout before the last layer");
  flags.add_to(app);
  CLI11_PARSE(app, argc, argv);

  return examples::run([&] {
    const Device device(flags.device_name);
    if (!flags.checkpoint.empty()) train::check_can_save(flags.checkpoint);  // now, not after the first epoch
    manual_seed(flags.seed);
    const examples::MnistData data = examples::load_mnist(flags.data_dir, flags.limit);
    data::DataLoader train_loader(data.train_set,
                                  {.batch_size = flags.batch_size, .shuffle = true, .seed = flags.seed, .device = device});
    data::DataLoader test_loader(data.test_set, {.batch_size = 1000, .shuffle = false, .device = device});

    const int64_t classes = data.train_raw.classes(), side = data.train_raw.rows();
    if (side != data.train_raw.cols() || side % 4 != 0)
      fail("mnist_cnn: images are {}x{}; this CNN needs square images with a side divisible by 4", side,
           data.train_raw.cols());
    Cnn model(side, channels[0], channels[1], hidden, classes, dropout);
    model.to(device);
    std::unique_ptr<optim::Optimizer> opt = examples::make_optimizer(flags, model.parameters());
    optim::GradientAccumulation step(*opt, flags.accumulate);
    const int64_t steps_per_epoch = (train_loader.num_batches() + flags.accumulate - 1) / flags.accumulate;
    const std::unique_ptr<optim::Scheduler> scheduler = examples::make_scheduler(flags, *opt, steps_per_epoch);
    train::TrainingState state{.model = &model, .optimizer = opt.get(), .scheduler = scheduler.get(),
                               .accumulation = &step, .loader = &train_loader};
    state.info.architecture = {{"conv_channels", fmt::format("{},{}", channels[0], channels[1])},
                               {"hidden", std::to_string(hidden)},
                               {"layers", "conv3x3-bn-relu-maxpool2,conv3x3-bn-relu-maxpool2,fc-relu-dropout,fc"}};
    examples::describe_and_resume(state, data, "mnist_cnn", flags.resume);
    std::optional<DetectAnomalyGuard> anomaly;
    if (flags.detect_anomaly) anomaly.emplace();
    examples::RunLog run_log(flags.metrics);

    spdlog::info("{} train / {} test examples, CNN conv{}-conv{}-fc{}-10, {} on {}, batch {}, lr {}",
                 data.train_set->size(), data.test_set->size(), channels[0], channels[1], hidden, flags.optimizer,
                 device.str(), flags.batch_size, opt->lr());
    if (examples::nothing_to_train(state, flags)) return 0;
    for (int epoch = int(state.epoch) + 1; epoch <= flags.epochs; ++epoch) {
      examples::EpochMeter meter(epoch, train_loader.num_batches(), device);
      // The step point: the whole group's gradient is ready, the optimizer steps, then the schedule.
      auto take_step = [&] {
        step.step();
        ++state.step;
        if (scheduler) scheduler->step();
      };
      for (auto& [x, y] : train_loader) {
        Tensor loss = nn::cross_entropy(model(x), y);
        if (step.backward(loss)) take_step();
        meter.add(loss);
      }
      if (step.finish()) take_step();  // a partial group, rescaled to its mean
      state.epoch = epoch;
      const double seconds = meter.stop();
      run_log.epoch(epoch, meter.mean_loss(), examples::accuracy(model, test_loader), seconds, data.train_set->size());
      if (!flags.checkpoint.empty()) train::save_training_state(flags.checkpoint, state);
      if (examples::stop_after(flags, epoch)) break;
    }
    run_log.done(int(state.epoch));
    return 0;
  });
}

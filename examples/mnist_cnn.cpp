// Trains a small CNN on MNIST-format data (by default Fashion-MNIST from Debian's
// dataset-fashion-mnist package): conv 3x3 -> BatchNorm -> ReLU -> max-pool, twice,
// then fc 128 -> 10. Same flags and output as mnist_mlp; the checkpoint's tensors have
// torch.nn's names (conv1.weight, bn1.running_mean, ...) for the equivalent torch model.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <optional>
#include <vgrad/vgrad.h>

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

double accuracy(Cnn& model, data::DataLoader& loader) {
  NoGradGuard no_grad;
  model.eval();
  int64_t correct = 0, total = 0;
  for (auto& [x, y] : loader) {
    correct += sum(eq(argmax(model(x), 1), y)).item<int64_t>();
    total += y.numel();
  }
  model.train();
  return double(correct) / double(total);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train a CNN on MNIST-format data with vgrad"};
  std::vector<int64_t> channels{16, 32};
  int64_t hidden = 128;
  double dropout = 0.25;
  int epochs = 6, accumulate = 1;
  std::string schedule = "cosine";
  int64_t batch_size = 64;
  double lr = 1e-3, momentum = 0.0, weight_decay = 0.0;
  std::string optimizer = "adam", data_dir = data::Mnist::default_directory(), device_name = "cpu";
  std::string checkpoint, metrics, resume;
  uint64_t seed = 0;
  int64_t limit = 0;
  bool detect_anomaly = false;
  app.add_option("--channels", channels, "channels of the two conv layers")->delimiter(',')->expected(2);
  app.add_option("--hidden", hidden, "width of the hidden fully connected layer")->check(CLI::PositiveNumber);
  app.add_option("--dropout", dropout, "dropout before the last layer");
  app.add_option("--epochs", epochs, "training epochs")->check(CLI::PositiveNumber);
  app.add_option("--batch-size", batch_size, "mini-batch size")->check(CLI::PositiveNumber);
  app.add_option("--lr", lr, "learning rate");
  app.add_option("--momentum", momentum, "SGD momentum");
  app.add_option("--schedule", schedule, "learning rate: cosine (decays to 0 over --epochs, per step) or constant")
      ->check(CLI::IsMember({"cosine", "constant"}));
  app.add_option("--weight-decay", weight_decay, "weight decay");
  app.add_option("--optimizer", optimizer, "sgd, adam or adamw")->check(CLI::IsMember({"sgd", "adam", "adamw"}));
  app.add_option("--accumulate", accumulate, "micro-batches per optimizer step (gradient accumulation)")
      ->check(CLI::PositiveNumber);
  app.add_option("--seed", seed, "seed for initialisation and shuffling");
  app.add_option("--data-dir", data_dir, "directory with the IDX files (train-images-idx3-ubyte[.gz], ...)");
  app.add_option("--device", device_name, "cpu or cuda[:N]");
  app.add_option("--checkpoint", checkpoint,
                 "save the training state here (safetensors: the model under plain names) after each epoch");
  app.add_option("--resume", resume,
                 "continue the run saved in this checkpoint (model, optimizer state and hyper-parameters, "
                 "data order, RNG) up to --epochs");
  app.add_option("--limit", limit, "use only the first N training and test examples (quick runs, tests)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--detect-anomaly", detect_anomaly,
               "stop at the first op whose output or gradient is NaN/Inf, naming it (slower)");
  app.add_option("--metrics", metrics, "write per-epoch metrics to this CSV file");
  CLI11_PARSE(app, argc, argv);

  try {
    const Device device(device_name);
    if (!checkpoint.empty()) train::check_can_save(checkpoint);  // now, not after the first epoch
    manual_seed(seed);
    spdlog::info("loading {}", data_dir);
    data::Mnist train_raw(data_dir, "train"), test_raw(data_dir, "test");
    // Normalise with the training set's statistics, for train and test alike.
    const auto normalize = data::Normalizer::fit_scalar(train_raw.inputs());
    auto first = [&](const Tensor& t) { return limit > 0 && limit < t.shape()[0] ? t.narrow(0, 0, limit) : t; };
    auto train_set = std::make_shared<data::TensorDataset>(first(normalize(train_raw.inputs())), first(train_raw.targets()));
    auto test_set = std::make_shared<data::TensorDataset>(first(normalize(test_raw.inputs())), first(test_raw.targets()));
    data::DataLoader train_loader(train_set, {.batch_size = batch_size, .shuffle = true, .seed = seed, .device = device});
    data::DataLoader test_loader(test_set, {.batch_size = 1000, .shuffle = false, .device = device});

    const int64_t classes = 10;
    if (train_raw.rows() != train_raw.cols() || train_raw.rows() % 4 != 0)
      fail("mnist_cnn: images are {}x{}; this CNN needs square images with a side divisible by 4", train_raw.rows(),
           train_raw.cols());
    Cnn model(train_raw.rows(), channels[0], channels[1], hidden, classes, dropout);
    model.to(device);
    std::unique_ptr<optim::Optimizer> opt;
    if (optimizer == "sgd")
      opt = std::make_unique<optim::SGD>(model.parameters(), optim::SGDOptions{.lr = lr, .momentum = momentum, .weight_decay = weight_decay});
    else if (optimizer == "adam")
      opt = std::make_unique<optim::Adam>(model.parameters(), optim::AdamOptions{.lr = lr, .weight_decay = weight_decay});
    else
      opt = std::make_unique<optim::AdamW>(model.parameters(), optim::AdamOptions{.lr = lr, .weight_decay = weight_decay});
    optim::GradientAccumulation step(*opt, accumulate);
    const int64_t steps_per_epoch = (train_loader.num_batches() + accumulate - 1) / accumulate;
    std::unique_ptr<optim::Scheduler> scheduler;
    if (schedule == "cosine") scheduler = std::make_unique<optim::CosineWithWarmup>(*opt, 0, epochs * steps_per_epoch);
    train::TrainingState state{.model = &model, .optimizer = opt.get(), .scheduler = scheduler.get(),
                               .accumulation = &step, .loader = &train_loader};
    state.info.architecture = {{"conv_channels", fmt::format("{},{}", channels[0], channels[1])},
                               {"hidden", std::to_string(hidden)},
                               {"layers", "conv3x3-bn-relu-maxpool2,conv3x3-bn-relu-maxpool2,fc-relu-dropout,fc"}};
    state.info.input_mean = normalize.mean.item();
    state.info.input_std = normalize.stddev.item();
    state.info.num_classes = classes;
    state.info.program = "mnist_cnn";
    if (!resume.empty()) {
      train::load_training_state(resume, state);
      spdlog::info("resumed {} after epoch {} (step {}); its optimizer settings replace the command line's", resume,
                   state.epoch, state.step);
    }
    std::optional<DetectAnomalyGuard> anomaly;
    if (detect_anomaly) anomaly.emplace();
    std::unique_ptr<data::CsvLog> log;
    if (!metrics.empty()) log = std::make_unique<data::CsvLog>(metrics, std::vector<std::string>{"epoch", "train_loss", "test_accuracy", "seconds"});

    spdlog::info("{} train / {} test examples, CNN conv{}-conv{}-fc{}-10, {} on {}, batch {}, lr {}", train_set->size(),
                 test_set->size(), channels[0], channels[1], hidden, optimizer, device.str(), batch_size, opt->lr());
    if (state.epoch >= epochs) {
      spdlog::warn("nothing to train: {} already holds {} epochs (--epochs {})", resume, state.epoch, epochs);
      return 0;
    }
    double best = 0, training_seconds = 0;
    for (int epoch = int(state.epoch) + 1; epoch <= epochs; ++epoch) {
      const auto start = std::chrono::steady_clock::now();
      data::Progress progress(fmt::format("epoch {}", epoch), train_loader.num_batches());
      Tensor loss_sum = zeros({}, {.device = device});
      int64_t steps = 0;
      // The step point: the whole group's gradient is ready, the optimizer steps, then the schedule.
      auto take_step = [&] {
        step.step();
        ++state.step;
        if (scheduler) scheduler->step();
      };
      for (auto& [x, y] : train_loader) {
        Tensor loss = nn::cross_entropy(model(x), y);
        if (step.backward(loss)) take_step();
        {
          NoGradGuard no_grad;
          loss_sum.add_(loss.detach());
        }
        if (++steps % 50 == 0 && data::Progress::is_terminal()) progress.update(steps, loss_sum.item() / double(steps));
      }
      if (step.finish()) take_step();  // a partial group, rescaled to its mean
      state.epoch = epoch;
      progress.finish();
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      training_seconds += seconds;
      const double train_loss = loss_sum.item() / double(steps), acc = accuracy(model, test_loader);
      best = std::max(best, acc);
      spdlog::info("epoch {:2d}  train loss {:.4f}  test accuracy {:.2f}%  {:.2f} s ({:.0f} samples/s)", epoch,
                   train_loss, 100 * acc, seconds, double(train_set->size()) / seconds);
      if (log) log->row({double(epoch), train_loss, acc, seconds});
      if (!checkpoint.empty()) train::save_training_state(checkpoint, state);
    }
    spdlog::info("done: best test accuracy {:.2f}% after {} epochs, {:.1f} s of training", 100 * best, epochs,
                 training_seconds);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  return 0;
}

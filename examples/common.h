// What the examples share: run(), which turns an error into one logged line and exit
// status 1, and for the MNIST training examples (mnist_mlp, mnist_cnn) the flags every run
// takes, loading and normalising the data, the optimizer choice, test accuracy, and one
// epoch's loss, progress line and report. Not a trainer: each example keeps its own
// training loop, which is the part worth reading.
#pragma once
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vgrad/vgrad.h>

namespace examples {

using namespace vgrad;

// Runs an example's main body and returns its exit status; an exception (a bad flag value,
// missing data, a shape error) is logged as one line and gives status 1.
template <class Body> int run(Body&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}

// A count flag (epochs, sizes, widths): a whole number >= 1. CLI11's PositiveNumber refuses
// 0 as "not in range 0.000000 to" DBL_MAX written out in 300 digits.
inline const CLI::Validator AtLeastOne(
    [](std::string& input) {
      int64_t value = 0;
      if (!CLI::detail::lexical_cast(input, value) || value < 1)
        return "must be a whole number >= 1, got '" + input + "'";
      return std::string();
    },
    "INT>=1", "AtLeastOne");

// The flags of a training run. Each example sets its own defaults where they differ:
// examples::TrainingFlags flags{.epochs = 6, .lr = 1e-3, .optimizer = "adam"};
struct TrainingFlags {
  int epochs = 10;
  int64_t batch_size = 64;
  double lr = 0.1, momentum = 0.0, weight_decay = 0.0;
  std::string optimizer = "sgd";
  std::string lr_schedule = "none";
  int accumulate = 1;
  uint64_t seed = 0;
  std::string data_dir = data::Mnist::default_directory(), device_name = "cpu";
  std::string checkpoint{}, metrics{}, resume{};  // {}: -Wmissing-field-initializers
  int64_t limit = 0;
  int stop_after = 0;  // 0: train all --epochs
  bool detect_anomaly = false;

  void add_to(CLI::App& app) {
    app.add_option("--epochs", epochs, "training epochs")->check(AtLeastOne);
    app.add_option("--batch-size", batch_size, "mini-batch size")->check(AtLeastOne);
    app.add_option("--lr", lr, "learning rate");
    app.add_option("--momentum", momentum, "SGD momentum");
    app.add_option("--weight-decay", weight_decay, "weight decay");
    app.add_option("--optimizer", optimizer, "sgd, adam or adamw")->check(CLI::IsMember({"sgd", "adam", "adamw"}));
    app.add_option("--lr-schedule", lr_schedule,
                   "none (constant --lr), step (x0.7 each epoch, as PyTorch's MNIST example) or cosine (from --lr "
                   "to 0 over --epochs, no warm-up; a resumed run needs the same --lr-schedule and --epochs)")
        ->check(CLI::IsMember({"none", "step", "cosine"}));
    app.add_option("--accumulate", accumulate, "micro-batches per optimizer step (gradient accumulation)")
        ->check(AtLeastOne);
    app.add_option("--seed", seed, "seed for initialisation and shuffling");
    app.add_option("--data-dir", data_dir, "directory with the IDX files (train-images-idx3-ubyte[.gz], ...)");
    app.add_option("--device", device_name, "cpu or cuda[:N]");
    app.add_option("--checkpoint", checkpoint,
                   "save the training state here (safetensors: the model under plain names) after each epoch");
    app.add_option("--resume", resume,
                   "continue the run saved in this checkpoint (model, optimizer state and hyper-parameters, "
                   "data order, RNG) up to --epochs");
    app.add_option("--stop-after", stop_after,
                   "stop after this epoch as an interrupted run would: the schedule still spans --epochs, and "
                   "--resume with the same --epochs continues it exactly")
        ->check(AtLeastOne);
    app.add_option("--limit", limit, "use only the first N training and test examples (quick runs, tests)")
        ->check(AtLeastOne);
    app.add_flag("--detect-anomaly", detect_anomaly,
                 "stop at the first op whose output or gradient is NaN/Inf, naming it (slower)");
    app.add_option("--metrics", metrics, "write per-epoch metrics to this CSV file");
  }
};

// The train and test splits of an MNIST-format directory, normalised with the training set's
// statistics for both, each cut to its first `limit` examples when limit > 0.
struct MnistData {
  data::Mnist train_raw, test_raw;
  data::Normalizer normalize;
  std::shared_ptr<data::TensorDataset> train_set, test_set;
};

inline MnistData load_mnist(const std::string& directory, int64_t limit) {
  spdlog::info("loading {}", directory);
  data::Mnist train_raw(directory, "train"), test_raw(directory, "test");
  // One mean/std over all pixels (as torchvision's Normalize for MNIST): a per-pixel fit would
  // blow up the near-constant border pixels.
  const auto normalize = data::Normalizer::fit_scalar(train_raw.inputs());
  auto first = [&](const Tensor& t) { return limit > 0 && limit < t.shape()[0] ? t.narrow(0, 0, limit) : t; };
  auto train_set =
      std::make_shared<data::TensorDataset>(first(normalize(train_raw.inputs())), first(train_raw.targets()));
  auto test_set = std::make_shared<data::TensorDataset>(first(normalize(test_raw.inputs())), first(test_raw.targets()));
  return {std::move(train_raw), std::move(test_raw), normalize, std::move(train_set), std::move(test_set)};
}

// --optimizer: SGD (with --momentum), Adam or AdamW, each with --lr and --weight-decay.
inline std::unique_ptr<optim::Optimizer> make_optimizer(const TrainingFlags& flags, std::vector<Tensor> parameters) {
  if (flags.optimizer == "sgd")
    return std::make_unique<optim::SGD>(
        std::move(parameters),
        optim::SGDOptions{.lr = flags.lr, .momentum = flags.momentum, .weight_decay = flags.weight_decay});
  const optim::AdamOptions options{.lr = flags.lr, .weight_decay = flags.weight_decay};
  if (flags.optimizer == "adam") return std::make_unique<optim::Adam>(std::move(parameters), options);
  return std::make_unique<optim::AdamW>(std::move(parameters), options);
}

// --lr-schedule over a run of flags.epochs epochs of steps_per_epoch optimizer steps each
// (call step() after every optimizer step); nullptr for none. The checkpoint saves its step
// count and base lr (train/training_state.h), so a resumed run continues the same curve when
// given the same --lr-schedule and --epochs.
inline std::unique_ptr<optim::Scheduler> make_scheduler(const TrainingFlags& flags, optim::Optimizer& optimizer,
                                                        int64_t steps_per_epoch) {
  if (flags.lr_schedule == "step") return std::make_unique<optim::StepLR>(optimizer, steps_per_epoch, 0.7);
  if (flags.lr_schedule == "cosine")
    return std::make_unique<optim::CosineWithWarmup>(optimizer, 0, int64_t(flags.epochs) * steps_per_epoch);
  return nullptr;
}

// Records what a checkpoint's reader needs besides the weights (the input normalisation, the
// classes, which program wrote it), then continues the run saved in `resume`, if one is named.
inline void describe_and_resume(train::TrainingState& state, const MnistData& data, const std::string& program,
                                const std::string& resume) {
  state.info.input_mean = data.normalize.mean.item();
  state.info.input_std = data.normalize.stddev.item();
  state.info.num_classes = data.train_raw.classes();
  state.info.program = program;
  if (resume.empty()) return;
  train::load_training_state(resume, state);
  spdlog::info("resumed {} after epoch {} (step {}); its optimizer settings replace the command line's", resume,
               state.epoch, state.step);
}

// True (after saying so) when --stop-after says the run ends after `epoch`.
inline bool stop_after(const TrainingFlags& flags, int epoch) {
  if (flags.stop_after == 0 || epoch < flags.stop_after || epoch >= flags.epochs) return false;
  spdlog::info("stopping after epoch {} of {} (--stop-after)", epoch, flags.epochs);
  return true;
}

// True (after saying so) when a resumed run already holds all the epochs asked for.
inline bool nothing_to_train(const train::TrainingState& state, const TrainingFlags& flags) {
  if (state.epoch < flags.epochs) return false;
  spdlog::warn("nothing to train: {} already holds {} epochs (--epochs {})", flags.resume, state.epoch, flags.epochs);
  return true;
}

// Fraction of the loader's examples whose arg-max class is the target (eval mode, no graph).
inline double accuracy(nn::Module& model, data::DataLoader& loader) {
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

// One epoch's running loss, progress line and clock. The loss is summed on the device, so
// a batch costs no host sync; it is read every 50 batches, for the progress line only.
class EpochMeter {
 public:
  EpochMeter(int epoch, int64_t batches, const Device& device, bool show_progress = true)
      : progress_(fmt::format("epoch {}", epoch), batches),
        loss_sum_(zeros({}, {.device = device})),
        show_progress_(show_progress) {}

  void add(const Tensor& loss) {
    {
      NoGradGuard no_grad;
      loss_sum_.add_(loss.detach());
    }
    if (++batches_ % 50 == 0 && show_progress_ && data::Progress::is_terminal())
      progress_.update(batches_, mean_loss());
  }
  // Clears the progress line and returns the epoch's seconds.
  double stop() {
    progress_.finish();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  Tensor& loss_sum() { return loss_sum_; }  // to average it over ranks before mean_loss()
  double mean_loss() const { return loss_sum_.item() / double(batches_); }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  data::Progress progress_;
  Tensor loss_sum_;
  int64_t batches_ = 0;
  bool show_progress_;
};

// The per-epoch log line and CSV row (--metrics; none for an empty path), and the closing summary.
class RunLog {
 public:
  explicit RunLog(const std::string& metrics_path) {
    if (!metrics_path.empty())
      csv_ = std::make_unique<data::CsvLog>(
          metrics_path, std::vector<std::string>{"epoch", "train_loss", "test_accuracy", "seconds"});
  }
  void epoch(int epoch, double train_loss, double accuracy, double seconds, int64_t examples) {
    best_ = std::max(best_, accuracy);
    training_seconds_ += seconds;
    spdlog::info("epoch {:2d}  train loss {:.4f}  test accuracy {:.2f}%  {:.2f} s ({:.0f} samples/s)", epoch,
                 train_loss, 100 * accuracy, seconds, double(examples) / seconds);
    if (csv_) csv_->row({double(epoch), train_loss, accuracy, seconds});
  }
  void done(int epochs) const {
    spdlog::info("done: best test accuracy {:.2f}% after {} epochs, {:.1f} s of training", 100 * best_, epochs,
                 training_seconds_);
  }

 private:
  std::unique_ptr<data::CsvLog> csv_;
  double best_ = 0, training_seconds_ = 0;
};

}  // namespace examples

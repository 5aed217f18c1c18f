// Trains an MLP (784-256-128-10, ReLU, cross-entropy) on MNIST-format data: by
// default Fashion-MNIST from Debian's dataset-fashion-mnist package. Prints per-epoch
// train loss, test accuracy and time; optionally writes metrics CSV and a training
// checkpoint after each epoch, which --resume continues exactly (train/training_state.h).
// --distributed (under mpirun) splits each global batch across the ranks: see README.
// --amp bf16|fp16 trains in mixed precision (amp::Autocast; fp16 with amp::GradScaler)
// and first prints one training step's peak memory next to float32's.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <vgrad/vgrad.h>

using namespace vgrad;

namespace {

struct Mlp : nn::Module {
  Mlp(int64_t in, const std::vector<int64_t>& hidden, int64_t classes) {
    int64_t width = in;
    for (size_t i = 0; i < hidden.size(); ++i) {
      layers.push_back(register_module("fc" + std::to_string(i + 1), std::make_shared<nn::Linear>(width, hidden[i])));
      width = hidden[i];
    }
    layers.push_back(register_module("fc" + std::to_string(hidden.size() + 1), std::make_shared<nn::Linear>(width, classes)));
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = x;
    for (size_t i = 0; i + 1 < layers.size(); ++i) h = relu((*layers[i])(h));
    return (*layers.back())(h);
  }
  std::vector<std::shared_ptr<nn::Linear>> layers;
};

double accuracy(Mlp& model, data::DataLoader& loader) {
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

struct StepMemory {
  uint64_t peak = 0;         // the step's peak above what was allocated before it
  uint64_t activations = 0;  // held by the graph after forward, weight casts excluded
};

// One forward and backward (no optimizer step) under `low` (nullopt: float32), measured
// with the memory accounting. Gradients are dropped afterwards.
StepMemory measure_step(Mlp& model, const Tensor& x, const Tensor& y, std::optional<DType> low) {
  const Device device = x.device();
  for (Tensor& p : model.parameters()) p.zero_grad();
  reset_peak_memory(device);
  const uint64_t before = memory_allocated(device);
  StepMemory result;
  {
    std::optional<amp::Autocast> autocast;
    if (low) autocast.emplace(*low);
    const Tensor loss = nn::cross_entropy(model(x), y);
    result.activations = memory_allocated(device) - before - autograd::autocast::cache_bytes();
    loss.backward();
  }
  result.peak = max_memory_allocated(device) - before;
  for (Tensor& p : model.parameters()) p.zero_grad();
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train an MLP on MNIST-format data with vgrad"};
  std::vector<int64_t> hidden{256, 128};
  int epochs = 10, accumulate = 1;
  int64_t batch_size = 64;
  double lr = 0.1, momentum = 0.0, weight_decay = 0.0, clip_norm = 0.0;
  std::string optimizer = "sgd", data_dir = data::Mnist::default_directory(), device_name = "cpu";
  std::string checkpoint, metrics, resume;
  uint64_t seed = 0;
  int64_t limit = 0;
  bool detect_anomaly = false, distributed = false;
  std::string amp_mode = "off";
  app.add_option("--hidden", hidden, "hidden layer sizes")->delimiter(',');
  app.add_option("--epochs", epochs, "training epochs")->check(CLI::PositiveNumber);
  app.add_option("--batch-size", batch_size, "mini-batch size")->check(CLI::PositiveNumber);
  app.add_option("--lr", lr, "learning rate");
  app.add_option("--momentum", momentum, "SGD momentum");
  app.add_option("--weight-decay", weight_decay, "weight decay");
  app.add_option("--optimizer", optimizer, "sgd, adam or adamw")->check(CLI::IsMember({"sgd", "adam", "adamw"}));
  app.add_option("--accumulate", accumulate, "micro-batches per optimizer step (gradient accumulation)")
      ->check(CLI::PositiveNumber);
  app.add_option("--clip-norm", clip_norm, "clip the gradient's global L2 norm before each step (0: off)")
      ->check(CLI::NonNegativeNumber);
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
  app.add_flag("--distributed", distributed,
               "data-parallel over the ranks mpirun started: --batch-size is the global batch, split across them");
  app.add_option("--amp", amp_mode, "mixed precision: off, bf16, or fp16 (with loss scaling)")
      ->check(CLI::IsMember({"off", "bf16", "fp16"}));
  CLI11_PARSE(app, argc, argv);

  std::shared_ptr<distributed::Communicator> comm = std::make_shared<distributed::LocalCommunicator>();
  try {
    if (distributed) {
      // GPU tensors travel over NCCL, host tensors over MPI.
      const bool on_gpu = device_name.rfind("cuda", 0) == 0;
      comm = distributed::init_from_environment({.engine = on_gpu ? distributed::Engine::Nccl : distributed::Engine::Auto});
      distributed::quiet_other_ranks(*comm);  // one log, from rank 0
      if (device_name == "cuda") device_name = fmt::format("cuda:{}", comm->local_rank());  // one GPU per rank
    }
    const Device device(device_name);
    // Now, not after the first epoch; on rank 0, which writes it (the others may not see its directory).
    if (!checkpoint.empty()) distributed::run_on_rank_zero(*comm, "check " + checkpoint, [&] { train::check_can_save(checkpoint); });
    manual_seed(seed);
    spdlog::info("loading {}", data_dir);
    data::Mnist train_raw(data_dir, "train"), test_raw(data_dir, "test");
    // Normalise with the training set's statistics, for train and test alike.
    // One mean/std over all pixels (as torchvision's Normalize for MNIST): a per-pixel fit would
    // blow up the near-constant border pixels.
    const auto normalize = data::Normalizer::fit_scalar(train_raw.inputs());
    auto first = [&](const Tensor& t) { return limit > 0 && limit < t.shape()[0] ? t.narrow(0, 0, limit) : t; };
    auto train_set = std::make_shared<data::TensorDataset>(first(normalize(train_raw.inputs())), first(train_raw.targets()));
    auto test_set = std::make_shared<data::TensorDataset>(first(normalize(test_raw.inputs())), first(test_raw.targets()));
    data::DataLoader train_loader(train_set, {.batch_size = batch_size, .shuffle = true, .seed = seed, .device = device,
                                              .num_replicas = comm->world_size(), .rank = comm->rank()});
    data::DataLoader test_loader(test_set, {.batch_size = 1000, .shuffle = false, .device = device});

    const int64_t classes = 10, features = train_raw.rows() * train_raw.cols();
    Mlp model(features, hidden, classes);
    model.to(device);
    std::unique_ptr<distributed::DistributedDataParallel> ddp;  // rank 0's initial weights on every rank
    if (distributed) ddp = std::make_unique<distributed::DistributedDataParallel>(model, comm);
    std::unique_ptr<optim::Optimizer> opt;
    if (optimizer == "sgd")
      opt = std::make_unique<optim::SGD>(model.parameters(), optim::SGDOptions{.lr = lr, .momentum = momentum, .weight_decay = weight_decay});
    else if (optimizer == "adam")
      opt = std::make_unique<optim::Adam>(model.parameters(), optim::AdamOptions{.lr = lr, .weight_decay = weight_decay});
    else
      opt = std::make_unique<optim::AdamW>(model.parameters(), optim::AdamOptions{.lr = lr, .weight_decay = weight_decay});
    optim::GradientAccumulation accumulation(*opt, accumulate);
    train::TrainingState state{.model = &model, .optimizer = opt.get(), .accumulation = &accumulation, .loader = &train_loader};
    state.info.architecture = {{"layers", fmt::format("{},{},{}", features, fmt::join(hidden, ","), classes)},
                               {"activation", "relu"}};
    state.info.input_mean = normalize.mean.item();
    state.info.input_std = normalize.stddev.item();
    state.info.num_classes = classes;
    state.info.program = "mnist_mlp";
    if (!resume.empty()) {
      train::load_training_state(resume, state);
      spdlog::info("resumed {} after epoch {} (step {}); its optimizer settings replace the command line's", resume,
                   state.epoch, state.step);
    }
    std::optional<DType> low_dtype;
    if (amp_mode != "off") {
      if (accumulate != 1) throw Error("--amp: gradient accumulation (--accumulate > 1) is not supported with --amp yet");
      low_dtype = amp_mode == "bf16" ? DType::BFloat16 : DType::Float16;
      const int64_t probe = std::min<int64_t>(batch_size, train_raw.inputs().shape()[0]);
      const Tensor x = normalize(train_raw.inputs().narrow(0, 0, probe)).to(device);
      const Tensor y = train_raw.targets().narrow(0, 0, probe).to(device);
      const StepMemory wide = measure_step(model, x, y, std::nullopt), mixed = measure_step(model, x, y, low_dtype);
      spdlog::info("one step at batch {}: peak {:.1f} MiB with {} vs {:.1f} MiB float32 ({:.2f}x); activations {:.1f} "
                   "vs {:.1f} MiB ({:.2f}x)",
                   x.shape()[0], double(mixed.peak) / 1048576.0, amp_mode, double(wide.peak) / 1048576.0,
                   double(mixed.peak) / double(wide.peak), double(mixed.activations) / 1048576.0,
                   double(wide.activations) / 1048576.0, double(mixed.activations) / double(wide.activations));
    }
    // float16 needs loss scaling; bfloat16 has float32's range (a disabled scaler passes through).
    amp::GradScaler scaler({.enabled = amp_mode == "fp16"});
    std::optional<DetectAnomalyGuard> anomaly;
    if (detect_anomaly) anomaly.emplace();
    std::unique_ptr<data::CsvLog> log;
    if (!metrics.empty() && comm->is_main()) log = std::make_unique<data::CsvLog>(metrics, std::vector<std::string>{"epoch", "train_loss", "test_accuracy", "seconds"});

    spdlog::info("{} train / {} test examples, model {}-{}-10, {} on {}, batch {}, lr {}", train_set->size(), test_set->size(),
                 train_raw.rows() * train_raw.cols(), fmt::join(hidden, "-"), optimizer, device.str(), batch_size, opt->lr());
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
      // The step point: clipping sees the whole group's gradient, then the optimizer steps.
      auto step = [&] {
        if (clip_norm > 0) optim::clip_grad_norm(model.parameters(), clip_norm);
        accumulation.step();
        ++state.step;
      };
      for (auto& [x, y] : train_loader) {
        Tensor loss;
        if (low_dtype) {
          {
            amp::Autocast autocast(*low_dtype);
            loss = nn::cross_entropy(model(x), y);
          }
          scaler.scale(loss).backward();
          if (clip_norm > 0) {
            scaler.unscale_(*opt);
            optim::clip_grad_norm(model.parameters(), clip_norm);
          }
          scaler.step(*opt);
          scaler.update();
          opt->zero_grad();
          ++state.step;
        } else {  // with ddp, a group's last backward all-reduces the buckets as their gradients are ready
          loss = nn::cross_entropy(model(x), y);
          if (ddp ? ddp->backward(accumulation, loss) : accumulation.backward(loss)) step();
        }
        {
          NoGradGuard no_grad;
          loss_sum.add_(loss.detach());
        }
        if (++steps % 50 == 0 && comm->is_main() && data::Progress::is_terminal()) progress.update(steps, loss_sum.item() / double(steps));
      }
      if (ddp ? ddp->finish_accumulation(accumulation) : accumulation.finish()) step();  // a partial group, rescaled
      state.epoch = epoch;
      progress.finish();
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      training_seconds += seconds;
      if (distributed) comm->all_reduce(loss_sum, distributed::Reduction::Average);  // every rank's share
      const double train_loss = loss_sum.item() / double(steps), acc = accuracy(model, test_loader);
      best = std::max(best, acc);
      spdlog::info("epoch {:2d}  train loss {:.4f}  test accuracy {:.2f}%  {:.2f} s ({:.0f} samples/s)", epoch,
                   train_loss, 100 * acc, seconds, double(train_set->size()) / seconds);
      if (ddp) {  // what data parallelism cost this epoch, on rank 0
        const distributed::SyncStats& sync = ddp->stats();
        spdlog::info("  {} ranks: all-reduce {:.3f} s ({:.1f}% of the epoch; {:.1f} MB per step), step waited {:.3f} s for it",
                     comm->world_size(), sync.all_reduce_seconds, 100 * sync.all_reduce_seconds / seconds,
                     double(sync.bytes_all_reduced) / double(std::max<int64_t>(sync.syncs, 1)) / 1e6, sync.wait_seconds);
        ddp->reset_stats();
      }
      if (log) log->row({double(epoch), train_loss, acc, seconds});
      // Rank 0 writes (every rank holds the same state); the others wait, and see its error if any.
      if (!checkpoint.empty())
        distributed::run_on_rank_zero(*comm, "write " + checkpoint, [&] { train::save_training_state(checkpoint, state); });
    }
    spdlog::info("done: best test accuracy {:.2f}% after {} epochs, {:.1f} s of training", 100 * best, epochs,
                 training_seconds);
  } catch (const std::exception& e) {
    if (comm->world_size() > 1) comm->abort(e.what());  // the other ranks must not wait for this one
    spdlog::error("{}", e.what());
    return 1;
  }
  return 0;
}

// Trains an MLP (784-256-128-10, ReLU, cross-entropy) on MNIST-format data: by
// default Fashion-MNIST from Debian's dataset-fashion-mnist package, SGD from lr 0.1 with
// a cosine decay (--lr-schedule). Prints per-epoch train loss, test accuracy and time;
// optionally writes metrics CSV and a training checkpoint after each epoch, which
// --resume continues exactly (train/training_state.h).
// --distributed (under mpirun) splits each global batch across the ranks: see README.
// --amp bf16|fp16 trains in mixed precision (amp::Autocast; fp16 with amp::GradScaler)
// and first prints one training step's peak memory next to float32's.
#include <algorithm>
#include <optional>

#include "common.h"

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
  // Defaults: 10 epochs of SGD from lr 0.1, decayed to 0 by a cosine: a constant lr ends
  // the run swinging about a point between epochs (Fashion-MNIST, seeds 1-2: final 87.0 and
  // 88.7%, cosine 89.1 and 89.3%), too much to compare runs (--amp) by their last epoch.
  examples::TrainingFlags flags{.lr_schedule = "cosine"};
  double clip_norm = 0.0;
  bool distributed = false;
  std::string amp_mode = "off";
  app.add_option("--hidden", hidden, "hidden layer sizes")->delimiter(',')->check(examples::AtLeastOne);
  flags.add_to(app);
  app.add_option("--clip-norm", clip_norm, "clip the gradient's global L2 norm before each step (0: off)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--distributed", distributed,
               "data-parallel over the ranks mpirun started: --batch-size is the global batch, split across them");
  app.add_option("--amp", amp_mode, "mixed precision: off, bf16, or fp16 (with loss scaling)")
      ->check(CLI::IsMember({"off", "bf16", "fp16"}));
  CLI11_PARSE(app, argc, argv);

  std::shared_ptr<distributed::Communicator> comm = std::make_shared<distributed::LocalCommunicator>();
  try {
    if (distributed) {
      // GPU tensors travel over NCCL, host tensors over MPI.
      const bool on_gpu = flags.device_name.rfind("cuda", 0) == 0;
      comm = distributed::init_from_environment({.engine = on_gpu ? distributed::Engine::Nccl : distributed::Engine::Auto});
      distributed::quiet_other_ranks(*comm);  // one log, from rank 0
      if (flags.device_name == "cuda") flags.device_name = fmt::format("cuda:{}", comm->local_rank());  // one GPU per rank
    }
    const Device device(flags.device_name);
    // Now, not after the first epoch; on rank 0, which writes it (the others may not see its directory).
    if (!flags.checkpoint.empty())
      distributed::run_on_rank_zero(*comm, "check " + flags.checkpoint, [&] { train::check_can_save(flags.checkpoint); });
    manual_seed(flags.seed);
    const examples::MnistData data = examples::load_mnist(flags.data_dir, flags.limit);
    data::DataLoader train_loader(data.train_set, {.batch_size = flags.batch_size, .shuffle = true, .seed = flags.seed,
                                                   .device = device, .num_replicas = comm->world_size(), .rank = comm->rank()});
    data::DataLoader test_loader(data.test_set, {.batch_size = 1000, .shuffle = false, .device = device});

    const int64_t classes = data.train_raw.classes(), features = data.train_raw.rows() * data.train_raw.cols();
    Mlp model(features, hidden, classes);
    model.to(device);
    std::unique_ptr<distributed::DistributedDataParallel> ddp;  // rank 0's initial weights on every rank
    if (distributed) ddp = std::make_unique<distributed::DistributedDataParallel>(model, comm);
    std::unique_ptr<optim::Optimizer> opt = examples::make_optimizer(flags, model.parameters());
    optim::GradientAccumulation accumulation(*opt, flags.accumulate);
    // Optimizer steps per epoch: a partial accumulation group at the end steps too.
    const int64_t steps_per_epoch = (train_loader.num_batches() + flags.accumulate - 1) / flags.accumulate;
    const std::unique_ptr<optim::Scheduler> scheduler = examples::make_scheduler(flags, *opt, steps_per_epoch);
    // float16 needs loss scaling; bfloat16 has float32's range (a disabled scaler passes through).
    amp::GradScaler scaler({.enabled = amp_mode == "fp16"});
    train::TrainingState state{.model = &model,
                               .optimizer = opt.get(),
                               .scheduler = scheduler.get(),
                               .accumulation = &accumulation,
                               .loader = &train_loader,
                               .scaler = &scaler};
    state.info.architecture = {{"layers", fmt::format("{},{},{}", features, fmt::join(hidden, ","), classes)},
                               {"activation", "relu"}};
    examples::describe_and_resume(state, data, "mnist_mlp", flags.resume);
    std::optional<DType> low_dtype;
    if (amp_mode != "off") {
      if (flags.accumulate != 1) throw Error("--amp: gradient accumulation (--accumulate > 1) is not supported with --amp yet");
      low_dtype = amp_mode == "bf16" ? DType::BFloat16 : DType::Float16;
      const int64_t probe = std::min<int64_t>(flags.batch_size, data.train_raw.inputs().shape()[0]);
      const Tensor x = data.normalize(data.train_raw.inputs().narrow(0, 0, probe)).to(device);
      const Tensor y = data.train_raw.targets().narrow(0, 0, probe).to(device);
      StepMemory wide, mixed;
      auto measure = [&] { wide = measure_step(model, x, y, std::nullopt), mixed = measure_step(model, x, y, low_dtype); };
      if (ddp) {
        const auto local_only = ddp->no_sync();  // a probe, not a step: nothing to all-reduce
        measure();
      } else {
        measure();
      }
      spdlog::info("one step at batch {}: peak {:.1f} MiB with {} vs {:.1f} MiB float32 ({:.2f}x); activations {:.1f} "
                   "vs {:.1f} MiB ({:.2f}x)",
                   x.shape()[0], double(mixed.peak) / 1048576.0, amp_mode, double(wide.peak) / 1048576.0,
                   double(mixed.peak) / double(wide.peak), double(mixed.activations) / 1048576.0,
                   double(wide.activations) / 1048576.0, double(mixed.activations) / double(wide.activations));
    }
    std::optional<DetectAnomalyGuard> anomaly;
    if (flags.detect_anomaly) anomaly.emplace();
    examples::RunLog run_log(comm->is_main() ? flags.metrics : "");  // rank 0 writes the CSV

    spdlog::info("{} train / {} test examples, model {}-{}-10, {} on {}, batch {}, lr {} (schedule {})",
                 data.train_set->size(), data.test_set->size(), features, fmt::join(hidden, "-"), flags.optimizer,
                 device.str(), flags.batch_size, opt->lr(), flags.lr_schedule);
    if (examples::nothing_to_train(state, flags)) return 0;
    for (int epoch = int(state.epoch) + 1; epoch <= flags.epochs; ++epoch) {
      examples::EpochMeter meter(epoch, train_loader.num_batches(), device, comm->is_main());
      // The step point: clipping sees the whole group's gradient, then the optimizer steps.
      auto step = [&] {
        if (clip_norm > 0) optim::clip_grad_norm(model.parameters(), clip_norm);
        accumulation.step();
        if (scheduler) scheduler->step();
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
          if (ddp) ddp->finish_gradient_sync();  // the scaled gradients, averaged before the scaler looks at them
          if (clip_norm > 0) {
            scaler.unscale_(*opt);
            optim::clip_grad_norm(model.parameters(), clip_norm);
          }
          scaler.step(*opt);
          scaler.update();
          opt->zero_grad();
          if (scheduler) scheduler->step();  // a step the scaler skipped counts too (as in PyTorch)
          ++state.step;
        } else {  // with ddp, a group's last backward all-reduces the buckets as their gradients are ready
          loss = nn::cross_entropy(model(x), y);
          if (ddp ? ddp->backward(accumulation, loss) : accumulation.backward(loss)) step();
        }
        meter.add(loss);
      }
      if (ddp ? ddp->finish_accumulation(accumulation) : accumulation.finish()) step();  // a partial group, rescaled
      state.epoch = epoch;
      const double seconds = meter.stop();
      if (distributed) comm->all_reduce(meter.loss_sum(), distributed::Reduction::Average);  // every rank's share
      run_log.epoch(epoch, meter.mean_loss(), examples::accuracy(model, test_loader), seconds, data.train_set->size());
      if (ddp) {  // what data parallelism cost this epoch, on rank 0
        const distributed::SyncStats& sync = ddp->stats();
        spdlog::info("  {} ranks: all-reduce {:.3f} s ({:.1f}% of the epoch; {:.1f} MB per step), step waited {:.3f} s for it",
                     comm->world_size(), sync.all_reduce_seconds, 100 * sync.all_reduce_seconds / seconds,
                     double(sync.bytes_all_reduced) / double(std::max<int64_t>(sync.syncs, 1)) / 1e6, sync.wait_seconds);
        ddp->reset_stats();
      }
      // Rank 0 writes (every rank holds the same state); the others wait, and see its error if any.
      if (!flags.checkpoint.empty())
        distributed::run_on_rank_zero(*comm, "write " + flags.checkpoint,
                                      [&] { train::save_training_state(flags.checkpoint, state); });
      if (examples::stop_after(flags, epoch)) break;
    }
    run_log.done(int(state.epoch));
  } catch (const std::exception& e) {
    if (comm->world_size() > 1) comm->abort(e.what());  // the other ranks must not wait for this one
    spdlog::error("{}", e.what());
    return 1;
  }
  return 0;
}

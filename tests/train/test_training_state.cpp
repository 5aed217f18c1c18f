// Training checkpoints: a run stopped (between epochs or mid-epoch, mid accumulation
// group) and resumed from its file ends in the same bytes as one that never stopped,
// with momentum SGD + StepLR, with Adam and with float16 loss scaling; same seed, same
// bytes; optimizer state is keyed by parameter name; metadata; and files that do not fit
// are refused untouched.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "amp/autocast.h"
#include "core/safetensors.h"
#include "nn/checkpoint.h"
#include "nn/functional.h"
#include "support.h"
#include "train/training_state.h"

namespace {

using namespace vgrad;

std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct RunConfig {
  std::string optimizer = "sgd";  // "sgd" (momentum 0.9, StepLR) or "adam"
  int64_t accumulate = 3;
  uint64_t seed = 7;
  bool reverse_parameters = false;  // build the optimizer over the parameters in reverse order
  bool fp16 =
      false;  // float16 autocast with a GradScaler whose scale backs off and grows within the run (accumulate 1)
};

// Where a run stops: after `epochs` epochs, or earlier, after `stop_batch` batches of epoch `stop_epoch`.
struct Stop {
  int64_t epochs = 4;
  int64_t stop_epoch = -1, stop_batch = -1;
};

// A whole training program in miniature: 3-class data, Mlp(6, 8, 3), shuffled loader with
// prefetch, input noise drawn from the global RNG (so its state matters), accumulation, an
// optional scheduler. Resumes from `resume` when given; writes its training state to `out`.
void run(const RunConfig& config, const Stop& stop, const std::string& out, const std::string& resume = "",
         bool restore_optimizer = true, bool restore_scaler = true) {
  manual_seed(config.seed);
  const int64_t n = 96;
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[size_t(i)] = i % 3;
  auto dataset = std::make_shared<data::TensorDataset>(vgrad_test::uniform_tensor({n, 6}, 11), tensor(labels, {n}));
  data::DataLoader loader(dataset, {.batch_size = 8, .shuffle = true, .seed = config.seed, .prefetch = 2});
  vgrad_test::Mlp model(6, 8, 3);
  std::vector<Tensor> params = model.parameters();
  if (config.reverse_parameters) std::reverse(params.begin(), params.end());
  std::unique_ptr<optim::Optimizer> optimizer;
  std::unique_ptr<optim::Scheduler> scheduler;
  if (config.optimizer == "sgd") {
    optimizer = std::make_unique<optim::SGD>(params, optim::SGDOptions{.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-3});
    scheduler = std::make_unique<optim::StepLR>(*optimizer, 5, 0.5);
  } else {
    optimizer = std::make_unique<optim::Adam>(params, optim::AdamOptions{.lr = 0.01});
  }
  optim::GradientAccumulation accumulation(*optimizer, config.accumulate);
  // From 2^24 float16 gradients overflow: the first steps back off, then it grows every 3 clean steps.
  amp::GradScaler scaler({.init_scale = 0x1p24, .growth_interval = 3, .enabled = config.fp16});
  train::TrainingState state{.model = &model,
                             .optimizer = optimizer.get(),
                             .scheduler = scheduler.get(),
                             .accumulation = &accumulation,
                             .loader = &loader,
                             .scaler = &scaler,
                             .info = {.architecture = {{"layers", "6,8,3"}},
                                      .input_mean = 0.5,
                                      .input_std = 0.25,
                                      .num_classes = 3,
                                      .program = "test_training_state"}};
  if (!resume.empty()) {
    train::TrainingState target = state;
    if (!restore_optimizer) target.optimizer = nullptr;
    if (!restore_scaler) target.scaler = nullptr;
    train::load_training_state(resume, target);
    state.epoch = target.epoch;
    state.step = target.step;
  }
  auto after_step = [&] {
    ++state.step;
    if (scheduler) scheduler->step();
  };
  while (state.epoch < stop.epochs) {
    int64_t batch = loader.position().batch;
    for (auto& [x, y] : loader) {
      const Tensor noisy = x + 0.01 * randn(x.shape());
      if (config.fp16) {
        Tensor loss;
        {
          amp::Autocast autocast(DType::Float16);
          loss = nn::cross_entropy(model(noisy), y);
        }
        scaler.scale(loss).backward();
        scaler.step(*optimizer);
        scaler.update();
        optimizer->zero_grad();
        after_step();
      } else if (accumulation.backward(nn::cross_entropy(model(noisy), y))) {
        accumulation.step();
        after_step();
      }
      if (state.epoch == stop.stop_epoch && ++batch == stop.stop_batch) {
        train::save_training_state(out, state);
        return;
      }
    }
    if (accumulation.finish()) {
      accumulation.step();
      after_step();
    }
    ++state.epoch;
  }
  train::save_training_state(out, state);
}

class TrainingStateTest : public vgrad_test::TempDirTest {};

void expect_exact_resume(const RunConfig& config, const std::string& straight, const std::string& first_half,
                         const std::string& resumed, const Stop& interruption) {
  run(config, {.epochs = 4}, straight);
  run(config, interruption, first_half);
  ASSERT_NE(bytes_of(first_half), bytes_of(straight));
  run(config, {.epochs = 4}, resumed, first_half);
  EXPECT_TRUE(bytes_of(resumed) == bytes_of(straight)) << "resumed run differs from the uninterrupted one";
}

TEST_F(TrainingStateTest, ResumeBetweenEpochsIsByteIdenticalWithMomentumSgdAndStepLR) {
  expect_exact_resume({.optimizer = "sgd"}, path("straight"), path("half"), path("resumed"), {.epochs = 2});
}

TEST_F(TrainingStateTest, ResumeBetweenEpochsIsByteIdenticalWithAdam) {
  expect_exact_resume({.optimizer = "adam"}, path("straight"), path("half"), path("resumed"), {.epochs = 2});
}

// 12 batches per epoch, accumulation over 3: stopping after 5 batches of epoch 2 leaves 2
// micro-batches pending, so their summed gradients and the loader's place are part of the state.
TEST_F(TrainingStateTest, ResumeMidEpochAndMidAccumulationGroupIsByteIdentical) {
  for (const char* optimizer : {"sgd", "adam"}) {
    SCOPED_TRACE(optimizer);
    const Stop mid{.epochs = 4, .stop_epoch = 2, .stop_batch = 5};
    expect_exact_resume({.optimizer = optimizer}, path("straight"), path("half"), path("resumed"), mid);
    const safetensors::File half = safetensors::load(path("half"));
    EXPECT_EQ(half.metadata.at("accumulation.pending"), "2");
    EXPECT_EQ(half.metadata.at("loader.batch"), "5");
    EXPECT_TRUE(half.tensors.count("grad.fc1.weight"));
    EXPECT_FALSE(safetensors::load(path("straight")).tensors.count("grad.fc1.weight"));
  }
}

// The comparison above can fail: resuming without the optimizer's state (what --resume did
// before) ends elsewhere.
TEST_F(TrainingStateTest, ResumingWithoutOptimizerStateDiffers) {
  const RunConfig config{.optimizer = "sgd"};
  run(config, {.epochs = 4}, path("straight"));
  run(config, {.epochs = 2}, path("half"));
  run(config, {.epochs = 4}, path("resumed"), path("half"), /*restore_optimizer=*/false);
  EXPECT_NE(bytes_of(path("resumed")), bytes_of(path("straight")));
}

// Float16 loss scaling: the scale and its growth tracker are state too ("scaler.*" metadata).
TEST_F(TrainingStateTest, ResumeWithFloat16LossScalingIsByteIdentical) {
  const RunConfig config{.optimizer = "adam", .accumulate = 1, .fp16 = true};
  expect_exact_resume(config, path("straight"), path("half"), path("resumed"), {.epochs = 2});
  const safetensors::File half = safetensors::load(path("half"));
  const double scale = std::stod(half.metadata.at("scaler.scale"));
  EXPECT_LT(scale, 0x1p24) << "the scale never backed off, so the resume above proves little";
  EXPECT_EQ(half.metadata.at("scaler.growth_interval"), "3");
  // Without the scaler's state the resumed run starts again from 2^24 and skips other steps.
  run(config, {.epochs = 4}, path("without"), path("half"), true, /*restore_scaler=*/false);
  EXPECT_NE(bytes_of(path("without")), bytes_of(path("straight")));
}

TEST_F(TrainingStateTest, SameSeedSameBytesOtherSeedOtherBytes) {
  run({.seed = 7}, {.epochs = 2}, path("a"));
  run({.seed = 7}, {.epochs = 2}, path("b"));
  run({.seed = 8}, {.epochs = 2}, path("c"));
  EXPECT_TRUE(bytes_of(path("a")) == bytes_of(path("b")));
  EXPECT_NE(bytes_of(path("a")), bytes_of(path("c")));
}

// Optimizer state is keyed by parameter name: an optimizer built over the parameters in
// another order resumes the same run, and even writes the same bytes.
TEST_F(TrainingStateTest, OptimizerStateIsKeyedByParameterName) {
  run({.optimizer = "adam"}, {.epochs = 4}, path("straight"));
  run({.optimizer = "adam"}, {.epochs = 2}, path("half"));
  run({.optimizer = "adam", .reverse_parameters = true}, {.epochs = 4}, path("resumed"), path("half"));
  EXPECT_TRUE(bytes_of(path("resumed")) == bytes_of(path("straight")));
  const safetensors::File file = safetensors::load(path("half"));
  for (const char* key : {"optimizer.fc1.weight.exp_avg", "optimizer.fc2.bias.exp_avg_sq", "optimizer.fc1.bias.step"})
    EXPECT_TRUE(file.tensors.count(key)) << key;
  for (const auto& [name, entry] : file.tensors) EXPECT_FALSE(vgrad_test::contains(name, "state.")) << name;
}

TEST_F(TrainingStateTest, MetadataRecordsWhatAUserNeedsAndTheModelKeepsItsPlainNames) {
  run({.optimizer = "sgd"}, {.epochs = 1}, path("ckpt"));
  const safetensors::File file = safetensors::load(path("ckpt"));
  const auto& meta = file.metadata;
  EXPECT_EQ(meta.at("format"), "pt");
  EXPECT_EQ(meta.at("architecture.layers"), "6,8,3");
  EXPECT_EQ(meta.at("input.mean"), "0.5");
  EXPECT_EQ(meta.at("input.std"), "0.25");
  EXPECT_EQ(meta.at("classes"), "3");
  EXPECT_EQ(meta.at("program"), "test_training_state");
  EXPECT_EQ(meta.at("vgrad.version"), train::vgrad_version());
  EXPECT_NE(std::string(train::vgrad_version()), "unknown");
  EXPECT_EQ(meta.at("optimizer"), "SGD");
  EXPECT_EQ(meta.at("optimizer.momentum"), "0.9");
  EXPECT_EQ(meta.at("epoch"), "1");
  EXPECT_EQ(meta.at("step"), "4");  // 12 batches / 3 per step
  EXPECT_EQ(meta.at("scheduler.count"), "4");
  EXPECT_EQ(meta.at("loader.epoch"), "1");
  EXPECT_EQ(meta.at("loader.batch"), "0");
  // The model alone still loads with nn::load (and so in PyTorch by plain name); the rest is prefixed.
  vgrad_test::Mlp model(6, 8, 3);
  const auto tensors = nn::load_tensors(path("ckpt"));
  std::map<std::string, Tensor> weights;
  for (const auto& [name, t] : tensors)
    if (!vgrad_test::contains(name, "optimizer.")) weights[name] = t;
  model.load_state_dict(weights);
  EXPECT_EQ(weights.size(), 4u);

  train::TrainingState state{.model = &model};
  train::load_training_state(path("ckpt"), state);
  EXPECT_EQ(state.epoch, 1);
  EXPECT_EQ(state.step, 4);
  EXPECT_EQ(state.info.architecture.at("layers"), "6,8,3");
  EXPECT_EQ(state.info.input_std, 0.25);
  EXPECT_EQ(state.info.num_classes, 3);
}

TEST_F(TrainingStateTest, FilesThatDoNotFitAreRefusedAndChangeNothing) {
  run({.optimizer = "sgd"}, {.epochs = 1}, path("sgd"));
  manual_seed(1);
  vgrad_test::Mlp model(6, 8, 3);
  const std::vector<double> before = model.fc1->weight.to_vector<double>();
  optim::Adam adam(model.parameters(), {});
  train::TrainingState state{.model = &model, .optimizer = &adam};
  EXPECT_ERROR(train::load_training_state(path("sgd"), state), path("sgd"), "holds the state of optimizer 'SGD', not Adam");
  EXPECT_EQ(model.fc1->weight.to_vector<double>(), before);
  EXPECT_EQ(state.epoch, 0);

  auto dataset = std::make_shared<data::TensorDataset>(zeros({96, 6}), zeros({96}, {.dtype = DType::Int64}));
  data::DataLoader other_batch(dataset, {.batch_size = 16, .shuffle = true, .seed = 7});
  optim::SGD sgd(model.parameters(), {.lr = 0.05, .momentum = 0.9});
  train::TrainingState with_loader{.model = &model, .optimizer = &sgd, .loader = &other_batch};
  EXPECT_ERROR(train::load_training_state(path("sgd"), with_loader), "saved with loader.batch_size = 8, this one has 16");
  EXPECT_EQ(model.fc1->weight.to_vector<double>(), before);

  vgrad_test::Mlp wider(6, 9, 3);
  train::TrainingState wrong_shape{.model = &wider};
  EXPECT_ERROR(train::load_training_state(path("sgd"), wrong_shape),
               "key 'fc1.weight' has shape [8, 6], the model expects [9, 6]");

  // A run with loss scaling refuses a file without its state; a disabled scaler ignores it.
  amp::GradScaler scaler, disabled({.enabled = false});
  train::TrainingState scaled{.model = &model, .optimizer = &sgd, .scaler = &scaler};
  EXPECT_ERROR(train::load_training_state(path("sgd"), scaled), path("sgd"), "holds no GradScaler state");
  EXPECT_EQ(model.fc1->weight.to_vector<double>(), before);
  scaled.scaler = &disabled;
  train::load_training_state(path("sgd"), scaled);
  EXPECT_EQ(scaled.epoch, 1);

  nn::save(model, path("weights_only"));
  EXPECT_ERROR(train::load_training_state(path("weights_only"), state), "not a training checkpoint", "nn::load");

  train::TrainingState no_model;
  EXPECT_ERROR(train::save_training_state(path("x"), no_model), "no model to save");
  vgrad_test::Mlp stranger(6, 8, 3);
  optim::SGD foreign(stranger.parameters(), {});
  train::TrainingState mismatched{.model = &model, .optimizer = &foreign};
  EXPECT_ERROR(train::save_training_state(path("x"), mismatched), "SGD parameter 0 ([8, 6]) is not a parameter of the model");
}

// A copy of the training checkpoint `from` with `change` applied to its tensors and metadata.
template <class Change> void write_changed(const std::string& from, const std::string& to, Change&& change) {
  const safetensors::File file = safetensors::load(from);
  std::map<std::string, Tensor> tensors = nn::tensors_of(file, from);
  std::map<std::string, std::string> metadata = file.metadata;
  change(tensors, metadata);
  nn::save_tensors(to, tensors, metadata);
}

using Tensors = std::map<std::string, Tensor>;
using Metadata = std::map<std::string, std::string>;

// What a refused load must leave alone: the weights, the optimizer's hyper-parameters and
// state, and the counters.
struct Resumable {
  vgrad_test::Mlp model{6, 8, 3};
  std::unique_ptr<optim::Optimizer> optimizer;
  optim::GradientAccumulation accumulation;
  train::TrainingState state;
  explicit Resumable(const std::string& kind)
      : optimizer(kind == "sgd" ? std::unique_ptr<optim::Optimizer>(std::make_unique<optim::SGD>(
                                      model.parameters(), optim::SGDOptions{.lr = 0.2, .momentum = 0.5}))
                                : std::make_unique<optim::Adam>(model.parameters(), optim::AdamOptions{.lr = 0.2})),
        accumulation(*optimizer, 3),
        state{.model = &model, .optimizer = optimizer.get(), .accumulation = &accumulation} {}
  std::map<std::string, std::vector<double>> snapshot() const {
    std::map<std::string, std::vector<double>> out;
    for (const auto& [name, t] : model.state_dict()) out["model." + name] = vgrad_test::vals(t);
    for (const auto& [name, t] : optimizer->state_dict()) out["optimizer." + name] = vgrad_test::vals(t);
    for (const auto& [name, value] : optimizer->hyperparameters()) out["hyper." + name] = {value};
    out["counters"] = {double(state.epoch), double(state.step), double(accumulation.pending())};
    return out;
  }
};

// Every optimizer tensor, hyper-parameter and counter is checked before the model, the
// optimizer or the counters change; errors name the file and the key.
TEST_F(TrainingStateTest, BadOptimizerStateAndMetadataAreRefusedBeforeAnythingChanges) {
  run({.optimizer = "sgd"}, {.epochs = 1}, path("sgd"));
  run({.optimizer = "adam"}, {.epochs = 1}, path("adam"));
  for (const std::string kind : {"sgd", "adam"}) {
    manual_seed(3);
    Resumable target(kind);
    const auto before = target.snapshot();
    auto refused = [&](const std::string& name, auto&& change, const std::string& expected) {
      write_changed(path(kind), path(name), change);
      const std::string message = vgrad_test::error_of([&] { train::load_training_state(path(name), target.state); });
      vgrad_test::expect_contains(message, {path(name), expected});
      EXPECT_LT(message.size(), 400u) << message.substr(0, 400);
      EXPECT_EQ(target.snapshot(), before) << name;
    };
    auto metadata = [](const std::string& key, const std::string& value) {
      return [=](Tensors&, Metadata& m) { m[key] = value; };
    };
    refused("epoch", metadata("epoch", "-5"), "epoch -5 and step");
    refused("step", metadata("step", "-9"), "step -9 count what was done: neither may be negative");
    refused("long_epoch", metadata("epoch", std::string(10'000'000, '1') + "x"), "metadata key 'epoch' is '1111111111");
    refused("lr_nan", metadata("optimizer.lr", "nan"), "metadata key 'optimizer.lr' is 'nan', not a finite number");
    refused("wd_inf", metadata("optimizer.weight_decay", "inf"), "'optimizer.weight_decay' is 'inf', not a finite");
    refused("wd_negative", metadata("optimizer.weight_decay", "-50"), "weight_decay -50 is negative");
    refused("pending", metadata("accumulation.pending", "1"),
            "accumulation.pending is 1, but the file holds no 'grad.<parameter>' tensors");
    refused(
        "stray_grad", [](Tensors& t, Metadata&) { t["grad.fc1.bias"] = zeros({8}); },
        "holds gradient 'grad.fc1.bias', but accumulation.pending is 0");
    refused(
        "unknown_buffer", [](Tensors& t, Metadata&) { t["optimizer.fc2.bias.momentum_bufer"] = zeros({3}); },
        "'optimizer.fc2.bias.momentum_bufer': unknown state 'momentum_bufer'");
    if (kind == "sgd") {
      refused("momentum_nan", metadata("optimizer.momentum", "nan"), "'optimizer.momentum' is 'nan'");
      refused("dampening_negative", metadata("optimizer.dampening", "-1"), "SGD: dampening -1 is negative");
      refused(
          "buffer_shape", [](Tensors& t, Metadata&) { t["optimizer.fc2.bias.momentum_buffer"] = zeros({4}); },
          "'optimizer.fc2.bias.momentum_buffer' has shape [4], parameter is [3]");
      continue;
    }
    refused("beta1_nan", metadata("optimizer.beta1", "nan"), "'optimizer.beta1' is 'nan'");
    refused("beta2_one", metadata("optimizer.beta2", "1"), "Adam: betas (0.9, 1) must be in [0, 1)");
    refused("eps_negative", metadata("optimizer.eps", "-1e-8"), "Adam: eps -1e-08 is negative");
    refused(
        "step_two", [](Tensors& t, Metadata&) { t["optimizer.fc2.bias.step"] = zeros({2}); },
        "'optimizer.fc2.bias.step' has shape [2]: a step count is one number");
    refused(
        "step_minus",
        [](Tensors& t, Metadata&) { t["optimizer.fc1.bias.step"] = scalar_tensor(-1, {.dtype = DType::Int64}); },
        "'optimizer.fc1.bias.step' is step -1");
    refused(
        "step_huge",
        [](Tensors& t, Metadata&) { t["optimizer.fc1.bias.step"] = scalar_tensor(1e300, {.dtype = DType::Float64}); },
        "'optimizer.fc1.bias.step' is step 1e+300");
    refused(
        "no_sq", [](Tensors& t, Metadata&) { t.erase("optimizer.fc1.weight.exp_avg_sq"); },
        "no 'optimizer.fc1.weight.exp_avg_sq' (exp_avg, exp_avg_sq and step go together)");
    refused(
        "no_moments",
        [](Tensors& t, Metadata&) {
          t.erase("optimizer.fc2.weight.exp_avg");
          t.erase("optimizer.fc2.weight.exp_avg_sq");
        },
        "no 'optimizer.fc2.weight.exp_avg'");
  }
  // The unchanged files still load.
  Resumable sgd("sgd"), adam("adam");
  train::load_training_state(path("sgd"), sgd.state);
  train::load_training_state(path("adam"), adam.state);
  EXPECT_EQ(sgd.state.epoch, 1);
  EXPECT_EQ(adam.optimizer->lr(), 0.01);
  EXPECT_EQ(adam.optimizer->state_dict().at("state.0.step").item<int64_t>(), 4);
}

// Bytes this process has read through read() and its kin (/proc/self/io's rchar), or -1
// where the kernel does not say.
int64_t bytes_read_so_far() {
  std::ifstream io("/proc/self/io");
  std::string key;
  int64_t value = 0;
  while (io >> key >> value)
    if (key == "rchar:") return value;
  return -1;
}

// load_training_state reads its file once: metadata and tensors come from the same read,
// so the bytes read while loading are the file's size, not twice it.
TEST_F(TrainingStateTest, LoadReadsTheCheckpointOnce) {
  manual_seed(2);
  vgrad_test::Mlp model(64, 2048, 10);  // ~600 KB of weights: the file dwarfs any other read
  train::TrainingState state{.model = &model, .epoch = 3};
  train::save_training_state(path("ckpt"), state);
  const auto file_size = static_cast<int64_t>(std::filesystem::file_size(path("ckpt")));
  vgrad_test::Mlp loaded(64, 2048, 10);
  train::TrainingState target{.model = &loaded};
  const int64_t before = bytes_read_so_far();
  if (before < 0) GTEST_SKIP() << "/proc/self/io does not report rchar here";
  train::load_training_state(path("ckpt"), target);
  const int64_t read = bytes_read_so_far() - before;
  EXPECT_GE(read, file_size);
  EXPECT_LT(read, file_size + file_size / 2) << "read " << read << " bytes of a " << file_size << "-byte file";
  EXPECT_EQ(target.epoch, 3);
  EXPECT_EQ(loaded.fc1->weight.to_vector<double>(), model.fc1->weight.to_vector<double>());
}

// --checkpoint's target is checked before training; every refusal names the path and why.
TEST_F(TrainingStateTest, CheckCanSaveRefusesMissingAndUnwritableDirectoriesUpFront) {
  train::check_can_save(path("ok.safetensors"));
  EXPECT_TRUE(std::filesystem::is_empty(dir_)) << "the probe file was left behind";
  EXPECT_ERROR(train::check_can_save(path("missing/ckpt.safetensors")), path("missing/ckpt.safetensors"),
               "directory " + path("missing") + " does not exist");
  EXPECT_ERROR(train::check_can_save(dir_.string()), "is a directory, not a file name");
  std::ofstream(path("plain")) << "x";
  EXPECT_ERROR(train::check_can_save(path("plain/ckpt.safetensors")), path("plain") + " is not a directory");
  if (::geteuid() != 0) {  // root writes through permissions
    std::filesystem::create_directory(path("locked"));
    std::filesystem::permissions(path("locked"), std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
    EXPECT_ERROR(train::check_can_save(path("locked/ckpt.safetensors")), "cannot create files in directory",
                 "Permission denied");
    std::filesystem::permissions(path("locked"), std::filesystem::perms::owner_all);
  }
}

}  // namespace

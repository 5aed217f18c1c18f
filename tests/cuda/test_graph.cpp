// cuda::Graph (core/cuda_graph.h, cuda/graph.cpp): an MLP trained by graph replays ends with
// the bits of the same steps run eagerly; a replay makes no host wait; what a replay would
// repeat stale, or what waits, is refused during capture with an error naming it (and the
// device works on afterwards); a bad index in a replay is reported at the next read; the
// graph's private pool is separate from eager memory and goes with the graph. Capturable
// optimizers (Adam, AdamW, SGD): whole steps replayed with an lr changed between replays give
// the bits of eager steps, count their steps on the device, wait for nothing, and refuse
// set_lr inside a capture. Without CUDA: capture() says so. GPU tests are SKIPPED without a GPU.
#include <cmath>
#include <cstdint>
#include <functional>
#include <gtest/gtest.h>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "amp/grad_scaler.h"
#include "core/backend.h"
#include "core/cuda_graph.h"
#include "core/grad_mode.h"
#include "nn/functional.h"
#include "optim/optimizer.h"
#include "support.h"
#include "update_many_check.h"

namespace {

using namespace vgrad;
using vgrad_test::bytes_of;

Device gpu() { return cuda_device(0); }

using MakeOptimizer = std::function<std::unique_ptr<optim::Optimizer>(std::vector<Tensor> params)>;

std::unique_ptr<optim::Optimizer> nesterov_sgd(std::vector<Tensor> params) {
  return std::make_unique<optim::SGD>(
      std::move(params), optim::SGDOptions{.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-3, .nesterov = true});
}

// An MLP on the GPU with an optimizer (by default SGD with momentum, Nesterov, weight decay),
// fed through static inputs: each step copies batch i of the data (on the device) into x and
// y, then trains on them.
struct StaticTraining {
  explicit StaticTraining(vgrad_test::Mlp& init, const MakeOptimizer& make = nesterov_sgd) : model(20, 32, 10) {
    {
      NoGradGuard no_grad;
      const auto from = init.parameters();
      const auto to = model.parameters();
      for (size_t k = 0; k < to.size(); ++k) to[k].detach().copy_(from[k]);
    }
    model.to(gpu());
    optimizer = make(model.parameters());
  }
  optim::SGD& sgd() { return dynamic_cast<optim::SGD&>(*optimizer); }
  void load(int64_t batch, const Tensor& data, const Tensor& labels) {
    NoGradGuard no_grad;
    x.copy_(data.narrow(0, batch * 32 % 256, 32));
    y.copy_(labels.narrow(0, batch * 32 % 256, 32));
  }
  void step() {
    optimizer->zero_grad();
    loss = nn::cross_entropy(model(x), y);
    loss.backward();
    optimizer->step();
  }
  vgrad_test::Mlp model;
  std::unique_ptr<optim::Optimizer> optimizer;
  Tensor x = zeros({32, 20}, {.device = gpu()});
  Tensor y = zeros({32}, {.dtype = DType::Int64, .device = gpu()});
  Tensor loss;
};

struct Data {
  Data() {
    x = vgrad_test::uniform_tensor({256, 20}, 17).to(gpu());
    y = argmax(x.narrow(1, 0, 10), 1);
  }
  Tensor x, y;
};

// A StaticTraining that ran its first step eagerly: the warm-up a capture needs.
struct WarmedUp {
  WarmedUp() : t(init) {
    t.load(0, data.x, data.y);
    t.step();
  }
  vgrad_test::Mlp init{20, 32, 10};
  Data data;
  StaticTraining t;
};

TEST(CudaGraph, SgdReplaysGiveTheBitsOfEagerSteps) {
  REQUIRE_GPU();
  vgrad_test::Mlp init(20, 32, 10);
  const Data data;
  StaticTraining eager(init), graphed(init);
  const int64_t kSteps = 12;
  // Step 0 eagerly on both (the graph's warm-up: momentum buffers start, caches fill).
  for (StaticTraining* t : {&eager, &graphed}) {
    t->load(0, data.x, data.y);
    t->step();
  }
  cuda::Graph graph;
  graph.capture([&] { graphed.step(); });
  ASSERT_TRUE(graph.captured());
  std::vector<double> eager_losses, graph_losses;
  for (int64_t i = 1; i <= kSteps; ++i) {
    eager.load(i, data.x, data.y);
    eager.step();
    eager_losses.push_back(eager.loss.item());
    graphed.load(i, data.x, data.y);
    graph.replay();
    graph_losses.push_back(graphed.loss.item());  // the captured output, refreshed by the replay
  }
  EXPECT_EQ(graph.replay_count(), kSteps);
  EXPECT_EQ(graph_losses, eager_losses);
  const auto a = eager.model.parameters(), b = graphed.model.parameters();
  for (size_t k = 0; k < a.size(); ++k) {
    EXPECT_EQ(bytes_of(b[k]), bytes_of(a[k])) << "parameter " << k;
    EXPECT_EQ(bytes_of(b[k].grad()), bytes_of(a[k].grad())) << "gradient " << k;
  }
  EXPECT_LT(eager_losses.back(), eager_losses.front()) << "the steps trained";
}

TEST(CudaGraph, AReplayMakesNoHostWait) {
  REQUIRE_GPU();
  WarmedUp warm;
  StaticTraining& t = warm.t;
  const Data& data = warm.data;
  cuda::Graph graph;
  graph.capture([&] { t.step(); });
  graph.replay();  // the first replay may install the graph's index checks
  backend_for(gpu()).synchronize();
  const int64_t start = cuda::host_wait_count(0);
  for (int64_t i = 1; i <= 10; ++i) {
    t.load(i, data.x, data.y);
    graph.replay();
  }
  EXPECT_EQ(cuda::host_wait_count(0) - start, 0) << "10 replays of a step with cross_entropy's index check";
  EXPECT_TRUE(std::isfinite(t.loss.item()));
  EXPECT_EQ(cuda::host_wait_count(0) - start, 1);
}

// Each refused call inside a capture: the error names it, the capture ends, nothing is kept,
// and the device goes on working eagerly.
TEST(CudaGraph, WhatWouldWaitOrReplayStaleIsRefusedInCapture) {
  REQUIRE_GPU();
  WarmedUp warm;
  StaticTraining& t = warm.t;
  const Tensor on_device = ones({4}, {.device = gpu()});
  amp::GradScaler scaler;
  (void)scaler.scale(sum(on_device));  // its scale's tensor, made eagerly: scale() may be captured
  const std::vector<std::pair<std::string, std::function<void()>>> refused = {
      {"a copy to host memory (item(), to(kCPU))", [&] { (void)sum(on_device).item(); }},
      {"a copy to host memory", [&] { (void)on_device.to(kCPU); }},
      {"a copy from host memory",
       [&] {
         (void)tensor(std::vector<float>{1, 2}).to(gpu());
       }},
      {"synchronize()", [&] { backend_for(gpu()).synchronize(); }},
      {"sum_of_squares (clip_grad_norm)",
       [&] {
         t.step();
         (void)optim::clip_grad_norm(t.model.parameters(), 1.0);
       }},
      {"random numbers (dropout)", [&] { (void)nn::F::dropout(on_device, 0.5, true); }},
      {"GradScaler: the first scale() on cuda:0 inside a CUDA graph capture",
       [&] { (void)amp::GradScaler().scale(sum(on_device)); }},
      {"GradScaler: unscale_() inside a CUDA graph capture", [&] { scaler.unscale_(*t.optimizer); }},
      {"GradScaler: step() inside a CUDA graph capture", [&] { (void)scaler.step(*t.optimizer); }},
      {"GradScaler: update() inside a CUDA graph capture", [&] { scaler.update(); }},
      {"GradScaler: load_state_dict() inside a CUDA graph capture",
       [&] { scaler.load_state_dict(amp::GradScaler().state_dict()); }},
  };
  for (const auto& [what, call] : refused) {
    cuda::Graph graph;
    EXPECT_ERROR(graph.capture(call), what, "CUDA graph capture");
    EXPECT_FALSE(graph.captured()) << what;
    EXPECT_EQ(vgrad_test::vals(on_device + 1.0), (std::vector<double>{2, 2, 2, 2})) << what << ": eager work after";
  }
  EXPECT_EQ(vgrad_test::vals(sum(on_device)), (std::vector<double>{4})) << "host reads work after";
}

TEST(CudaGraph, OptimizerStepsThatWouldReplayStaleScalarsAreRefused) {
  REQUIRE_GPU();
  vgrad_test::Mlp init(20, 32, 10);
  const Data data;
  {
    StaticTraining fresh(init);  // no eager step: SGD's first step would be captured
    fresh.load(0, data.x, data.y);
    cuda::Graph graph;
    EXPECT_ERROR(graph.capture([&] { fresh.step(); }), "SGD: step() inside a CUDA graph capture is the first step",
                 "run a step before capturing");
    fresh.step();  // eagerly: fine
    EXPECT_TRUE(std::isfinite(fresh.loss.item()));
  }
  {
    vgrad_test::Mlp model(20, 32, 10);
    model.to(gpu());
    optim::Adam adam(model.parameters(), {});
    const Tensor x = data.x.narrow(0, 0, 32), y = data.y.narrow(0, 0, 32);
    const auto step = [&] {
      adam.zero_grad();
      nn::cross_entropy(model(x), y).backward();
      adam.step();
    };
    step();
    cuda::Graph graph;
    EXPECT_ERROR(graph.capture(step), "Adam: step() inside a CUDA graph capture", "bias corrections",
                 "capturable = true");
  }
  {
    WarmedUp warm;
    StaticTraining& t = warm.t;
    cuda::Graph graph;
    graph.capture([&] { t.step(); });
    EXPECT_ERROR(t.sgd().set_lr(0.01), "SGD: set_lr after a CUDA graph captured step()", "keep lr 0.05",
                 "capturable = true");
    EXPECT_ERROR(t.sgd().load_state_dict(t.sgd().state_dict()), "SGD: load_state_dict after a CUDA graph");
    EXPECT_DOUBLE_EQ(t.sgd().lr(), 0.05);
  }
}

// A bad index met by a replay is reported at the next host read with the CPU's message,
// once; a good one after it is not.
TEST(CudaGraph, ABadIndexInAReplayIsReportedAtTheNextRead) {
  REQUIRE_GPU();
  const Tensor table = arange(0, 12, 1).reshape({4, 3}).to(gpu());
  Tensor index = tensor(std::vector<int64_t>{1, 2}).to(gpu());
  const Tensor good = tensor(std::vector<int64_t>{3, 0}).to(gpu()), bad = tensor(std::vector<int64_t>{3, 9}).to(gpu());
  Tensor out = table.index_select(0, index);  // warm-up
  cuda::Graph graph;
  graph.capture([&] { out = table.index_select(0, index); });
  {
    NoGradGuard no_grad;
    index.copy_(good);
  }
  graph.replay();
  EXPECT_EQ(vgrad_test::vals(out), (std::vector<double>{9, 10, 11, 0, 1, 2}));
  {
    NoGradGuard no_grad;
    index.copy_(bad);
  }
  graph.replay();
  EXPECT_ERROR(backend_for(gpu()).synchronize(), "index_select: index 9 out of range for dim 0 of size 4 (position 1)");
  EXPECT_NO_THROW(backend_for(gpu()).synchronize()) << "reported once";
  {
    NoGradGuard no_grad;
    index.copy_(good);
  }
  graph.replay();
  EXPECT_NO_THROW(backend_for(gpu()).synchronize());
}

// While a capture is underway, running out of memory in the device's pools gives no cache
// back (no cudaFree inside a capture, as in PyTorch): another thread's allocation beyond the
// memory limit fails with the compute pool's cache intact; after the capture it goes back.
TEST(CudaGraph, OutOfMemoryDuringACaptureGivesNoCacheBack) {
  REQUIRE_GPU();
  Backend& device = backend_for(gpu());
  CachingAllocator& compute = device.allocator();
  device.synchronize();
  empty_cache(gpu());
  constexpr size_t kBlock = size_t{48} << 20;
  compute.deallocate(compute.allocate(kBlock), kBlock);  // cached
  set_memory_limit(gpu(), device.memory_limit().held() + kBlock / 2);
  Tensor target = zeros({16}, {.device = gpu()});
  cuda::Graph graph;
  graph.capture([&] {
    target.fill_(1.0);
    std::thread other([&] { EXPECT_ERROR((void)compute.allocate(2 * kBlock), "the device's memory limit is"); });
    other.join();
  });
  EXPECT_EQ(compute.stats().bytes_cached, kBlock) << "the cache stayed during the capture";
  void* after = nullptr;
  EXPECT_NO_THROW(after = compute.allocate(kBlock - (size_t{8} << 20))) << "after the capture it goes back";
  EXPECT_EQ(compute.stats().bytes_cached, 0u);
  compute.deallocate(after, kBlock - (size_t{8} << 20));
  set_memory_limit(gpu(), 0);
}

// empty_cache during a capture would cudaFree inside it: refused with the reason, from the
// capturing thread and from another, with the cache intact; after the capture it works.
TEST(CudaGraph, EmptyCacheDuringACaptureIsRefused) {
  REQUIRE_GPU();
  CachingAllocator& compute = backend_for(gpu()).allocator();
  compute.deallocate(compute.allocate(size_t{1} << 20), size_t{1} << 20);  // cached
  Tensor target = zeros({16}, {.device = gpu()});
  const uint64_t cached = compute.stats().bytes_cached;
  ASSERT_GE(cached, uint64_t{1} << 20);
  const char* expected = "empty_cache(cuda:0): nothing more was given back: a CUDA graph capture is underway";
  cuda::Graph graph;
  graph.capture([&] {
    target.fill_(1.0);
    EXPECT_ERROR(empty_cache(gpu()), expected);
    std::thread other([&] { EXPECT_ERROR(empty_cache(gpu()), expected); });
    other.join();
  });
  EXPECT_EQ(compute.stats().bytes_cached, cached) << "the cache stayed during the capture";
  graph.replay();
  EXPECT_EQ(vgrad_test::vals(target), std::vector<double>(16, 1.0)) << "the capture was not broken";
  EXPECT_NO_THROW(empty_cache(gpu()));
  EXPECT_EQ(compute.stats().bytes_cached, 0u);
}

TEST(CudaGraph, ThePoolIsPrivateAndGoesWithTheGraph) {
  REQUIRE_GPU();
  const uint64_t before = cuda::graph_pool_stats(0).bytes_reserved();
  {
    WarmedUp warm;
    StaticTraining& t = warm.t;
    cuda::Graph graph;
    const MemoryStats main_before = memory_stats(gpu());
    graph.capture([&] { t.step(); });
    const MemoryStats main_after = memory_stats(gpu());
    EXPECT_EQ(main_after.system_allocations, main_before.system_allocations) << "nothing from eager memory";
    EXPECT_EQ(main_after.cache_hits, main_before.cache_hits) << "nothing from eager memory";
    EXPECT_GT(cuda::graph_pool_stats(0).bytes_reserved(), before) << "the step's tensors came from the pool";
    // Eager tensors made now never draw from the pool, whose free blocks (the step's
    // temporaries, freed during the capture) every replay writes again.
    const MemoryStats pool_before = cuda::graph_pool_stats(0);
    std::vector<Tensor> eager;
    for (int k = 0; k < 64; ++k) {
      eager.push_back(zeros({32, 32}, {.device = gpu()}));
      eager.push_back(zeros({1}, {.device = gpu()}));
    }
    const MemoryStats pool_after = cuda::graph_pool_stats(0);
    EXPECT_EQ(pool_after.cache_hits, pool_before.cache_hits) << "an eager tensor came from the graph's pool";
    EXPECT_EQ(pool_after.bytes_in_use, pool_before.bytes_in_use) << "an eager tensor came from the graph's pool";
    EXPECT_GT(memory_stats(gpu()).bytes_in_use, main_after.bytes_in_use) << "they came from eager memory";
    graph.replay();
    graph.reset();
    EXPECT_GT(cuda::graph_pool_stats(0).bytes_reserved(), before) << "the loss and gradients still hold it";
    t.optimizer->zero_grad();
    t.loss = Tensor();
  }
  EXPECT_EQ(cuda::graph_pool_stats(0).bytes_reserved(), before) << "graph and its tensors gone: the pool is freed";
}

// ---- capturable optimizers: the whole step, optimizer included, in the graph ----

// An optimizer of type O with `options`, over the parameters it is given.
template <class O, class Options> MakeOptimizer make_optimizer(Options options) {
  return [options](std::vector<Tensor> params) -> std::unique_ptr<optim::Optimizer> {
    return std::make_unique<O>(std::move(params), options);
  };
}

struct CapturableKind {
  const char* name;
  MakeOptimizer make;            // capturable = true
  MakeOptimizer make_reference;  // the same optimizer without capturable
};

template <class O, class Options> CapturableKind capturable_kind(const char* name, Options options) {
  Options reference = options;
  options.capturable = true;
  reference.capturable = false;
  return {name, make_optimizer<O>(options), make_optimizer<O>(reference)};
}

const CapturableKind kCapturableKinds[] = {
    capturable_kind<optim::Adam>("Adam", optim::AdamOptions{.lr = 1e-2, .weight_decay = 1e-3}),
    capturable_kind<optim::AdamW>("AdamW", optim::AdamOptions{.lr = 1e-2, .weight_decay = 1e-2}),
    capturable_kind<optim::SGD>("SGD", optim::SGDOptions{.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-3}),
};

constexpr int64_t kWarmupSteps = 2;
double lr_of_replay(const CapturableKind& kind, int64_t i) {  // a schedule: changes at every replay
  return (std::string(kind.name) == "SGD" ? 0.05 : 1e-2) * (1.0 + double(i % 4)) / 2.0;
}

// The state's step counts (Adam's "state.<i>.step"), one per parameter.
std::vector<int64_t> step_counts(const optim::Optimizer& optimizer) {
  std::vector<int64_t> counts;
  for (const auto& [key, value] : optimizer.state_dict())
    if (key.size() > 5 && key.compare(key.size() - 5, 5, ".step") == 0) counts.push_back(value.item<int64_t>());
  return counts;
}

// N replays of a captured whole step (forward, cross_entropy, backward, step), with a new lr
// set before each, against N eager steps of the same capturable optimizer on the same
// batches: the same kernels read the same device lr and counts, so the same bits (float32),
// losses included. Against the optimizer without capturable (host lr, host bias corrections):
// SGD rounds the same double lr to float alike, so the same bits; Adam's bias corrections
// come from the device's pow instead of the host's (either may be off by an ulp or two of a
// double), which can move a rounded float32 scalar by one ulp: close, not equal. That
// comparison also proves the set_lr between replays was used (a stale lr would be off by
// far more than the tolerance).
TEST(CudaGraph, CapturableOptimizersReplayWholeStepsWithAChangingLr) {
  REQUIRE_GPU();
  constexpr int64_t kReplays = 8;
  for (const CapturableKind& kind : kCapturableKinds) {
    vgrad_test::Mlp init(20, 32, 10);
    const Data data;
    StaticTraining eager(init, kind.make), graphed(init, kind.make), reference(init, kind.make_reference);
    for (int64_t i = 0; i < kWarmupSteps; ++i)
      for (StaticTraining* t : {&eager, &graphed, &reference}) {
        t->load(i, data.x, data.y);
        t->step();
      }
    // The loss over all 256 samples, forward only: the same data before and after the steps.
    const auto loss_on_all = [&](StaticTraining& t) {
      NoGradGuard no_grad;
      return nn::cross_entropy(t.model(data.x), data.y).item();
    };
    const double loss_before = loss_on_all(eager);
    cuda::Graph graph;
    graph.capture([&] { graphed.step(); });
    ASSERT_TRUE(graph.captured()) << kind.name;
    std::vector<double> eager_losses, graph_losses;
    for (int64_t i = kWarmupSteps; i < kWarmupSteps + kReplays; ++i) {
      for (StaticTraining* t : {&eager, &graphed, &reference}) {
        t->optimizer->set_lr(lr_of_replay(kind, i));
        t->load(i, data.x, data.y);
      }
      eager.step();
      reference.step();
      graph.replay();
      eager_losses.push_back(eager.loss.item());
      graph_losses.push_back(graphed.loss.item());
    }
    EXPECT_EQ(graph.replay_count(), kReplays) << kind.name;
    EXPECT_EQ(graph_losses, eager_losses) << kind.name;
    const auto a = eager.model.parameters(), b = graphed.model.parameters(), r = reference.model.parameters();
    for (size_t k = 0; k < a.size(); ++k) {
      EXPECT_EQ(bytes_of(b[k]), bytes_of(a[k])) << kind.name << " parameter " << k;
      if (std::string(kind.name) == "SGD") {
        EXPECT_EQ(bytes_of(b[k]), bytes_of(r[k]))
            << kind.name << " parameter " << k << " against SGD without capturable";
      } else {
        vgrad_test::expect_all_near(vgrad_test::vals(b[k]), vgrad_test::vals(r[k]), 1e-5,
                                    std::string(kind.name) + " parameter " + std::to_string(k) + " against " +
                                        kind.name + " without capturable");
      }
    }
    for (const auto& [key, value] : eager.optimizer->state_dict())
      EXPECT_EQ(bytes_of(graphed.optimizer->state_dict().at(key)), bytes_of(value)) << kind.name << " " << key;
    if (std::string(kind.name) != "SGD") {
      EXPECT_EQ(step_counts(*graphed.optimizer), std::vector<int64_t>(a.size(), kWarmupSteps + kReplays))
          << kind.name << ": each replay advanced every count on the device";
    }
    EXPECT_LT(loss_on_all(eager), loss_before) << kind.name << ": the steps trained";
  }
}

TEST(CudaGraph, CapturableReplaysWithSetLrMakeNoHostWait) {
  REQUIRE_GPU();
  for (const CapturableKind& kind : kCapturableKinds) {
    vgrad_test::Mlp init(20, 32, 10);
    const Data data;
    StaticTraining t(init, kind.make);
    for (int64_t i = 0; i < kWarmupSteps; ++i) {
      t.load(i, data.x, data.y);
      t.step();
    }
    cuda::Graph graph;
    graph.capture([&] { t.step(); });
    graph.replay();  // the first replay may install the graph's index checks
    backend_for(gpu()).synchronize();
    const int64_t start = cuda::host_wait_count(0);
    for (int64_t i = kWarmupSteps; i < kWarmupSteps + 10; ++i) {
      t.optimizer->set_lr(lr_of_replay(kind, i));
      t.load(i, data.x, data.y);
      graph.replay();
    }
    EXPECT_EQ(cuda::host_wait_count(0) - start, 0) << kind.name << ": 10 set_lr and replays";
    EXPECT_TRUE(std::isfinite(t.loss.item())) << kind.name;
    EXPECT_EQ(cuda::host_wait_count(0) - start, 1) << kind.name;
  }
}

// Inside a capture, set_lr, state_dict and load_state_dict are refused (the capture ends, the
// optimizer keeps its lr and state, and a later capture works); so is the first step of a
// parameter. After a capture, lr may change, other hyper-parameters may not, and a checkpoint
// loads in place unless it drops state the replays update.
TEST(CudaGraph, CapturableRefusesWhatAReplayWouldRepeatOrLose) {
  REQUIRE_GPU();
  const CapturableKind& adam = kCapturableKinds[0];
  {
    vgrad_test::Mlp init(20, 32, 10);
    const Data data;
    StaticTraining fresh(init, adam.make);  // no warm-up: the moments would start in the capture
    fresh.load(0, data.x, data.y);
    cuda::Graph graph;
    EXPECT_ERROR(graph.capture([&] { fresh.step(); }),
                 "Adam: step() inside a CUDA graph capture is the first step of parameter 0",
                 "run a step before capturing");
  }
  for (const CapturableKind& kind : kCapturableKinds) {
    const std::string name = kind.name;
    vgrad_test::Mlp init(20, 32, 10);
    const Data data;
    StaticTraining t(init, kind.make);
    t.load(0, data.x, data.y);
    t.step();
    const double lr = t.optimizer->lr();
    const std::map<std::string, Tensor> checkpoint = t.optimizer->state_dict();
    const std::vector<std::pair<std::string, std::function<void()>>> refused = {
        {name + ": set_lr inside a CUDA graph capture", [&] { t.optimizer->set_lr(0.5); }},
        {name + ": load_state_dict inside a CUDA graph capture", [&] { t.optimizer->load_state_dict(checkpoint); }},
        {name + ": load_hyperparameters inside a CUDA graph capture",
         [&] {
           t.optimizer->load_hyperparameters({{"lr", 0.5}});
         }},
    };
    for (const auto& [what, call] : refused) {
      cuda::Graph graph;
      EXPECT_ERROR(graph.capture([&] {
        t.step();
        call();
      }),
                   what, "call it between replays");
      EXPECT_FALSE(graph.captured()) << what;
      EXPECT_DOUBLE_EQ(t.optimizer->lr(), lr) << what;
    }
    if (name != "SGD") {
      cuda::Graph graph;
      EXPECT_ERROR(graph.capture([&] { (void)t.optimizer->state_dict(); }),
                   name + ": state_dict inside a CUDA graph capture", "reads the step counts back");
    }

    cuda::Graph graph;
    graph.capture([&] { t.step(); });
    ASSERT_TRUE(graph.captured()) << name;
    const std::string fixed = name == "SGD" ? "momentum" : "beta1";
    EXPECT_ERROR(t.optimizer->load_hyperparameters({{fixed, 0.5}}), name + ": load_hyperparameters changes " + fixed,
                 "after a CUDA graph captured step()", "only lr may change");
    t.optimizer->load_hyperparameters({{"lr", 0.02}, {fixed, t.optimizer->hyperparameters().at(fixed)}});
    EXPECT_DOUBLE_EQ(t.optimizer->lr(), 0.02) << name;
    const std::string dropped = name == "SGD" ? "momentum_buffer" : "exp_avg";
    EXPECT_ERROR(t.optimizer->load_state_dict({}),
                 name + ": load_state_dict: the checkpoint has no 'state.0." + dropped + "'",
                 "captured step() updates it in place");

    // Two replays move the parameters, state and counts on; then a checkpoint of an eager
    // run after one step, loaded in place, puts them back: replays go on from it as eager
    // steps from that state do (a load into new memory would leave the replays on the old).
    for (int64_t i = 1; i <= 2; ++i) {
      t.load(i, data.x, data.y);
      graph.replay();
    }
    StaticTraining eager(init, kind.make);
    eager.load(0, data.x, data.y);
    eager.step();
    {
      NoGradGuard no_grad;
      const auto from = eager.model.parameters(), to = t.model.parameters();
      for (size_t k = 0; k < to.size(); ++k) to[k].detach().copy_(from[k]);
    }
    const Tensor first_state = t.optimizer->state_dict().begin()->second;
    t.optimizer->load_state_dict(eager.optimizer->state_dict());
    EXPECT_EQ(t.optimizer->state_dict().begin()->second.view().data, first_state.view().data) << name << ": in place";
    for (int64_t i = 1; i <= 3; ++i) {
      for (StaticTraining* run : {&eager, &t}) {
        run->optimizer->set_lr(0.01 * double(i));
        run->load(i, data.x, data.y);
      }
      eager.step();
      graph.replay();
    }
    const auto a = eager.model.parameters(), b = t.model.parameters();
    for (size_t k = 0; k < a.size(); ++k) EXPECT_EQ(bytes_of(b[k]), bytes_of(a[k])) << name << " parameter " << k;
    if (name != "SGD") {
      EXPECT_EQ(step_counts(*t.optimizer), std::vector<int64_t>(4, 4)) << name;
    }
  }
}

// What capturable costs in launches per replayed step (Graph::kernel_count): SGD none (its lr
// is read by the update kernel), Adam one (the add that advances its step counts).
TEST(CudaGraph, CapturableAdamCostsOneLaunchMoreAndCapturableSgdNone) {
  REQUIRE_GPU();
  const auto kernels_of = [](const MakeOptimizer& make) {
    vgrad_test::Mlp init(20, 32, 10);
    const Data data;
    StaticTraining t(init, make);
    t.load(0, data.x, data.y);
    t.step();
    cuda::Graph graph;
    graph.capture([&] { t.step(); });
    return graph.kernel_count();
  };
  const int64_t sgd = kernels_of(kCapturableKinds[2].make_reference);
  EXPECT_GT(sgd, 3) << "forward, backward and the step";
  EXPECT_EQ(kernels_of(kCapturableKinds[2].make), sgd) << "capturable SGD";
  EXPECT_EQ(kernels_of(kCapturableKinds[0].make), sgd + 1) << "capturable Adam: the update and one count add";
  EXPECT_EQ(kernels_of(kCapturableKinds[1].make), sgd + 1) << "capturable AdamW";
}

TEST(CudaGraph, CapturableNeedsAllParametersOnOneDevice) {
  REQUIRE_GPU();
  const Tensor on_cpu = zeros({3}).requires_grad_(), on_gpu = zeros({3}, {.device = gpu()}).requires_grad_();
  EXPECT_ERROR(optim::Adam({on_cpu, on_gpu}, {.capturable = true}),
               "Adam: capturable needs all parameters on one device: parameter 0 is on cpu, parameter 1 on cuda:0");
  EXPECT_ERROR(optim::SGD({on_gpu, on_cpu}, {.capturable = true}),
               "SGD: capturable needs all parameters on one device: parameter 0 is on cuda:0, parameter 1 on cpu");
  EXPECT_NO_THROW(optim::Adam({on_cpu, on_gpu}, {})) << "without capturable, each device steps its own";
}

// An optimizer made before model.to(gpu()) keeps its lr (and counts) on the CPU: a step is
// an error naming both devices, never a kernel reading host addresses.
TEST(CudaGraph, ACapturableOptimizerMadeBeforeTheModelMovedRefusesToStep) {
  REQUIRE_GPU();
  for (const CapturableKind& kind : kCapturableKinds) {
    vgrad_test::Mlp model(20, 32, 10);
    const std::unique_ptr<optim::Optimizer> optimizer = kind.make(model.parameters());
    model.to(gpu());
    nn::cross_entropy(model(zeros({4, 20}, {.device = gpu()})), zeros({4}, {.dtype = DType::Int64, .device = gpu()}))
        .backward();
    EXPECT_ERROR(optimizer->step(), std::string(kind.name) + ": step() with capturable: parameter 0 is on cuda:0",
                 "live on cpu", "make the optimizer after moving the model");
    backend_for(gpu()).synchronize();  // nothing ran that could fault
  }
}

TEST(CudaGraph, ABuildWithoutCudaSaysSo) {
  if (cuda::built_with_cuda()) GTEST_SKIP() << "this build has CUDA";
  cuda::Graph graph;
  EXPECT_ERROR(graph.capture([] {}), "cuda::Graph", "no CUDA support");
  EXPECT_ERROR(graph.replay(), "cuda::Graph: replay() before capture()");
  EXPECT_FALSE(graph.captured());
}

}  // namespace

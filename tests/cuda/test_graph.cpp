// cuda::Graph (core/cuda_graph.h, cuda/graph.cpp): an MLP trained by graph replays ends with
// the bits of the same steps run eagerly; a replay makes no host wait; what a replay would
// repeat stale, or what waits, is refused during capture with an error naming it (and the
// device works on afterwards); a bad index in a replay is reported at the next read; the
// graph's private pool is separate from eager memory and goes with the graph. Without
// CUDA: capture() says so. GPU tests are SKIPPED without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
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

// An MLP on the GPU with SGD (momentum, Nesterov, weight decay), fed through static inputs:
// each step copies batch i of the data (on the device) into x and y, then trains on them.
struct StaticTraining {
  explicit StaticTraining(vgrad_test::Mlp& init) : model(20, 32, 10), sgd(model.parameters(), options()) {
    NoGradGuard no_grad;
    const auto from = init.parameters();
    const auto to = model.parameters();
    for (size_t k = 0; k < to.size(); ++k) to[k].detach().copy_(from[k]);
    model.to(gpu());
  }
  static optim::SGDOptions options() { return {.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-3, .nesterov = true}; }
  void load(int64_t batch, const Tensor& data, const Tensor& labels) {
    NoGradGuard no_grad;
    x.copy_(data.narrow(0, batch * 32 % 256, 32));
    y.copy_(labels.narrow(0, batch * 32 % 256, 32));
  }
  void step() {
    sgd.zero_grad();
    loss = nn::cross_entropy(model(x), y);
    loss.backward();
    sgd.step();
  }
  vgrad_test::Mlp model;
  optim::SGD sgd;
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
  const std::vector<std::pair<std::string, std::function<void()>>> refused = {
      {"a copy to host memory (item(), to(kCPU))", [&] { (void)sum(on_device).item(); }},
      {"a copy to host memory", [&] { (void)on_device.to(kCPU); }},
      {"a copy from host memory", [&] { (void)tensor(std::vector<float>{1, 2}).to(gpu()); }},
      {"synchronize()", [&] { backend_for(gpu()).synchronize(); }},
      {"sum_of_squares (clip_grad_norm)",
       [&] {
         t.step();
         (void)optim::clip_grad_norm(t.model.parameters(), 1.0);
       }},
      {"random numbers (dropout)", [&] { (void)nn::F::dropout(on_device, 0.5, true); }},
      {"GradScaler: scale() inside a CUDA graph capture", [&] { (void)amp::GradScaler().scale(sum(on_device)); }},
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
    EXPECT_ERROR(graph.capture(step), "Adam: step() inside a CUDA graph capture", "bias corrections");
  }
  {
    WarmedUp warm;
    StaticTraining& t = warm.t;
    cuda::Graph graph;
    graph.capture([&] { t.step(); });
    EXPECT_ERROR(t.sgd.set_lr(0.01), "SGD: set_lr after a CUDA graph captured step()", "keep lr 0.05");
    EXPECT_ERROR(t.sgd.load_state_dict(t.sgd.state_dict()), "SGD: load_state_dict after a CUDA graph");
    EXPECT_DOUBLE_EQ(t.sgd.lr(), 0.05);
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
    t.sgd.zero_grad();
    t.loss = Tensor();
  }
  EXPECT_EQ(cuda::graph_pool_stats(0).bytes_reserved(), before) << "graph and its tensors gone: the pool is freed";
}

TEST(CudaGraph, ABuildWithoutCudaSaysSo) {
  if (cuda::built_with_cuda()) GTEST_SKIP() << "this build has CUDA";
  cuda::Graph graph;
  EXPECT_ERROR(graph.capture([] {}), "cuda::Graph", "no CUDA support");
  EXPECT_ERROR(graph.replay(), "cuda::Graph: replay() before capture()");
  EXPECT_FALSE(graph.captured());
}

}  // namespace

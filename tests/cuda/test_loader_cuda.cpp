// The DataLoader on a GPU (data/loader.cpp's upload path; docs/gpu.md, "Streams"): batches
// gathered into page-locked staging and uploaded on the copy stream are the CPU loader's
// batches bit for bit; the host never waits for the compute stream per batch; a bad index of
// the training thread is reported there, not in the loader thread; and batches freed while
// kernels still read them are never overwritten by the next upload (the upload pool's
// fences), checked against the CPU. SKIPPED without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/grad_mode.h"
#include "data/loader.h"
#include "nn/functional.h"
#include "optim/optimizer.h"
#include "support.h"

namespace {

using namespace vgrad;

Device gpu() { return cuda_device(0); }
int64_t waits() { return cuda::host_wait_count(0); }

// The bytes of a tensor's values, read back to the host.
std::vector<unsigned char> bytes(const Tensor& t) {
  const Tensor host = t.to(kCPU).contiguous();
  std::vector<unsigned char> out(static_cast<size_t>(host.numel()) * dtype_size(host.dtype()));
  if (!out.empty()) std::memcpy(out.data(), host.data_ptr(), out.size());
  return out;
}

// N samples of D float32 features and int64 labels in [0, C).
std::shared_ptr<data::TensorDataset> dataset(int64_t n, int64_t d, uint64_t seed) {
  const Tensor x = vgrad_test::uniform_tensor({n, d}, seed);
  const Tensor y = argmax(x.narrow(1, 0, 10), 1);
  return std::make_shared<data::TensorDataset>(x, y);
}

// A dataset without get_batch_into: the loader copies its batches into the staging buffers.
struct GatherOnly : data::Dataset {
  explicit GatherOnly(std::shared_ptr<data::TensorDataset> inner) : inner(std::move(inner)) {}
  int64_t size() const override { return inner->size(); }
  data::Batch get_batch(const Tensor& indices) const override { return inner->get_batch(indices); }
  std::shared_ptr<data::TensorDataset> inner;
};

// Two epochs of a GPU loader against the same loader on the CPU, batch by batch, bit for
// bit; the first batch is kept (by the caller) to the end and must not change.
void expect_same_batches(const std::shared_ptr<const data::Dataset>& source, int prefetch) {
  const data::LoaderOptions options{.batch_size = 32, .shuffle = true, .seed = 5, .prefetch = prefetch};
  data::LoaderOptions on_gpu = options;
  on_gpu.device = gpu();
  data::DataLoader cpu_loader(source, options), gpu_loader(source, on_gpu);
  data::Batch kept, kept_cpu;
  int64_t batches = 0;
  for (int epoch = 0; epoch < 2; ++epoch) {
    auto cpu_it = cpu_loader.begin();
    for (auto& [x, y] : gpu_loader) {
      ASSERT_TRUE(cpu_it != cpu_loader.end());
      const data::Batch& expected = *cpu_it;
      ASSERT_EQ(x.device(), gpu());
      ASSERT_EQ(y.device(), gpu());
      EXPECT_EQ(&x.storage()->pool(), &backend_for(gpu()).upload_allocator()) << "uploaded by the copy stream";
      EXPECT_EQ(x.shape(), expected.input.shape()) << "epoch " << epoch << ", batch " << batches;
      EXPECT_EQ(bytes(x), bytes(expected.input)) << "epoch " << epoch << ", batch " << batches;
      EXPECT_EQ(bytes(y), bytes(expected.target)) << "epoch " << epoch << ", batch " << batches;
      if (batches == 0) {
        kept = {x, y};
        kept_cpu = {expected.input.contiguous().clone(), expected.target.contiguous().clone()};
      }
      ++batches;
      ++cpu_it;
    }
    EXPECT_FALSE(cpu_it != cpu_loader.end());
  }
  EXPECT_EQ(batches, 2 * cpu_loader.num_batches());
  EXPECT_EQ(bytes(kept.input), bytes(kept_cpu.input)) << "a kept batch was overwritten";
  EXPECT_EQ(bytes(kept.target), bytes(kept_cpu.target));
}

TEST(CudaLoader, BatchesEqualTheCpuLoadersBitForBit) {
  REQUIRE_GPU();
  const auto source = dataset(300, 24, 1);  // 10 batches, the last of 12 samples
  for (int prefetch : {1, 3}) {
    SCOPED_TRACE("prefetch " + std::to_string(prefetch));
    expect_same_batches(source, prefetch);
  }
}

TEST(CudaLoader, ADatasetThatOnlyGathersIsCopiedIntoStagingAlike) {
  REQUIRE_GPU();
  const auto source = std::make_shared<GatherOnly>(dataset(300, 24, 2));
  for (int prefetch : {1, 3}) {
    SCOPED_TRACE("prefetch " + std::to_string(prefetch));
    expect_same_batches(source, prefetch);
  }
}

// Before the copy stream, every batch's copy waited for the whole compute stream (one host
// wait per batch, 20 here); now an epoch of loading and training waits for nothing.
TEST(CudaLoader, AnEpochOfTrainingOnLoadedBatchesNeverWaitsForTheComputeStream) {
  REQUIRE_GPU();
  const auto source = dataset(640, 20, 3);  // 20 batches: 20 index checks, under kIndexChecksPerWait
  vgrad_test::Mlp model(20, 32, 10), cpu_model(20, 32, 10);
  cpu_model.load_state_dict(model.state_dict());
  model.to(gpu());
  optim::SGD sgd(model.parameters(), {.lr = 0.1}), cpu_sgd(cpu_model.parameters(), {.lr = 0.1});
  data::DataLoader loader(source, {.batch_size = 32, .shuffle = true, .seed = 9, .device = gpu(), .prefetch = 2});
  data::DataLoader cpu_loader(source, {.batch_size = 32, .shuffle = true, .seed = 9, .prefetch = 2});
  // One step on the first 32 samples first, on both, so the GPU's first-use costs come before counting.
  auto train_step = [](vgrad_test::Mlp& net, optim::SGD& opt, const Tensor& x, const Tensor& y) {
    Tensor loss = nn::cross_entropy(net(x), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    return loss;
  };
  const data::Batch first = source->get_batch(arange(32));
  (void)train_step(model, sgd, first.input.to(gpu()), first.target.to(gpu())).item();
  (void)train_step(cpu_model, cpu_sgd, first.input, first.target);
  backend_for(gpu()).synchronize();
  const int64_t start = waits();
  Tensor loss;
  for (auto& [x, y] : loader) loss = train_step(model, sgd, x, y);
  EXPECT_EQ(waits() - start, 0) << "20 batches loaded and trained on";
  (void)loss.item();
  EXPECT_EQ(waits() - start, 1) << "item() is one wait";
  // The same epoch on the CPU: the GPU's kernels read every batch whole and in order.
  for (auto& [x, y] : cpu_loader) (void)train_step(cpu_model, cpu_sgd, x, y);
  const auto params = model.parameters(), cpu_params = cpu_model.parameters();
  ASSERT_EQ(params.size(), cpu_params.size());
  for (size_t k = 0; k < params.size(); ++k) {
    const std::vector<double> got = vgrad_test::vals(params[k]), want = vgrad_test::vals(cpu_params[k]);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-4) << "parameter " << k << ", " << i;
  }
}

// Before, the loader thread's copy waited for the compute stream and so threw the training
// thread's pending bad index (rethrown by the loop, as if loading had failed).
TEST(CudaLoader, ABadIndexOfTheTrainingThreadIsReportedThereNotByTheLoader) {
  REQUIRE_GPU();
  const auto source = dataset(256, 20, 4);
  data::DataLoader loader(source, {.batch_size = 32, .device = gpu(), .prefetch = 2});
  const Tensor table = vgrad_test::uniform_tensor({4, 3}, 5).to(gpu());
  const Tensor bad = tensor(std::vector<int64_t>{0, 9}).to(gpu());
  backend_for(gpu()).synchronize();
  Tensor gathered = table.index_select(0, bad);  // pending on the device, not yet reported
  int64_t batches = 0;
  EXPECT_NO_THROW({
    for (auto& batch : loader) {
      (void)batch;
      ++batches;
    }
  });
  EXPECT_EQ(batches, 8);
  EXPECT_ERROR((void)gathered.to(kCPU), "index_select: index 9 out of range for dim 0 of size 4 (position 1)");
}

// Many small batches, each freed at once while a slow kernel queued before its last use
// still runs, and the cache emptied now and then: a block of the upload pool must not be
// uploaded into before the kernels that read it are done. Every batch is copied, by a kernel, into one device tensor compared with
// the CPU loader's batches bit for bit.
TEST(CudaLoader, BatchesFreedWhileKernelsStillReadThemAreNeverOverwritten) {
  REQUIRE_GPU();
  const int64_t n = 4096, d = 64, batch = 8;
  const auto source = dataset(n, d, 6);
  data::DataLoader loader(source, {.batch_size = batch, .shuffle = true, .seed = 2, .device = gpu(), .prefetch = 3});
  data::DataLoader cpu_loader(source, {.batch_size = batch, .shuffle = true, .seed = 2, .prefetch = 3});
  // A 2048^3 float32 product per batch: the compute stream falls far behind the host.
  const Tensor slow = vgrad_test::uniform_tensor({2048, 2048}, 7).to(gpu());
  Tensor seen = zeros({n, d}).to(gpu()), seen_targets = zeros({n}, {.dtype = DType::Int64}).to(gpu());
  empty_cache(gpu());
  backend_for(gpu()).synchronize();
  uint64_t most_pending = 0;
  int64_t row = 0;
  {
    NoGradGuard no_grad;
    Tensor load;
    for (auto& [x, y] : loader) {
      load = matmul(slow, slow);                   // queued before the batch is read
      seen.narrow(0, row, x.shape()[0]).copy_(x);  // kernels that read the batch
      seen_targets.narrow(0, row, y.shape()[0]).copy_(y);
      row += x.shape()[0];
      most_pending = std::max(most_pending, memory_stats(gpu()).bytes_pending);
      // Now and then give the cache back while the loader allocates: release_cached waits
      // for the pending blocks, and the next uploads get fresh cudaMalloc blocks.
      if (row % 512 == 0) empty_cache(gpu());
    }
  }
  ASSERT_EQ(row, n);
  EXPECT_GT(most_pending, 0u) << "no freed batch was still in use: the test did not make the hazard it checks";
  std::vector<Tensor> inputs, targets;
  for (auto& [x, y] : cpu_loader) {
    inputs.push_back(x.clone());
    targets.push_back(y.clone());
  }
  EXPECT_EQ(bytes(seen), bytes(cat(inputs, 0)));
  EXPECT_EQ(bytes(seen_targets), bytes(cat(targets, 0)));
}

}  // namespace

// vgrad::distributed under any world size: run alone (the local communicator) and by
// CTest under mpirun with 2 and 3 ranks. Collectives on sizes 0, 1, odd and larger than
// a bucket; DDP against single-process training with the global batch; the sampler;
// rank-0 work; errors. `--failure-worker <mode>` is the program tests/distributed/failure.sh
// runs under mpirun to kill, throw in, or hang a rank.
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "distributed/communicator.h"
#include "distributed/data_parallel.h"
#include "data/loader.h"
#include "optim/optimizer.h"
#include "support.h"
#include "train/training_state.h"

namespace {

using namespace vgrad;
using namespace vgrad::distributed;
using vgrad_test::Mlp;
using vgrad_test::vals;

Communicator& world() {
  static std::shared_ptr<Communicator> communicator = init_from_environment({.timeout_seconds = 60});
  return *communicator;
}
std::shared_ptr<Communicator> world_ptr() { return std::shared_ptr<Communicator>(&world(), [](Communicator*) {}); }

// Exactly representable values, so sums over ranks are exact in float32 and float64.
double value_of(int rank, int64_t i) { return double(rank + 1) * double(i % 97 + 1) / 8; }

Tensor rank_tensor(int rank, int64_t n, DType dtype) {
  std::vector<double> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) values[size_t(i)] = value_of(rank, i);
  return tensor(values, {n}).to(dtype);
}

// ---------------- collectives ----------------

class Collectives : public ::testing::TestWithParam<std::tuple<int64_t, DType>> {};

TEST_P(Collectives, AllReduceBroadcastAllGather) {
  const auto [n, dtype] = GetParam();
  Communicator& comm = world();
  const int size = comm.world_size(), rank = comm.rank();

  Tensor sum = rank_tensor(rank, n, dtype);
  comm.all_reduce(sum, Reduction::Sum);
  Tensor average = rank_tensor(rank, n, dtype);
  comm.all_reduce(average, Reduction::Average);
  const std::vector<double> got_sum = sum.to_vector<double>(), got_average = average.to_vector<double>();
  const double ranks_total = size * (size + 1) / 2.0;  // sum over r of (r + 1)
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(got_sum[size_t(i)], ranks_total * value_of(0, i)) << "element " << i;  // exact
    ASSERT_NEAR(got_average[size_t(i)], ranks_total * value_of(0, i) / size, 1e-6 * value_of(size, i)) << i;
  }

  const int root = size - 1;
  Tensor shared = rank_tensor(rank, n, dtype);
  comm.broadcast(shared, root);
  EXPECT_EQ(shared.to_vector<double>(), rank_tensor(root, n, dtype).to_vector<double>());

  const Tensor gathered = comm.all_gather(rank_tensor(rank, n, dtype));
  ASSERT_EQ(gathered.shape(), (Shape{size, n}));
  for (int r = 0; r < size; ++r) EXPECT_EQ(gathered[r].to_vector<double>(), rank_tensor(r, n, dtype).to_vector<double>());
  comm.barrier();
}

// 0, 1, odd, and more than one 25 MB DDP bucket of float32 (6.6 M elements).
INSTANTIATE_TEST_SUITE_P(Sizes, Collectives,
                         ::testing::Combine(::testing::Values(int64_t(0), int64_t(1), int64_t(97),
                                                              int64_t((25 << 20) / 4 + 3)),
                                            ::testing::Values(DType::Float32, DType::Float64)));

TEST(Collectives, Int64SumAndTwoDimensionalGather) {
  Communicator& comm = world();
  Tensor counts = full({2, 3}, double(comm.rank() + 1), {.dtype = DType::Int64});
  comm.all_reduce(counts);
  EXPECT_EQ(counts.to_vector<int64_t>(), std::vector<int64_t>(6, comm.world_size() * (comm.world_size() + 1) / 2));
  EXPECT_EQ(comm.all_gather(counts).shape(), (Shape{comm.world_size(), 2, 3}));
}

TEST(Collectives, ErrorsNameTheRankTheCollectiveAndTheTensor) {
  Communicator& comm = world();
  const std::string rank = "rank " + std::to_string(comm.rank()) + " of " + std::to_string(comm.world_size());
  Tensor matrix = zeros({3, 4});
  EXPECT_ERROR(comm.all_reduce(matrix.t()), rank, "all_reduce", "[4, 3]", "not contiguous");
  EXPECT_ERROR(comm.all_reduce(zeros({2}, {.dtype = DType::Int64}), Reduction::Average), "average", "int64");
  EXPECT_ERROR(comm.broadcast(matrix, comm.world_size()), "broadcast", "root", "out of range");
  EXPECT_ERROR(comm.all_reduce(Tensor()), "undefined");
}

// ---------------- environment ----------------

// Unsets the variables for a scope and puts their values back afterwards.
class UnsetForScope {
 public:
  explicit UnsetForScope(std::vector<std::string> names) : names_(std::move(names)) {
    for (const std::string& name : names_) {
      if (const char* value = std::getenv(name.c_str())) saved_.emplace_back(name, value);
      unsetenv(name.c_str());
    }
  }
  ~UnsetForScope() {
    for (const std::string& name : names_) unsetenv(name.c_str());
    for (const auto& [name, value] : saved_) setenv(name.c_str(), value.c_str(), 1);
  }

 private:
  std::vector<std::string> names_;
  std::vector<std::pair<std::string, std::string>> saved_;
};

TEST(Environment, ReadsWhatTheLaunchersSet) {
  (void)world();  // the communicator reads the real environment first
  UnsetForScope unset({"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                       "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS",
                       "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"});
  EXPECT_EQ(read_environment().world_size, 1);
  EXPECT_EQ(read_environment().launcher, "");
  setenv("PMI_RANK", "3", 1);
  setenv("PMI_SIZE", "4", 1);
  setenv("MPI_LOCALRANKID", "1", 1);
  Environment environment = read_environment();
  EXPECT_EQ(environment.launcher, "pmi");
  EXPECT_EQ(environment.rank, 3);
  EXPECT_EQ(environment.world_size, 4);
  EXPECT_EQ(environment.local_rank, 1);
  EXPECT_EQ(environment.local_size, 0);  // not said
  setenv("MPI_LOCALNRANKS", "2", 1);
  EXPECT_EQ(read_environment().local_size, 2);
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);  // Open MPI's variables come first
  setenv("OMPI_COMM_WORLD_RANK", "1", 1);
  EXPECT_EQ(read_environment().launcher, "openmpi");
  EXPECT_EQ(read_environment().rank, 1);
  setenv("OMPI_COMM_WORLD_RANK", "2", 1);
  EXPECT_ERROR(read_environment(), "rank 2", "of 2 ranks", "out of range");
  setenv("OMPI_COMM_WORLD_RANK", "one", 1);
  EXPECT_ERROR(read_environment(), "OMPI_COMM_WORLD_RANK", "\"one\"");
}

// Ranks that share the cores: one OpenBLAS thread per core per rank, and Open MPI yields
// while waiting once the ranks fill the cores; what the user set stands.
TEST(Environment, RanksSharingCoresGetThreadAndYieldDefaults) {
  UnsetForScope unset({"OPENBLAS_NUM_THREADS", "OMPI_MCA_mpi_yield_when_idle"});
  using Settings = std::vector<std::string>;
  EXPECT_EQ(share_cores({.world_size = 2, .local_size = 0}, 2), Settings{});  // local size unknown
  EXPECT_EQ(share_cores({.world_size = 8, .local_size = 1}, 2), Settings{});  // alone on its machine
  EXPECT_EQ(share_cores({.world_size = 8, .local_size = 4}, 16), Settings{"OPENBLAS_NUM_THREADS=4"});
  EXPECT_STREQ(std::getenv("OPENBLAS_NUM_THREADS"), "4");
  unsetenv("OPENBLAS_NUM_THREADS");
  EXPECT_EQ(share_cores({.world_size = 3, .local_size = 3}, 2),
            (Settings{"OPENBLAS_NUM_THREADS=1", "OMPI_MCA_mpi_yield_when_idle=1"}));
  EXPECT_STREQ(std::getenv("OMPI_MCA_mpi_yield_when_idle"), "1");
  setenv("OPENBLAS_NUM_THREADS", "2", 1);
  unsetenv("OMPI_MCA_mpi_yield_when_idle");
  EXPECT_EQ(share_cores({.world_size = 2, .local_size = 2}, 2), Settings{"OMPI_MCA_mpi_yield_when_idle=1"});
  EXPECT_STREQ(std::getenv("OPENBLAS_NUM_THREADS"), "2");  // the user's choice stands
}

TEST(Environment, MissingEnginesSayWhatToInstall) {
  if (!built_with_nccl()) EXPECT_ERROR(init_from_environment({.engine = Engine::Nccl}), "NCCL", "-DVGRAD_CUDA=ON");
  if (world().world_size() > 1)
    EXPECT_ERROR(init_from_environment({.engine = Engine::Local}), "local communicator has one rank");
}

// ---------------- the distributed sampler ----------------

std::shared_ptr<data::TensorDataset> numbered_dataset(int64_t n) {
  return std::make_shared<data::TensorDataset>(arange(0, double(n), 1, {.dtype = DType::Float32}).reshape({n, 1}),
                                               arange(n));
}

TEST(DistributedSampler, RanksTogetherSeeTheSingleProcessBatches) {
  for (int64_t replicas : {1, 2, 3}) {
    for (bool drop_last : {false, true}) {
      auto dataset = numbered_dataset(51);  // 4 batches of 12 + 3: an uneven last batch
      data::DataLoader single(dataset, {.batch_size = 12, .seed = 7, .drop_last = drop_last, .prefetch = 0});
      std::vector<std::vector<int64_t>> expected;
      for (auto& [x, y] : single) expected.push_back(y.to_vector<int64_t>());
      std::vector<std::vector<int64_t>> joined(expected.size());
      for (int64_t rank = 0; rank < replicas; ++rank) {
        data::DataLoader share(dataset, {.batch_size = 12, .seed = 7, .drop_last = drop_last, .num_replicas = replicas,
                                         .rank = rank});
        EXPECT_EQ(share.num_batches(), single.num_batches());
        size_t batch = 0;
        for (auto& [x, y] : share) {
          const std::vector<int64_t> part = y.to_vector<int64_t>();
          EXPECT_LE(std::abs(int64_t(part.size()) - int64_t(expected[batch].size()) / replicas), 1);
          joined[batch].insert(joined[batch].end(), part.begin(), part.end());
          ++batch;
        }
      }
      EXPECT_EQ(joined, expected) << replicas << " replicas, drop_last " << drop_last;
    }
  }
}

TEST(DistributedSampler, RefusesSharesWithoutASample) {
  EXPECT_ERROR(data::DataLoader(numbered_dataset(50), {.batch_size = 2, .num_replicas = 3}),
               "global batch of 2 samples cannot be split across 3 ranks");
  EXPECT_ERROR(data::DataLoader(numbered_dataset(49), {.batch_size = 12, .num_replicas = 3}), "the last batch",
               "drop_last");
  EXPECT_ERROR(data::DataLoader(numbered_dataset(49), {.batch_size = 12, .num_replicas = 2, .rank = 2}),
               "rank 2 of num_replicas 2");
}

// ---------------- DistributedDataParallel ----------------

constexpr int64_t kSamples = 96, kFeatures = 6, kClasses = 3, kGlobalBatch = 24;

std::shared_ptr<data::TensorDataset> classification_data() {
  Generator gen(11);
  Tensor x = normal({kSamples, kFeatures}, 0, 1, {}, &gen);
  Tensor y = argmax(matmul(x, normal({kFeatures, kClasses}, 0, 1, {}, &gen)), 1);
  return std::make_shared<data::TensorDataset>(x, y);
}

enum class Opt { Sgd, Momentum, Adam };

std::unique_ptr<optim::Optimizer> make_optimizer(Opt kind, const std::vector<Tensor>& params) {
  switch (kind) {
    case Opt::Sgd: return std::make_unique<optim::SGD>(params, optim::SGDOptions{.lr = 0.1});
    case Opt::Momentum: return std::make_unique<optim::SGD>(params, optim::SGDOptions{.lr = 0.05, .momentum = 0.9});
    case Opt::Adam: return std::make_unique<optim::Adam>(params, optim::AdamOptions{.lr = 0.01});
  }
  return nullptr;
}

std::vector<Tensor> values_of(const nn::Module& model) {
  std::vector<Tensor> values;
  for (const Tensor& p : model.parameters()) values.push_back(p.detach().clone());
  return values;
}

// One process, the global batch: the reference every rank computes for itself.
std::vector<Tensor> train_single(Opt kind, int steps, int64_t batch_size = kGlobalBatch) {
  manual_seed(5);
  Mlp model(kFeatures, 16, kClasses);
  auto optimizer = make_optimizer(kind, model.parameters());
  data::DataLoader loader(classification_data(), {.batch_size = batch_size, .seed = 3, .prefetch = 0});
  for (int step = 0; step < steps;) {
    for (auto& [x, y] : loader) {
      nn::cross_entropy(model(x), y).backward();
      optimizer->step();
      optimizer->zero_grad();
      if (++step == steps) break;
    }
  }
  return values_of(model);
}

struct DdpRun {
  int micro_batches = 1;  // > 1: accumulation, all but the last under no_sync()
  DataParallelOptions options{};
};

std::vector<Tensor> train_distributed(Opt kind, int steps, DdpRun run = {}) {
  Communicator& comm = world();
  manual_seed(5 + uint64_t(comm.rank()) * 100);  // different starts: the broadcast must fix them
  Mlp model(kFeatures, 16, kClasses);
  DistributedDataParallel ddp(model, world_ptr(), run.options);
  auto optimizer = make_optimizer(kind, model.parameters());
  data::DataLoader loader(classification_data(), {.batch_size = kGlobalBatch / run.micro_batches, .seed = 3,
                                                  .prefetch = 0, .num_replicas = comm.world_size(),
                                                  .rank = comm.rank()});
  int step = 0, micro = 0;
  while (step < steps) {
    for (auto& [x, y] : loader) {
      Tensor loss = nn::cross_entropy(ddp(x), y) / double(run.micro_batches);
      if (++micro < run.micro_batches) {
        auto no_sync = ddp.no_sync();
        loss.backward();
        continue;
      }
      micro = 0;
      loss.backward();
      ddp.finish_gradient_sync();
      optimizer->step();
      optimizer->zero_grad();
      if (++step == steps) break;
    }
  }
  return values_of(model);
}

// Whole epochs of accumulation through ddp.backward(accumulation, loss): groups of `groups`
// micro-batches of `micro_batch` samples (global), and the epoch's last, partial group.
std::vector<Tensor> train_distributed_accumulating(Opt kind, int epochs, int64_t micro_batch, int64_t group) {
  Communicator& comm = world();
  manual_seed(5 + uint64_t(comm.rank()) * 100);
  Mlp model(kFeatures, 16, kClasses);
  DistributedDataParallel ddp(model, world_ptr());
  auto optimizer = make_optimizer(kind, model.parameters());
  optim::GradientAccumulation accumulation(*optimizer, group);
  data::DataLoader loader(classification_data(), {.batch_size = micro_batch, .seed = 3, .prefetch = 0,
                                                  .num_replicas = comm.world_size(), .rank = comm.rank()});
  for (int epoch = 0; epoch < epochs; ++epoch) {
    for (auto& [x, y] : loader)
      if (ddp.backward(accumulation, nn::cross_entropy(ddp(x), y))) accumulation.step();
    if (ddp.finish_accumulation(accumulation)) accumulation.step();
  }
  if (comm.world_size() > 1) {  // (a world of one has nothing to average and counts no syncs)
    EXPECT_EQ(ddp.stats().syncs, int64_t(epochs) * ((kSamples / micro_batch + group - 1) / group))
        << "one all-reduce per optimizer step, none for the micro-batches under no_sync()";
  }
  return values_of(model);
}

void expect_close(const std::vector<Tensor>& got, const std::vector<Tensor>& want, double tolerance) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    vgrad_test::expect_near_all(vals(got[i]), vals(want[i]), tolerance, ("parameter " + std::to_string(i)).c_str());
}

// Every rank's parameters, gathered, are the same bits.
void expect_identical_across_ranks(const std::vector<Tensor>& values) {
  for (const Tensor& value : values) {
    const Tensor gathered = world().all_gather(value);
    for (int r = 1; r < world().world_size(); ++r)
      EXPECT_EQ(std::memcmp(gathered[0].contiguous().data_ptr(), gathered[r].contiguous().data_ptr(),
                            size_t(value.numel()) * dtype_size(value.dtype())),
                0)
          << "rank " << r << " differs from rank 0 in a parameter of shape " << shape_str(value.shape());
  }
}

class DataParallel : public ::testing::TestWithParam<Opt> {};

// 50 steps of R ranks with B/R samples each = 1 process with B (the sum order differs: 1e-5).
TEST_P(DataParallel, MatchesSingleProcessWithTheGlobalBatch) {
  const std::vector<Tensor> distributed = train_distributed(GetParam(), 50);
  expect_close(distributed, train_single(GetParam(), 50), 1e-5);
  expect_identical_across_ranks(distributed);
}

// Two micro-batches of B/2 (the first under no_sync) then a step = one batch of B.
TEST_P(DataParallel, AccumulationWithNoSyncMatchesTheLargeBatch) {
  if (kGlobalBatch / 2 < world().world_size()) GTEST_SKIP();
  const std::vector<Tensor> distributed = train_distributed(GetParam(), 20, {.micro_batches = 2});
  expect_close(distributed, train_single(GetParam(), 20), 1e-5);
  expect_identical_across_ranks(distributed);
}

// The library's accumulation (mnist_mlp --distributed --accumulate 3): micro-batches of 12
// (global), 3 per step, the last group of each epoch partial (96 = 2 * 36 + 24), against one
// process with batches of 36 (96 = 2 * 36 + 24: the same samples in each step).
TEST_P(DataParallel, AccumulationThroughTheLibraryMatchesTheLargeBatchWithPartialGroups) {
  constexpr int kEpochs = 4;
  const std::vector<Tensor> distributed = train_distributed_accumulating(GetParam(), kEpochs, 12, 3);
  expect_close(distributed, train_single(GetParam(), kEpochs * 3, 36), 1e-5);
  expect_identical_across_ranks(distributed);
}

INSTANTIATE_TEST_SUITE_P(Optimizers, DataParallel, ::testing::Values(Opt::Sgd, Opt::Momentum, Opt::Adam),
                         [](const auto& info) {
                           return std::string(info.param == Opt::Sgd ? "Sgd" : info.param == Opt::Momentum ? "Momentum" : "Adam");
                         });

TEST(DataParallelBuckets, ManyBucketsAndNoOverlapGiveTheSameBits) {
  const std::vector<Tensor> one_bucket = train_distributed(Opt::Momentum, 10);
  // 64 bytes: every parameter in a bucket of its own (fc1.weight alone is 384 bytes).
  const std::vector<Tensor> many = train_distributed(
      Opt::Momentum, 10, {.options = {.bucket_cap_bytes = 64, .first_bucket_cap_bytes = 64}});
  const std::vector<Tensor> serial = train_distributed(Opt::Momentum, 10, {.options = {.overlap = false}});
  for (size_t i = 0; i < one_bucket.size(); ++i) {
    EXPECT_EQ(vals(many[i]), vals(one_bucket[i])) << "parameter " << i;
    EXPECT_EQ(vals(serial[i]), vals(one_bucket[i])) << "parameter " << i;
  }
}

TEST(DataParallelBuckets, ReverseOrderSmallFirstBucket) {
  manual_seed(1);
  Mlp model(100, 50, 10);  // fc1.weight 20 kB, fc1.bias 200 B, fc2.weight 2 kB, fc2.bias 40 B
  DistributedDataParallel ddp(model, world_ptr(), {.bucket_cap_bytes = 64 << 10, .first_bucket_cap_bytes = 2100});
  using Names = std::vector<std::vector<std::string>>;
  EXPECT_EQ(ddp.bucket_parameter_names(), (Names{{"fc2.bias", "fc2.weight"}, {"fc1.bias", "fc1.weight"}}));
}

struct WithUnused : nn::Module {
  WithUnused() : used(register_parameter("used", ones({2}))), unused(register_parameter("spare", ones({2}))) {}
  Tensor forward(const Tensor& x) override { return x * used; }
  Tensor used, unused;
};

TEST(DataParallelErrors, UnusedParameterIsNamed) {
  WithUnused model;
  DistributedDataParallel ddp(model, world_ptr(), {.bucket_cap_bytes = 8, .first_bucket_cap_bytes = 8});
  ddp(ones({3, 2})).sum().backward();
  EXPECT_ERROR(ddp.finish_gradient_sync(), "parameter spare received no gradient", "not used in the forward pass");
  // The next round starts clean.
  model.zero_grad();
  EXPECT_ERROR(ddp.finish_gradient_sync(), "no backward() ran");
}

TEST(DataParallelErrors, SecondBackwardWithoutNoSyncAndSyncInsideNoSync) {
  Mlp model(2, 3, 2);
  DistributedDataParallel ddp(model, world_ptr());
  ddp(ones({4, 2})).sum().backward();
  EXPECT_ERROR(ddp(ones({4, 2})).sum().backward(), "gradient arrived twice", "no_sync()");
  {
    auto guard = ddp.no_sync();
    EXPECT_ERROR(ddp.finish_gradient_sync(), "inside no_sync()");
  }
}

TEST(DataParallelErrors, SyncWithoutGradientsOrInsideNoSync) {
  Mlp model(2, 3, 2);
  DistributedDataParallel ddp(model, world_ptr());
  EXPECT_ERROR(ddp.sync_gradients(), "parameter fc1.weight has no gradient");
  {
    auto guard = ddp.no_sync();
    EXPECT_ERROR(ddp.sync_gradients(), "inside no_sync()");
  }
}

TEST(DataParallelErrors, DifferentModelsOnDifferentRanks) {
  if (world().world_size() == 1) GTEST_SKIP() << "needs two ranks";
  Mlp model(2, world().rank() == 1 ? 4 : 3, 2);
  EXPECT_ERROR(DistributedDataParallel(model, world_ptr()), "rank 1's model differs from rank 0's",
               "every rank must build the same model");
}

// ---------------- rank-0 work ----------------

TEST(RankZero, WorkRunsOnceAndFailuresReachEveryRank) {
  Communicator& comm = world();
  int runs = 0;
  run_on_rank_zero(comm, "count", [&] { ++runs; });
  EXPECT_EQ(runs, comm.is_main() ? 1 : 0);
  const std::string message = vgrad_test::error_of(
      [&] { run_on_rank_zero(comm, "write checkpoint.safetensors", [] { fail("disk full (test)"); }); });
  EXPECT_CONTAINS(message, "disk full (test)");
  if (!comm.is_main()) {
    EXPECT_CONTAINS(message, "rank 0 failed to write checkpoint.safetensors");
  }
}

// A checkpoint rank 0 cannot write (its directory is gone): every rank gets the error,
// none waits forever at the barrier.
TEST(RankZero, CheckpointWriteFailureReachesEveryRank) {
  Communicator& comm = world();
  Mlp model(2, 3, 2);
  train::TrainingState state{.model = &model};
  const std::string path = "/nonexistent-vgrad-test-directory/state.safetensors";
  const std::string message = vgrad_test::error_of(
      [&] { run_on_rank_zero(comm, "write " + path, [&] { train::save_training_state(path, state); }); });
  EXPECT_CONTAINS(message, path);
  if (!comm.is_main()) {
    EXPECT_CONTAINS(message, "rank 0 failed to write " + path);
  }
  run_on_rank_zero(comm, "count", [] {});  // the ranks still pair up afterwards
}

// ---------------- the failure worker (not a test: failure.sh runs it under mpirun) ----------------

int failure_worker(const std::string& mode) {
  auto comm = init_from_environment();
  manual_seed(1);
  Mlp model(kFeatures, 16, kClasses);
  DistributedDataParallel ddp(model, comm);
  optim::SGD sgd(model.parameters(), {.lr = 0.1});
  data::DataLoader loader(classification_data(), {.batch_size = kGlobalBatch, .seed = 3, .prefetch = 0,
                                                  .num_replicas = comm->world_size(), .rank = comm->rank()});
  try {
    for (int step = 0;; ++step) {
      for (auto& [x, y] : loader) {
        if (step == 3 && comm->rank() == 1) {
          std::fprintf(stderr, "failure worker: rank 1 %s at step 3\n", mode.c_str());
          if (mode == "kill") std::raise(SIGKILL);
          if (mode == "throw") fail("injected failure in the training loop");
          if (mode == "hang") std::this_thread::sleep_for(std::chrono::hours(1));
        }
        nn::cross_entropy(ddp(x), y).backward();
        ddp.finish_gradient_sync();
        sgd.step();
        sgd.zero_grad();
        ++step;
      }
    }
  } catch (const std::exception& e) {
    comm->abort(e.what());  // the peers must not wait for this rank in a collective
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--failure-worker") return failure_worker(argv[2]);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

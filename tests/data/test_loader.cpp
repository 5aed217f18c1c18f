// Tests for data/: the DataLoader (every sample once per epoch, shapes and dtypes,
// seeded orders, prefetch into reused buffers, error propagation, destruction mid-epoch), TensorDataset, the transforms, Mnist
// on tiny IDX files and on the real Fashion-MNIST data when installed, and CsvLog.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/error.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/metrics.h"
#include "support.h"

namespace {


using namespace vgrad;
namespace fs = std::filesystem;


// N samples of D features; row i holds i*D ... i*D + D-1 (so a row identifies its sample),
// and its label is i.
std::shared_ptr<data::TensorDataset> numbered(int64_t n, int64_t d = 3) {
  std::vector<float> x(size_t(n * d));
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i);
  std::vector<int64_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) y[size_t(i)] = i;
  return std::make_shared<data::TensorDataset>(tensor(x, {n, d}), tensor(y, {n}));
}

struct Epoch {
  std::vector<int64_t> labels;      // in visiting order
  std::vector<int64_t> batch_sizes;
};

// Runs one epoch, checking every batch's shape, dtype, contiguity and row/label agreement.
Epoch run_epoch(data::DataLoader& loader, int64_t d = 3) {
  Epoch e;
  for (auto& [x, y] : loader) {
    EXPECT_EQ(x.dtype(), DType::Float32);
    EXPECT_EQ(y.dtype(), DType::Int64);
    EXPECT_TRUE(x.is_contiguous());
    EXPECT_TRUE(y.is_contiguous());
    EXPECT_EQ(x.dim(), 2);
    EXPECT_EQ(y.dim(), 1);
    EXPECT_EQ(x.shape()[1], d);
    EXPECT_EQ(x.shape()[0], y.shape()[0]);
    const auto xv = x.to_vector<float>();
    const auto yv = y.to_vector<int64_t>();
    for (size_t r = 0; r < yv.size(); ++r)
      for (int64_t c = 0; c < d; ++c) EXPECT_EQ(xv[r * size_t(d) + size_t(c)], float(yv[r] * d + c));
    e.labels.insert(e.labels.end(), yv.begin(), yv.end());
    e.batch_sizes.push_back(y.shape()[0]);
  }
  return e;
}

std::vector<int64_t> iota_vec(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = i;
  return v;
}

TEST(Loader, VisitsEverySampleOnceWithPartialLastBatch) {
  for (bool shuffle : {false, true})
    for (int prefetch : {0, 2}) {
      data::DataLoader loader(numbered(10), {.batch_size = 4, .shuffle = shuffle, .seed = 1, .prefetch = prefetch});
      EXPECT_EQ(loader.num_batches(), 3);
      for (int epoch = 0; epoch < 3; ++epoch) {
        Epoch e = run_epoch(loader);
        EXPECT_EQ(e.batch_sizes, (std::vector<int64_t>{4, 4, 2}));
        if (!shuffle) {
          EXPECT_EQ(e.labels, iota_vec(10));
        }
        std::sort(e.labels.begin(), e.labels.end());
        EXPECT_EQ(e.labels, iota_vec(10)) << "shuffle " << shuffle << " prefetch " << prefetch << " epoch " << epoch;
      }
      EXPECT_EQ(loader.epoch(), 3);
    }
}

// The batch count is n / b rounded up without computing n + b - 1, which overflows for the
// largest batch size (it gave 0 batches); the buffers are sized by the dataset, not by b.
TEST(Loader, HugeBatchSizeIsOneBatchOfEverySample) {
  const int64_t huge = std::numeric_limits<int64_t>::max();
  for (int prefetch : {0, 2}) {
    data::DataLoader loader(numbered(10), {.batch_size = huge, .shuffle = false, .prefetch = prefetch});
    EXPECT_EQ(loader.num_batches(), 1);
    const Epoch e = run_epoch(loader);
    EXPECT_EQ(e.batch_sizes, (std::vector<int64_t>{10}));
    EXPECT_EQ(e.labels, iota_vec(10));
  }
  data::DataLoader dropping(numbered(10), {.batch_size = huge, .drop_last = true});
  EXPECT_EQ(dropping.num_batches(), 0);
}

TEST(Loader, DropLastDropsOnlyThePartialBatch) {
  for (bool shuffle : {false, true}) {
    data::DataLoader loader(numbered(10), {.batch_size = 4, .shuffle = shuffle, .seed = 2, .drop_last = true});
    EXPECT_EQ(loader.num_batches(), 2);
    Epoch e = run_epoch(loader);
    EXPECT_EQ(e.batch_sizes, (std::vector<int64_t>{4, 4}));
    std::set<int64_t> unique(e.labels.begin(), e.labels.end());
    EXPECT_EQ(unique.size(), 8u);  // eight distinct samples, none twice
    if (!shuffle) {
      EXPECT_EQ(e.labels, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}));
    }
  }
  // Exact division: drop_last changes nothing.
  data::DataLoader exact(numbered(12), {.batch_size = 4, .drop_last = true});
  EXPECT_EQ(exact.num_batches(), 3);
  Epoch e = run_epoch(exact);
  std::sort(e.labels.begin(), e.labels.end());
  EXPECT_EQ(e.labels, iota_vec(12));
  // A batch larger than the dataset: one partial batch, or none with drop_last.
  data::DataLoader big(numbered(5), {.batch_size = 8});
  EXPECT_EQ(run_epoch(big).batch_sizes, (std::vector<int64_t>{5}));
  data::DataLoader big_drop(numbered(5), {.batch_size = 8, .drop_last = true});
  EXPECT_EQ(big_drop.num_batches(), 0);
  EXPECT_TRUE(run_epoch(big_drop).labels.empty());
}

TEST(Loader, SameSeedSameOrderDifferentEpochsDifferentOrders) {
  auto dataset = numbered(100);
  data::DataLoader a(dataset, {.batch_size = 16, .shuffle = true, .seed = 42});
  data::DataLoader b(dataset, {.batch_size = 16, .shuffle = true, .seed = 42});
  data::DataLoader c(dataset, {.batch_size = 16, .shuffle = true, .seed = 43});
  const Epoch a0 = run_epoch(a), a1 = run_epoch(a);
  const Epoch b0 = run_epoch(b), b1 = run_epoch(b);
  const Epoch c0 = run_epoch(c);
  EXPECT_EQ(a0.labels, b0.labels);
  EXPECT_EQ(a1.labels, b1.labels);
  EXPECT_NE(a0.labels, a1.labels);
  EXPECT_NE(a0.labels, c0.labels);
  EXPECT_NE(a0.labels, iota_vec(100));  // really shuffled
  // epoch_order(e) predicts the order of epoch e.
  EXPECT_EQ(a.epoch_order(0).to_vector<int64_t>(), a0.labels);
  EXPECT_EQ(a.epoch_order(1).to_vector<int64_t>(), a1.labels);
}

TEST(Loader, PrefetchDoesNotChangeTheBatches) {
  auto dataset = numbered(37, 5);
  data::DataLoader sync(dataset, {.batch_size = 8, .shuffle = true, .seed = 9, .prefetch = 0});
  data::DataLoader ahead(dataset, {.batch_size = 8, .shuffle = true, .seed = 9, .prefetch = 2});
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::vector<std::vector<float>> xs0, xs2;
    for (auto& [x, y] : sync) xs0.push_back(x.to_vector<float>());
    for (auto& [x, y] : ahead) xs2.push_back(x.to_vector<float>());
    ASSERT_EQ(xs0.size(), 5u);
    EXPECT_EQ(xs0, xs2) << "epoch " << epoch;
  }
}

TEST(Loader, BreakingOutEarlyThenStartingANewEpoch) {
  data::DataLoader loader(numbered(50), {.batch_size = 5, .shuffle = true, .seed = 4, .prefetch = 2});
  int seen = 0;
  for (auto& [x, y] : loader) {
    (void)x;
    (void)y;
    if (++seen == 2) break;
  }
  // The next epoch is complete, with the epoch-1 order.
  Epoch e = run_epoch(loader);
  EXPECT_EQ(e.labels, loader.epoch_order(1).to_vector<int64_t>());
  std::sort(e.labels.begin(), e.labels.end());
  EXPECT_EQ(e.labels, iota_vec(50));
}

// Before the fix the inner loop restarted the shared position: the outer loop ran once, not 10 times.
TEST(Loader, NestedIterationIsRefusedAndTheOuterEpochIsWhole) {
  for (int prefetch : {0, 2}) {
    data::DataLoader loader(numbered(10), {.batch_size = 1, .shuffle = true, .seed = 2, .prefetch = prefetch});
    int outer = 0;
    for (auto& [x, y] : loader) {
      (void)x;
      (void)y;
      ++outer;
      EXPECT_ERROR(run_epoch(loader), "DataLoader: a second iteration started while one is running",
                   "use a second DataLoader");
    }
    EXPECT_EQ(outer, 10) << "prefetch " << prefetch;
    EXPECT_EQ(run_epoch(loader).labels.size(), 10u);  // free again once the loop ended
  }
}

// Where a loop stands, saved mid-epoch and restored into a fresh loader, continues with
// exactly the batches the first loader would have delivered next.
TEST(Loader, PositionRestoresMidEpochAndBetweenEpochs) {
  for (int prefetch : {0, 2}) {
    auto dataset = numbered(23);
    data::DataLoader first(dataset, {.batch_size = 4, .shuffle = true, .seed = 5, .prefetch = prefetch});
    EXPECT_EQ(first.position(), (data::LoaderPosition{0, 0}));
    run_epoch(first);
    EXPECT_EQ(first.position(), (data::LoaderPosition{1, 0}));
    data::LoaderPosition saved;
    std::vector<int64_t> rest;
    int64_t batch = 0;
    for (auto& [x, y] : first) {
      (void)x;
      ++batch;
      if (batch == 2) saved = first.position();
      if (batch > 2) {
        for (int64_t label : y.to_vector<int64_t>()) rest.push_back(label);
      }
      if (batch == 6) {
        EXPECT_EQ(first.position(), (data::LoaderPosition{2, 0}));  // after the last batch
      }
    }
    EXPECT_EQ(saved, (data::LoaderPosition{1, 2}));
    const std::vector<int64_t> next_epoch = run_epoch(first).labels;

    data::DataLoader second(dataset, {.batch_size = 4, .shuffle = true, .seed = 5, .prefetch = prefetch});
    second.restore(saved);
    EXPECT_EQ(run_epoch(second).labels, rest) << "prefetch " << prefetch;
    EXPECT_EQ(run_epoch(second).labels, next_epoch);
  }
}

TEST(Loader, RestoreErrors) {
  data::DataLoader loader(numbered(10), {.batch_size = 4});
  EXPECT_ERROR(loader.restore({0, 3}), "position (epoch 0, batch 3) out of range for 3 batches per epoch");
  EXPECT_ERROR(loader.restore({-1, 0}), "out of range");
  for (auto& [x, y] : loader) {
    (void)x;
    (void)y;
    EXPECT_ERROR(loader.restore({0, 0}), "restore() while an iteration is running");
    break;
  }
}

// A dataset that fails on one sample.
class Faulty : public data::Dataset {
 public:
  explicit Faulty(int64_t bad) : inner_(numbered(20)), bad_(bad) {}
  int64_t size() const override { return inner_->size(); }
  data::Batch get_batch(const Tensor& indices) const override {
    for (int64_t i : indices.to_vector<int64_t>())
      if (i == bad_) fail("faulty dataset: sample {} is corrupt", i);
    return inner_->get_batch(indices);
  }

 private:
  std::shared_ptr<data::TensorDataset> inner_;
  int64_t bad_;
};

TEST(Loader, DatasetExceptionsReachTheConsumer) {
  for (int prefetch : {0, 1, 2}) {
    data::DataLoader loader(std::make_shared<Faulty>(13), {.batch_size = 4, .shuffle = false, .prefetch = prefetch});
    int delivered = 0;
    EXPECT_ERROR(
        {
          for (auto& [x, y] : loader) {
            (void)x;
            (void)y;
            ++delivered;
          }
        },
        "faulty dataset: sample 13 is corrupt");
    EXPECT_EQ(delivered, 3) << "prefetch " << prefetch;  // batches 0..2 come first; batch 3 holds sample 13
    // The loader is still usable (and the error is raised again).
    EXPECT_ERROR(run_epoch(loader), "sample 13");
  }
}

TEST(Loader, OptionErrors) {
  EXPECT_ERROR(data::DataLoader(numbered(4), {.batch_size = 0}), "batch_size must be at least 1, got 0");
  EXPECT_ERROR(data::DataLoader(numbered(4), {.prefetch = -1}), "prefetch must be >= 0");
  EXPECT_ERROR(data::DataLoader(nullptr, {}), "dataset is null");
}

// ---------------- prefetch into reused buffers ----------------

// Every batch of `epochs` epochs, as host values (inputs and labels).
std::vector<std::pair<std::vector<float>, std::vector<int64_t>>> batches_of(data::DataLoader& loader, int epochs) {
  std::vector<std::pair<std::vector<float>, std::vector<int64_t>>> out;
  for (int e = 0; e < epochs; ++e)
    for (auto& [x, y] : loader) out.emplace_back(x.to_vector<float>(), y.to_vector<int64_t>());
  return out;
}

// The prefetch thread gathers into reused buffers; what it delivers must be exactly the
// synchronous path's batches (prefetch 0 gathers afresh on the calling thread), for the
// whole batch and the partial last one, every rank's share included.
TEST(LoaderPrefetch, SameBatchesAsTheSynchronousPath) {
  auto dataset = numbered(53, 5);
  for (uint64_t seed : {0u, 3u, 11u})
    for (int64_t batch : {1, 7, 8, 64})
      for (bool drop_last : {false, true})
        for (int prefetch : {1, 2, 4}) {
          const data::LoaderOptions options{.batch_size = batch, .seed = seed, .drop_last = drop_last};
          data::LoaderOptions sync_options = options, ahead_options = options;
          sync_options.prefetch = 0;
          ahead_options.prefetch = prefetch;
          data::DataLoader sync(dataset, sync_options), ahead(dataset, ahead_options);
          const auto expected = batches_of(sync, 3);
          EXPECT_EQ(batches_of(ahead, 3), expected)
              << "seed " << seed << " batch " << batch << " drop_last " << drop_last << " prefetch " << prefetch;
          EXPECT_EQ(expected.size(), size_t(3 * sync.num_batches()));
        }
}

TEST(LoaderPrefetch, SameSharesPerRankAsTheSynchronousPath) {
  auto dataset = numbered(50, 2);
  for (int64_t batch : {9, 13})  // last batches of 5 and 11: every rank's share holds a sample
    for (int64_t rank = 0; rank < 3; ++rank) {
      data::DataLoader sync(dataset, {.batch_size = batch, .seed = 2, .prefetch = 0, .num_replicas = 3, .rank = rank});
      data::DataLoader ahead(dataset, {.batch_size = batch, .seed = 2, .prefetch = 2, .num_replicas = 3, .rank = rank});
      const auto expected = batches_of(sync, 2);
      EXPECT_EQ(batches_of(ahead, 2), expected) << "batch " << batch << " rank " << rank;
      // Rank r's first share of the epoch-0 order: the first global batch split 3 ways.
      const auto order = sync.epoch_order(0).to_vector<int64_t>();
      const int64_t share = batch / 3, extra = batch % 3;
      const int64_t start = rank * share + std::min(rank, extra), count = share + (rank < extra ? 1 : 0);
      EXPECT_EQ(expected[0].second, std::vector<int64_t>(order.begin() + start, order.begin() + start + count));
    }
}

// In steady state the batches live in a fixed set of buffers (prefetch + 3), epoch after
// epoch, the partial last batch included: no allocation per batch.
TEST(LoaderPrefetch, ReusesAFixedSetOfBuffers) {
  for (int prefetch : {1, 2}) {
    data::DataLoader loader(numbered(203, 4), {.batch_size = 8, .seed = 1, .prefetch = prefetch});
    std::set<const void*> inputs, targets;
    int64_t batches = 0;
    const auto allocations = [] {
      const MemoryStats stats = memory_stats(kCPU);
      return stats.system_allocations + stats.cache_hits;
    };
    uint64_t after_first_epoch = 0;
    for (int epoch = 0; epoch < 4; ++epoch) {
      for (auto& [x, y] : loader) {
        inputs.insert(x.data_ptr());
        targets.insert(y.data_ptr());
        ++batches;
      }
      if (epoch == 0) after_first_epoch = allocations();
    }
    EXPECT_EQ(batches, 4 * 26);
    // Only each epoch's shuffle (one randperm) is allocated, not a batch.
    EXPECT_LE(allocations() - after_first_epoch, 3u * 2) << "prefetch " << prefetch;
    EXPECT_GE(inputs.size(), 2u) << "prefetch " << prefetch;  // double-buffered: the next batch is filled beside
    EXPECT_LE(inputs.size(), size_t(prefetch) + 3) << "prefetch " << prefetch;
    EXPECT_EQ(targets.size(), inputs.size());
  }
}

// A batch the caller keeps (a copy of the handle, or a view) is never overwritten: the
// loader leaves that buffer alone and gathers into another.
TEST(LoaderPrefetch, KeptBatchesAreNeverOverwritten) {
  data::DataLoader loader(numbered(120, 3), {.batch_size = 10, .seed = 6, .prefetch = 2});
  std::vector<Tensor> kept, kept_views;
  std::vector<std::vector<float>> values;
  for (auto& [x, y] : loader) {
    (void)y;
    kept.push_back(x);
    kept_views.push_back(x.narrow(0, 1, 2));
    values.push_back(x.to_vector<float>());
  }
  ASSERT_EQ(kept.size(), 12u);
  run_epoch(loader);  // another epoch: the kept buffers must not be reused
  std::set<const void*> distinct;
  for (size_t i = 0; i < kept.size(); ++i) {
    EXPECT_EQ(kept[i].to_vector<float>(), values[i]) << "batch " << i;
    const std::vector<float> view = kept_views[i].to_vector<float>();
    EXPECT_EQ(view, std::vector<float>(values[i].begin() + 3, values[i].begin() + 9)) << "batch " << i;
    distinct.insert(kept[i].data_ptr());
  }
  EXPECT_EQ(distinct.size(), kept.size());
}

// A TensorDataset that fails on one sample, in the in-place gather the prefetch thread uses.
class FaultyInPlace : public data::TensorDataset {
 public:
  explicit FaultyInPlace(int64_t bad) : data::TensorDataset(*numbered(20)), bad_(bad) {}
  data::Batch get_batch_into(const Tensor& indices, data::Batch& buffer, int64_t capacity) const override {
    for (int64_t i : indices.to_vector<int64_t>())
      if (i == bad_) fail("faulty dataset: sample {} is corrupt", i);
    return data::TensorDataset::get_batch_into(indices, buffer, capacity);
  }

 private:
  int64_t bad_;
};

TEST(LoaderPrefetch, ExceptionsInTheInPlaceGatherReachTheConsumer) {
  for (int prefetch : {1, 2}) {
    data::DataLoader loader(std::make_shared<FaultyInPlace>(13), {.batch_size = 4, .shuffle = false, .prefetch = prefetch});
    std::vector<int64_t> labels;
    EXPECT_ERROR(
        {
          for (auto& [x, y] : loader) {
            (void)x;
            for (int64_t label : y.to_vector<int64_t>()) labels.push_back(label);
          }
        },
        "faulty dataset: sample 13 is corrupt");
    EXPECT_EQ(labels, iota_vec(12)) << "prefetch " << prefetch;  // batches 0..2, whole and in order
    EXPECT_ERROR(run_epoch(loader), "sample 13");                 // raised again, no hang
  }
}

// A dataset whose gather is slow, so destruction finds the prefetch thread busy or
// blocked on a full queue.
class Slow : public data::TensorDataset {
 public:
  Slow() : data::TensorDataset(*numbered(400)) {}
  data::Batch get_batch_into(const Tensor& indices, data::Batch& buffer, int64_t capacity) const override {
    usleep(2000);
    return data::TensorDataset::get_batch_into(indices, buffer, capacity);
  }
};

TEST(LoaderPrefetch, DestroyedMidEpochWithoutHanging) {
  for (int prefetch : {1, 2, 8})
    for (int taken : {0, 1, 5}) {
      auto loader = std::make_unique<data::DataLoader>(std::make_shared<Slow>(),
                                                       data::LoaderOptions{.batch_size = 4, .prefetch = prefetch});
      int seen = 0;
      for (auto& [x, y] : *loader) {
        EXPECT_EQ(x.shape()[0], 4);
        (void)y;
        if (seen++ == taken) break;
      }
      if (taken == 5) usleep(20000);  // let the prefetch thread fill its queue and block
      loader.reset();                 // joins the prefetch thread: returns, does not hang
      EXPECT_EQ(seen, taken + 1);
    }
}


// ---------------- TensorDataset ----------------

TEST(TensorDatasetTest, GetAndGetBatch) {
  auto ds = numbered(6, 2);
  EXPECT_EQ(ds->size(), 6);
  const data::Batch one = ds->get(4);
  EXPECT_EQ(one.input.shape(), (Shape{2}));
  EXPECT_EQ(one.input.to_vector<float>(), (std::vector<float>{8, 9}));
  EXPECT_EQ(one.target.dim(), 0);
  EXPECT_EQ(one.target.item<int64_t>(), 4);
  const data::Batch b = ds->get_batch(tensor(std::vector<int64_t>{5, 0, 5}, {3}));
  EXPECT_EQ(b.input.shape(), (Shape{3, 2}));
  EXPECT_EQ(b.input.to_vector<float>(), (std::vector<float>{10, 11, 0, 1, 10, 11}));
  EXPECT_EQ(b.target.to_vector<int64_t>(), (std::vector<int64_t>{5, 0, 5}));
  EXPECT_ERROR(ds->get(6), "index 6 out of range for 6 examples");
  EXPECT_ERROR(ds->get(-1), "index -1 out of range");
}

TEST(TensorDatasetTest, GetBatchIntoFillsAndReusesTheBuffer) {
  auto ds = numbered(6, 2);
  data::Batch buffer;
  const data::Batch a = ds->get_batch_into(tensor(std::vector<int64_t>{5, 0, 5}, {3}), buffer, 4);
  EXPECT_EQ(buffer.input.shape(), (Shape{4, 2}));  // capacity rows
  EXPECT_EQ(a.input.shape(), (Shape{3, 2}));
  EXPECT_EQ(a.input.to_vector<float>(), (std::vector<float>{10, 11, 0, 1, 10, 11}));
  EXPECT_EQ(a.target.to_vector<int64_t>(), (std::vector<int64_t>{5, 0, 5}));
  EXPECT_EQ(a.input.data_ptr(), buffer.input.data_ptr());
  const void* memory = buffer.input.data_ptr();
  const data::Batch b = ds->get_batch_into(tensor(std::vector<int64_t>{1, 2, 3, 4}, {4}), buffer, 4);
  EXPECT_EQ(b.input.data_ptr(), memory);  // reused: it fits
  EXPECT_EQ(b.input.to_vector<float>(), (std::vector<float>{2, 3, 4, 5, 6, 7, 8, 9}));
  const data::Batch c = ds->get_batch_into(tensor(std::vector<int64_t>{0, 1, 2, 3, 4}, {5}), buffer, 4);
  EXPECT_EQ(buffer.input.shape(), (Shape{5, 2}));  // grown to the batch
  EXPECT_EQ(c.target.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_ERROR(ds->get_batch_into(tensor(std::vector<double>{1}, {1}), buffer, 4),
               "TensorDataset: batch indices must be a 1-D int64 tensor on the CPU, got [1] float64");
  EXPECT_ERROR(ds->get_batch_into(tensor(std::vector<int64_t>{6}, {1}), buffer, 4), "6");
}

TEST(TensorDatasetTest, ConstructionErrors) {
  EXPECT_ERROR(data::TensorDataset(zeros({4, 2}), zeros({3})), "need the same first dimension");
  EXPECT_ERROR(data::TensorDataset(scalar_tensor(1.0), zeros({1})), "need the same first dimension");
  EXPECT_ERROR(data::TensorDataset(zeros({2, 2}), scalar_tensor(1.0)), "[2, 2]");
}

TEST(TensorDatasetTest, StoresAContiguousDetachedCopyOfTheView) {
  const Tensor base = arange(0.0, 12.0, 1.0).reshape({3, 4});
  const Tensor x = base.t().requires_grad_(false);  // (4, 3), non-contiguous
  data::TensorDataset ds(x, zeros({4}));
  EXPECT_TRUE(ds.inputs().is_contiguous());
  EXPECT_EQ(ds.get(1).input.to_vector<float>(), (std::vector<float>{1, 5, 9}));
}

// ---------------- transforms ----------------

TEST(Transforms, ScalarNormalizerFitAndApply) {
  const Tensor train = tensor({1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f}, {3, 2});
  const data::Normalizer n = data::Normalizer::fit_scalar(train);
  EXPECT_NEAR(n.mean.item(), 3.5, 1e-12);
  EXPECT_NEAR(n.stddev.item(), std::sqrt(17.5 / 6.0), 1e-12);  // population std over all elements
  const auto z = n(train).to_vector<double>();
  double mean = 0, sq = 0;
  for (double v : z) mean += v, sq += v * v;
  EXPECT_NEAR(mean / 6, 0.0, 1e-6);
  EXPECT_NEAR(sq / 6, 1.0, 1e-6);
  EXPECT_NEAR(z[0], (1 - 3.5) / std::sqrt(17.5 / 6.0), 1e-6);
  // Test data uses the training statistics.
  const auto test = n(tensor({3.5f, 10.0f})).to_vector<double>();
  EXPECT_NEAR(test[0], 0.0, 1e-6);
  EXPECT_NEAR(test[1], 6.5 / std::sqrt(17.5 / 6.0), 1e-5);
  EXPECT_ERROR(data::Normalizer::fit_scalar(full({4}, 2.0)), "zero variance");
}

TEST(Transforms, ScaleToUnit) {
  const Tensor bytes = tensor(std::vector<int64_t>{0, 51, 255}, {3});
  const Tensor scaled = data::scale_to_unit(bytes);
  EXPECT_EQ(scaled.dtype(), DType::Float32);
  const auto v = scaled.to_vector<double>();
  EXPECT_NEAR(v[0], 0.0, 1e-7);
  EXPECT_NEAR(v[1], 0.2, 1e-7);
  EXPECT_NEAR(v[2], 1.0, 1e-7);
}

// ---------------- Mnist ----------------

using Bytes = std::vector<uint8_t>;

// IDX layout: 0, 0, type 0x08, ndims, then big-endian uint32 dims, then the bytes.
Bytes idx_file(const std::vector<uint32_t>& dims, const Bytes& payload) {
  Bytes out = {0, 0, 0x08, uint8_t(dims.size())};
  for (uint32_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(uint8_t(d >> shift));
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

void write_file(const fs::path& path, const Bytes& bytes, bool gzip) {
  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
    ASSERT_EQ(gzclose(f), Z_OK);
  } else {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    ASSERT_TRUE(out.good());
  }
}

class MnistTiny : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("vgrad_mnist_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  // `count` images of 2x3 pixels: image i pixel p = (i * 6 + p) * 10 mod 256; label (i * 3) mod 10.
  void write_split(const std::string& prefix, uint32_t count, bool gzip, uint32_t label_count = 0) {
    Bytes pixels, labels;
    for (uint32_t i = 0; i < count; ++i)
      for (uint32_t p = 0; p < 6; ++p) pixels.push_back(uint8_t((i * 6 + p) * 10 % 256));
    if (label_count == 0) label_count = count;
    for (uint32_t i = 0; i < label_count; ++i) labels.push_back(uint8_t(i * 3 % 10));
    const std::string ext = gzip ? ".gz" : "";
    write_file(dir_ / (prefix + "-images-idx3-ubyte" + ext), idx_file({count, 2, 3}, pixels), gzip);
    write_file(dir_ / (prefix + "-labels-idx1-ubyte" + ext), idx_file({label_count}, labels), gzip);
  }
  fs::path dir_;
};

TEST_F(MnistTiny, ReadsPlainAndGzipSplits) {
  write_split("train", 5, false);
  write_split("t10k", 3, true);
  const data::Mnist train(dir_.string(), "train");
  EXPECT_EQ(train.size(), 5);
  EXPECT_EQ(train.rows(), 2);
  EXPECT_EQ(train.cols(), 3);
  EXPECT_EQ(train.inputs().shape(), (Shape{5, 6}));
  EXPECT_EQ(train.inputs().dtype(), DType::Float32);
  EXPECT_EQ(train.targets().dtype(), DType::Int64);
  const auto x = train.inputs().to_vector<double>();
  for (size_t i = 0; i < 5; ++i)
    for (size_t p = 0; p < 6; ++p) EXPECT_NEAR(x[i * 6 + p], double((i * 6 + p) * 10 % 256) / 255.0, 1e-7);
  EXPECT_EQ(train.targets().to_vector<int64_t>(), (std::vector<int64_t>{0, 3, 6, 9, 2}));

  const data::Mnist test(dir_.string(), "test");
  EXPECT_EQ(test.size(), 3);
  EXPECT_EQ(test.targets().to_vector<int64_t>(), (std::vector<int64_t>{0, 3, 6}));
  // It works with the loader like any dataset.
  data::DataLoader loader(std::make_shared<data::Mnist>(dir_.string(), "train"), {.batch_size = 2, .shuffle = false});
  int64_t rows = 0;
  for (auto& [xb, yb] : loader) rows += xb.shape()[0];
  EXPECT_EQ(rows, 5);
}

TEST_F(MnistTiny, Errors) {
  EXPECT_THROW(data::Mnist(dir_.string(), "train"), std::runtime_error);  // no files
  write_split("train", 4, false, 3);  // 4 images, 3 labels
  try {
    data::Mnist bad(dir_.string(), "train");
    ADD_FAILURE() << "mismatched counts were accepted";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find('4'), std::string::npos) << what;
    EXPECT_NE(what.find('3'), std::string::npos) << what;
  }
}

TEST(MnistReal, FashionMnistIfInstalled) {
  const std::string dir = data::Mnist::default_directory();
  EXPECT_EQ(dir, "/usr/share/datasets/fashion-mnist");
  if (!fs::exists(fs::path(dir) / "train-labels-idx1-ubyte.gz") && !fs::exists(fs::path(dir) / "train-labels-idx1-ubyte"))
    GTEST_SKIP() << "Fashion-MNIST is not installed at " << dir;
  const data::Mnist train(dir, "train"), test(dir, "test");
  EXPECT_EQ(train.size(), 60000);
  EXPECT_EQ(test.size(), 10000);
  EXPECT_EQ(train.inputs().shape(), (Shape{60000, 784}));
  EXPECT_EQ(test.inputs().shape(), (Shape{10000, 784}));
  EXPECT_EQ(train.rows(), 28);
  EXPECT_EQ(train.cols(), 28);
  for (const data::Mnist* split : {&train, &test}) {
    const auto x = split->inputs().to_vector<float>();
    const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
    EXPECT_EQ(*lo, 0.0f);
    EXPECT_EQ(*hi, 1.0f);
    // Every class is balanced: 6000 / 1000 examples each.
    std::vector<int64_t> counts(10, 0);
    for (int64_t label : split->targets().to_vector<int64_t>()) {
      ASSERT_GE(label, 0);
      ASSERT_LT(label, 10);
      ++counts[size_t(label)];
    }
    for (int64_t c : counts) EXPECT_EQ(c, split->size() / 10);
  }
}

// ---------------- CsvLog ----------------

TEST(CsvLogTest, WritesHeaderAndRows) {
  const fs::path path = fs::temp_directory_path() / ("vgrad_metrics_" + std::to_string(::getpid()) + ".csv");
  {
    data::CsvLog log(path.string(), {"epoch", "loss", "accuracy"});
    // The header is on disk before any row.
    std::ifstream early(path);
    std::string header;
    std::getline(early, header);
    EXPECT_EQ(header, "epoch,loss,accuracy");
    log.row({1, 0.5, 0.875});
    log.row({2, 0.25, 0.9375});
    EXPECT_ERROR(log.row({3, 0.1}), "2 values for 3 columns");
  }
  std::ifstream in(path);
  std::stringstream content;
  content << in.rdbuf();
  EXPECT_EQ(content.str(), "epoch,loss,accuracy\n1,0.5,0.875\n2,0.25,0.9375\n");
  fs::remove(path);
  EXPECT_ERROR(data::CsvLog("/nonexistent-dir/x.csv", {"a"}), "cannot write /nonexistent-dir/x.csv");
}

}  // namespace

// What a GPU step costs the host: index ranges checked on the device and reported at the
// next host read (Backend::check_index; docs/gpu.md, "Bad indices on a GPU"), and the waits
// counted by cuda::host_wait_count: none in a training step (nll_loss included), one in
// clip_grad_norm.
// Every message is compared with the CPU's own for the same call. SKIPPED without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "core/backend.h"
#include "core/grad_mode.h"
#include "nn/functional.h"
#include "optim/optimizer.h"
#include "support.h"

namespace {

using namespace vgrad;
using vgrad_test::vals;

Device gpu() { return cuda_device(0); }
int64_t waits() { return cuda::host_wait_count(0); }

Tensor indices(const std::vector<int64_t>& values, Device device) { return tensor(values).to(device); }

// The message the CPU throws at once for `op` (run on CPU tensors).
std::string cpu_error(const std::function<void()>& op) {
  try {
    op();
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "the CPU accepted a bad index";
  return "";
}

// `read` throws exactly `expected` (the CPU's message), and a second read does not: the
// error is reported once.
void expect_reported_by(const std::function<void()>& read, const std::string& expected, const std::string& what) {
  try {
    read();
    ADD_FAILURE() << what << ": no error at the host read";
  } catch (const Error& error) {
    EXPECT_EQ(std::string(error.what()), expected) << what;
  }
  EXPECT_NO_THROW(read()) << what << ": reported twice";
}

// The host reads that report a pending bad index, each given the tensor the bad op made.
const std::vector<std::pair<std::string, std::function<void(const Tensor&)>>>& host_reads() {
  static const std::vector<std::pair<std::string, std::function<void(const Tensor&)>>> reads = {
      {"item()", [](const Tensor& t) { (void)sum(t).item(); }},
      {"to(kCPU)", [](const Tensor& t) { (void)t.to(kCPU); }},
      {"synchronize()", [](const Tensor&) { backend_for(cuda_device(0)).synchronize(); }},
      {"sum_of_squares", [](const Tensor& t) { (void)backend_for(cuda_device(0)).sum_of_squares(t.view()); }},
  };
  return reads;
}

TEST(CudaIndexCheck, IndexSelectReportsTheCpuMessageAtEveryKindOfHostRead) {
  REQUIRE_GPU();
  const Tensor x_cpu = arange(0, 20, 1).reshape({5, 4});
  const Tensor bad_cpu = tensor(std::vector<int64_t>{0, 7, 1});
  const std::string expected = cpu_error([&] { (void)x_cpu.index_select(1, bad_cpu); });
  EXPECT_EQ(expected, "index_select: index 7 out of range for dim 1 of size 4 (position 1)");
  const Tensor x = x_cpu.to(gpu()), bad = bad_cpu.to(gpu());
  for (const auto& [name, read] : host_reads()) {
    Tensor out;
    EXPECT_NO_THROW(out = x.index_select(1, bad)) << name << ": the GPU must not wait for the check";
    expect_reported_by([&] { read(out); }, expected, name);
    // The bad column was skipped and written as 0; the others were gathered.
    EXPECT_EQ(vals(out), (std::vector<double>{0, 0, 1, 4, 0, 5, 8, 0, 9, 12, 0, 13, 16, 0, 17})) << name;
  }
}

// A copy to the GPU waits but reads nothing back: the bad index stays pending for the next
// read, and a copy from another thread (a loader's, say) never reports it.
TEST(CudaIndexCheck, CopiesToTheGpuLeaveTheErrorForTheNextRead) {
  REQUIRE_GPU();
  const Tensor x = arange(0, 20, 1).reshape({5, 4}).to(gpu());
  const Tensor bad = tensor(std::vector<int64_t>{0, 7, 1}).to(gpu());
  const Tensor out = x.index_select(1, bad);
  EXPECT_NO_THROW((void)tensor(std::vector<double>{1, 2, 3}).to(gpu())) << "a copy in this thread";
  std::exception_ptr other_error;
  std::thread other([&] {
    try {
      (void)tensor(std::vector<double>{4, 5}).to(gpu());
    } catch (...) {
      other_error = std::current_exception();
    }
  });
  other.join();
  EXPECT_FALSE(other_error) << "a copy in another thread reported this thread's bad index";
  expect_reported_by([&] { (void)sum(out).item(); },
                     "index_select: index 7 out of range for dim 1 of size 4 (position 1)", "item() after the copies");
}

TEST(CudaIndexCheck, IndexAddSkipsTheBadIndexAndReportsIt) {
  REQUIRE_GPU();
  const Tensor src_cpu = ones({3, 2});
  const Tensor bad_cpu = tensor(std::vector<int64_t>{1, -2, 1});
  Tensor acc_cpu = zeros({4, 2});
  const std::string expected =
      cpu_error([&] { cpu_backend().index_add(acc_cpu.view(), 0, bad_cpu.view(), src_cpu.view()); });
  EXPECT_EQ(expected, "index_add: index -2 out of range for dim 0 of size 4 (position 1)");
  Tensor acc = zeros({4, 2}, {.device = gpu()});
  const Tensor src = src_cpu.to(gpu()), bad = bad_cpu.to(gpu());
  EXPECT_NO_THROW(backend_for(gpu()).index_add(acc.view(), 0, bad.view(), src.view()));
  expect_reported_by([&] { backend_for(gpu()).synchronize(); }, expected, "index_add");
  EXPECT_EQ(vals(acc), (std::vector<double>{0, 0, 2, 2, 0, 0, 0, 0}));
}

TEST(CudaIndexCheck, CrossEntropyAndNllLossReportTheBadRowAfterBackward) {
  REQUIRE_GPU();
  const Tensor logits_cpu = vgrad_test::uniform_tensor({6, 10}, 7);
  const Tensor target_cpu = tensor(std::vector<int64_t>{1, 2, 3, 12, 4, 15});
  const std::string ce_expected = cpu_error([&] { (void)nn::cross_entropy(logits_cpu, target_cpu); });
  EXPECT_EQ(ce_expected, "cross_entropy: target 12 out of range for 10 classes (row 3)");
  const std::string nll_expected = cpu_error([&] { (void)nn::F::nll_loss(log_softmax(logits_cpu, 1), target_cpu); });
  EXPECT_EQ(nll_expected, "nll_loss: target 12 out of range for 10 classes (row 3)");

  const Tensor logits = logits_cpu.to(gpu()).detach().requires_grad_(), target = target_cpu.to(gpu());
  Tensor loss;
  EXPECT_NO_THROW({
    loss = nn::cross_entropy(logits, target);
    loss.backward();  // the bad rows lose their one-hot; nothing is read out of bounds
  });
  expect_reported_by([&] { (void)loss.item(); }, ce_expected, "cross_entropy");
  EXPECT_TRUE(std::isnan(loss.item())) << "a bad row's loss is NaN, never a plausible number";

  EXPECT_NO_THROW(loss = nn::F::nll_loss(log_softmax(logits, 1), target));
  expect_reported_by([&] { (void)loss.to(kCPU); }, nll_expected, "nll_loss");
}

TEST(CudaIndexCheck, EmbeddingReportsTheCpuMessage) {
  REQUIRE_GPU();
  const Tensor weight_cpu = vgrad_test::uniform_tensor({5, 3}, 8);
  const Tensor ids_cpu = tensor(std::vector<int64_t>{0, 4, 9, 1}, {2, 2});
  const std::string expected = cpu_error([&] { (void)embedding(weight_cpu, ids_cpu); });
  EXPECT_EQ(expected, "index_select: index 9 out of range for dim 0 of size 5 (position 2)");
  const Tensor weight = weight_cpu.to(gpu()).detach().requires_grad_(), ids = ids_cpu.to(gpu());
  Tensor out;
  EXPECT_NO_THROW({
    out = embedding(weight, ids);
    sum(out).backward();  // index_add with the same bad index: skipped, and its check queued too
  });
  expect_reported_by([&] { (void)out.to(kCPU); }, expected, "embedding");
  // The gradient counts each good lookup once; the bad one added nothing.
  EXPECT_EQ(vals(weight.grad()), (std::vector<double>{1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1}));
}

TEST(CudaIndexCheck, TheFirstBadCheckWinsAndLaterOpsRunSafely) {
  REQUIRE_GPU();
  Backend& device = backend_for(gpu());
  device.synchronize();
  const Tensor x = vgrad_test::uniform_tensor({8, 16}, 9).to(gpu());
  const Tensor first_bad = indices({0, 1, 8, 9}, gpu());  // positions 2 and 3 bad: 2 is reported
  const Tensor target = indices({0, 99}, gpu());
  Tensor y = x.index_select(0, first_bad);
  for (int i = 0; i < 3; ++i) y = relu(matmul(matmul(y, transpose(x, 0, 1)), x));  // computes on the zeros
  const Tensor loss = nn::cross_entropy(y.narrow(0, 0, 2), target);  // a second bad check, later in stream order
  expect_reported_by([&] { (void)loss.item(); },
                     "index_select: index 8 out of range for dim 0 of size 8 (position 2)", "first of two");
  // Nothing crashed: the device still computes, and agrees with the CPU.
  const Tensor good = indices({7, 0, 3}, gpu());
  EXPECT_EQ(vals(x.index_select(0, good)), vals(x.to(kCPU).index_select(0, tensor(std::vector<int64_t>{7, 0, 3}))));
}

TEST(CudaIndexCheck, TheFirstBadPositionWinsAcrossBlocks) {
  REQUIRE_GPU();
  // A million indices: many blocks race to lower the record; the smallest position wins,
  // with its own value.
  const int64_t n = int64_t{1} << 20;
  std::vector<int64_t> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) values[static_cast<size_t>(i)] = i % 3;
  values[999999] = -5;
  values[700001] = 17;
  values[123457] = 3;
  values[123458] = 4;
  const Tensor table = arange(0, 6, 1).reshape({3, 2}).to(gpu());
  const Tensor index = tensor(values).to(gpu());
  Tensor out;
  EXPECT_NO_THROW(out = table.index_select(0, index));
  expect_reported_by([&] { backend_for(gpu()).synchronize(); },
                     "index_select: index 3 out of range for dim 0 of size 3 (position 123457)", "a million indices");
}

TEST(CudaIndexCheck, PendingChecksAreReadAtLeastEvery64) {
  REQUIRE_GPU();
  static_assert(cuda::kIndexChecksPerWait == 64);
  Backend& device = backend_for(gpu());
  const Tensor x = arange(0, 12, 1).reshape({4, 3}).to(gpu());
  const Tensor good = indices({3, 1}, gpu()), bad = indices({2, 4}, gpu());
  device.synchronize();
  const int64_t start = waits();
  for (int i = 0; i < cuda::kIndexChecksPerWait - 1; ++i) (void)x.index_select(0, good);
  EXPECT_EQ(waits() - start, 0) << "63 good checks: no wait";
  (void)x.index_select(0, good);
  EXPECT_EQ(waits() - start, 1) << "the 64th check waits once";
  // A loop that never reads stops within 64 checks of its bad index.
  (void)x.index_select(0, good);
  (void)x.index_select(0, bad);
  for (int i = 2; i < cuda::kIndexChecksPerWait - 1; ++i) EXPECT_NO_THROW((void)x.index_select(0, good)) << i;
  EXPECT_ERROR((void)x.index_select(0, good), "index_select: index 4 out of range for dim 0 of size 4 (position 1)");
  EXPECT_EQ(waits() - start, 2);
}

// A small classifier trained as bench/vgrad_bench.cpp does on a GPU: data and batch
// order on the device, index_select for each batch.
struct GpuTraining {
  // Module::to moves the parameters in place: the optimizer sees them on the GPU.
  GpuTraining() : model(20, 32, 10), sgd(model.parameters(), {.lr = 0.1}) {
    model.to(gpu());
    x = vgrad_test::uniform_tensor({256, 20}, 10).to(gpu());
    y = argmax(x.narrow(1, 0, 10), 1);  // the class is the largest of the first 10 features
    Generator gen(4);
    order = randperm(256, &gen).to(gpu());
  }
  double full_loss() {
    NoGradGuard no_grad;
    return nn::cross_entropy(model(x), y).item();
  }
  Tensor step(int64_t i) {
    const Tensor batch = order.narrow(0, (i * 64) % 256, 64);
    const Tensor loss = nn::cross_entropy(model(x.index_select(0, batch)), y.index_select(0, batch));
    sgd.zero_grad();
    loss.backward();
    sgd.step();
    return loss;
  }
  vgrad_test::Mlp model;
  optim::SGD sgd;
  Tensor x, y, order;
};

TEST(CudaHostWaits, ATrainingStepNeverWaitsForTheDevice) {
  REQUIRE_GPU();
  GpuTraining training;
  const double first = training.full_loss();
  (void)training.step(0).item();  // the first step's allocations, before counting
  backend_for(gpu()).synchronize();
  const int64_t start = waits();
  Tensor loss;
  for (int64_t i = 1; i <= 8; ++i) loss = training.step(i);  // 24 index checks, under 64
  EXPECT_EQ(waits() - start, 0) << "8 steps of index_select x2 + MLP + cross_entropy + backward + SGD";
  const double last = loss.item();
  EXPECT_EQ(waits() - start, 1) << "item() is one wait";
  EXPECT_TRUE(std::isfinite(last));
  EXPECT_LT(training.full_loss(), first) << "the steps trained";
}

// Eight steps of loss_of(logits) + backward on the GPU make no host wait (after a first call,
// which may grow the position range of kernels::index_range: one host copy), and give the
// CPU's loss and gradient.
// loss_of takes its other operands on logits' device.
void expect_steps_never_wait_and_match_the_cpu(const std::string& what, const Tensor& logits_cpu,
                                               const std::function<Tensor(const Tensor&)>& loss_of) {
  SCOPED_TRACE(what);
  Tensor logits = logits_cpu.to(gpu()).detach().requires_grad_();
  const auto step = [&] {
    logits.zero_grad();
    const Tensor loss = loss_of(logits);
    loss.backward();
    return loss;
  };
  (void)step().item();
  backend_for(gpu()).synchronize();
  const int64_t start = waits();
  Tensor loss;
  for (int i = 0; i < 8; ++i) loss = step();
  EXPECT_EQ(waits() - start, 0) << "8 steps of " << what << " + backward";

  Tensor logits_ref = logits_cpu.detach().requires_grad_();
  const Tensor loss_ref = loss_of(logits_ref);
  loss_ref.backward();
  EXPECT_NEAR(loss.item(), loss_ref.item(), 1e-6);
  const std::vector<double> grad = vals(logits.grad()), grad_ref = vals(logits_ref.grad());
  ASSERT_EQ(grad.size(), grad_ref.size());
  for (size_t i = 0; i < grad.size(); ++i) EXPECT_NEAR(grad[i], grad_ref[i], 1e-7) << i;
}

// gather, scatter_add and masked_fill (autograd/ops/index.cpp) compose device ops: after the
// first call has grown the cached position range (kernels::index_range), forward and
// backward never wait, and values and gradients are the CPU's.
TEST(CudaHostWaits, GatherScatterAddMaskedFillNeverWaitAndMatchTheCpu) {
  REQUIRE_GPU();
  const Tensor x_cpu = vgrad_test::uniform_tensor({6, 5}, 31), src_cpu = vgrad_test::uniform_tensor({4, 5}, 32);
  const Tensor index_cpu = tensor(std::vector<int64_t>{4, 0, 0, 2, 1, 3, 3, 3, 0, 4, 1, 2}, {4, 3});
  const auto step = [](const Tensor& x, const Tensor& src, const Tensor& index) {
    const Tensor picked = gather(x, 1, index);            // (4, 3)
    const Tensor spread = scatter_add(x, 0, index, src);  // (6, 5), repeats accumulate
    const Tensor masked = masked_fill(spread, spread > 0.5, -1.0);
    const Tensor loss = sum(picked * picked) + sum(masked * spread);
    loss.backward();
    return loss;
  };
  Tensor x = x_cpu.to(gpu()).detach().requires_grad_(), src = src_cpu.to(gpu()).detach().requires_grad_();
  const Tensor index = index_cpu.to(gpu());
  (void)step(x, src, index).item();  // the first call grows the position range: one host copy
  backend_for(gpu()).synchronize();
  const int64_t start = waits();
  Tensor loss;
  for (int i = 0; i < 4; ++i) loss = step(x, src, index);  // 7 index checks each, under 64
  EXPECT_EQ(waits() - start, 0) << "4 steps of gather + scatter_add + masked_fill + backward";

  Tensor x_ref = x_cpu.detach().requires_grad_(), src_ref = src_cpu.detach().requires_grad_();
  Tensor loss_ref;
  for (int i = 0; i < 5; ++i) loss_ref = step(x_ref, src_ref, index_cpu);
  const double loss_want = loss_ref.item();
  EXPECT_NEAR(loss.item(), loss_want, 1e-5 * (1 + std::abs(loss_want)));  // float32, another summation order
  for (const auto& [got, want] : {std::pair{x.grad(), x_ref.grad()}, std::pair{src.grad(), src_ref.grad()}}) {
    const std::vector<double> g = vals(got), r = vals(want);
    ASSERT_EQ(g.size(), r.size());
    for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], r[i], 1e-5 * (1 + std::abs(r[i]))) << i;
  }
  EXPECT_ERROR(vals(gather(x, 1, indices({0, 5, 1}, gpu()).reshape({1, 3}))),
               "gather: index 5 out of range for dim 1 of size 5 (position 1)");
}

// A tensor's copy on the CPU and on the GPU, picked by the device of the logits at hand.
struct OnBoth {
  Tensor cpu, cuda;
  explicit OnBoth(const Tensor& t) : cpu(t), cuda(t.to(gpu())) {}
  const Tensor& on(const Tensor& like) const { return like.device().is_cpu() ? cpu : cuda; }
};

TEST(CudaHostWaits, NllLossStepsNeverWaitAndMatchTheCpu) {
  REQUIRE_GPU();
  const OnBoth target(tensor(std::vector<int64_t>{0, 9, 3, 3, 1, 7, 2, 8, 5, 4, 6, 0, 9, 1, 2, 3}));
  expect_steps_never_wait_and_match_the_cpu(
      "log_softmax + nll_loss", vgrad_test::uniform_tensor({16, 10}, 21),
      [&](const Tensor& x) { return nn::F::nll_loss(log_softmax(x, 1), target.on(x)); });
}

// The losses with ignored rows, class weights and probabilities: no host wait per step (the
// ignored rows are masked on the device, binary_cross_entropy's range check is lazy), and
// the CPU's values and gradients.
TEST(CudaHostWaits, LossesWithIgnoredRowsWeightsAndProbabilitiesNeverWaitAndMatchTheCpu) {
  REQUIRE_GPU();
  const Tensor logits = vgrad_test::uniform_tensor({16, 10}, 22);
  const OnBoth target(tensor(std::vector<int64_t>{0, -100, 3, 3, 1, 7, -100, 8, 5, 4, 6, 0, 9, -100, 2, 3}));
  const OnBoth weight(vgrad_test::uniform_tensor({10}, 23, 0.5, 2)),
      probs(vgrad_test::uniform_tensor({16, 10}, 24, 0, 1));
  expect_steps_never_wait_and_match_the_cpu("cross_entropy, ignored rows", logits, [&](const Tensor& x) {
    return nn::cross_entropy(x, target.on(x), nn::Reduction::Mean, 0.0, Tensor(), nn::kPyTorchIgnoreIndex);
  });
  expect_steps_never_wait_and_match_the_cpu("cross_entropy, weights + smoothing", logits, [&](const Tensor& x) {
    return nn::cross_entropy(x, target.on(x), nn::Reduction::Mean, 0.1, weight.on(x), nn::kPyTorchIgnoreIndex);
  });
  expect_steps_never_wait_and_match_the_cpu("nll_loss, weights", logits, [&](const Tensor& x) {
    return nn::nll_loss(log_softmax(x, 1), target.on(x), nn::Reduction::Mean, weight.on(x), nn::kPyTorchIgnoreIndex);
  });
  expect_steps_never_wait_and_match_the_cpu("binary_cross_entropy", logits, [&](const Tensor& x) {
    return nn::binary_cross_entropy(sigmoid(x), probs.on(x));
  });
}

// A probability outside [0, 1] is refused on the GPU too, at the next host read, with the
// CPU's words; a target equal to ignore_index is not refused, another bad one is.
TEST(CudaIndexCheck, BinaryCrossEntropyAndIgnoreIndexReportLikeTheCpu) {
  REQUIRE_GPU();
  const Tensor x_cpu = tensor(std::vector<double>{0.5, 1.5, 0.2, -1}), y_cpu = zeros({4}, {.dtype = DType::Float64});
  const std::string expected = cpu_error([&] { (void)nn::binary_cross_entropy(x_cpu, y_cpu); });
  EXPECT_EQ(expected,
            "binary_cross_entropy: input element 1 (flat index) is outside [0, 1]: it takes probabilities (logits go "
            "to binary_cross_entropy_with_logits)");
  Tensor loss;
  EXPECT_NO_THROW(loss = nn::binary_cross_entropy(x_cpu.to(gpu()), y_cpu.to(gpu())));
  expect_reported_by([&] { (void)loss.item(); }, expected, "binary_cross_entropy");

  const Tensor logits_cpu = vgrad_test::uniform_tensor({4, 3}, 25);
  const Tensor ignored = tensor(std::vector<int64_t>{2, -100, 1, -100});
  const auto ignoring = [](const Tensor& x, const Tensor& t) {
    return nn::cross_entropy(x, t, nn::Reduction::Mean, 0.0, Tensor(), nn::kPyTorchIgnoreIndex);
  };
  EXPECT_NEAR(ignoring(logits_cpu.to(gpu()), ignored.to(gpu())).item(), ignoring(logits_cpu, ignored).item(), 1e-6)
      << "no error: the ignored rows pass the range check";
  const Tensor bad = tensor(std::vector<int64_t>{2, -100, 3, -100});
  const std::string bad_expected = cpu_error([&] { (void)ignoring(logits_cpu, bad); });
  EXPECT_EQ(bad_expected, "cross_entropy: target 3 out of range for 3 classes (row 2)");
  EXPECT_NO_THROW(loss = ignoring(logits_cpu.to(gpu()), bad.to(gpu())));
  expect_reported_by([&] { (void)loss.item(); }, bad_expected, "cross_entropy with an ignored row");
}

TEST(CudaHostWaits, ClipGradNormReadsOnceAndMatchesTheCpu) {
  REQUIRE_GPU();
  GpuTraining training;
  const Tensor loss = nn::cross_entropy(training.model(training.x), training.y);
  training.sgd.zero_grad();
  loss.backward();
  const auto params = training.model.parameters();
  ASSERT_EQ(params.size(), 4u);
  std::vector<std::vector<double>> before;
  double squares = 0;
  for (const Tensor& p : params) {
    before.push_back(vals(p.grad()));
    for (double g : before.back()) squares += g * g;
  }
  const double expected_norm = std::sqrt(squares);
  ASSERT_GT(expected_norm, 0.01);
  const double max_norm = expected_norm / 4;
  backend_for(gpu()).synchronize();
  const int64_t start = waits();
  const double norm = optim::clip_grad_norm(params, max_norm);
  EXPECT_EQ(waits() - start, 1) << "one read for 4 parameters";
  EXPECT_NEAR(norm, expected_norm, 1e-10 * expected_norm);  // the same float32 values, summed in double
  const double scale = max_norm / (norm + 1e-6);
  for (size_t k = 0; k < params.size(); ++k) {
    const std::vector<double> after = vals(params[k].grad());
    for (size_t i = 0; i < after.size(); ++i) EXPECT_NEAR(after[i], before[k][i] * scale, 1e-6) << k << ", " << i;
  }
}

}  // namespace

// cuda/reduce.cu's unscale_and_check on the GPU (GradScaler's unscale, one launch per dtype
// for all gradients): the CPU backend's bits and flag for many gradients of mixed dtypes and
// odd sizes, empty ones included; one kernel per dtype in a captured call, however many
// gradients; a capture that writes tables of its own replays right and leaves the eager
// calls theirs. SKIPPED without a GPU.
#include <cmath>
#include <cstdint>
#include <gtest/gtest.h>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/cuda_graph.h"
#include "support.h"
#include "update_many_check.h"

namespace {

using namespace vgrad;
using vgrad_test::bytes_of;

const DType kFloating[] = {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16};
const double kInverse = double(float(1.0 / 3.0));  // rounds in every dtype

// Sizes around the 2048-element chunk, empty ones, single elements, and one of 5,000,003
// elements (2442 chunks: more than the 8 blocks per SM of a launch on a GPU of up to 300
// SMs, so blocks loop over chunks), cycling through the four floating dtypes. On the CPU.
std::vector<Tensor> mixed_gradients(uint64_t seed) {
  std::vector<int64_t> sizes{0, 1, 2047, 2048, 2049, 4096, 4097, 0, 17, 5'000'003};
  for (int64_t j = 0; j < 60; ++j) sizes.push_back(1 + (j * 7919) % 6007);
  std::vector<Tensor> grads;
  for (size_t j = 0; j < sizes.size(); ++j)
    grads.push_back(vgrad_test::uniform_tensor({sizes[j]}, seed + j, -1000, 1000).to(kFloating[j % 4]));
  return grads;
}

std::vector<Tensor> to_device(const std::vector<Tensor>& grads, Device device) {
  std::vector<Tensor> out;
  for (const Tensor& g : grads) out.push_back(g.to(device).clone());
  return out;
}

void unscale(const std::vector<Tensor>& grads, double inverse, const Tensor& flag) {
  std::vector<View> views;
  for (const Tensor& g : grads) views.push_back(g.view());
  backend_for(flag.device()).unscale_and_check(views.data(), views.size(), inverse, flag.view());
}

// The same bits everywhere, except that a NaN is any NaN (the GPU's quiet NaN need not carry
// the CPU's payload).
void expect_same_values(const Tensor& got, const Tensor& want, const std::string& what) {
  const std::vector<double> g = vgrad_test::vals(got.to(kCPU)), w = vgrad_test::vals(want);
  ASSERT_EQ(g.size(), w.size()) << what;
  for (size_t i = 0; i < g.size(); ++i) {
    if (std::isnan(w[i])) {
      ASSERT_TRUE(std::isnan(g[i])) << what << " element " << i;
    } else {
      ASSERT_EQ(g[i], w[i]) << what << " element " << i;  // exact: every dtype widens to double exactly
      ASSERT_EQ(std::signbit(g[i]), std::signbit(w[i])) << what << " element " << i;
    }
  }
}

TEST(CudaUnscale, ManyGradientsOfMixedDtypesGiveTheCpuBits) {
  REQUIRE_GPU();
  const Device gpu = cuda_device(0);
  const std::vector<Tensor> start = mixed_gradients(100);
  std::vector<Tensor> cpu = to_device(start, kCPU), cuda = to_device(start, gpu);
  const Tensor cpu_flag = zeros({}), cuda_flag = zeros({}, {.device = gpu});
  unscale(cpu, kInverse, cpu_flag);
  unscale(cuda, kInverse, cuda_flag);
  EXPECT_EQ(cpu_flag.item(), 0.0);
  EXPECT_EQ(cuda_flag.item(), 0.0);
  for (size_t j = 0; j < start.size(); ++j) {
    EXPECT_EQ(bytes_of(cuda[j]), bytes_of(cpu[j])) << "gradient " << j << " " << dtype_name(start[j].dtype());
    if (start[j].numel() > 0) {
      EXPECT_NE(bytes_of(cuda[j]), bytes_of(start[j])) << "gradient " << j << " unchanged";
    }
  }
  // Again over the same tensors (the tables kept): unscaled twice, still the CPU's bits.
  unscale(cpu, kInverse, cpu_flag);
  unscale(cuda, kInverse, cuda_flag);
  for (size_t j = 0; j < start.size(); ++j) EXPECT_EQ(bytes_of(cuda[j]), bytes_of(cpu[j])) << "second pass, " << j;
}

// One Inf or NaN among ~70 gradients raises the flag on both devices, wherever it is (a
// 16-bit gradient, the last chunk of the long one, a value that overflows only once
// unscaled), and every other value is still unscaled as on the CPU.
TEST(CudaUnscale, OneNonFiniteValueAmongManyRaisesTheFlag) {
  REQUIRE_GPU();
  const Device gpu = cuda_device(0);
  const std::vector<Tensor> start = mixed_gradients(200);
  struct Poison {
    size_t gradient;
    double value, inverse;
    const char* what;
  } poisons[] = {{3, NAN, kInverse, "NaN in a float16 gradient"},
                 {9, INFINITY, kInverse, "Inf at the end of the 5M-element float64 gradient"},
                 {2, -INFINITY, kInverse, "-Inf in a bfloat16 gradient"},
                 {5, 1e308, 4.0, "a float64 value that overflows once unscaled"},
                 {11, 60000.0, 4.0, "a float16 value that overflows once unscaled"}};
  for (const Poison& p : poisons) {
    std::vector<Tensor> cpu = to_device(start, kCPU);
    ASSERT_GT(cpu[p.gradient].numel(), 0) << p.what;
    const int64_t at = p.gradient == 9 ? cpu[p.gradient].numel() - 1 : cpu[p.gradient].numel() / 2;
    std::vector<double> values = vgrad_test::vals(cpu[p.gradient]);
    values[static_cast<size_t>(at)] = p.value;
    cpu[p.gradient] = tensor(values).to(cpu[p.gradient].dtype());
    std::vector<Tensor> cuda = to_device(cpu, gpu);
    const Tensor cpu_flag = zeros({}), cuda_flag = zeros({}, {.device = gpu});
    unscale(cpu, p.inverse, cpu_flag);
    unscale(cuda, p.inverse, cuda_flag);
    EXPECT_EQ(cpu_flag.item(), 1.0) << p.what;
    EXPECT_EQ(cuda_flag.item(), 1.0) << p.what;
    for (size_t j = 0; j < cpu.size(); ++j)
      expect_same_values(cuda[j], cpu[j], std::string(p.what) + ", gradient " + std::to_string(j));
  }
}

// The launches, counted as the kernel nodes of a captured call: one per dtype, whatever the
// number of gradients (the per-gradient form made one per gradient), once an eager call has
// written the tables (a capture finds them in the cache and writes none).
TEST(CudaUnscale, OneKernelPerDtypeForAllGradients) {
  REQUIRE_GPU();
  const Device gpu = cuda_device(0);
  const std::vector<Tensor> start = mixed_gradients(300);
  std::vector<Tensor> float32_only;
  for (int64_t j = 0; j < 300; ++j) float32_only.push_back(vgrad_test::uniform_tensor({1 + (j * 31) % 5000}, 400 + j));
  const struct {
    std::vector<Tensor> grads;
    int64_t dtypes;
    const char* what;
  } cases[] = {{to_device(start, gpu), 4, "70 gradients of 4 dtypes"},
               {to_device(float32_only, gpu), 1, "300 float32 gradients"}};
  for (const auto& c : cases) {
    std::vector<Tensor> cpu = to_device(c.grads, kCPU);
    const Tensor flag = zeros({}, {.device = gpu}), cpu_flag = zeros({});
    const int64_t before = cuda::table_upload_count(0);
    // Writes one table per dtype (fewer if an earlier test in this process left tables of
    // the same bytes: the same sizes on the same blocks), then finds them.
    unscale(c.grads, kInverse, flag);
    const int64_t written = cuda::table_upload_count(0) - before;
    EXPECT_LE(written, c.dtypes) << c.what;
    unscale(c.grads, kInverse, flag);
    EXPECT_EQ(cuda::table_upload_count(0) - before, written) << c.what << ": the same set again";
    cuda::Graph graph;
    graph.capture([&] { unscale(c.grads, kInverse, flag); });
    EXPECT_EQ(graph.kernel_count(), c.dtypes) << c.what;
    EXPECT_EQ(cuda::table_upload_count(0) - before, written) << c.what << ": the capture found the kept tables";
    graph.replay();
    for (int pass = 0; pass < 3; ++pass) unscale(cpu, kInverse, cpu_flag);  // two eager calls and the replay
    for (size_t j = 0; j < cpu.size(); ++j) EXPECT_EQ(bytes_of(c.grads[j]), bytes_of(cpu[j])) << c.what << ", " << j;
    EXPECT_EQ(flag.item(), 0.0) << c.what;
  }
}

// A capture over gradients it has never seen (sizes no other test uses) writes their tables
// inside the graph (one store kernel per table here: 5 gradients make an 8-word table) and
// keeps them to itself: the replay unscales right, and the eager call after it writes
// tables of its own, which the graph's replays never disturb.
TEST(CudaUnscale, ACaptureWritesTablesOfItsOwn) {
  REQUIRE_GPU();
  const Device gpu = cuda_device(0);
  std::vector<Tensor> start;
  for (size_t j = 0; j < 20; ++j)
    start.push_back(vgrad_test::uniform_tensor({int64_t(500 + 997 * j)}, 500 + j).to(kFloating[j % 4]));
  std::vector<Tensor> cpu = to_device(start, kCPU), cuda = to_device(start, gpu);
  const Tensor flag = zeros({}, {.device = gpu}), cpu_flag = zeros({});
  const int64_t before = cuda::table_upload_count(0);
  cuda::Graph graph;
  graph.capture([&] { unscale(cuda, kInverse, flag); });
  EXPECT_EQ(graph.kernel_count(), 4 + 4) << "a store and an unscale per dtype";
  EXPECT_EQ(cuda::table_upload_count(0) - before, 4);
  graph.replay();
  unscale(cpu, kInverse, cpu_flag);
  for (size_t j = 0; j < cpu.size(); ++j) EXPECT_EQ(bytes_of(cuda[j]), bytes_of(cpu[j])) << "replay, " << j;
  unscale(cuda, kInverse, flag);
  EXPECT_EQ(cuda::table_upload_count(0) - before, 8) << "the eager call does not read the graph's tables";
  graph.replay();
  for (int pass = 0; pass < 2; ++pass) unscale(cpu, kInverse, cpu_flag);
  for (size_t j = 0; j < cpu.size(); ++j) EXPECT_EQ(bytes_of(cuda[j]), bytes_of(cpu[j])) << "eager then replay, " << j;
  EXPECT_EQ(flag.item(), 0.0);
}

}  // namespace

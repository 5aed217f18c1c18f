// Tests of the profiler (core/profiler.h): off by default, per-op call counts and bytes
// for forward and backward, only the outermost op, stop(), one Profile per thread, ops
// on other threads unrecorded, and the table. Times are only checked to be sane.
#include <memory>
#include <thread>

#include "core/profiler.h"
#include "support.h"

namespace {

using vgrad::Tensor;
using vgrad::profiler::OpStats;
using vgrad::profiler::Profile;
using vgrad_test::vals;

// The row named `name`, or a row with 0 calls.
OpStats row(const Profile& profile, const std::string& name) {
  for (const OpStats& s : profile.stats())
    if (s.name == name) return s;
  return OpStats{name};
}

TEST(Profiler, OffByDefault) {
  EXPECT_FALSE(vgrad::profiler::detail::active());
  const Tensor x = vgrad::ones({8, 8});
  const Tensor y = x + x;  // no Profile: nothing recorded anywhere
  Profile profile;
  EXPECT_TRUE(vgrad::profiler::detail::active());
  EXPECT_TRUE(profile.stats().empty()) << "ops run before the Profile are not in it";
  EXPECT_EQ(vals(y)[0], 2);
}

TEST(Profiler, CountsCallsAndBytesForwardAndBackward) {
  Tensor w = vgrad_test::uniform_tensor({16, 32}, 1);
  w.requires_grad_(true);
  const Tensor x = vgrad_test::uniform_tensor({64, 16}, 2), bias = vgrad_test::uniform_tensor({64, 32}, 3);
  Profile profile;
  Tensor h = vgrad::matmul(x, w);  // (64, 32) float32: 8192 bytes
  for (int i = 0; i < 3; ++i) h = h + bias;
  EXPECT_EQ(row(profile, "add").calls, 3);
  EXPECT_EQ(row(profile, "add").bytes_allocated, 3 * 64 * 32 * 4) << "one (64, 32) float32 output per call";
  EXPECT_EQ(row(profile, "matmul").calls, 1);
  EXPECT_EQ(row(profile, "matmul").bytes_allocated, 64 * 32 * 4);
  vgrad::sum(h).backward();
  profile.stop();
  EXPECT_EQ(row(profile, "sum").calls, 1);
  // The engine records each rule it runs as "<op> backward"; the forward rows stay.
  EXPECT_EQ(row(profile, "add backward").calls, 3);
  EXPECT_EQ(row(profile, "matmul backward").calls, 1);
  // At least dW (x needs no gradient); the GEMM may also densify sum's stride-0 gradient.
  EXPECT_GE(row(profile, "matmul backward").bytes_allocated, 16 * 32 * 4);
  EXPECT_LE(row(profile, "matmul backward").bytes_allocated, 16 * 32 * 4 + 64 * 32 * 4);
  EXPECT_EQ(row(profile, "add").calls, 3);
  const auto stats = profile.stats();
  for (size_t i = 0; i < stats.size(); ++i) {
    EXPECT_GE(stats[i].seconds, 0) << stats[i].name;
    if (i > 0) {
      EXPECT_GE(stats[i - 1].seconds, stats[i].seconds) << "sorted by time, largest first";
    }
  }
}

TEST(Profiler, RecordsOnlyTheOutermostOp) {
  const Tensor x = vgrad_test::uniform_tensor({10, 10}, 3);
  Profile profile;
  const Tensor v = vgrad::var(x);  // var computes through mean, sub, ...: all of it is var's time
  EXPECT_EQ(row(profile, "var").calls, 1);
  ASSERT_EQ(profile.stats().size(), 1u) << profile.table();
}

TEST(Profiler, StopEndsRecordingAndKeepsTheStats) {
  const Tensor x = vgrad::ones({4});
  Profile profile;
  const Tensor a = x * x;
  profile.stop();
  EXPECT_FALSE(vgrad::profiler::detail::active());
  const Tensor b = x * x;
  EXPECT_EQ(row(profile, "mul").calls, 1);
  profile.stop();  // idempotent
  EXPECT_EQ(row(profile, "mul").calls, 1);
}

TEST(Profiler, OneProfilePerThreadAndOtherThreadsUnrecorded) {
  Profile profile;
  EXPECT_ERROR(Profile{}, "profiler: a Profile is already recording on this thread");
  std::thread worker([] { const Tensor y = vgrad::ones({4}) + vgrad::ones({4}); });
  worker.join();
  EXPECT_EQ(row(profile, "add").calls, 0) << "the data loader's threads are not recorded";
}

// A stopped Profile keeps its own rows when a later one records, and each is freed once.
TEST(Profiler, AStoppedProfileKeepsItsRowsWhileANewOneRecords) {
  const Tensor x = vgrad::ones({4});
  auto first = std::make_unique<Profile>();
  const Tensor a = x + x;
  first->stop();
  {
    Profile second;
    const Tensor b = x * x;
    EXPECT_EQ(row(second, "mul").calls, 1);
    EXPECT_EQ(row(second, "add").calls, 0);
    EXPECT_EQ(row(*first, "add").calls, 1);
    EXPECT_EQ(row(*first, "mul").calls, 0);
    first.reset();  // destroying the stopped one must not touch the recording one
    const Tensor c = x * x;
    EXPECT_EQ(row(second, "mul").calls, 2);
  }
  EXPECT_FALSE(vgrad::profiler::detail::active());
}

TEST(Profiler, TableListsRowsAndTotal) {
  const Tensor x = vgrad::ones({4});
  Profile profile;
  for (int i = 0; i < 2; ++i) const Tensor y = vgrad::exp(x);
  const std::string table = profile.table();
  EXPECT_CONTAINS(table, "op");
  EXPECT_CONTAINS(table, "calls");
  EXPECT_CONTAINS(table, "MB alloc");
  EXPECT_CONTAINS(table, "total (outermost ops)");
  // The exp row: name, then 2 calls.
  const size_t at = table.find("\nexp ");
  ASSERT_NE(at, std::string::npos) << table;
  EXPECT_EQ(std::stoi(table.substr(at + 5)), 2) << table;
  EXPECT_EQ(profile.table(0).find("\nexp "), std::string::npos) << "max_rows 0 lists no op";
}

}  // namespace

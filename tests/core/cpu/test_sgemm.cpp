// vgrad's own float32 GEMM (core/cpu/sgemm.h): every ISA path forced in turn against a
// float64 triple loop, on odd shapes, all four transposes, alpha/beta, padded leading
// dimensions; and threaded runs giving the same bits as one thread.
#include "core/cpu/sgemm.h"
#include "core/cpu/thread_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "support.h"

namespace vgrad::cpu {
namespace {

struct Case {
  bool trans_a, trans_b;
  int64_t m, n, k;
  int64_t pad;  // added to every leading dimension
  float alpha, beta;
};

// Operands stored as the flags say, with pad unused floats after each row (NaN: reading
// them would show), and C filled with values (or NaN when beta = 0: C must not be read).
struct Operands {
  std::vector<float> a, b, c;
  SgemmProblem problem;
  Operands(const Case& t, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    auto fill = [&](std::vector<float>& v, int64_t rows, int64_t cols, int64_t ld) {
      v.assign(size_t(rows * ld), nan);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) v[size_t(r * ld + c)] = u(rng);
    };
    SgemmProblem& p = problem;
    p.trans_a = t.trans_a, p.trans_b = t.trans_b, p.m = t.m, p.n = t.n, p.k = t.k, p.alpha = t.alpha, p.beta = t.beta;
    p.lda = (t.trans_a ? t.m : t.k) + t.pad;
    p.ldb = (t.trans_b ? t.k : t.n) + t.pad;
    p.ldc = t.n + t.pad;
    fill(a, t.trans_a ? t.k : t.m, t.trans_a ? t.m : t.k, p.lda);
    fill(b, t.trans_b ? t.n : t.k, t.trans_b ? t.k : t.n, p.ldb);
    fill(c, t.m, t.n, p.ldc);
    if (t.beta == 0.0f)
      for (int64_t i = 0; i < t.m; ++i)
        for (int64_t j = 0; j < t.n; ++j) c[size_t(i * p.ldc + j)] = nan;
    p.a = a.data(), p.b = b.data(), p.c = c.data();
  }
  float op_a(int64_t i, int64_t q) const {
    return problem.trans_a ? a[size_t(q * problem.lda + i)] : a[size_t(i * problem.lda + q)];
  }
  float op_b(int64_t q, int64_t j) const {
    return problem.trans_b ? b[size_t(j * problem.ldb + q)] : b[size_t(q * problem.ldb + j)];
  }
};

std::string describe(const Case& t) {
  return std::string(t.trans_a ? "T" : "N") + (t.trans_b ? "T" : "N") + " m=" + std::to_string(t.m) +
         " n=" + std::to_string(t.n) + " k=" + std::to_string(t.k) + " pad=" + std::to_string(t.pad) +
         " alpha=" + std::to_string(t.alpha) + " beta=" + std::to_string(t.beta);
}

// Runs the case and compares every element of C (and the padding, which must stay NaN)
// with alpha·Σ op(A)·op(B) + beta·C in float64.
void check_case(const Case& t, const SgemmKernels& kernels, int threads) {
  Operands ops(t, uint32_t(t.m * 131 + t.n * 17 + t.k));
  const std::vector<float> c_before = ops.c;
  sgemm(ops.problem, kernels, threads);
  const int64_t ldc = ops.problem.ldc;
  int bad = 0;
  for (int64_t i = 0; i < t.m && bad < 5; ++i) {
    for (int64_t j = 0; j < t.n && bad < 5; ++j) {
      double sum = 0, magnitude = 0;
      for (int64_t q = 0; q < t.k; ++q) {
        sum += double(ops.op_a(i, q)) * double(ops.op_b(q, j));
        magnitude += std::fabs(double(ops.op_a(i, q)) * double(ops.op_b(q, j)));
      }
      const double scaled_c = t.beta == 0.0f ? 0.0 : t.beta * double(c_before[size_t(i * ldc + j)]);  // NaN unread
      const double expected = t.alpha * sum + scaled_c;
      const double tolerance = 1e-6 * (double(t.k) + 4) * (std::fabs(t.alpha) * magnitude + std::fabs(scaled_c)) + 1e-30;
      const double got = ops.c[size_t(i * ldc + j)];
      if (!(std::fabs(got - expected) <= tolerance)) {
        ++bad;
        ADD_FAILURE() << isa_name(kernels.isa) << " " << describe(t) << ": C[" << i << "][" << j << "] = " << got
                      << ", expected " << expected;
      }
    }
    for (int64_t j = t.n; j < ldc; ++j)
      if (!std::isnan(ops.c[size_t(i * ldc + j)])) {
        ++bad;
        ADD_FAILURE() << isa_name(kernels.isa) << " " << describe(t) << ": wrote padding C[" << i << "][" << j << "]";
      }
  }
}

class SgemmIsa : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!cpu_supports(GetParam()))
      GTEST_SKIP() << "this CPU lacks " << isa_requirement(GetParam()) << " for the " << isa_name(GetParam()) << " kernels";
  }
  const SgemmKernels& kernels() const { return sgemm_kernels(GetParam()); }
};

TEST_P(SgemmIsa, MatchesNaiveOnOddShapesTransposesAndPadding) {
  const int64_t sizes[] = {1, 7, 17, 33, 100};
  for (bool trans_a : {false, true})
    for (bool trans_b : {false, true})
      for (int64_t m : sizes)
        for (int64_t n : sizes)
          for (int64_t k : sizes) check_case({trans_a, trans_b, m, n, k, (m + n + k) % 3 == 0 ? 5 : 0, 1.0f, 0.0f}, kernels(), 1);
}

// At most 16 columns (the 10-class layer): AVX-512 switches to its narrow 16 x 16 tile.
TEST_P(SgemmIsa, MatchesNaiveOnNarrowProducts) {
  if (GetParam() == Isa::Avx512) {
    ASSERT_NE(nullptr, kernels().narrow);
    EXPECT_EQ(16, kernels().narrow->nr);
  } else {
    EXPECT_EQ(nullptr, kernels().narrow);
  }
  for (bool trans_a : {false, true})
    for (bool trans_b : {false, true})
      for (int64_t m : {1, 15, 16, 17, 40})
        for (int64_t n : {10, 16})
          for (int64_t k : {1, 9, 130}) check_case({trans_a, trans_b, m, n, k, m % 2, 1.0f, k == 9 ? 0.5f : 0.0f}, kernels(), 1);
}

TEST_P(SgemmIsa, AlphaBetaAndLeadingDimensionsWiderThanRows) {
  for (bool trans_a : {false, true})
    for (bool trans_b : {false, true})
      for (auto [alpha, beta] : {std::pair{0.5f, 2.0f}, {-1.5f, 1.0f}, {2.0f, 0.0f}, {0.0f, -0.5f}})
        for (int64_t pad : {1, 19}) check_case({trans_a, trans_b, 33, 17, 100, pad, alpha, beta}, kernels(), 1);
}

// Larger than one cache block in every direction (k > kc, m > mc) and the MLP's shapes.
TEST_P(SgemmIsa, MatchesNaiveAcrossBlocksAndOnTheMlpShapes) {
  for (bool trans_a : {false, true})
    for (bool trans_b : {false, true}) {
      check_case({trans_a, trans_b, 300, 70, 530, 3, 1.0f, 0.5f}, kernels(), 1);
      check_case({trans_a, trans_b, 20, 40, 2100, 1, 1.0f, 0.5f}, kernels(), 1);  // k > AVX-512's kc (1024)
    }
  check_case({false, true, 64, 256, 784, 0, 1.0f, 0.0f}, kernels(), 2);  // forward, layer 1
  check_case({true, false, 256, 784, 64, 0, 1.0f, 1.0f}, kernels(), 2);  // weight gradient, accumulated
  check_case({false, false, 64, 256, 128, 0, 1.0f, 0.0f}, kernels(), 2);  // input gradient
  check_case({false, true, 128, 10, 128, 0, 1.0f, 0.0f}, kernels(), 2);  // forward, layer 3
}

// Threads split C into disjoint tiles computed in the same order: the same bits as one
// thread. Split along columns (n >= m) and along rows (m > n). The pool may run a job on
// the caller alone (a back-off, or a worker that came late), which would compare one
// thread with itself: each case is run until the worker took part (the back-off ended
// before each try) and that it did is asserted.
TEST_P(SgemmIsa, ThreadedGivesTheSameBitsAsOneThread) {
  // Products of 10M multiply-adds and more: long enough for a worker woken from its
  // sleep, or given its core back by a busy machine, to come in before the caller is done.
  const Case cases[] = {{false, true, 64, 256, 784, 0, 1.0f, 0.0f},   {true, false, 256, 784, 64, 0, 1.0f, 0.0f},
                        {false, false, 130, 250, 700, 2, 0.5f, 1.5f}, {true, true, 1001, 99, 277, 1, 1.0f, 0.0f},
                        {false, true, 1025, 33, 700, 0, -1.0f, 1.0f}, {false, true, 1025, 10, 700, 0, 1.0f, 0.0f}};
  ThreadPool& pool = ThreadPool::instance();
  if (pool.threads() < 2) GTEST_SKIP() << "the CPU pool has one thread (VGRAD_CPU_THREADS or one CPU)";
  for (const Case& t : cases) {
    ASSERT_GT(sgemm_threads_for(Operands(t, 1).problem, 2), 1) << describe(t) << " is too small to be threaded";
    Operands one(t, 7);
    sgemm(one.problem, kernels(), 1);
    // Tries alternately back to back (the worker still spinning from the last call) and
    // after a pause (the worker asleep: the wake-up lets it preempt another program), for
    // up to 20 s: on a starved machine (load 9 on 2 vCPUs) 200 tries in 0.7 s once all
    // missed.
    Operands two(t, 7);
    const std::vector<float> c_before = two.c;
    bool worker_took_part = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (int attempt = 0; !worker_took_part && std::chrono::steady_clock::now() < deadline; ++attempt) {
      if (attempt % 2 == 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      std::memcpy(two.c.data(), c_before.data(), c_before.size() * sizeof(float));
      pool.end_back_off();
      const uint64_t worker_pieces = pool.counts().worker_pieces;
      sgemm(two.problem, kernels(), 2);
      worker_took_part = pool.counts().worker_pieces > worker_pieces;
      ASSERT_EQ(0, std::memcmp(one.c.data(), two.c.data(), one.c.size() * sizeof(float))) << describe(t);
    }
    EXPECT_TRUE(worker_took_part) << describe(t) << ": in 20 s of tries the pool's worker never ran a piece";
  }
}

INSTANTIATE_TEST_SUITE_P(EachIsa, SgemmIsa, ::testing::Values(Isa::Generic, Isa::Avx2, Isa::Avx512),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

// From 1M multiply-adds (batch 32's 32x128x256 layer) a product is split between threads.
TEST(Sgemm, OneThreadBelowTheThreshold) {
  EXPECT_EQ(1, sgemm_threads_for(Operands({false, true, 10, 10, 10, 0, 1.0f, 0.0f}, 1).problem, 2));
  EXPECT_EQ(1, sgemm_threads_for(Operands({false, true, 32, 128, 240, 0, 1.0f, 0.0f}, 1).problem, 2));
  const int pool_threads = ThreadPool::instance().threads();
  EXPECT_EQ(std::min(2, pool_threads), sgemm_threads_for(Operands({false, true, 32, 128, 256, 0, 1.0f, 0.0f}, 1).problem, 2));
  EXPECT_EQ(1, sgemm_threads_for(Operands({false, true, 32, 128, 256, 0, 1.0f, 0.0f}, 1).problem, 1));
}

TEST(Sgemm, UnsupportedIsaIsAnErrorNamingTheFeature) {
  for (Isa isa : {Isa::Avx2, Isa::Avx512})
    if (!cpu_supports(isa)) EXPECT_ERROR(sgemm_kernels(isa), "sgemm: this CPU lacks", std::string(isa_requirement(isa)));
  EXPECT_EQ(Isa::Generic, sgemm_kernels(Isa::Generic).isa);
}

}  // namespace
}  // namespace vgrad::cpu

// The float32 SGD and Adam updates (core/cpu/optim.h): each ISA path forced in turn and on
// one and two threads gives the bits of PyTorch's rule written out element by element, for
// plain SGD, weight decay, momentum (first and later steps), dampening and Nesterov, and
// for Adam, Adam with weight decay and AdamW over several steps, on sizes around the vector
// widths and above the threading threshold.
#include <cmath>
#include <cstring>
#include <gtest/gtest.h>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/cpu/optim.h"
#include "core/cpu/thread_pool.h"

namespace vgrad::cpu {
namespace {

// PyTorch's SGD on one element, its ops in its order (torch.optim.SGD, single tensor).
void reference_step(float& w, float g, float& buf, const SgdParams& p) {
  const float lr = float(p.lr), wd = float(p.weight_decay), mom = float(p.momentum), damp = float(1 - p.dampening);
  float d = g;
  if (p.weight_decay != 0) d = d + wd * w;
  if (p.momentum != 0) {
    const float b = p.first_step ? d : mom * buf + damp * d;
    buf = b;
    d = p.nesterov ? d + mom * b : b;
  }
  w -= lr * d;
}

class SgdIsa : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!cpu_supports(GetParam())) GTEST_SKIP() << "this CPU lacks " << isa_requirement(GetParam());
  }
};

TEST_P(SgdIsa, SameBitsAsTheElementwiseRuleOnEveryThreadCount) {
  const SgdParams settings[] = {{0.1, 0, 0, 0, false, false},     {0.05, 0, 0, 0.01, false, false},
                                {0.1, 0.9, 0, 0, false, true},    {0.1, 0.9, 0, 0, false, false},
                                {0.1, 0.9, 0.5, 1e-3, false, false}, {0.1, 0.9, 0, 1e-3, true, false}};
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t n : {int64_t(1), int64_t(15), int64_t(17), int64_t(100), int64_t(200 * 1024 + 3)})
    for (const SgdParams& p : settings)
      for (int threads : {1, 2}) {
        std::vector<float> w(static_cast<size_t>(n)), g(w.size()), buf(w.size());
        for (size_t i = 0; i < w.size(); ++i) w[i] = u(rng), g[i] = u(rng), buf[i] = u(rng);
        std::vector<float> w_expected = w, buf_expected = buf;
        for (size_t i = 0; i < w.size(); ++i) reference_step(w_expected[i], g[i], buf_expected[i], p);
        sgd_update_float32(GetParam(), threads, w.data(), g.data(), p.momentum == 0 ? nullptr : buf.data(), n, p);
        const std::string what = std::string(isa_name(GetParam())) + " n=" + std::to_string(n) + " threads=" +
                                 std::to_string(threads) + " momentum=" + std::to_string(p.momentum) +
                                 (p.nesterov ? " nesterov" : "") + (p.first_step ? " first step" : "");
        EXPECT_EQ(0, std::memcmp(w.data(), w_expected.data(), w.size() * sizeof(float))) << what;
        if (p.momentum != 0) {
          EXPECT_EQ(0, std::memcmp(buf.data(), buf_expected.data(), buf.size() * sizeof(float))) << what;
        }
      }
}

// An Inf gradient steps to -Inf and a NaN one gives NaN, as PyTorch's op order gives, with and
// without momentum, dampening, Nesterov and weight decay: no setting adds a 0·d term (0·Inf is NaN).
TEST_P(SgdIsa, AnInfiniteGradientStepsToInfinityNotNaN) {
  const SgdParams settings[] = {{0.1, 0, 0, 0, false, false},       {0.1, 0, 0, 0.01, false, false},
                                {0.1, 0.9, 0, 0, false, true},      {0.1, 0.9, 0, 0, false, false},
                                {0.1, 0.9, 0, 0, true, false},      {0.1, 0.9, 0, 1e-3, true, false},
                                {0.1, 0.9, 0.5, 1e-3, false, false}};
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (const SgdParams& p : settings) {
    const int64_t n = 37;  // vector bodies and a tail
    std::vector<float> w(static_cast<size_t>(n), 0.5f), g(w.size(), 0.25f), buf(w.size(), 0.125f);
    g[3] = inf;
    g[20] = -inf;
    g[33] = nan;
    std::vector<float> w_expected = w, buf_expected = buf;
    for (size_t i = 0; i < w.size(); ++i) reference_step(w_expected[i], g[i], buf_expected[i], p);
    sgd_update_float32(GetParam(), 1, w.data(), g.data(), p.momentum == 0 ? nullptr : buf.data(), n, p);
    const std::string what = std::string(isa_name(GetParam())) + " momentum=" + std::to_string(p.momentum) +
                             (p.nesterov ? " nesterov" : "") + (p.first_step ? " first step" : "");
    EXPECT_EQ(w[3], -inf) << what;
    EXPECT_EQ(w[20], inf) << what;
    EXPECT_TRUE(std::isnan(w[33])) << what;
    EXPECT_EQ(0, std::memcmp(w.data(), w_expected.data(), w.size() * sizeof(float))) << what;
    if (p.momentum != 0) {
      EXPECT_EQ(buf[3], inf) << what;
      EXPECT_EQ(0, std::memcmp(buf.data(), buf_expected.data(), buf.size() * sizeof(float))) << what;
    }
  }
}

TEST(SgdUpdate, LargeParametersUseTheWorker) {
  ThreadPool& pool = ThreadPool::instance();
  if (pool.threads() < 2) GTEST_SKIP() << "the CPU pool has one thread";
  std::vector<float> w(200 * 1024, 1.0f), g(w.size(), 0.5f);
  const uint64_t jobs = pool.counts().threaded_jobs;
  sgd_update_float32(Isa::Generic, 2, w.data(), g.data(), nullptr, int64_t(w.size()), {0.1, 0, 0, 0, false, false});
  EXPECT_EQ(jobs + 1, pool.counts().threaded_jobs);
  EXPECT_EQ(1.0f - 0.1f * 0.5f, w.back());
  sgd_update_float32(Isa::Generic, 2, w.data(), g.data(), nullptr, 1000, {0.1, 0, 0, 0, false, false});
  EXPECT_EQ(jobs + 1, pool.counts().threaded_jobs) << "a small parameter is updated on the caller alone";
}

// PyTorch's single-tensor Adam on one element: its scalars are Python floats (double),
// rounded to float when they meet the tensors.
void reference_adam(float& w, float g, float& m, float& v, const AdamParams& p) {
  const double t = double(p.step);
  if (p.weight_decay != 0) {
    if (p.decoupled) w = w * float(1 - p.lr * p.weight_decay);
    else g = g + float(p.weight_decay) * w;
  }
  const float weight = float(1 - p.beta1);  // torch.lerp(m, g, weight), weight < 0.5
  m = m + weight * (g - m);
  v = v * float(p.beta2) + float(1 - p.beta2) * g * g;
  const float denom = std::sqrt(v) / float(std::sqrt(1 - std::pow(p.beta2, t))) + float(p.eps);
  w = w + float(-(p.lr / (1 - std::pow(p.beta1, t)))) * (m / denom);
}

using AdamIsa = SgdIsa;

TEST_P(AdamIsa, SameBitsAsTheElementwiseRuleOnEveryThreadCount) {
  AdamParams settings[3];
  settings[1].weight_decay = 0.01;
  settings[2].weight_decay = 0.01;
  settings[2].decoupled = true;
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t n : {int64_t(1), int64_t(15), int64_t(17), int64_t(100), int64_t(200 * 1024 + 3)})
    for (AdamParams p : settings)
      for (int threads : {1, 2}) {
        std::vector<float> w(static_cast<size_t>(n)), m(w.size(), 0.0f), v(w.size(), 0.0f);
        for (float& x : w) x = u(rng);
        std::vector<float> w_expected = w, m_expected = m, v_expected = v;
        for (int64_t step = 1; step <= 3; ++step) {
          std::vector<float> g(w.size());
          for (float& x : g) x = u(rng);
          p.step = step;
          for (size_t i = 0; i < w.size(); ++i) reference_adam(w_expected[i], g[i], m_expected[i], v_expected[i], p);
          adam_update_float32(GetParam(), threads, w.data(), g.data(), m.data(), v.data(), n, p);
        }
        const std::string what = std::string(isa_name(GetParam())) + " n=" + std::to_string(n) + " threads=" +
                                 std::to_string(threads) + " weight decay=" + std::to_string(p.weight_decay) +
                                 (p.decoupled ? " (AdamW)" : "");
        EXPECT_EQ(0, std::memcmp(w.data(), w_expected.data(), w.size() * sizeof(float))) << what;
        EXPECT_EQ(0, std::memcmp(m.data(), m_expected.data(), m.size() * sizeof(float))) << what;
        EXPECT_EQ(0, std::memcmp(v.data(), v_expected.data(), v.size() * sizeof(float))) << what;
      }
}

// Whether weight decay applies is decided on the double, as PyTorch's `if weight_decay != 0`:
// a decay that rounds to 0 in float32 still adds its 0·p term, so an Inf parameter gives NaN.
TEST_P(AdamIsa, AWeightDecayBelowFloatRangeStillAddsItsTerm) {
  AdamParams p;
  p.weight_decay = 1e-50;
  p.step = 1;
  std::vector<float> w{std::numeric_limits<float>::infinity(), 0.5f}, g{0.25f, 0.25f}, m(2, 0.0f), v(2, 0.0f);
  std::vector<float> w_expected = w, m_expected = m, v_expected = v;
  for (size_t i = 0; i < w.size(); ++i) reference_adam(w_expected[i], g[i], m_expected[i], v_expected[i], p);
  adam_update_float32(GetParam(), 1, w.data(), g.data(), m.data(), v.data(), 2, p);
  EXPECT_TRUE(std::isnan(w_expected[0])) << "PyTorch's rule: 0.25 + 0 * Inf";
  EXPECT_TRUE(std::isnan(w[0])) << isa_name(GetParam());
  EXPECT_EQ(w[1], w_expected[1]) << isa_name(GetParam());
}

INSTANTIATE_TEST_SUITE_P(EachIsa, AdamIsa, ::testing::Values(Isa::Generic, Isa::Avx2, Isa::Avx512),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

INSTANTIATE_TEST_SUITE_P(EachIsa, SgdIsa, ::testing::Values(Isa::Generic, Isa::Avx2, Isa::Avx512),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

}  // namespace
}  // namespace vgrad::cpu

// What every test binary shares: host values of a tensor, seeded inputs, value
// comparison, naive NumPy broadcasting on plain vectors, error-message checks
// (EXPECT_ERROR, EXPECT_CONTAINS), the GPU-or-skip rule (REQUIRE_GPU), a per-test
// temporary directory and a two-layer MLP. Op-specific references stay with their tests.
#pragma once
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "core/backend.h"
#include "core/error.h"
#include "core/tensor.h"
#include "nn/layers.h"

namespace vgrad_test {

using vgrad::DType;
using vgrad::Shape;
using vgrad::Tensor;

inline std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Seeded uniform values in [low, high).
inline Tensor uniform_tensor(const vgrad::Shape& shape, uint64_t seed, double low = -2, double high = 2,
                             vgrad::DType dtype = vgrad::DType::Float32) {
  vgrad::Generator gen(seed);
  return vgrad::uniform(shape, low, high, {.dtype = dtype}, &gen);
}

// n values that tie often (integers 0..3) with NaN at every 7th position, −∞ at every
// 11th and +∞ at every 13th: the hard cases of a max (max-pool's indices).
inline std::vector<double> ties_nan_inf_values(int64_t n, uint64_t seed) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  std::vector<double> v = uniform_tensor({n}, seed, 0, 4, vgrad::DType::Float64).to_vector<double>();
  for (size_t i = 0; i < v.size(); ++i) {
    v[i] = std::floor(v[i]);
    if (i % 7 == 3) v[i] = nan;
    if (i % 11 == 5) v[i] = -inf;
    if (i % 13 == 6) v[i] = inf;
  }
  return v;
}

// The same, argument order of the op tests: dtype before the range.
inline Tensor rand_tensor(const Shape& shape, uint64_t seed, DType dtype = DType::Float32, double low = -2,
                          double high = 2) {
  return uniform_tensor(shape, seed, low, high, dtype);
}

// Row-major multi-index of `flat` in `shape`.
inline std::vector<int64_t> unravel(int64_t flat, const Shape& shape) {
  std::vector<int64_t> index(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    index[d] = shape[d] == 0 ? 0 : flat % shape[d];
    flat = shape[d] == 0 ? 0 : flat / shape[d];
  }
  return index;
}

// Flat row-major position in `in` of the element that output index `out_index`
// reads under NumPy broadcasting (trailing dims aligned, size-1 dims repeated).
inline int64_t broadcast_source(const std::vector<int64_t>& out_index, const Shape& in) {
  const size_t lead = out_index.size() - in.size();
  int64_t flat = 0;
  for (size_t d = 0; d < in.size(); ++d) flat = flat * in[d] + (in[d] == 1 ? 0 : out_index[lead + d]);
  return flat;
}

// Naive out[i] = f(a[bcast(i)], b[bcast(i)]).
template <class F>
std::vector<double> broadcast_ref(const std::vector<double>& a, const Shape& sa, const std::vector<double>& b,
                                  const Shape& sb, const Shape& out, F f) {
  std::vector<double> result(static_cast<size_t>(vgrad::numel(out)));
  for (int64_t i = 0; i < vgrad::numel(out); ++i) {
    const auto index = unravel(i, out);
    result[i] = f(a[broadcast_source(index, sa)], b[broadcast_source(index, sb)]);
  }
  return result;
}

// |actual - expected| <= tol * max(1, |expected|); a NaN expected needs a NaN. Reports
// the first bad element only.
inline void expect_all_near(const std::vector<double>& actual, const std::vector<double>& expected, double tol,
                            const std::string& what = "") {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i) {
    if (std::isnan(expected[i])) {
      EXPECT_TRUE(std::isnan(actual[i])) << what << " at " << i;
      continue;
    }
    const double bound = tol * std::max(1.0, std::abs(expected[i]));
    if (!(std::abs(actual[i] - expected[i]) <= bound)) {
      ADD_FAILURE() << what << " at flat index " << i << ": got " << actual[i] << ", expected " << expected[i];
      return;
    }
  }
}

inline void expect_tensor_near(const Tensor& actual, const Shape& shape, const std::vector<double>& expected,
                               double tol = 1e-5, const std::string& what = "") {
  EXPECT_EQ(actual.shape(), shape) << what;
  expect_all_near(vals(actual), expected, tol, what);
}

// Whether VGRAD_REQUIRE_GPU asks for a GPU (set, not "" and not "0"): scripts/gpu-check.sh
// sets it, so that on a GPU machine whose runtime fails to start the suite cannot
// "pass" with every GPU test skipped.
inline bool gpu_required() {
  const char* required = std::getenv("VGRAD_REQUIRE_GPU");
  return required != nullptr && std::string(required) != "" && std::string(required) != "0";
}

// The CPU, then cuda:0 where a GPU is: the device list of a parity test. Under
// VGRAD_REQUIRE_GPU a missing GPU fails the calling test instead of leaving it CPU-only.
inline std::vector<vgrad::Device> cpu_and_gpu() {
  std::vector<vgrad::Device> devices{vgrad::kCPU};
  if (vgrad::cuda_is_available()) devices.push_back(vgrad::cuda_device(0));
  else if (gpu_required()) ADD_FAILURE() << "no CUDA device, and VGRAD_REQUIRE_GPU requires one";
  return devices;
}

// |got - want| <= tol * (1 + |want|) element by element.
inline void expect_near_all(const std::vector<double>& got, const std::vector<double>& want, double tol,
                            const char* what = "") {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << what << " at element " << i;
}

// |t - expected| <= tol element by element (absolute).
inline void expect_values(const Tensor& t, const std::vector<double>& expected, double tol = 1e-12) {
  ASSERT_TRUE(t.defined());
  const std::vector<double> got = t.to_vector<double>();
  ASSERT_EQ(got.size(), expected.size()) << t;
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], tol) << "element " << i << " of " << t;
}

// The message of the vgrad::Error that `f` throws ("" and a test failure if none,
// or if it throws anything else).
template <class F> std::string error_of(F&& f) {
  try {
    f();
  } catch (const vgrad::Error& e) {
    return e.what();
  } catch (const std::exception& other) {
    ADD_FAILURE() << "expected a vgrad::Error, got another exception: " << other.what();
    return "";
  }
  ADD_FAILURE() << "expected a vgrad::Error";
  return "";
}

inline void expect_contains(const std::string& message, std::initializer_list<std::string> parts) {
  for (const std::string& part : parts)
    EXPECT_NE(message.find(part), std::string::npos) << "message \"" << message << "\" lacks \"" << part << "\"";
}

// Linear(in, hidden) -> ReLU -> Linear(hidden, out), named fc1 and fc2.
struct Mlp : vgrad::nn::Module {
  Mlp(int64_t in, int64_t hidden, int64_t out)
      : fc1(register_module("fc1", std::make_shared<vgrad::nn::Linear>(in, hidden))),
        fc2(register_module("fc2", std::make_shared<vgrad::nn::Linear>(hidden, out))) {}
  Tensor forward(const Tensor& x) override { return (*fc2)(vgrad::relu((*fc1)(x))); }
  std::shared_ptr<vgrad::nn::Linear> fc1, fc2;
};

// Caps the address space at what the process has now plus `headroom` bytes for
// its lifetime, so an allocation sized by a lying header throws std::bad_alloc
// (which the test reports as "not a vgrad::Error") instead of succeeding.
class AddressSpaceCap {
 public:
  explicit AddressSpaceCap(uint64_t headroom) {
#if defined(__SANITIZE_ADDRESS__)
    (void)headroom;
#else
    ::getrlimit(RLIMIT_AS, &saved_);
    std::ifstream status("/proc/self/status");
    uint64_t vm_size_kb = 0;
    for (std::string line; std::getline(status, line);)
      if (line.rfind("VmSize:", 0) == 0) vm_size_kb = std::stoull(line.substr(7));
    rlimit capped = saved_;
    capped.rlim_cur = vm_size_kb * 1024 + headroom;
    active_ = vm_size_kb > 0 && ::setrlimit(RLIMIT_AS, &capped) == 0;
#endif
  }
  ~AddressSpaceCap() {
    if (active_) ::setrlimit(RLIMIT_AS, &saved_);
  }
  bool active() const { return active_; }

 private:
  rlimit saved_{};
  bool active_ = false;
};

// A fresh directory per test, removed afterwards (permissions restored first, so a
// test may make it read-only).
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           ("vgrad-" + std::string(info->test_suite_name()) + "-" + info->name() + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::permissions(dir_, std::filesystem::perms::owner_all, ec);
    std::filesystem::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::filesystem::path dir_;
};

}  // namespace vgrad_test

// Expects `statement` to throw a vgrad::Error whose message contains every given string.
#define EXPECT_ERROR(statement, ...)                                                        \
  do {                                                                                      \
    try {                                                                                   \
      statement;                                                                            \
      ADD_FAILURE() << "expected vgrad::Error from: " #statement;                           \
    } catch (const vgrad::Error& error_) {                                                  \
      vgrad_test::expect_contains(error_.what(), {__VA_ARGS__});                            \
    } catch (const std::exception& other_) {                                                \
      ADD_FAILURE() << "expected vgrad::Error, got another exception: " << other_.what();   \
    }                                                                                       \
  } while (0)

#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "message: " << (text) << "\nmissing: " << (part)

// First line of a test (or SetUp) that needs a GPU: SKIPPED without one, FAILED
// instead when VGRAD_REQUIRE_GPU=1.
#define REQUIRE_GPU()                                                                        \
  do {                                                                                       \
    if (!vgrad::cuda_is_available()) {                                                       \
      if (vgrad_test::gpu_required()) FAIL() << "no CUDA device, and VGRAD_REQUIRE_GPU requires one"; \
      GTEST_SKIP() << "no CUDA device: GPU test skipped";                                    \
    }                                                                                        \
  } while (0)

// What every test binary shares: host values of a tensor, seeded inputs, value
// comparison, error-message checks (EXPECT_ERROR, EXPECT_CONTAINS) and a per-test
// temporary directory, a two-layer MLP. Naive reference computations stay with the tests that use them.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/error.h"
#include "autograd/ops.h"
#include "core/tensor.h"
#include "nn/layers.h"

namespace vgrad_test {

using vgrad::Tensor;

inline std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Seeded uniform values in [low, high).
inline Tensor uniform_tensor(const vgrad::Shape& shape, uint64_t seed, double low = -2, double high = 2,
                             vgrad::DType dtype = vgrad::DType::Float32) {
  vgrad::Generator gen(seed);
  return vgrad::uniform(shape, low, high, {.dtype = dtype}, &gen);
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

// VGRAD_REQUIRE_GPU=1 (scripts/gpu-check.sh sets it) turns "no GPU" into a failure: on a GPU
// machine whose runtime fails to initialise, the suite must not "pass" with everything skipped.
#define REQUIRE_GPU()                                                                            \
  do {                                                                                           \
    if (!vgrad::cuda::is_available()) {                                                          \
      const char* required = std::getenv("VGRAD_REQUIRE_GPU");                                   \
      if (required != nullptr && std::string(required) != "" && std::string(required) != "0")    \
        FAIL() << "no CUDA device, and VGRAD_REQUIRE_GPU=" << required << " requires one";       \
      GTEST_SKIP() << "no CUDA device: GPU test skipped";                                        \
    }                                                                                            \
  } while (0)

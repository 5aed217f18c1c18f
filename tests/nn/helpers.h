// Helpers for the nn tests: host values, seeded inputs, and EXPECT_THROW_MSG,
// which checks that a statement throws a vgrad::Error whose message contains a text.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/ops.h"

namespace nn_test {

using vgrad::Tensor;

inline std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }

// Seeded uniform values in [low, high).
inline Tensor uniform_tensor(const vgrad::Shape& shape, uint64_t seed, double low = -2, double high = 2,
                             vgrad::DType dtype = vgrad::DType::Float32) {
  vgrad::Generator gen(seed);
  return vgrad::uniform(shape, low, high, {.dtype = dtype}, &gen);
}

inline void expect_near_all(const std::vector<double>& got, const std::vector<double>& want, double tol,
                            const char* what = "") {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << what << " at element " << i;
}

}  // namespace nn_test

// Fails unless `statement` throws a vgrad::Error whose what() contains `text`.
#define EXPECT_THROW_MSG(statement, text)                                                   \
  do {                                                                                      \
    bool thrown_ = false;                                                                   \
    try {                                                                                   \
      statement;                                                                            \
    } catch (const vgrad::Error& error_) {                                                  \
      thrown_ = true;                                                                       \
      EXPECT_NE(std::string(error_.what()).find(text), std::string::npos)                   \
          << "message: " << error_.what() << "\nexpected to contain: " << (text);           \
    }                                                                                       \
    EXPECT_TRUE(thrown_) << #statement " did not throw vgrad::Error";                       \
  } while (0)

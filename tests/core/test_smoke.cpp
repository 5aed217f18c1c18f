#include <gtest/gtest.h>
#include "vgrad.h"
TEST(Smoke, Add) {
  auto a = vgrad::tensor({1, 2, 3});
  auto b = a + a;
  EXPECT_EQ(b.to_vector<float>(), (std::vector<float>{2, 4, 6}));
}

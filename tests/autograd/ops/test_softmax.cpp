// Tests for softmax and log_softmax: every axis against a naive loop (contiguous
// and strided inputs), numerical stability with logits of 1000, rows summing to 1,
// and the errors; gradients along each axis on every device (autograd/ops/softmax.cpp).
#include "op_check.h"

namespace {

using namespace vgrad;
using namespace vgrad_test;  // the op tests' shared helpers (op_check.h, support.h)

// Naive (log_)softmax of row-major `v` of `shape` along `axis`, in long double.
std::vector<double> naive_softmax(const std::vector<double>& v, const Shape& shape, int64_t axis, bool log) {
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= shape[d];
  for (size_t d = axis + 1; d < shape.size(); ++d) inner *= shape[d];
  const int64_t n = shape[axis];
  std::vector<double> out(v.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t j) { return o * n * inner + j * inner + i; };
      long double total = 0;
      for (int64_t j = 0; j < n; ++j) total += std::exp(static_cast<long double>(v[at(j)]));
      for (int64_t j = 0; j < n; ++j)
        out[at(j)] = log ? double(v[at(j)] - std::log(total)) : double(std::exp(static_cast<long double>(v[at(j)])) / total);
    }
  return out;
}

TEST(Softmax, LeavesItsInputAlone) {
  const Tensor base = rand_tensor({6, 4, 10}, 2, DType::Float64, -5, 5);
  const auto before = vals(base);
  (void)softmax(base.transpose(0, 2), 1);
  EXPECT_EQ(vals(base), before);
}

TEST(Softmax, HandValues) {
  const Tensor x = tensor({0, std::log(3.f)});  // exp: 1 and 3
  expect_tensor_near(softmax(x, 0), {2}, {0.25, 0.75}, 1e-6);
  expect_tensor_near(log_softmax(x, 0), {2}, {std::log(0.25), std::log(0.75)}, 1e-6);
  // A constant row gives the uniform distribution.
  expect_tensor_near(softmax(full({2, 4}, 3.0), 1), {2, 4}, std::vector<double>(8, 0.25), 1e-7);
  // Method forms.
  expect_tensor_near(x.softmax(-1), {2}, {0.25, 0.75}, 1e-6);
  expect_tensor_near(x.log_softmax(0), {2}, {std::log(0.25), std::log(0.75)}, 1e-6);
  // One class: probability 1, log-probability 0.
  expect_tensor_near(softmax(tensor({7.f, -3.f}, {2, 1}), 1), {2, 1}, {1, 1}, 0);
  expect_tensor_near(log_softmax(tensor({7.f, -3.f}, {2, 1}), 1), {2, 1}, {0, 0}, 0);
  // A 0-d tensor is a single class.
  expect_tensor_near(softmax(scalar_tensor(5), 0), {}, {1}, 0);
  expect_tensor_near(log_softmax(scalar_tensor(5), -1), {}, {0}, 0);
  // -inf logits get probability 0.
  expect_tensor_near(softmax(tensor({-INFINITY, 0, 0}), 0), {3}, {0, 0.5, 0.5}, 1e-7);
  // Empty tensors stay empty.
  EXPECT_EQ(softmax(zeros({0, 3}), 1).shape(), (Shape{0, 3}));
}

TEST(Softmax, LargeLogitsAreStable) {
  for (DType dtype : {DType::Float32, DType::Float64}) {
    const Tensor x = tensor(std::vector<double>{1000, 0, -1000, 1000, 1000, 0, -1000, -1000, -999}, {3, 3},
                            {.dtype = dtype});
    const Tensor p = softmax(x, 1), lp = log_softmax(x, 1);
    for (double v : vals(p)) EXPECT_TRUE(std::isfinite(v));
    for (double v : vals(lp)) EXPECT_TRUE(std::isfinite(v));
    const double e1 = std::exp(-1.0);
    expect_tensor_near(p, {3, 3},
                       {1, 0, 0, 0.5, 0.5, 0, e1 / (2 * e1 + 1), e1 / (2 * e1 + 1), 1 / (2 * e1 + 1)}, 1e-6,
                       "softmax of large logits");
    const double l3 = std::log(2 * e1 + 1);
    expect_tensor_near(lp, {3, 3}, {0, -1000, -2000, -std::log(2.0), -std::log(2.0), -1000 - std::log(2.0), -1 - l3,
                                    -1 - l3, -l3},
                       1e-6, "log_softmax of large logits");
    // Along the other axis too.
    const Tensor pc = softmax(x, 0);
    for (double v : vals(pc)) EXPECT_TRUE(std::isfinite(v));
    expect_tensor_near(sum(pc, {0}), {3}, {1, 1, 1}, 1e-6);
  }
}

TEST(Softmax, RowsSumToOne) {
  const Tensor x = rand_tensor({64, 10}, 4, DType::Float32, -30, 30);
  for (int64_t axis : {0, 1}) {
    const Tensor p = softmax(x, axis);
    expect_tensor_near(sum(p, {axis}), {axis == 0 ? 10 : 64}, std::vector<double>(axis == 0 ? 10 : 64, 1.0), 1e-5);
    for (double v : vals(p)) {
      EXPECT_GE(v, 0.0);
      EXPECT_LE(v, 1.0);
    }
    // exp(log_softmax) is softmax.
    expect_tensor_near(exp(log_softmax(x, axis)), {64, 10}, vals(p), 1e-5);
  }
}

TEST(Softmax, Errors) {
  const Tensor x = zeros({2, 3});
  EXPECT_ERROR((softmax(x, 2)), "softmax: axis 2 out of range for a tensor of 2 dims");
  EXPECT_ERROR((log_softmax(x, -3)), "log_softmax: axis -3 out of range");
  EXPECT_ERROR((softmax(arange(3), 0)), "softmax: not defined for int64 tensors");
  EXPECT_ERROR((log_softmax(arange(3), 0)), "log_softmax", "int64");
}

class SoftmaxOp : public vgrad_test::OnEachDevice {
 protected:
  // softmax and log_softmax along `axis` of `input`: values against the naive loop
  // (float32 and float64, every layout) and the gradient.
  void check_both(const std::string& what, const Tensor& input, int64_t axis) {
    for (bool log : {false, true}) {
      const Reference naive = [axis, log](const std::vector<HostValues>& in) {
        const int64_t wrapped = axis < 0 ? axis + int64_t(in[0].shape.size()) : axis;
        return HostValues{in[0].shape, naive_softmax(in[0].values, in[0].shape, wrapped, log)};
      };
      check(std::string(log ? "log_softmax " : "softmax ") + what + " axis " + std::to_string(axis),
            [axis, log](const Inputs& in) { return log ? log_softmax(in[0], axis) : softmax(in[0], axis); }, naive,
            {input});
    }
  }
};

TEST_P(SoftmaxOp, EveryAxisAndLayoutWithGradient) {
  for (int64_t axis : {0, 1, 2, -1, -2, -3}) check_both("[3, 4, 5]", rand_tensor({3, 4, 5}, 1, DType::Float64, -5, 5), axis);
  check_both("[5]", rnd({5}), 0);
  // Views as given: the CPU reads them in place.
  const Tensor base = rand_tensor({6, 4, 10}, 2, DType::Float64, -5, 5);
  for (const Tensor& view : {base.permute({2, 0, 1}), base.slice(2, 1, 10, 3), base.transpose(0, 1),
                             rand_tensor({4, 1}, 3, DType::Float64).expand({4, 6})})
    for (int64_t axis = 0; axis < view.dim(); ++axis) check_both(shape_str(view.shape()) + " view", view, axis);
  check_gradient("softmax of large logits", [](const Inputs& in) { return softmax(in[0] * 50.0, 1); },
                 {rnd({2, 4}) * 0.05});
}

INSTANTIATE_ON_EACH_DEVICE(SoftmaxOp);

}  // namespace

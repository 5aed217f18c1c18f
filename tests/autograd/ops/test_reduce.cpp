// Tests of the reductions (autograd/ops/reduce.cpp) against a naive reducer on every
// device: sum, mean, max/min, argmax/argmin and var over everything, single, several and
// negative axes, with and without keepdim, strided inputs, gradients; on the CPU, hand
// values, ties and NaN, int64, empty tensors, sum_to and the errors.
#include <functional>
#include <limits>

#include "op_check.h"

namespace {

using namespace vgrad;
using namespace vgrad_test;  // the op tests' shared helpers (op_check.h, support.h)

enum class Op { Sum, Mean, Max, Min, ArgMax, ArgMin, Var0, Var1 };

struct Expected {
  Shape shape;
  std::vector<double> values;
};

// Naive reduction of row-major `v` of `shape` over sorted, wrapped `axes` (empty = all).
Expected naive_reduce(const std::vector<double>& v, const Shape& shape, std::vector<int64_t> axes, bool keepdim, Op op) {
  if (axes.empty())
    for (int64_t d = 0; d < int64_t(shape.size()); ++d) axes.push_back(d);
  auto reduced = [&](int64_t d) { return std::find(axes.begin(), axes.end(), d) != axes.end(); };
  Shape kept;  // keepdim shape
  for (int64_t d = 0; d < int64_t(shape.size()); ++d) kept.push_back(reduced(d) ? 1 : shape[d]);
  const int64_t n_out = numel(kept);
  std::vector<std::vector<double>> groups(static_cast<size_t>(n_out));
  for (int64_t i = 0; i < numel(shape); ++i) {
    const auto index = vgrad_test::unravel(i, shape);
    int64_t out = 0;
    for (size_t d = 0; d < shape.size(); ++d) out = out * kept[d] + (reduced(int64_t(d)) ? 0 : index[d]);
    groups[out].push_back(v[i]);  // in increasing position along the reduced axes
  }
  Expected e;
  for (const auto& g : groups) {
    double sum = 0;
    for (double x : g) sum += x;
    const double mean = sum / double(g.size());
    double sq = 0;
    for (double x : g) sq += (x - mean) * (x - mean);
    switch (op) {
      case Op::Sum: e.values.push_back(sum); break;
      case Op::Mean: e.values.push_back(mean); break;
      case Op::Max: e.values.push_back(*std::max_element(g.begin(), g.end())); break;
      case Op::Min: e.values.push_back(*std::min_element(g.begin(), g.end())); break;
      case Op::ArgMax: e.values.push_back(double(std::max_element(g.begin(), g.end()) - g.begin())); break;
      case Op::ArgMin: e.values.push_back(double(std::min_element(g.begin(), g.end()) - g.begin())); break;
      case Op::Var0: e.values.push_back(sq / double(g.size())); break;
      case Op::Var1: e.values.push_back(sq / double(g.size() - 1)); break;
    }
  }
  for (int64_t d = 0; d < int64_t(shape.size()); ++d)
    if (!reduced(d)) e.shape.push_back(shape[d]);
    else if (keepdim) e.shape.push_back(1);
  return e;
}

Tensor run(Op op, const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  switch (op) {
    case Op::Sum: return sum(x, axes, keepdim);
    case Op::Mean: return mean(x, axes, keepdim);
    case Op::Max: return amax(x, axes, keepdim);
    case Op::Min: return amin(x, axes, keepdim);
    case Op::ArgMax: return argmax(x, axes.at(0), keepdim);
    case Op::ArgMin: return argmin(x, axes.at(0), keepdim);
    case Op::Var0: return var(x, axes, 0, keepdim);
    case Op::Var1: return var(x, axes, 1, keepdim);
  }
  return Tensor();
}

const char* op_name(Op op) {
  static const char* names[] = {"sum", "mean", "max", "min", "argmax", "argmin", "var0", "var1"};
  return names[int(op)];
}

std::vector<int64_t> wrapped(std::vector<int64_t> axes, int64_t ndim) {
  for (int64_t& a : axes) a = a < 0 ? a + ndim : a;
  std::sort(axes.begin(), axes.end());
  return axes;
}

class ReduceOp : public vgrad_test::OnEachDevice {
 protected:
  // Every reduction over every axis set, with and without keepdim: values against the
  // naive reducer (all layouts, both dtypes), gradients where `gradient` (argmax/argmin
  // have none).
  void check_all_axis_sets(const Tensor& x, const std::string& what, bool gradient) {
    const std::vector<std::vector<int64_t>> axis_sets{{},      {0},     {1},    {2},       {-1},     {-3},
                                                      {0, 1},  {0, 2},  {1, 2}, {2, 0},    {-1, -2}, {0, 1, 2},
                                                      {-3, 2}, {1, -3}};
    const int64_t ndim = x.dim();
    auto reference = [ndim](Op op, std::vector<int64_t> axes, bool keepdim) {
      return [=](const std::vector<vgrad_test::HostValues>& in) {
        const Expected e = naive_reduce(in[0].values, in[0].shape, wrapped(axes, ndim), keepdim, op);
        return vgrad_test::HostValues{e.shape, e.values};
      };
    };
    const vgrad_test::OpCheck options{.float32_tol = 1e-5, .gradient = gradient};
    for (Op op : {Op::Sum, Op::Mean, Op::Max, Op::Min, Op::Var0, Op::Var1})
      for (const auto& axes : axis_sets)
        for (bool keepdim : {false, true})
          check(what + " " + op_name(op) + " axes " + shape_str(axes) + (keepdim ? " keepdim" : ""),
                [=](const Inputs& in) { return run(op, in[0], axes, keepdim); }, reference(op, axes, keepdim), {x},
                options);
    for (Op op : {Op::ArgMax, Op::ArgMin})
      for (int64_t axis : {0, 1, 2, -1, -2, -3})
        for (bool keepdim : {false, true})
          check(what + " " + op_name(op) + " axis " + std::to_string(axis) + (keepdim ? " keepdim" : ""),
                [=](const Inputs& in) { return run(op, in[0], {axis}, keepdim); }, reference(op, {axis}, keepdim),
                {x}, {.gradient = false});
  }
};

// Random values: no ties, so amax/amin have a gradient and argmax/argmin one answer.
TEST_P(ReduceOp, EveryOpEveryAxisSetWithGradient) { check_all_axis_sets(rand_tensor({3, 4, 5}, 1), "[3, 4, 5]", true); }

// Views given as inputs (the CPU reads them in place; other devices get a copy), beside
// the layouts check_op makes itself.
TEST_P(ReduceOp, EveryOpEveryAxisSetOfViews) {
  const Tensor base = rand_tensor({5, 8, 6}, 3, DType::Float64);
  check_all_axis_sets(base.permute({2, 0, 1}), "permuted", false);
  check_all_axis_sets(base.slice(1, 1, 8, 2).slice(0, 0, 5, 2), "stepped", false);
  check_all_axis_sets(base.transpose(0, 2).slice(1, -3, 8), "transposed+narrowed", false);
  check_all_axis_sets(rand_tensor({3, 1, 5}, 4, DType::Float64).expand({3, 4, 5}), "expanded", false);
  check_all_axis_sets(rand_tensor({4, 5}, 5).expand({3, 4, 5}), "expanded leading", false);
}

// max(dim)/min(dim) as PyTorch's (torch 2.15, float64): the gradient goes to the first
// extreme alone (to the first NaN in a row with NaN), where amax shares it among ties.
TEST_P(ReduceOp, MaxMinAlongADimGiveTheGradientToTheFirstExtreme) {
  const double nan = std::nan("");
  const TensorOptions f64{.dtype = DType::Float64, .device = device(), .requires_grad = true};
  Tensor x = tensor(std::vector<double>{1, 3, 3, 2, 2, 0, 5, nan, nan}, {3, 3}, f64);
  const Tensor values = x.max(1);
  (values * tensor(std::vector<double>{1, 2, 3}, {3}, {.dtype = DType::Float64, .device = device()})).sum().backward();
  expect_all_near(vals(values.to(kCPU)), {3, 2, nan}, 0, "max(1)");
  EXPECT_EQ(vals(x.grad().to(kCPU)), (std::vector<double>{0, 1, 0, 2, 0, 0, 0, 3, 0}));
  x.zero_grad();
  const Tensor lowest = min(x, 0, true);
  lowest.sum().backward();
  EXPECT_EQ(lowest.shape(), (Shape{1, 3}));
  expect_all_near(vals(lowest.to(kCPU)), {1, nan, nan}, 0, "min(0, keepdim)");
  EXPECT_EQ(vals(x.grad().to(kCPU)), (std::vector<double>{1, 0, 0, 0, 0, 0, 0, 1, 1}));
  Tensor ties = tensor(std::vector<double>{1, 3, 3, 2}, {2, 2}, f64);
  ties.max().backward();  // max() over everything is amax, as PyTorch's: ties share
  EXPECT_EQ(vals(ties.grad().to(kCPU)), (std::vector<double>{0, 0.5, 0.5, 0}));
  Tensor scalar = tensor(std::vector<double>{4}, {}, f64);
  scalar.min(0).backward();
  EXPECT_EQ(vals(scalar.grad().to(kCPU)), (std::vector<double>{1}));
  EXPECT_ERROR(x.min(2), "min: axis 2");
}

INSTANTIATE_ON_EACH_DEVICE(ReduceOp);

TEST(Reduce, HandComputed) {
  const Tensor x = tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3});
  EXPECT_EQ(sum(x).item(), 21);
  EXPECT_EQ(sum(x).dim(), 0);
  expect_tensor_near(sum(x, {0}), {3}, {5, 7, 9}, 0);
  expect_tensor_near(sum(x, {1}, true), {2, 1}, {6, 15}, 0);
  expect_tensor_near(mean(x, {-1}), {2}, {2, 5}, 0);
  EXPECT_EQ(mean(x).item(), 3.5);
  expect_tensor_near(amax(x, {0}), {3}, {4, 5, 6}, 0);
  expect_tensor_near(amin(x, {1}), {2}, {1, 4}, 0);
  expect_tensor_near(argmax(x, 1), {2}, {2, 2}, 0);
  expect_tensor_near(argmin(x, 0, true), {1, 3}, {0, 0, 0}, 0);
  EXPECT_DOUBLE_EQ(var(x).item(), 3.5);          // sample variance of 1..6
  EXPECT_NEAR(var(x, {}, 0).item(), 35.0 / 12, 1e-6);  // population variance
  expect_tensor_near(var(x, {1}), {2}, {1, 1}, 1e-6);
  // Method forms.
  EXPECT_EQ(x.sum().item(), 21);
  expect_tensor_near(x.sum({0}, true), {1, 3}, {5, 7, 9}, 0);
  EXPECT_EQ(x.mean().item(), 3.5);
  EXPECT_EQ(x.max().item(), 6);
  EXPECT_EQ(x.min().item(), 1);
  expect_tensor_near(x.max(0), {3}, {4, 5, 6}, 0);
  expect_tensor_near(x.min(1, true), {2, 1}, {1, 4}, 0);
  expect_tensor_near(x.argmax(0), {3}, {1, 1, 1}, 0);
  expect_tensor_near(x.argmin(-1), {2}, {0, 0}, 0);
  EXPECT_DOUBLE_EQ(x.var().item(), 3.5);
  expect_tensor_near(x.var({0}, 0, true), {1, 3}, {2.25, 2.25, 2.25}, 1e-6);
}

TEST(Reduce, LongRowsAndColumns) {
  // Long rows take the multi-accumulator row-sum path; long columns the column path.
  const Tensor x = rand_tensor({7, 1003}, 6, DType::Float64);
  const auto v = vals(x);
  const Expected rows = naive_reduce(v, x.shape(), {1}, false, Op::Sum);
  const Expected cols = naive_reduce(v, x.shape(), {0}, false, Op::Sum);
  expect_tensor_near(sum(x, {1}), rows.shape, rows.values, 1e-12, "row sums");
  expect_tensor_near(sum(x, {0}), cols.shape, cols.values, 1e-12, "column sums");
  expect_tensor_near(mean(x, {1}), {7}, naive_reduce(v, x.shape(), {1}, false, Op::Mean).values, 1e-12, "row means");
  expect_tensor_near(amax(x, {1}), {7}, naive_reduce(v, x.shape(), {1}, false, Op::Max).values, 0, "row max");
  expect_tensor_near(argmin(x, 1), {7}, naive_reduce(v, x.shape(), {1}, false, Op::ArgMin).values, 0, "row argmin");
  // float32 sums of many values stay close to the double result.
  const Tensor f = rand_tensor({100000}, 7, DType::Float32, 0, 1);
  double exact = 0;
  for (double value : vals(f)) exact += value;
  EXPECT_NEAR(sum(f).item(), exact, 1e-5 * exact);
  EXPECT_NEAR(mean(f).item(), exact / 1e5, 1e-5);
}

TEST(Reduce, ArgExtremaTiesAndNaN) {
  // The first extreme wins ties.
  const Tensor t = tensor({3.f, 1.f, 3.f, 1.f, 2.f, 2.f}, {2, 3});
  expect_tensor_near(argmax(t, 1), {2}, {0, 1}, 0);
  expect_tensor_near(argmin(t, 1), {2}, {1, 0}, 0);
  expect_tensor_near(argmax(tensor({5.f, 5.f, 5.f}), 0), {}, {0}, 0);
  // NaN counts as the extreme (NumPy), for max, min and their indices.
  const Tensor n = tensor({1, NAN, 3, 2});
  EXPECT_EQ(argmax(n, 0).item(), 1);
  EXPECT_EQ(argmin(n, 0).item(), 1);
  EXPECT_TRUE(std::isnan(amax(n).item()));
  EXPECT_TRUE(std::isnan(amin(n).item()));
  EXPECT_TRUE(std::isnan(amax(tensor({NAN, 1}), {0}).item()));
  EXPECT_TRUE(std::isnan(amin(tensor({1, NAN}), {0}).item()));
  // Infinities are ordinary extremes.
  EXPECT_EQ(amax(tensor({-INFINITY, -1})).item(), -1);
  EXPECT_EQ(amin(tensor({INFINITY, 1e30f})).item(), 1e30f);
  // A size-1 axis has index 0.
  expect_tensor_near(argmax(tensor({4.f, 2.f}, {2, 1}), 1), {2}, {0, 0}, 0);
}

TEST(Reduce, Int64) {
  const Tensor x = tensor(std::vector<int64_t>{5, -3, 7, 7, 0, -9}, {2, 3});
  EXPECT_EQ(sum(x).dtype(), DType::Int64);
  EXPECT_EQ(sum(x).item<int64_t>(), 7);
  EXPECT_EQ(sum(x, {0}).to_vector<int64_t>(), (std::vector<int64_t>{12, -3, -2}));
  EXPECT_EQ(amax(x, {1}).to_vector<int64_t>(), (std::vector<int64_t>{7, 7}));
  EXPECT_EQ(amin(x).item<int64_t>(), -9);
  EXPECT_EQ(argmax(x, 1).to_vector<int64_t>(), (std::vector<int64_t>{2, 0}));
  EXPECT_EQ(argmin(x, 0).to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 1}));
  const int64_t big = (int64_t{1} << 60);
  EXPECT_EQ(sum(tensor(std::vector<int64_t>{big, 1, 2})).item<int64_t>(), big + 3);  // exact, no float detour
  EXPECT_ERROR(mean(x), "mean: not defined for int64");
  EXPECT_ERROR(var(x), "int64");
}

TEST(Reduce, ZeroDimAndEmpty) {
  const Tensor s = scalar_tensor(4);
  EXPECT_EQ(sum(s).item(), 4);
  EXPECT_EQ(sum(s, {0}).item(), 4);
  EXPECT_EQ(sum(s, {-1}, true).dim(), 0);
  EXPECT_EQ(mean(s).item(), 4);
  EXPECT_EQ(amax(s).item(), 4);
  EXPECT_EQ(argmax(s, 0).item(), 0);
  EXPECT_EQ(argmin(s, -1).item(), 0);
  // Sums of nothing are 0; extremes and means of nothing are errors.
  EXPECT_EQ(sum(zeros({0})).item(), 0);
  expect_tensor_near(sum(zeros({0, 3}), {0}), {3}, {0, 0, 0}, 0);
  EXPECT_EQ(sum(zeros({3, 0}), {0}).shape(), (Shape{0}));
  EXPECT_ERROR((amax(zeros({0, 3}))), "max", "empty", "[0, 3]");
  EXPECT_ERROR((amin(zeros({2, 0}), {1})), "min", "empty");
  EXPECT_ERROR((argmax(zeros({0, 3}), 0)), "argmax", "empty");
  EXPECT_ERROR((mean(zeros({0}))), "mean", "empty");
  // Reducing a non-empty axis of a tensor with an empty other axis is fine for sum.
  EXPECT_EQ(amax(zeros({3, 0}), {0}).shape(), (Shape{0}));
}

TEST(Reduce, BadAxesNameOpAndAxis) {
  const Tensor x = zeros({2, 3, 4});
  EXPECT_ERROR((sum(x, {3})), "sum: axis 3 out of range for a tensor of 3 dims");
  EXPECT_ERROR((sum(x, {-4})), "sum: axis -4 out of range");
  EXPECT_ERROR((mean(x, {0, 5})), "mean: axis 5 out of range");
  EXPECT_ERROR((amax(x, {7})), "max: axis 7");
  EXPECT_ERROR((amin(x, {-9})), "min: axis -9");
  EXPECT_ERROR((argmax(x, 3)), "argmax: axis 3 out of range for a tensor of 3 dims");
  EXPECT_ERROR((argmin(x, -4)), "argmin: axis -4");
  EXPECT_ERROR((var(x, {3})), "var: axis 3");
  EXPECT_ERROR(x.max(3), "max: axis 3");
  EXPECT_ERROR((sum(x, {1, -2})), "sum: axis listed twice");
  EXPECT_ERROR((sum(scalar_tensor(1), {1})), "sum: axis 1 out of range for a tensor of 0 dims");
  EXPECT_ERROR((var(zeros({1, 3}), {0})), "var", "no degrees of freedom", "[1, 3]");
  EXPECT_ERROR((var(zeros({4}), {0}, 4)), "var", "correction 4");
}

TEST(Reduce, SumTo) {
  const Tensor g = tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3});
  expect_tensor_near(sum_to(g, {3}), {3}, {5, 7, 9}, 0);
  expect_tensor_near(sum_to(g, {1, 3}), {1, 3}, {5, 7, 9}, 0);
  expect_tensor_near(sum_to(g, {2, 1}), {2, 1}, {6, 15}, 0);
  expect_tensor_near(sum_to(g, {}), {}, {21}, 0);
  expect_tensor_near(sum_to(g, {1, 1}), {1, 1}, {21}, 0);
  EXPECT_TRUE(sum_to(g, {2, 3}).is_same(g));
  // Higher rank: (2, 3, 4) down to (3, 1).
  const Tensor h = rand_tensor({2, 3, 4}, 8, DType::Float64);
  const Expected e = naive_reduce(vals(h), h.shape(), {0, 2}, true, Op::Sum);
  expect_tensor_near(sum_to(h, {3, 1}), {3, 1}, e.values, 1e-12);
  EXPECT_ERROR((sum_to(g, {2, 2, 3})), "sum_to", "[2, 3]", "[2, 2, 3]");
}

TEST(Subgradient, AmaxAminTiesShareTheGradient) {
  EXPECT_EQ(grad_at([](const Tensor& x) { return amax(x); }, {1, 3, 3, 2}), (std::vector<double>{0, 0.5, 0.5, 0}));
  EXPECT_EQ(grad_at([](const Tensor& x) { return amin(x); }, {1, 1, 1, 2}),
            (std::vector<double>{1.0 / 3, 1.0 / 3, 1.0 / 3, 0}));
  EXPECT_EQ(grad_at([](const Tensor& x) { return amax(x.reshape({2, 2}), {1}); }, {5, 5, 1, 4}),
            (std::vector<double>{0.5, 0.5, 0, 1}));
}

}  // namespace

// Tests for the index ops (autograd/ops/index.cpp): gather, scatter_add, masked_fill.
// Values and gradients against PyTorch's numbers, on every device present; gradchecks in
// float64; the bad inputs (dims, dtypes, shapes, out-of-range and negative indices).
//
// The PyTorch numbers (torch 2.15.0, CPU) are those printed by tests/reference/index_ops_reference.py.
#include <cmath>
#include <limits>

#include "op_check.h"

namespace {

using namespace vgrad;
using namespace vgrad_test;  // the op tests' shared helpers (op_check.h, support.h)

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Tensor indices(const std::vector<int64_t>& values, const Shape& shape) { return tensor(values, shape); }

// x = arange(12).reshape(3, 4) * 1.5 - 2, float32
Tensor x34() { return arange(0, 12, 1).reshape({3, 4}) * 1.5 - 2.0; }

// Element by element, NaN equal to NaN (masked_fill's NaN cases).
void expect_same(const Tensor& got, const Shape& shape, const std::vector<double>& want) {
  EXPECT_EQ(got.shape(), shape);
  const std::vector<double> values = vals(got);
  ASSERT_EQ(values.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(want[i]))
      EXPECT_TRUE(std::isnan(values[i])) << "element " << i << ": " << values[i];
    else
      EXPECT_EQ(values[i], want[i]) << "element " << i;
  }
}

class IndexOp : public OnEachDevice {
 protected:
  Tensor on(const Tensor& t) const { return t.to(device()); }
};

// ---------------- gather ----------------

TEST_P(IndexOp, GatherValuesAsPyTorch) {
  const Tensor x = on(x34());
  expect_same(gather(x, 1, on(indices({0, 3, 3, 1, 0, 2}, {2, 3}))), {2, 3}, {-2, 2.5, 2.5, 5.5, 4, 7});
  expect_same(x.gather(0, on(indices({2, 0, 1, 2, 0, 0, 0, 1}, {2, 4}))), {2, 4},
              {10, -0.5, 7, 14.5, -2, -0.5, 1, 8.5});
  const Tensor cube = on(arange(0, 24, 1).reshape({2, 3, 4}));
  expect_same(gather(cube, -1, on(indices({3, 0, 1, 1, 2, 2, 0, 3}, {2, 2, 2}))), {2, 2, 2},
              {3, 0, 5, 5, 14, 14, 16, 19});
  // A transposed (strided) x, and a strided index: the stepped index is {2, 1, 0; 0, 2, 2}.
  expect_same(gather(x.t(), 0, on(indices({2, 1, 0, 0, 2, 2}, {2, 3}))), {2, 3}, {1, 5.5, 10, -2, 7, 13});
  const Tensor stepped = on(indices({2, 9, 1, 9, 0, 9, 0, 9, 2, 9, 2, 9}, {2, 6})).slice(1, 0, 6, 2);
  expect_same(gather(x.t(), 0, stepped), {2, 3}, {1, 5.5, 10, -2, 7, 13});
  // float64 and int64 data keep their dtype.
  EXPECT_EQ(gather(x.to(DType::Float64), 1, on(indices({3}, {1, 1}))).dtype(), DType::Float64);
  const Tensor labels = on(tensor({10, 11, 12, 13, 14, 15}, {2, 3}));
  const Tensor picked = gather(labels, 1, on(indices({2, 0}, {2, 1})));
  EXPECT_EQ(picked.dtype(), DType::Int64);
  EXPECT_EQ(picked.to_vector<int64_t>(), (std::vector<int64_t>{12, 13}));
}

TEST_P(IndexOp, GatherEdges) {
  // 0-d x pairs with a 0-d or 1-D index, as PyTorch.
  const Tensor five = on(scalar_tensor(5));
  expect_same(gather(five, 0, on(tensor(std::vector<int64_t>{0}, {}))), {}, {5});
  expect_same(gather(five, -1, on(indices({0, 0}, {2}))), {2}, {5, 5});
  // An empty index gives an empty result of its shape.
  EXPECT_EQ(gather(on(x34()), 1, on(zeros({0, 2}, {.dtype = DType::Int64}))).shape(), (Shape{0, 2}));
  // index.size(axis) may exceed x.size(axis).
  expect_same(gather(on(x34()), 1, on(indices({0, 1, 2, 0, 3, 3}, {1, 6}))), {1, 6}, {-2, -0.5, 1, -2, 2.5, 2.5});
}

TEST_P(IndexOp, GatherGradientAsPyTorch) {
  // Repeated indices accumulate: x.grad[0][3] = 2 + 3.
  Tensor x = on(x34()).detach().requires_grad_();
  const Tensor out = gather(x, 1, on(indices({0, 3, 3, 1, 0, 2}, {2, 3})));
  (out * on(tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3}))).sum().backward();
  expect_values(x.grad(), {1, 0, 0, 5, 5, 4, 6, 0, 0, 0, 0, 0});
}

TEST_P(IndexOp, GatherGradcheck) {
  auto op = [](int64_t axis) { return [axis](const Inputs& in) { return gather(in[0], axis, in[1]); }; };
  check_gradient("gather axis 0, repeats", op(0), {rnd({3, 4}), indices({2, 2, 0, 1, 2, 2, 0, 1}, {2, 4})});
  check_gradient("gather axis 1, index larger along it", op(1), {rnd({3, 2}), indices({1, 1, 0, 0, 1}, {1, 5})});
  check_gradient("gather axis -1, 3-D", op(-1), {rnd({2, 3, 4}), indices({3, 0, 1, 1, 2, 2, 0, 3}, {2, 2, 2})});
  check_gradient("gather of transposed", [](const Inputs& in) { return gather(in[0].t(), 0, in[1]); },
                 {rnd({3, 4}), indices({3, 1, 0, 2, 2, 2}, {2, 3})});
  check_gradient("gather 0-d", op(0), {rnd({}), indices({0, 0, 0}, {3})});
}

TEST_P(IndexOp, GatherRefusesBadIndexValues) {
  // On a GPU the error comes at the next host read (vals), worded as on the CPU.
  const Tensor x = on(x34());
  EXPECT_ERROR(vals(gather(x, 1, on(indices({0, 1, 3, 0, 4, 1}, {2, 3})))),
               "gather: index 4 out of range for dim 1 of size 4 (position 4)");
  EXPECT_ERROR(vals(gather(x, 0, on(indices({0, -1}, {1, 2})))),
               "gather: index -1 out of range for dim 0 of size 3 (position 1)");
  EXPECT_ERROR(vals(gather(x, 1, on(indices({int64_t{1} << 62}, {1, 1})))),
               "gather: index 4611686018427387904 out of range");
}

// ---------------- scatter_add ----------------

TEST_P(IndexOp, ScatterAddValuesAsPyTorch) {
  const Tensor x = on(x34()), src = on(arange(0, 15, 1).reshape({3, 5}) + 100.0);
  // src larger than index: only its leading [2, 3] part is added; repeats accumulate.
  expect_same(scatter_add(x, 1, on(indices({0, 0, 3, 2, 1, 2}, {2, 3})), src), {3, 4},
              {199, -0.5, 1, 104.5, 4, 111.5, 219, 8.5, 10, 11.5, 13, 14.5});
  expect_same(x.scatter_add(0, on(indices({2, 2, 0, 1, 2, 0, 0, 1}, {2, 4})), src.narrow(0, 0, 2).narrow(1, 0, 4)),
              {3, 4}, {-2, 105.5, 210, 2.5, 4, 5.5, 7, 219.5, 215, 112.5, 13, 14.5});
  expect_same(scatter_add(on(zeros({2, 3, 2})), 1, on(indices({2, 0, 2, 2, 1, 1, 0, 2}, {2, 2, 2})),
                          on(arange(1, 9, 1).reshape({2, 2, 2}))),
              {2, 3, 2}, {0, 2, 0, 0, 4, 4, 7, 0, 5, 6, 0, 8});
  expect_same(scatter_add(on(scalar_tensor(1)), 0, on(tensor(std::vector<int64_t>{0}, {})), on(scalar_tensor(2.5))), {},
              {3.5});
  // x itself is untouched; a transposed x works.
  expect_same(x, {3, 4}, {-2, -0.5, 1, 2.5, 4, 5.5, 7, 8.5, 10, 11.5, 13, 14.5});
  expect_same(scatter_add(x.t(), 0, on(indices({2, 2, 0}, {1, 3})), on(ones({1, 3}))), {4, 3},
              {-2, 4, 11, -0.5, 5.5, 11.5, 2, 8, 13, 2.5, 8.5, 14.5});
  // An empty index adds nothing.
  expect_same(scatter_add(x, 1, on(zeros({0, 4}, {.dtype = DType::Int64})), on(zeros({0, 4}))), {3, 4}, vals(x));
}

TEST_P(IndexOp, ScatterAddGradientAsPyTorch) {
  Tensor x = on(x34()).detach().requires_grad_();
  Tensor src = on(arange(0, 6, 1).reshape({2, 3}) + 100.0).detach().requires_grad_();
  (scatter_add(x, 1, on(indices({0, 0, 3, 2, 1, 2}, {2, 3})), src) * on(arange(1, 13, 1).reshape({3, 4})))
      .sum()
      .backward();
  expect_values(x.grad(), {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  expect_values(src.grad(), {1, 1, 4, 7, 6, 7});
  // Where src is larger than index, the unused entries get 0. NOTE: PyTorch refuses this
  // backward ("invalid gradient ... got [2, 3] but expected shape compatible with [3, 5]").
  Tensor big = on(zeros({3, 5})).requires_grad_();
  (scatter_add(on(x34()), 1, on(indices({0, 0, 3, 2, 1, 2}, {2, 3})), big) * on(arange(1, 13, 1).reshape({3, 4})))
      .sum()
      .backward();
  expect_values(big.grad(), {1, 1, 4, 0, 0, 7, 6, 7, 0, 0, 0, 0, 0, 0, 0});
}

TEST_P(IndexOp, ScatterAddGradcheck) {
  auto op = [](int64_t axis) { return [axis](const Inputs& in) { return scatter_add(in[0], axis, in[1], in[2]); }; };
  check_gradient("scatter_add axis 0, repeats", op(0),
                 {rnd({3, 4}), indices({2, 2, 0, 1, 2, 0, 0, 1}, {2, 4}), rnd({2, 4})});
  check_gradient("scatter_add axis 1, src larger", op(1),
                 {rnd({3, 4}), indices({0, 0, 3, 2, 1, 2}, {2, 3}), rnd({3, 5})});
  check_gradient("scatter_add axis -1, 3-D", op(-1),
                 {rnd({2, 3, 2}), indices({1, 0, 0, 0, 1, 1, 0, 1}, {2, 2, 2}), rnd({2, 2, 2})});
  check_gradient("scatter_add 0-d", op(0), {rnd({}), tensor(std::vector<int64_t>{0}, {}), rnd({})});
  check_gradient("scatter_add then gather",
                 [](const Inputs& in) { return gather(scatter_add(in[0], 1, in[1], in[2]) * in[0], 1, in[1]); },
                 {rnd({3, 4}), indices({3, 3, 0, 1, 2, 1}, {3, 2}), rnd({3, 2})});
}

TEST_P(IndexOp, ScatterAddRefusesBadIndexValues) {
  const Tensor x = on(x34()), src = on(ones({2, 2}));
  EXPECT_ERROR(vals(scatter_add(x, 0, on(indices({0, 1, 2, 3}, {2, 2})), src)),
               "scatter_add: index 3 out of range for dim 0 of size 3 (position 3)");
  EXPECT_ERROR(vals(scatter_add(x, 1, on(indices({-4, 0}, {2, 1})), src)),
               "scatter_add: index -4 out of range for dim 1 of size 4 (position 0)");
}

TEST(Index, ShapeAndDtypeErrors) {
  const Tensor x = x34(), src = ones({3, 4});
  EXPECT_ERROR(gather(x, 1, tensor({0.f, 1.f}, {1, 2})), "gather: index must be int64, got float32 [1, 2]");
  EXPECT_ERROR(gather(x, 1, indices({0, 1}, {2})), "gather: index [2] must have the same number of dims as x [3, 4]");
  EXPECT_ERROR(gather(x, 1, indices({0, 0, 0, 0}, {4, 1})),
               "gather: index [4, 1] is larger than x [3, 4] in dim 0 (4 > 3; only dim 1 may be larger)");
  EXPECT_ERROR(gather(x, 2, indices({0}, {1, 1})), "gather: axis 2 out of range for a tensor of 2 dims");
  EXPECT_ERROR(gather(x, -3, indices({0}, {1, 1})), "gather: axis -3 out of range");
  EXPECT_ERROR(scatter_add(x, 0, tensor({0.f}, {1, 1}), src), "scatter_add: index must be int64, got float32");
  EXPECT_ERROR(scatter_add(x, 0, indices({0, 0, 0}, {1, 3}), ones({1, 2})),
               "scatter_add: index [1, 3] is larger than src [1, 2] in dim 1 (3 > 2)");
  EXPECT_ERROR(scatter_add(x, 1, indices({0, 0, 0, 0}, {4, 1}), ones({4, 1})),
               "scatter_add: index [4, 1] is larger than x [3, 4] in dim 0 (4 > 3; only dim 1 may be larger)");
  EXPECT_ERROR(scatter_add(x, 0, indices({0}, {1, 1}), ones({1})),
               "scatter_add: src [1] must have the same number of dims as x [3, 4]");
  EXPECT_ERROR(scatter_add(x, 0, indices({0}, {1, 1}), ones({1, 1}, {.dtype = DType::Float64})),
               "scatter_add: src is float64, x is float32 (they must match)");
  EXPECT_ERROR(masked_fill(x, ones({2, 4}), 0), "masked_fill: cannot broadcast [3, 4] with [2, 4] (dim 0: 3 vs 2)");
  // Nothing was written by a refused op.
  Tensor kept = x34();
  EXPECT_ERROR(scatter_add(kept, 0, indices({5}, {1, 1}), ones({1, 1})), "scatter_add: index 5 out of range");
  EXPECT_EQ(vals(kept), vals(x34()));
}

// ---------------- masked_fill ----------------

TEST_P(IndexOp, MaskedFillValuesAsPyTorch) {
  const Tensor m = on(tensor(std::vector<double>{1, 0, kNaN, 2, kNaN, 4}, {2, 3}));
  // Float 0/1 masks (vgrad has no bool): a NaN where not filled stays, one where filled goes.
  expect_same(masked_fill(m, on(tensor({1.f, 0.f, 1.f})), -1), {2, 3}, {-1, 0, -1, -1, kNaN, -1});
  expect_same(m.masked_fill(on(tensor({0.f, 1.f}, {2, 1})), kNaN), {2, 3}, {1, 0, kNaN, kNaN, kNaN, kNaN});
  // A mask larger than x broadcasts x up, as torch's out-of-place masked_fill.
  expect_same(masked_fill(on(tensor({1.f, 2.f})), on(tensor({1.f, 0.f, 0.f, 0.f, 0.f, 1.f}, {3, 2})), 9), {3, 2},
              {9, 2, 1, 2, 1, 9});
  // int64 x: the value converts to int64 (truncated, as torch).
  const Tensor ints = on(tensor({3, 4, 5}));
  const Tensor mask = on(tensor({1.f, 0.f, 1.f}));
  EXPECT_EQ(masked_fill(ints, mask, 7).to_vector<int64_t>(), (std::vector<int64_t>{7, 4, 7}));
  EXPECT_EQ(masked_fill(ints, mask, 2.7).to_vector<int64_t>(), (std::vector<int64_t>{2, 4, 2}));
  // Any nonzero mask value fills (an int64 mask, a comparison's mask); dtype and infinities kept.
  // NaN is nonzero: it fills.
  expect_same(masked_fill(on(tensor({1.f, 2.f})), on(tensor(std::vector<double>{kNaN, 0})), 5), {2}, {5, 2});
  const Tensor filled = masked_fill(m.to(DType::Float32), on(tensor({0, -3, 0}, {1, 3})), -INFINITY);
  EXPECT_EQ(filled.dtype(), DType::Float32);
  expect_same(filled, {2, 3}, {1, -INFINITY, kNaN, 2, -INFINITY, 4});
  const Tensor r = on(tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3}));
  expect_same(masked_fill(r, r > 2.5, 0), {2, 3}, {1, 2, 0, 0, 0, 0});
  // 0-d and empty.
  expect_same(masked_fill(on(scalar_tensor(3)), on(scalar_tensor(1)), 4), {}, {4});
  EXPECT_EQ(masked_fill(on(zeros({0, 3})), mask, 1).shape(), (Shape{0, 3}));
}

TEST_P(IndexOp, MaskedFillGradientAsPyTorch) {
  Tensor x = on(tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3})).requires_grad_();
  (masked_fill(x, x.detach() > 2.5, 0) * on(tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3}))).sum().backward();
  expect_values(x.grad(), {1, 2, 0, 0, 0, 0});
}

TEST_P(IndexOp, MaskedFillGradcheck) {
  auto op = [](const Inputs& in) { return masked_fill(in[0], in[1], 0.5); };
  auto mask = [](const std::vector<float>& values, const Shape& shape) { return tensor(values, shape); };
  check_gradient("masked_fill same shape", op, {rnd({2, 3}), mask({1, 0, 0, 1, 1, 0}, {2, 3})});
  check_gradient("masked_fill broadcast mask", op, {rnd({2, 3}), mask({0, 1, 0}, {3})});
  check_gradient("masked_fill mask larger than x", op, {rnd({3}), mask({1, 0, 0, 0, 1, 0}, {2, 3})});
  check_gradient("masked_fill of transposed", [](const Inputs& in) { return masked_fill(in[0].t(), in[1], -1); },
                 {rnd({3, 2}), mask({1, 0, 1}, {3})});
}

INSTANTIATE_ON_EACH_DEVICE(IndexOp);

}  // namespace

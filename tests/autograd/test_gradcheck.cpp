// Every differentiable op in core/ops.h against central differences (gradcheck,
// float64), including broadcast shapes, batched matmul and a whole small MLP; and
// gradcheck itself: that it catches a wrong rule, names the input, and raises.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "vgrad.h"

namespace {

using namespace vgrad;
using autograd::GradcheckOptions;
using autograd::GradcheckReport;
using Inputs = std::vector<Tensor>;
using Fn = std::function<Tensor(const Inputs&)>;

Generator& generator() {
  static Generator gen(20240521);
  return gen;
}
constexpr TensorOptions kF64{.dtype = DType::Float64};

Tensor rnd(const Shape& shape) { return randn(shape, kF64, &generator()); }
Tensor positive(const Shape& shape, double low = 0.5, double high = 2.0) {
  return uniform(shape, low, high, kF64, &generator());
}
// Uniform in [-2, 2], moved at least `margin` away from every kink (relu at 0, clamp's bounds).
Tensor away_from(const Shape& shape, const std::vector<double>& kinks, double margin = 0.1) {
  std::vector<double> values = uniform(shape, -2.0, 2.0, kF64, &generator()).to_vector<double>();
  for (double& v : values)
    for (int pass = 0; pass < 2; ++pass)
      for (double k : kinks)
        if (std::abs(v - k) < margin) v = k + (v >= k ? 2 * margin : -2 * margin);
  return tensor(values, shape);
}
// Integers in [-3, 3) plus a fraction in [low, high): two such tensors with disjoint
// fraction ranges never tie (for maximum/minimum).
Tensor with_fraction(const Shape& shape, double low, double high) {
  std::vector<double> values = uniform(shape, -3.0, 3.0, kF64, &generator()).to_vector<double>();
  const std::vector<double> fractions = uniform(shape, low, high, kF64, &generator()).to_vector<double>();
  for (size_t i = 0; i < values.size(); ++i) values[i] = std::floor(values[i]) + fractions[i];
  return tensor(values, shape);
}
Tensor indices(const std::vector<int64_t>& values) { return tensor(values); }

void check(const std::string& what, const Fn& fn, const Inputs& inputs, GradcheckOptions options = {}) {
  const GradcheckReport report = autograd::gradcheck(fn, inputs, options);
  EXPECT_TRUE(report.ok) << what << ": " << report.message;
}

// Shape pairs for binary ops: equal, (N,D)*(D,), (N,1)+(1,D), (B,N,D) with (N,1), and a 0-d operand.
const std::vector<std::pair<Shape, Shape>> kBroadcastPairs = {
    {{3, 4}, {3, 4}}, {{3, 4}, {4}}, {{4}, {3, 4}}, {{3, 1}, {1, 4}}, {{2, 3, 4}, {3, 1}}, {{}, {3, 4}}, {{3, 4}, {}}};

std::string pair_str(const std::pair<Shape, Shape>& p) { return shape_str(p.first) + " with " + shape_str(p.second); }

// ---------------------------------------------------------------- elementwise

TEST(Gradcheck, AddSubMulWithBroadcasting) {
  for (const auto& p : kBroadcastPairs) {
    check("add " + pair_str(p), [](const Inputs& in) { return add(in[0], in[1]); }, {rnd(p.first), rnd(p.second)});
    check("sub " + pair_str(p), [](const Inputs& in) { return in[0] - in[1]; }, {rnd(p.first), rnd(p.second)});
    check("mul " + pair_str(p), [](const Inputs& in) { return in[0] * in[1]; }, {rnd(p.first), rnd(p.second)});
  }
}

TEST(Gradcheck, DivWithBroadcasting) {
  for (const auto& p : kBroadcastPairs)
    check("div " + pair_str(p), [](const Inputs& in) { return div(in[0], in[1]); },
          {rnd(p.first), away_from(p.second, {0}, 0.5)});
}

TEST(Gradcheck, PowTensorExponentWithBroadcasting) {
  for (const auto& p : kBroadcastPairs)
    check("pow " + pair_str(p), [](const Inputs& in) { return pow(in[0], in[1]); },
          {positive(p.first), rnd(p.second)});
}

TEST(Gradcheck, PowScalarForms) {
  for (double exponent : {2.0, 3.0, -1.0})
    check("pow(x, " + std::to_string(exponent) + ")", [exponent](const Inputs& in) { return pow(in[0], exponent); },
          {away_from({3, 4}, {0}, 0.3)});
  for (double exponent : {0.5, -1.5, 2.7})
    check("pow(x, " + std::to_string(exponent) + ")", [exponent](const Inputs& in) { return in[0].pow(exponent); },
          {positive({3, 4})});
  check("pow(2.5, x)", [](const Inputs& in) { return pow(2.5, in[0]); }, {rnd({3, 4})});
  check("pow(0.5, x)", [](const Inputs& in) { return pow(0.5, in[0]); }, {rnd({2, 3})});
}

TEST(Gradcheck, MaximumMinimumWithoutTies) {
  // a has fractional parts in [0, 0.3), b in [0.5, 0.8): every pair, broadcast or not, differs by >= 0.2.
  for (const auto& p : kBroadcastPairs) {
    const Tensor a = with_fraction(p.first, 0.0, 0.3), b = with_fraction(p.second, 0.5, 0.8);
    check("maximum " + pair_str(p), [](const Inputs& in) { return maximum(in[0], in[1]); }, {a, b});
    check("minimum " + pair_str(p), [](const Inputs& in) { return minimum(in[0], in[1]); }, {a, b});
  }
}

TEST(Gradcheck, SmoothUnaryOps) {
  const Shape shape{3, 4};
  check("neg", [](const Inputs& in) { return neg(in[0]); }, {rnd(shape)});
  check("unary minus", [](const Inputs& in) { return -in[0]; }, {rnd(shape)});
  check("exp", [](const Inputs& in) { return exp(in[0]); }, {rnd(shape)});
  check("log", [](const Inputs& in) { return log(in[0]); }, {positive(shape)});
  check("sqrt", [](const Inputs& in) { return sqrt(in[0]); }, {positive(shape)});
  check("sigmoid", [](const Inputs& in) { return sigmoid(in[0]); }, {rnd(shape) * 3.0});
  check("tanh", [](const Inputs& in) { return tanh(in[0]); }, {rnd(shape) * 2.0});
  check("gelu", [](const Inputs& in) { return gelu(in[0]); }, {rnd(shape) * 2.0});
  check("square", [](const Inputs& in) { return square(in[0]); }, {rnd(shape)});
  check("affine", [](const Inputs& in) { return affine(in[0], 2.5, -1.0); }, {rnd(shape)});
  check("method forms", [](const Inputs& in) { return in[0].exp() + in[0].tanh() + in[0].sigmoid(); }, {rnd(shape)});
}

TEST(Gradcheck, ScalarOperators) {
  const Tensor x = away_from({2, 3}, {0}, 0.3);
  check("x + 2", [](const Inputs& in) { return in[0] + 2.0; }, {x});
  check("x - 2", [](const Inputs& in) { return in[0] - 2.0; }, {x});
  check("x * 3", [](const Inputs& in) { return in[0] * 3.0; }, {x});
  check("x / 4", [](const Inputs& in) { return in[0] / 4.0; }, {x});
  check("2 + x", [](const Inputs& in) { return 2.0 + in[0]; }, {x});
  check("2 - x", [](const Inputs& in) { return 2.0 - in[0]; }, {x});
  check("3 * x", [](const Inputs& in) { return 3.0 * in[0]; }, {x});
  check("3 / x", [](const Inputs& in) { return 3.0 / in[0]; }, {x});
}

TEST(Gradcheck, OpsWithKinksAwayFromTheKinks) {
  const Shape shape{4, 5};
  check("abs", [](const Inputs& in) { return abs(in[0]); }, {away_from(shape, {0})});
  check("relu", [](const Inputs& in) { return relu(in[0]); }, {away_from(shape, {0})});
  check("leaky_relu", [](const Inputs& in) { return leaky_relu(in[0], 0.2); }, {away_from(shape, {0})});
  check("leaky_relu default", [](const Inputs& in) { return leaky_relu(in[0]); }, {away_from(shape, {0})});
  check("clamp", [](const Inputs& in) { return clamp(in[0], -0.5, 0.5); }, {away_from(shape, {-0.5, 0.5})});
  check("clamp method", [](const Inputs& in) { return in[0].clamp(-1.0, 0.3); }, {away_from(shape, {-1.0, 0.3})});
}

TEST(Gradcheck, Where) {
  // cond is int64: gradcheck passes it through unchanged and checks only a and b.
  const Tensor cond = indices({1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1}).reshape({3, 4});
  check("where same shapes", [](const Inputs& in) { return where(in[0], in[1], in[2]); }, {cond, rnd({3, 4}), rnd({3, 4})});
  const Tensor row_cond = indices({1, 0, 1}).reshape({3, 1});
  check("where broadcast", [](const Inputs& in) { return where(in[0], in[1], in[2]); }, {row_cond, rnd({3, 4}), rnd({4})});
  check("where scalar branch", [](const Inputs& in) { return where(in[0], in[1], in[2]); }, {cond, rnd({}), rnd({1, 4})});
  // A float mask computed inside fn from the input (a comparison: no gradient of its own).
  check("where from comparison",
        [](const Inputs& in) { return where(gt(in[0], zeros({})), in[0] * in[0], in[0] * 3.0); },
        {away_from({3, 4}, {0})});
}

// ---------------------------------------------------------------- reductions

const std::vector<std::vector<int64_t>> kAxes = {{}, {0}, {1}, {2}, {-1}, {0, 2}, {1, 2}, {0, 1, 2}};

std::string axes_str(const std::vector<int64_t>& axes, bool keepdim) {
  std::string s = "axes {";
  for (int64_t a : axes) s += std::to_string(a) + ",";
  return s + "} keepdim " + (keepdim ? "true" : "false");
}

TEST(Gradcheck, SumAndMeanOverAxes) {
  for (const auto& axes : kAxes)
    for (bool keepdim : {false, true}) {
      check("sum " + axes_str(axes, keepdim), [&](const Inputs& in) { return sum(in[0], axes, keepdim); }, {rnd({2, 3, 4})});
      check("mean " + axes_str(axes, keepdim), [&](const Inputs& in) { return mean(in[0], axes, keepdim); }, {rnd({2, 3, 4})});
    }
  check("sum()", [](const Inputs& in) { return in[0].sum(); }, {rnd({3, 2})});
  check("mean()", [](const Inputs& in) { return in[0].mean(); }, {rnd({3, 2})});
}

TEST(Gradcheck, AmaxAminOverAxesWithoutTies) {
  for (const auto& axes : kAxes)
    for (bool keepdim : {false, true}) {
      check("amax " + axes_str(axes, keepdim), [&](const Inputs& in) { return amax(in[0], axes, keepdim); }, {rnd({2, 3, 4})});
      check("amin " + axes_str(axes, keepdim), [&](const Inputs& in) { return amin(in[0], axes, keepdim); }, {rnd({2, 3, 4})});
    }
  check("max()", [](const Inputs& in) { return in[0].max(); }, {rnd({3, 4})});
  check("max(axis)", [](const Inputs& in) { return in[0].max(1); }, {rnd({3, 4})});
  check("min(axis, keepdim)", [](const Inputs& in) { return in[0].min(0, true); }, {rnd({3, 4})});
}

TEST(Gradcheck, VarOverAxes) {
  for (const auto& axes : kAxes)
    for (bool keepdim : {false, true})
      for (int64_t correction : {0, 1})
        check("var " + axes_str(axes, keepdim) + " correction " + std::to_string(correction),
              [&](const Inputs& in) { return var(in[0], axes, correction, keepdim); }, {rnd({2, 3, 4})});
  check("var()", [](const Inputs& in) { return in[0].var(); }, {rnd({5})});
}

// ---------------------------------------------------------------- matmul, linear, einsum

TEST(Gradcheck, Matmul2D) {
  check("(3,4)@(4,5)", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({3, 4}), rnd({4, 5})});
  check("(1,4)@(4,1)", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({1, 4}), rnd({4, 1})});
  // Transposed operands reach the GEMM as flags.
  check("aᵀ@b", [](const Inputs& in) { return matmul(in[0].t(), in[1]); }, {rnd({4, 3}), rnd({4, 5})});
  check("a@bᵀ", [](const Inputs& in) { return in[0].matmul(in[1].t()); }, {rnd({3, 4}), rnd({5, 4})});
  check("aᵀ@bᵀ", [](const Inputs& in) { return matmul(in[0].t(), in[1].t()); }, {rnd({4, 3}), rnd({5, 4})});
  // A strided (sliced) operand.
  check("slice@b", [](const Inputs& in) { return matmul(in[0].slice(1, 0, 8, 2), in[1]); }, {rnd({3, 8}), rnd({4, 5})});
}

TEST(Gradcheck, MatmulBatched) {
  check("(2,3,4)@(2,4,5)", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({2, 3, 4}), rnd({2, 4, 5})});
  check("(2,3,4)@(4,5) folded", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({2, 3, 4}), rnd({4, 5})});
  check("(3,4)@(2,4,5)", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({3, 4}), rnd({2, 4, 5})});
  check("(2,1,3,4)@(3,4,5) broadcast batch", [](const Inputs& in) { return matmul(in[0], in[1]); },
        {rnd({2, 1, 3, 4}), rnd({3, 4, 5})});
  check("(1,3,4)@(2,4,5) broadcast batch", [](const Inputs& in) { return matmul(in[0], in[1]); },
        {rnd({1, 3, 4}), rnd({2, 4, 5})});
  check("permuted batch", [](const Inputs& in) { return matmul(in[0].permute({1, 0, 2}), in[1]); },
        {rnd({3, 2, 4}), rnd({2, 4, 5})});
  check("batched transposed", [](const Inputs& in) { return matmul(in[0], in[1].transpose(1, 2)); },
        {rnd({2, 3, 4}), rnd({2, 5, 4})});
  check("non-contiguous folded", [](const Inputs& in) { return matmul(in[0].transpose(0, 1), in[1]); },
        {rnd({3, 2, 4}), rnd({4, 5})});
}

TEST(Gradcheck, Matmul1D) {
  check("(4)@(4,5)", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({4}), rnd({4, 5})});
  check("(3,4)@(4)", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({3, 4}), rnd({4})});
  check("(2,3,4)@(4)", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({2, 3, 4}), rnd({4})});
  check("(4)@(2,4,5)", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({4}), rnd({2, 4, 5})});
  check("(4)@(4) dot", [](const Inputs& in) { return matmul(in[0], in[1]); }, {rnd({4}), rnd({4})});
}

TEST(Gradcheck, Linear) {
  check("linear with bias", [](const Inputs& in) { return linear(in[0], in[1], in[2]); }, {rnd({4, 3}), rnd({5, 3}), rnd({5})});
  check("linear without bias", [](const Inputs& in) { return linear(in[0], in[1]); }, {rnd({4, 3}), rnd({5, 3})});
  check("linear 3-D input", [](const Inputs& in) { return linear(in[0], in[1], in[2]); },
        {rnd({2, 4, 3}), rnd({5, 3}), rnd({5})});
  check("linear 1-D input", [](const Inputs& in) { return linear(in[0], in[1], in[2]); }, {rnd({3}), rnd({5, 3}), rnd({5})});
  check("linear transposed weight", [](const Inputs& in) { return linear(in[0], in[1].t(), in[2]); },
        {rnd({4, 3}), rnd({3, 5}), rnd({5})});
  check("linear transposed input", [](const Inputs& in) { return linear(in[0].t(), in[1], in[2]); },
        {rnd({3, 4}), rnd({5, 3}), rnd({5})});
}

TEST(Gradcheck, Einsum) {
  const std::vector<std::tuple<std::string, Shape, Shape>> cases = {
      {"ij,jk->ik", {3, 4}, {4, 5}},  {"ij,jk", {3, 4}, {4, 5}},       {"bqd,bkd->bqk", {2, 3, 4}, {2, 5, 4}},
      {"i,j->ij", {3}, {4}},          {"ij,ij->i", {3, 4}, {3, 4}},    {"ij,ij->ij", {3, 4}, {3, 4}},
      {"ij,jk->ki", {3, 4}, {4, 5}},  {"ij,k->ik", {3, 4}, {5}},       {"bij,bjk->bik", {2, 3, 4}, {2, 4, 5}},
      {"i,i->", {4}, {4}},            {"ijk,k->ij", {2, 3, 4}, {4}}, {"b i d, b j d -> b i j", {2, 3, 4}, {2, 5, 4}}};
  for (const auto& [equation, sa, sb] : cases) {
    const std::string eq = equation;
    check("einsum " + eq, [eq](const Inputs& in) { return einsum(eq, in[0], in[1]); }, {rnd(sa), rnd(sb)});
  }
}

// ---------------------------------------------------------------- shape ops

TEST(Gradcheck, ReshapeAndViews) {
  check("reshape", [](const Inputs& in) { return reshape(in[0], {6, 4}); }, {rnd({2, 3, 4})});
  check("reshape -1", [](const Inputs& in) { return in[0].reshape({4, -1, 2}); }, {rnd({2, 3, 4})});
  check("reshape non-contiguous", [](const Inputs& in) { return reshape(transpose(in[0], 0, 2), {-1}); }, {rnd({2, 3, 4})});
  check("view", [](const Inputs& in) { return in[0].view({3, 8}); }, {rnd({2, 3, 4})});
  check("flatten", [](const Inputs& in) { return in[0].flatten(1); }, {rnd({2, 3, 4})});
  check("transpose", [](const Inputs& in) { return transpose(in[0], 0, 2); }, {rnd({2, 3, 4})});
  check("transpose negative", [](const Inputs& in) { return in[0].transpose(-1, -2); }, {rnd({2, 3, 4})});
  check("t", [](const Inputs& in) { return in[0].t(); }, {rnd({3, 4})});
  check("permute", [](const Inputs& in) { return permute(in[0], {2, 0, 1}); }, {rnd({2, 3, 4})});
  check("squeeze axis", [](const Inputs& in) { return squeeze(in[0], 1); }, {rnd({3, 1, 4})});
  check("squeeze all", [](const Inputs& in) { return in[0].squeeze(); }, {rnd({1, 3, 1, 4})});
  check("unsqueeze 0", [](const Inputs& in) { return unsqueeze(in[0], 0); }, {rnd({3, 4})});
  check("unsqueeze 1", [](const Inputs& in) { return unsqueeze(in[0], 1); }, {rnd({3, 4})});
  check("unsqueeze -1", [](const Inputs& in) { return in[0].unsqueeze(-1); }, {rnd({3, 4})});
  check("unsqueeze of transposed", [](const Inputs& in) { return in[0].t().unsqueeze(1) * in[1]; },
        {rnd({3, 4}), rnd({4, 2, 3})});
}

TEST(Gradcheck, NarrowSliceSelect) {
  check("narrow", [](const Inputs& in) { return narrow(in[0], 1, 1, 2); }, {rnd({2, 4, 3})});
  check("narrow negative start", [](const Inputs& in) { return in[0].narrow(0, -2, 2); }, {rnd({4, 3})});
  check("slice", [](const Inputs& in) { return slice(in[0], 2, 0, 5, 2); }, {rnd({2, 3, 5})});
  check("slice negative", [](const Inputs& in) { return in[0].slice(0, -3, -1); }, {rnd({5, 2})});
  check("slice step 3", [](const Inputs& in) { return in[0].slice(1, 1, 7, 3); }, {rnd({2, 7})});
  check("slice of slice", [](const Inputs& in) { return in[0].slice(0, 1, 5).slice(0, 0, 4, 2); }, {rnd({6, 2})});
  check("select", [](const Inputs& in) { return in[0].select(1, 2); }, {rnd({2, 4, 3})});
  check("operator[]", [](const Inputs& in) { return in[0][1] * in[0][0]; }, {rnd({3, 4})});
  // Overlapping uses of one input through different slices add up.
  check("overlapping slices", [](const Inputs& in) { return in[0].narrow(0, 0, 3) * in[0].narrow(0, 1, 3); },
        {rnd({4, 2})});
}

TEST(Gradcheck, Expand) {
  check("expand (3,1)->(2,3,4)", [](const Inputs& in) { return expand(in[0], {2, 3, 4}); }, {rnd({3, 1})});
  check("expand -1", [](const Inputs& in) { return in[0].expand({5, -1}); }, {rnd({1, 4})});
  check("expand 0-d", [](const Inputs& in) { return expand(in[0], {2, 3}); }, {rnd({})});
  check("expand then mul", [](const Inputs& in) { return expand(in[0], {3, 4}) * in[1]; }, {rnd({4}), rnd({3, 4})});
}

TEST(Gradcheck, IndexSelect) {
  // Repeated indices: their gradients add up (index_add).
  check("index_select axis 0", [](const Inputs& in) { return index_select(in[0], 0, in[1]); },
        {rnd({4, 3}), indices({2, 0, 2, 3, 2})});
  check("index_select axis 1", [](const Inputs& in) { return in[0].index_select(1, in[1]); },
        {rnd({2, 4, 3}), indices({1, 1, 0})});
  check("index_select axis -1", [](const Inputs& in) { return index_select(in[1], -1, in[0]); },
        {indices({3, 0}), rnd({2, 4})});
  check("index_select of transposed", [](const Inputs& in) { return index_select(in[0].t(), 0, in[1]); },
        {rnd({3, 4}), indices({3, 1, 3})});
}

TEST(Gradcheck, Cat) {
  check("cat axis 0", [](const Inputs& in) { return cat({in[0], in[1], in[2]}, 0); }, {rnd({2, 3}), rnd({1, 3}), rnd({4, 3})});
  check("cat axis 1", [](const Inputs& in) { return cat({in[0], in[1]}, 1); }, {rnd({2, 3}), rnd({2, 5})});
  check("cat axis -1", [](const Inputs& in) { return cat({in[0], in[1]}, -1); }, {rnd({2, 2, 3}), rnd({2, 2, 1})});
  check("cat same tensor twice", [](const Inputs& in) { return cat({in[0], in[0] * 2.0}, 0); }, {rnd({2, 3})});
  check("cat with constant", [](const Inputs& in) { return cat({in[0], ones({1, 3}, kF64)}, 0); }, {rnd({2, 3})});
}

TEST(Gradcheck, ContiguousCloneAndDType) {
  check("contiguous of contiguous", [](const Inputs& in) { return contiguous(in[0]); }, {rnd({3, 4})});
  check("contiguous of transposed", [](const Inputs& in) { return in[0].t().contiguous() * 2.0; }, {rnd({3, 4})});
  check("clone", [](const Inputs& in) { return clone(in[0]); }, {rnd({3, 4})});
  check("clone method of expanded", [](const Inputs& in) { return in[0].expand({3, 4}).clone(); }, {rnd({4})});
  check("to float64 (no-op)", [](const Inputs& in) { return in[0].to(DType::Float64) * 2.0; }, {rnd({3, 4})});
  check("to_dtype float64", [](const Inputs& in) { return to_dtype(in[0], DType::Float64); }, {rnd({2, 2})});
  // Through float32 the numeric derivative carries float32 rounding: a wider step and tolerances.
  check("to float32 and back", [](const Inputs& in) { return square(in[0].to(DType::Float32)).to(DType::Float64); },
        {rnd({3, 4})}, {.eps = 1e-2, .atol = 1e-3, .rtol = 1e-2});
  check("to float32 output", [](const Inputs& in) { return in[0].to(DType::Float32) * 3.0; }, {rnd({3, 4})},
        {.eps = 1e-2, .atol = 1e-3, .rtol = 1e-2});
}

// ---------------------------------------------------------------- softmax

TEST(Gradcheck, SoftmaxAndLogSoftmaxAlongEachAxis) {
  for (int64_t axis : {0, 1, 2, -1, -2}) {
    check("softmax axis " + std::to_string(axis), [axis](const Inputs& in) { return softmax(in[0], axis); },
          {rnd({2, 3, 4}) * 2.0});
    check("log_softmax axis " + std::to_string(axis), [axis](const Inputs& in) { return log_softmax(in[0], axis); },
          {rnd({2, 3, 4}) * 2.0});
  }
  check("softmax 1-D", [](const Inputs& in) { return in[0].softmax(0); }, {rnd({5})});
  check("log_softmax of transposed", [](const Inputs& in) { return in[0].t().log_softmax(1); }, {rnd({4, 3})});
  check("softmax of large logits", [](const Inputs& in) { return softmax(in[0] * 50.0, 1); }, {rnd({2, 4}) * 0.05});
}

// ---------------------------------------------------------------- at the kinks

// Central differences cannot check a kink; these pin the documented subgradients.
std::vector<double> grad_at(const std::function<Tensor(const Tensor&)>& fn, const std::vector<double>& values) {
  Tensor x = tensor(values, {static_cast<int64_t>(values.size())}, {.dtype = DType::Float64, .requires_grad = true});
  fn(x).sum().backward();
  return x.grad().to_vector<double>();
}

TEST(Subgradient, ReluAbsClampAtTheKink) {
  EXPECT_EQ(grad_at([](const Tensor& x) { return relu(x); }, {-1, 0, 2}), (std::vector<double>{0, 0, 1}));
  EXPECT_EQ(grad_at([](const Tensor& x) { return abs(x); }, {-1, 0, 2}), (std::vector<double>{-1, 0, 1}));
  EXPECT_EQ(grad_at([](const Tensor& x) { return leaky_relu(x, 0.1); }, {-1, 0, 2}), (std::vector<double>{0.1, 0.1, 1}));
  // clamp passes the gradient on its bounds (inclusive), 0 strictly outside.
  EXPECT_EQ(grad_at([](const Tensor& x) { return clamp(x, -1, 1); }, {-2, -1, 0, 1, 2}),
            (std::vector<double>{0, 1, 1, 1, 0}));
}

TEST(Subgradient, MaxTiesShareTheGradient) {
  EXPECT_EQ(grad_at([](const Tensor& x) { return amax(x); }, {1, 3, 3, 2}), (std::vector<double>{0, 0.5, 0.5, 0}));
  EXPECT_EQ(grad_at([](const Tensor& x) { return amin(x); }, {1, 1, 1, 2}),
            (std::vector<double>{1.0 / 3, 1.0 / 3, 1.0 / 3, 0}));
  EXPECT_EQ(grad_at([](const Tensor& x) { return amax(x.reshape({2, 2}), {1}); }, {5, 5, 1, 4}),
            (std::vector<double>{0.5, 0.5, 0, 1}));
  // maximum/minimum: half to each side on a tie.
  Tensor a = tensor(std::vector<double>{1, 2, 3}, {3}, {.dtype = DType::Float64, .requires_grad = true});
  Tensor b = tensor(std::vector<double>{1, 5, 0}, {3}, {.dtype = DType::Float64, .requires_grad = true});
  maximum(a, b).sum().backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{0.5, 0, 1}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{0.5, 1, 0}));
  a.zero_grad();
  b.zero_grad();
  minimum(a, b).sum().backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{0.5, 1, 0}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{0.5, 0, 1}));
}

// ---------------------------------------------------------------- a whole small MLP

// linear -> relu -> linear -> log_softmax -> nll, the loss a classifier trains on.
Tensor mlp_logits(const Inputs& in) {
  const Tensor hidden = relu(linear(in[0], in[1], in[2]));
  return linear(hidden, in[3], in[4]);
}

TEST(Gradcheck, SmallMlpWithNllByIndex) {
  const int64_t n = 4, classes = 3;
  const Inputs inputs = {rnd({n, 5}), rnd({6, 5}), rnd({6}), rnd({classes, 6}), rnd({classes}), indices({2, 0, 1, 2})};
  check("mlp nll via index_select",
        [n, classes](const Inputs& in) {
          const Tensor log_probs = log_softmax(mlp_logits(in), 1);
          // The target's log-probability per row: flat index row * C + target.
          const Tensor flat_index = in[5] + arange(n) * double(classes);
          return -mean(index_select(log_probs.reshape({-1}), 0, flat_index));
        },
        inputs);
}

TEST(Gradcheck, SmallMlpWithNllByOneHotSum) {
  const Tensor one_hot = tensor(std::vector<double>{0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1}, {4, 3});
  check("mlp nll via one-hot sum",
        [one_hot](const Inputs& in) { return -(log_softmax(mlp_logits(in), 1) * one_hot).sum() / 4.0; },
        {rnd({4, 5}), rnd({6, 5}), rnd({6}), rnd({3, 6}), rnd({3})});
  // The same network written with matmul and a broadcast bias.
  check("mlp via matmul + bias",
        [one_hot](const Inputs& in) {
          const Tensor hidden = tanh(matmul(in[0], in[1].t()) + in[2]);
          return -(log_softmax(matmul(hidden, in[3].t()) + in[4], -1) * one_hot).sum();
        },
        {rnd({4, 5}), rnd({6, 5}), rnd({6}), rnd({3, 6}), rnd({3})});
}

// ---------------------------------------------------------------- gradcheck itself

// x² with a deliberately wrong backward (x instead of 2x).
struct WrongSquare : autograd::Function<WrongSquare> {
  static const char* name() { return "wrong_square"; }
  static Tensor forward(autograd::Context& ctx, const Tensor& x) {
    ctx.save_for_backward({x});
    return x * x;
  }
  static std::vector<Tensor> backward(autograd::Context& ctx, const Tensor& grad_output) {
    return {grad_output * ctx.saved(0)};
  }
};

// softmax with a zero backward: right for sum(softmax(x)) (which is constant), wrong otherwise.
struct ZeroGradSoftmax : autograd::Function<ZeroGradSoftmax> {
  static Tensor forward(autograd::Context&, const Tensor& x) { return softmax(x, -1); }
  static std::vector<Tensor> backward(autograd::Context&, const Tensor& grad_output) {
    return {zeros_like(grad_output)};
  }
};

TEST(GradcheckApi, DetectsAWrongGradientAndNamesTheInput) {
  // Input 0 is int64 (passed through), input 1 is right, input 2 goes through the wrong rule.
  const Tensor b = tensor(std::vector<double>{0.5, -1.0, 2.0}, {3});
  const GradcheckReport report = autograd::gradcheck(
      [](const Inputs& in) { return index_select(in[1], 0, in[0]) * 2.0 + WrongSquare::apply(in[2]); },
      {indices({2, 0, 1}), rnd({3}), b});
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.worst_input, 2u);
  // The worst element is where |x| is largest: b[2] = 2, gradient 2x vs x (weighted by R).
  EXPECT_EQ(report.worst_element, 2);
  EXPECT_NEAR(report.numeric, 2 * report.analytic, 1e-6 * std::abs(report.numeric) + 1e-8);
  EXPECT_NEAR(report.abs_error, std::abs(report.analytic - report.numeric), 1e-12);
  EXPECT_NEAR(report.rel_error, 0.5, 1e-6);
  EXPECT_NE(report.message.find("gradcheck: input 2 element 2"), std::string::npos) << report.message;
  EXPECT_NE(report.message.find("exceeds"), std::string::npos) << report.message;
}

TEST(GradcheckApi, RandomWeightingChecksTheWholeJacobian) {
  // Checking only sum(y) would miss the broken rule; the random weighting R does not.
  EXPECT_TRUE(autograd::gradcheck([](const Inputs& in) { return ZeroGradSoftmax::apply(in[0]).sum(); }, {rnd({2, 4})}).ok);
  const GradcheckReport report = autograd::gradcheck([](const Inputs& in) { return ZeroGradSoftmax::apply(in[0]); }, {rnd({2, 4})});
  EXPECT_FALSE(report.ok) << report.message;
  EXPECT_EQ(report.analytic, 0.0);
}

TEST(GradcheckApi, RaiseThrowsTheMessage) {
  const Fn wrong = [](const Inputs& in) { return in[0] + WrongSquare::apply(in[1]); };
  const Inputs inputs = {rnd({2}), tensor(std::vector<double>{1.5, -0.7}, {2})};
  const GradcheckReport report = autograd::gradcheck(wrong, inputs);
  ASSERT_FALSE(report.ok);
  try {
    autograd::gradcheck(wrong, inputs, {.raise = true});
    ADD_FAILURE() << "raise = true did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), report.message);
    EXPECT_NE(std::string(e.what()).find("gradcheck: input 1"), std::string::npos) << e.what();
  }
  // A passing check does not throw.
  EXPECT_NO_THROW(autograd::gradcheck([](const Inputs& in) { return in[0] * in[0]; }, {rnd({3})}, {.raise = true}));
}

TEST(GradcheckApi, ReportOnSuccess) {
  const GradcheckReport report = autograd::gradcheck([](const Inputs& in) { return exp(in[0]) * in[1]; },
                                                     {rnd({2, 3}), rnd({3})});
  EXPECT_TRUE(report.ok);
  EXPECT_LT(report.worst_input, 2u);
  EXPECT_LE(report.abs_error, 1e-5);
  EXPECT_NE(report.message.find("within"), std::string::npos) << report.message;
}

TEST(GradcheckApi, LeavesTheCallersInputsAlone) {
  Tensor x = tensor({0.5f, -1.0f, 2.0f}, {3}, {.requires_grad = true});  // float32: checked in a float64 copy
  const std::vector<float> before = x.to_vector<float>();
  const auto report = autograd::gradcheck([](const Inputs& in) {
    EXPECT_EQ(in[0].dtype(), DType::Float64);
    return sigmoid(in[0]);
  }, {x});
  EXPECT_TRUE(report.ok) << report.message;
  EXPECT_EQ(x.to_vector<float>(), before);
  EXPECT_FALSE(x.grad().defined());
  EXPECT_EQ(x.dtype(), DType::Float32);
  EXPECT_TRUE(x.requires_grad());
}

TEST(GradcheckApi, OutputIndependentOfTheInputs) {
  const auto report = autograd::gradcheck([](const Inputs&) { return ones({2, 2}, kF64); }, {rnd({3})});
  EXPECT_TRUE(report.ok) << report.message;
  EXPECT_EQ(report.analytic, 0.0);
  EXPECT_EQ(report.numeric, 0.0);
}

TEST(GradcheckApi, Errors) {
  auto message_of = [](const Fn& fn, const Inputs& inputs) -> std::string {
    try {
      autograd::gradcheck(fn, inputs);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  std::string message = message_of([](const Inputs& in) { return argmax(in[0], 0); }, {rnd({3})});
  EXPECT_NE(message.find("int64"), std::string::npos) << message;
  EXPECT_NE(message.find("floating point"), std::string::npos) << message;

  message = message_of([](const Inputs& in) { return in[0].to(DType::Float32); }, {indices({1, 2})});
  EXPECT_NE(message.find("nothing to check"), std::string::npos) << message;

  message = message_of([](const Inputs&) { return Tensor(); }, {rnd({3})});
  EXPECT_NE(message.find("undefined"), std::string::npos) << message;
}

}  // namespace

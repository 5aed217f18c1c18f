// Tests of the elementwise ops (autograd/ops/elementwise.cpp): every unary and binary
// op on every device through check_op (values against a naive loop in float32 and
// float64, broadcast shapes, strided inputs, gradients in float64), NaN propagation per
// device; on the CPU, hand values, int64, scalar operands, where and the error messages.
#include <functional>
#include <limits>

#include "core/kernels.h"
#include "op_check.h"

namespace {

using namespace vgrad;
using namespace vgrad_test;  // the op tests' shared helpers (op_check.h, support.h)

// Float64 values in [low, high), each moved at least `margin` from every kink (relu at
// 0, clamp's bounds) so that central differences never straddle one.
Tensor away_from(const Shape& shape, uint64_t seed, double low, double high, const std::vector<double>& kinks,
                 double margin = 0.1) {
  std::vector<double> values = vals(rand_tensor(shape, seed, DType::Float64, low, high));
  for (double& v : values)
    for (int pass = 0; pass < 2; ++pass)
      for (double k : kinks)
        if (std::abs(v - k) < margin) v = k + (v >= k ? 2 * margin : -2 * margin);
  return tensor(values, shape);
}

// Integers in [-3, 3) plus a fraction in [low, high): two such tensors with disjoint
// fraction ranges never tie (maximum/minimum), and with [0.5, 0.8) never hold 0 (div).
Tensor with_fraction(const Shape& shape, uint64_t seed, double low, double high) {
  std::vector<double> values = vals(rand_tensor(shape, seed, DType::Float64, -3, 3));
  const std::vector<double> fractions = vals(rand_tensor(shape, seed + 1, DType::Float64, low, high));
  for (size_t i = 0; i < values.size(); ++i) values[i] = std::floor(values[i]) + fractions[i];
  return tensor(values, shape);
}

// Quarters in [-2, 2) (positive: [0.25, 2)), never 0: comparisons see ties.
Tensor grid_input(const Shape& shape, uint64_t seed, bool positive) {
  std::vector<double> v = vals(rand_tensor(shape, seed, DType::Float64, positive ? 1 : -8, 9));
  for (double& x : v) {
    x = std::floor(x) / 4.0;
    if (x == 0) x = 0.5;
  }
  return tensor(v, shape);
}

enum class Inputs2 { Smooth, PositiveBase, Ties };  // how a binary op's operands are drawn

struct BinaryCase {
  const char* name;
  std::function<Tensor(const Tensor&, const Tensor&)> op;
  std::function<double(double, double)> ref;
  Inputs2 inputs = Inputs2::Smooth;
};

std::vector<BinaryCase> binary_cases() {
  return {
      {"add", [](const Tensor& a, const Tensor& b) { return add(a, b); }, [](double x, double y) { return x + y; }},
      {"sub", [](const Tensor& a, const Tensor& b) { return sub(a, b); }, [](double x, double y) { return x - y; }},
      {"mul", [](const Tensor& a, const Tensor& b) { return mul(a, b); }, [](double x, double y) { return x * y; }},
      {"div", [](const Tensor& a, const Tensor& b) { return div(a, b); }, [](double x, double y) { return x / y; }},
      {"pow", [](const Tensor& a, const Tensor& b) { return pow(a, b); },
       [](double x, double y) { return std::pow(x, y); }, Inputs2::PositiveBase},
      {"maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); },
       [](double x, double y) { return std::max(x, y); }},
      {"minimum", [](const Tensor& a, const Tensor& b) { return minimum(a, b); },
       [](double x, double y) { return std::min(x, y); }},
      {"+", [](const Tensor& a, const Tensor& b) { return a + b; }, [](double x, double y) { return x + y; }},
      {"-", [](const Tensor& a, const Tensor& b) { return a - b; }, [](double x, double y) { return x - y; }},
      {"*", [](const Tensor& a, const Tensor& b) { return a * b; }, [](double x, double y) { return x * y; }},
      {"/", [](const Tensor& a, const Tensor& b) { return a / b; }, [](double x, double y) { return x / y; }},
      {"eq", [](const Tensor& a, const Tensor& b) { return eq(a, b); }, [](double x, double y) { return double(x == y); },
       Inputs2::Ties},
      {"ne", [](const Tensor& a, const Tensor& b) { return ne(a, b); }, [](double x, double y) { return double(x != y); },
       Inputs2::Ties},
      {"lt", [](const Tensor& a, const Tensor& b) { return lt(a, b); }, [](double x, double y) { return double(x < y); },
       Inputs2::Ties},
      {"le", [](const Tensor& a, const Tensor& b) { return le(a, b); }, [](double x, double y) { return double(x <= y); },
       Inputs2::Ties},
      {"gt", [](const Tensor& a, const Tensor& b) { return gt(a, b); }, [](double x, double y) { return double(x > y); },
       Inputs2::Ties},
      {"ge", [](const Tensor& a, const Tensor& b) { return ge(a, b); }, [](double x, double y) { return double(x >= y); },
       Inputs2::Ties},
  };
}

// Equal shapes, the table, (N,D) with (D,), 0-d operands, higher ranks (the last
// is NumPy's documentation example); each also swapped by the caller.
const std::vector<std::pair<Shape, Shape>> kShapePairs = {
    {{7, 13}, {7, 13}}, {{100, 1}, {4}},     {{100, 4}, {1, 4}},        {{4, 1}, {1, 5}},
    {{3, 4}, {4}},      {{2, 3, 4}, {3, 1}}, {{}, {3, 4}},              {{5, 1, 1}, {1, 6, 1}},
    {{3, 1, 2}, {3, 4, 1}}, {{8, 1, 6, 1}, {7, 1, 5}}};

double tolerance(DType dtype) { return dtype == DType::Float32 ? 2e-6 : 1e-13; }

class ElementwiseOp : public vgrad_test::OnEachDevice {};

TEST_P(ElementwiseOp, EveryBinaryOpBroadcastStridedWithGradient) {
  uint64_t seed = 1;
  for (const BinaryCase& c : binary_cases())
    for (const auto& [first, second] : kShapePairs)
      for (bool swapped : {false, true}) {
        const Shape& sa = swapped ? second : first;
        const Shape& sb = swapped ? first : second;
        Inputs inputs;
        if (c.inputs == Inputs2::Ties) inputs = {grid_input(sa, seed, false), grid_input(sb, seed + 7, false)};
        else if (c.inputs == Inputs2::PositiveBase)
          inputs = {rand_tensor(sa, seed, DType::Float64, 0.5, 2), rand_tensor(sb, seed + 7, DType::Float64)};
        else inputs = {with_fraction(sa, seed, 0, 0.3), with_fraction(sb, seed + 7, 0.5, 0.8)};
        seed += 11;
        auto op = c.op;
        check(std::string(c.name) + " " + shape_str(sa) + " with " + shape_str(sb),
              [op](const Inputs& in) { return op(in[0], in[1]); }, elementwise(c.ref), inputs,
              {.gradient = c.inputs != Inputs2::Ties});
      }
}

struct UnaryCase {
  const char* name;
  std::function<Tensor(const Tensor&)> op;
  std::function<double(double)> ref;
  double low = -4, high = 4;
  std::vector<double> kinks = {};
};

double gelu_ref(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }

std::vector<UnaryCase> unary_cases() {
  return {
      {"neg", [](const Tensor& x) { return neg(x); }, [](double v) { return -v; }},
      {"operator-", [](const Tensor& x) { return -x; }, [](double v) { return -v; }},
      {"exp", [](const Tensor& x) { return exp(x); }, [](double v) { return std::exp(v); }, -10, 10},
      {"log", [](const Tensor& x) { return log(x); }, [](double v) { return std::log(v); }, 0.01, 100},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, [](double v) { return std::sqrt(v); }, 0.01, 100},
      {"abs", [](const Tensor& x) { return abs(x); }, [](double v) { return std::abs(v); }, -4, 4, {0}},
      {"relu", [](const Tensor& x) { return relu(x); }, [](double v) { return v > 0 ? v : 0; }, -4, 4, {0}},
      {"leaky_relu", [](const Tensor& x) { return leaky_relu(x, 0.1); }, [](double v) { return v > 0 ? v : 0.1 * v; },
       -4, 4, {0}},
      {"leaky_relu default", [](const Tensor& x) { return leaky_relu(x); }, [](double v) { return v > 0 ? v : 0.01 * v; },
       -4, 4, {0}},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, [](double v) { return 1 / (1 + std::exp(-v)); }, -20, 20},
      {"tanh", [](const Tensor& x) { return tanh(x); }, [](double v) { return std::tanh(v); }, -10, 10},
      {"gelu", [](const Tensor& x) { return gelu(x); }, gelu_ref},
      {"clamp", [](const Tensor& x) { return clamp(x, -1, 0.5); },
       [](double v) { return std::min(std::max(v, -1.0), 0.5); }, -4, 4, {-1, 0.5}},
      {"square", [](const Tensor& x) { return square(x); }, [](double v) { return v * v; }},
      {"log1p", [](const Tensor& x) { return log1p(x); }, [](double v) { return std::log1p(v); }, -0.9, 10},
      {"expm1", [](const Tensor& x) { return expm1(x); }, [](double v) { return std::expm1(v); }, -10, 10},
      {"affine", [](const Tensor& x) { return affine(x, 3, -0.5); }, [](double v) { return 3 * v - 0.5; }},
      {"pow 2", [](const Tensor& x) { return pow(x, 2.0); }, [](double v) { return v * v; }},
      {"pow 3", [](const Tensor& x) { return pow(x, 3.0); }, [](double v) { return v * v * v; }},
      {"pow 0.5", [](const Tensor& x) { return pow(x, 0.5); }, [](double v) { return std::sqrt(v); }, 0.01, 10},
      {"pow -1.5", [](const Tensor& x) { return x.pow(-1.5); }, [](double v) { return std::pow(v, -1.5); }, 0.5, 2},
      {"pow -1", [](const Tensor& x) { return pow(x, -1.0); }, [](double v) { return 1 / v; }, 0.1, 10},
      {"rpow 2", [](const Tensor& x) { return pow(2.0, x); }, [](double v) { return std::exp2(v); }},
      {"rpow 0.5", [](const Tensor& x) { return pow(0.5, x); }, [](double v) { return std::pow(0.5, v); }},
      {"x + 2", [](const Tensor& x) { return x + 2.0; }, [](double v) { return v + 2; }},
      {"2 - x", [](const Tensor& x) { return 2.0 - x; }, [](double v) { return 2 - v; }},
      {"3 * x", [](const Tensor& x) { return 3.0 * x; }, [](double v) { return 3 * v; }},
      {"x / 4", [](const Tensor& x) { return x / 4.0; }, [](double v) { return v / 4; }},
      {"3 / x", [](const Tensor& x) { return 3.0 / x; }, [](double v) { return 3 / v; }, -4, 4, {0}},
      {"method exp", [](const Tensor& x) { return x.exp(); }, [](double v) { return std::exp(v); }},
      {"method clamp", [](const Tensor& x) { return x.clamp(0, 1); }, [](double v) { return std::clamp(v, 0.0, 1.0); },
       -4, 4, {0, 1}},
      {"method sigmoid", [](const Tensor& x) { return x.sigmoid(); }, [](double v) { return 1 / (1 + std::exp(-v)); }},
  };
}

TEST_P(ElementwiseOp, EveryUnaryOpStridedExpandedWithGradient) {
  uint64_t seed = 100;
  for (const UnaryCase& c : unary_cases()) {
    auto op = c.op;
    const vgrad_test::OpFn fn = [op](const Inputs& in) { return op(in[0]); };
    // 1031 elements: long enough for the vectorised path and its scalar tail; the gradient
    // on a small block (gradcheck runs the op twice per element).
    check(std::string(c.name) + " [1031]", fn, elementwise(c.ref), {away_from({1031}, seed++, c.low, c.high, c.kinks)},
          {.gradient = false});
    check(std::string(c.name) + " [3, 5]", fn, elementwise(c.ref), {away_from({3, 5}, seed++, c.low, c.high, c.kinks)});
    // An expanded (stride 0) input; the second input only carries the shape (3, 5) to
    // the naive loop's broadcast.
    const Tensor one = away_from({1}, seed++, c.low, c.high, c.kinks);
    check(std::string(c.name) + " expanded", [op](const Inputs& in) { return op(in[0].expand(in[1].shape())); },
          elementwise([f = c.ref](double v, double) { return f(v); }), {one, zeros({3, 5})}, {.strided = false});
  }
}

TEST_P(ElementwiseOp, WhereSelectsBroadcastsAndRoutesTheGradient) {
  const auto select = elementwise([](const std::vector<double>& v) { return v[0] != 0 ? v[1] : v[2]; });
  const vgrad_test::OpFn where3 = [](const Inputs& in) { return where(in[0], in[1], in[2]); };
  // cond is int64: gradcheck passes it through and checks a and b only.
  const Tensor cond = tensor(std::vector<int64_t>{1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1}).reshape({3, 4});
  check("where same shapes", where3, select, {cond, rand_tensor({3, 4}, 1), rand_tensor({3, 4}, 2)});
  check("where broadcast", where3, select,
        {tensor(std::vector<int64_t>{1, 0, 1}).reshape({3, 1}), rand_tensor({3, 4}, 3), rand_tensor({4}, 4)});
  check("where 0-d branch", where3, select, {cond, rand_tensor({}, 5), rand_tensor({1, 4}, 6)});
  // A floating condition: any nonzero (fractional, negative) is true.
  check("where float condition", where3, select,
        {tensor({0.5f, 0, -0.25f, 0}), rand_tensor({4}, 7), rand_tensor({4}, 8)}, {.gradient = false});
  // A mask computed inside the op from the input: a comparison has no gradient of its own.
  check("where from comparison",
        [](const Inputs& in) { return where(gt(in[0], zeros_like(in[0])), in[0] * in[0], in[0] * 3.0); },
        elementwise([](double v) { return v > 0 ? v * v : 3 * v; }), {away_from({3, 4}, 9, -2, 2, {0})});
}

// NaN propagates as in PyTorch on every device: through relu, leaky_relu, sign, clamp,
// maximum and minimum (either operand, either order) and amax/amin; one NaN pixel must
// not vanish.
TEST_P(ElementwiseOp, NaNPropagatesAsPyTorch) {
  const double nan = std::nan("");
  for (DType dtype : {DType::Float32, DType::Float64}) {
    const Tensor x = tensor(std::vector<double>{nan, -1, 2}).to(dtype).to(device());
    const Tensor one = ones({3}, {.dtype = dtype, .device = device()});
    for (const Tensor& y : {relu(x), leaky_relu(x, 0.1), clamp(x, -0.5, 0.5), kernels::unary(UnaryOp::Sign, x),
                            maximum(x, one), maximum(one, x), minimum(x, one), minimum(one, x)}) {
      const auto v = vals(y.to(kCPU));
      EXPECT_TRUE(std::isnan(v[0])) << y;
      EXPECT_FALSE(std::isnan(v[1]) || std::isnan(v[2])) << y;
    }
    EXPECT_TRUE(std::isnan(amax(x).item()));
    EXPECT_TRUE(std::isnan(amin(x).item()));
    EXPECT_EQ(vals(relu(x).to(kCPU))[1], 0);
    const auto sign = vals(kernels::unary(UnaryOp::Sign, x).to(kCPU));
    EXPECT_EQ(sign[1], -1);
    EXPECT_EQ(sign[2], 1);
  }
}

// pow's gradients where the formulas meet 0*Inf or log of a negative base, against torch 2.15
// (float64): x = [0, 2, -2, 0, -3], e = [0, 0, 0.5, -1, 2]; x^0 is flat at x = 0, 0^e for
// e >= 0 is flat in e, and a negative base has no real log.
TEST_P(ElementwiseOp, PowGradientsAtZeroAndNegativeBasesAsPyTorch) {
  const double inf = INFINITY, nan = std::nan("");
  const auto expect_values = [](const Tensor& t, const std::vector<double>& expected, const char* what) {
    const std::vector<double> got = vals(t.to(kCPU));
    ASSERT_EQ(got.size(), expected.size()) << what;
    for (size_t i = 0; i < got.size(); ++i) {
      if (std::isnan(expected[i]))
        EXPECT_TRUE(std::isnan(got[i])) << what << " at " << i << ": got " << got[i];
      else if (std::isinf(expected[i]))
        EXPECT_EQ(got[i], expected[i]) << what << " at " << i;
      else
        EXPECT_NEAR(got[i], expected[i], 1e-12) << what << " at " << i;
    }
  };
  const TensorOptions f64{.dtype = DType::Float64, .device = device(), .requires_grad = true};
  Tensor x = tensor(std::vector<double>{0, 2, -2, 0, -3}, {5}, f64);
  Tensor e = tensor(std::vector<double>{0, 0, 0.5, -1, 2}, {5}, f64);
  pow(x, e).sum().backward();
  expect_values(x.grad(), {0, 0, nan, -inf, -6}, "d(x^e)/dx");
  expect_values(e.grad(), {0, std::log(2.0), nan, -inf, nan}, "d(x^e)/de");

  Tensor base = tensor(std::vector<double>{0, 2, -2}, {3}, f64);
  pow(base, 0.0).sum().backward();
  expect_values(base.grad(), {0, 0, 0}, "d(x^0)/dx");
  base.zero_grad();
  pow(base, 1.0).sum().backward();
  expect_values(base.grad(), {1, 1, 1}, "d(x^1)/dx");

  Tensor exponent = tensor(std::vector<double>{0, 2, -1}, {3}, f64);
  pow(0.0, exponent).sum().backward();
  expect_values(exponent.grad(), {0, 0, -inf}, "d(0^x)/dx");
  exponent.zero_grad();
  pow(-2.0, exponent).sum().backward();
  expect_values(exponent.grad(), {nan, nan, nan}, "d((-2)^x)/dx");
}

// log1p/expm1 keep the digits that log(1 + x) and exp(x) - 1 lose near 0.
TEST(Log1pExpm1, MatchTheCLibraryNearZeroOnEveryDevice) {
  const std::vector<double> x = {-0.5, -1e-9, 0.0, 1e-12, 3e-8, 0.25, 2.0};
  for (Device device : vgrad_test::cpu_and_gpu())
    for (DType dtype : {DType::Float32, DType::Float64}) {
      const Tensor t = tensor(x).to(dtype).to(device);
      const auto l = vgrad_test::vals(log1p(t)), e = vgrad_test::vals(expm1(t));
      const double tol = dtype == DType::Float32 ? 2e-7 : 1e-15;
      for (size_t i = 0; i < x.size(); ++i) {
        const double xi = dtype == DType::Float32 ? double(float(x[i])) : x[i];
        EXPECT_NEAR(l[i], std::log1p(xi), tol * (std::abs(std::log1p(xi)) + 1e-30)) << device.str() << " " << xi;
        EXPECT_NEAR(e[i], std::expm1(xi), tol * (std::abs(std::expm1(xi)) + 1e-30)) << device.str() << " " << xi;
      }
    }
  EXPECT_ERROR(log1p(tensor(std::vector<int64_t>{1, 2})), "log1p: not defined for int64");
}

// full and fill_ with -0.0 store the sign bit in every floating dtype on every device (a
// GPU memset path once took -0.0 == 0.0 for +0.0): 1/x is then -Inf, as PyTorch's.
TEST_P(ElementwiseOp, FullAndFillWithNegativeZeroKeepTheSign) {
  for (DType dtype : {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16}) {
    Tensor x = full({4, 6}, -0.0, {.dtype = dtype, .device = device()});
    Tensor column = full({4, 6}, 5.0, {.dtype = dtype, .device = device()});
    column.narrow(1, 2, 1).fill_(-0.0);  // a strided window
    for (const auto& [what, values] : {std::pair{"full", vals(x.to(DType::Float64))},
                                       std::pair{"fill_ of a column", vals(column.narrow(1, 2, 1).to(DType::Float64))}})
      for (size_t i = 0; i < values.size(); ++i)
        ASSERT_TRUE(values[i] == 0.0 && std::signbit(values[i]))
            << what << " " << dtype_name(dtype) << " element " << i << ": " << values[i];
    for (double v : vals(kernels::unary(UnaryOp::Reciprocal, x).to(DType::Float64)))
      ASSERT_EQ(v, -std::numeric_limits<double>::infinity()) << "1 / -0 in " << dtype_name(dtype);
    EXPECT_EQ(vals(column.narrow(1, 3, 1)), std::vector<double>(4, 5.0)) << "fill_ stayed in its column";
  }
  EXPECT_EQ(full({3}, -0.0, {.dtype = DType::Int64, .device = device()}).to_vector<int64_t>(),
            std::vector<int64_t>(3, 0));
}

// Floating -> int64 (to(), and full/fill_ of an int64 tensor) truncates toward zero and
// saturates on every device: NaN -> 0, +-Inf and values past 2^63 -> INT64_MAX/MIN (a
// deliberate difference from PyTorch's CPU, which gives INT64_MIN for all of them on x86).
TEST_P(ElementwiseOp, FloatingToInt64TruncatesSaturatesAndSendsNanToZero) {
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  const std::vector<double> values = {
      nan,  inf,   -inf, 1e19, -1e19, 9223372036854775808.0, -9223372036854775808.0, -2.75, 2.5,
      -0.5, 65504, -0.0, 3e38, -3e38};
  const std::vector<int64_t> want = {0,  INT64_MAX, INT64_MIN, INT64_MAX, INT64_MIN, INT64_MAX, INT64_MIN,
                                     -2, 2,         0,         65504,     0,         INT64_MAX, INT64_MIN};
  for (DType dtype : {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16}) {
    // bfloat16 rounds 65504 to 65536; float16 stores the values past 65504 as +-Inf,
    // which saturate alike.
    std::vector<int64_t> expected = want;
    if (dtype == DType::BFloat16) expected[10] = 65536;
    const Tensor x = tensor(values, {2, 7}, {.dtype = DType::Float64}).to(dtype).to(device());
    EXPECT_EQ(x.to(DType::Int64).to_vector<int64_t>(), expected) << dtype_name(dtype) << " contiguous";
    // Read transposed (a strided source): element (i, j) of x.t() is x's (j, i).
    const std::vector<int64_t> got = x.t().to(DType::Int64).to_vector<int64_t>();
    for (int64_t i = 0; i < 7; ++i)
      for (int64_t j = 0; j < 2; ++j)
        EXPECT_EQ(got[size_t(i * 2 + j)], expected[size_t(j * 7 + i)])
            << dtype_name(dtype) << " transposed (" << i << ", " << j << ")";
  }
  for (size_t i = 0; i < values.size(); ++i) {
    Tensor filled = zeros({2, 3}, {.dtype = DType::Int64, .device = device()});
    filled.fill_(values[i]);
    EXPECT_EQ(filled.to_vector<int64_t>(), std::vector<int64_t>(6, want[i])) << "int64 fill_ of " << values[i];
    EXPECT_EQ(full({5}, values[i], {.dtype = DType::Int64, .device = device()}).to_vector<int64_t>(),
              std::vector<int64_t>(5, want[i]))
        << "int64 full of " << values[i];
  }
}

INSTANTIATE_ON_EACH_DEVICE(ElementwiseOp);

TEST(Binary, ComparisonsSeeTiesAndGiveMasks) {
  const Tensor a = tensor({1.f, 2.f, 3.f, 4.f}), b = tensor({1.f, 3.f, 2.f, 4.f});
  EXPECT_EQ(vals(eq(a, b)), (std::vector<double>{1, 0, 0, 1}));
  EXPECT_EQ(vals(ne(a, b)), (std::vector<double>{0, 1, 1, 0}));
  EXPECT_EQ(vals(lt(a, b)), (std::vector<double>{0, 1, 0, 0}));
  EXPECT_EQ(vals(le(a, b)), (std::vector<double>{1, 1, 0, 1}));
  EXPECT_EQ(vals(gt(a, b)), (std::vector<double>{0, 0, 1, 0}));
  EXPECT_EQ(vals(ge(a, b)), (std::vector<double>{1, 0, 1, 1}));
  EXPECT_EQ(eq(a, b).dtype(), DType::Float32);
  // A mask is usable as a multiplier (masking) and under where.
  EXPECT_EQ(vals(a * gt(a, full({}, 2.5))), (std::vector<double>{0, 0, 3, 4}));
  // NaN compares unequal to everything, itself included.
  const Tensor n = tensor({NAN, 1});
  EXPECT_EQ(vals(eq(n, n)), (std::vector<double>{0, 1}));
  EXPECT_EQ(vals(ne(n, n)), (std::vector<double>{1, 0}));
  EXPECT_EQ(vals(lt(n, tensor({5.f, 5.f}))), (std::vector<double>{0, 1}));
}

// ---------------- broadcasting ----------------

TEST(Broadcasting, HandComputed) {
  // (3,1) + (4,): outer sum.
  const Tensor col = tensor({0.f, 10.f, 20.f}, {3, 1}), row = tensor({1.f, 2.f, 3.f, 4.f});
  expect_tensor_near(col + row, {3, 4}, {1, 2, 3, 4, 11, 12, 13, 14, 21, 22, 23, 24}, 0);
  // (2,3) * (3,): scale each column.
  expect_tensor_near(tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3}) * tensor({1.f, 10.f, 100.f}), {2, 3},
                     {1, 20, 300, 4, 50, 600}, 0);
  // 0-d with n-d.
  expect_tensor_near(scalar_tensor(2) * tensor({1.f, 2.f, 3.f}), {3}, {2, 4, 6}, 0);
  expect_tensor_near(scalar_tensor(2) - scalar_tensor(5), {}, {-3}, 0);
  // Empty dims broadcast too.
  EXPECT_EQ((zeros({0, 3}) + ones({3})).shape(), (Shape{0, 3}));
  EXPECT_EQ((zeros({0, 3}) + ones({1, 1})).shape(), (Shape{0, 3}));
}

TEST(Broadcasting, IncompatibleShapesNameOpShapesAndDim) {
  const Tensor a = zeros({100, 4}), b = zeros({100});
  EXPECT_ERROR((add(a, b)), "add: cannot broadcast [100, 4] with [100] (dim 1: 4 vs 100)");
  EXPECT_ERROR(a + b, "add", "[100, 4]", "[100]", "dim 1");
  EXPECT_ERROR((sub(a, b)), "sub: cannot broadcast");
  EXPECT_ERROR((mul(b, a)), "mul: cannot broadcast [100] with [100, 4] (dim 1: 100 vs 4)");
  EXPECT_ERROR((div(a, b)), "div:");
  EXPECT_ERROR((pow(a, b)), "pow:");
  EXPECT_ERROR((maximum(a, b)), "maximum:");
  EXPECT_ERROR((minimum(a, b)), "minimum:");
  EXPECT_ERROR((eq(a, b)), "eq:");
  EXPECT_ERROR((lt(a, b)), "lt:");
  EXPECT_ERROR((where(a, a, b)), "where:");
  EXPECT_ERROR((add(zeros({64, 10}), zeros({32, 10}))), "add: cannot broadcast [64, 10] with [32, 10] (dim 0: 64 vs 32)");
  EXPECT_ERROR((add(zeros({2, 3, 4}), zeros({3, 3, 1}))), "dim 0: 2 vs 3");
}

// ---------------- strided inputs ----------------

TEST(Strided, TransposedSteppedExpandedInputs) {
  for (DType dtype : {DType::Float32, DType::Float64}) {
    const Tensor base = rand_tensor({6, 8}, 7, dtype);   // B[r][c] = vb[r*8 + c]
    const Tensor tall = rand_tensor({16, 6}, 8, dtype);  // T[r][c] = vt_[r*6 + c]
    const Tensor row = rand_tensor({6}, 9, dtype);
    const auto vb = vals(base), vt_ = vals(tall), vr = vals(row);
    const Tensor transposed = base.t();             // (8, 6): [i][j] = B[j][i]
    const Tensor stepped = tall.slice(0, 1, 16, 2);  // (8, 6): [i][j] = T[1 + 2i][j]
    const Tensor expanded = row.expand({8, 6});      // (8, 6): [i][j] = R[j]
    const Tensor reversed_cols = tall.slice(0, -8, 16, 1).slice(1, 0, 6, 1);  // (8, 6): [i][j] = T[8 + i][j]
    ASSERT_FALSE(transposed.is_contiguous());
    ASSERT_FALSE(stepped.is_contiguous());
    ASSERT_FALSE(expanded.is_contiguous());
    auto at_t = [&](int i, int j) { return vb[j * 8 + i]; };
    auto at_s = [&](int i, int j) { return vt_[(1 + 2 * i) * 6 + j]; };
    auto at_e = [&](int, int j) { return vr[j]; };
    auto at_r = [&](int i, int j) { return vt_[(8 + i) * 6 + j]; };
    std::vector<double> expected_ts, expected_se, expected_te, expected_rt;
    for (int i = 0; i < 8; ++i)
      for (int j = 0; j < 6; ++j) {
        expected_ts.push_back(at_t(i, j) + at_s(i, j));
        expected_se.push_back(at_s(i, j) * at_e(i, j));
        expected_te.push_back(std::max(at_t(i, j), at_e(i, j)));
        expected_rt.push_back(at_r(i, j) - at_t(i, j));
      }
    const double tol = tolerance(dtype);
    expect_tensor_near(transposed + stepped, {8, 6}, expected_ts, tol, "transposed + stepped");
    expect_tensor_near(stepped * expanded, {8, 6}, expected_se, tol, "stepped * expanded");
    expect_tensor_near(maximum(transposed, expanded), {8, 6}, expected_te, tol, "max(transposed, expanded)");
    expect_tensor_near(reversed_cols - transposed, {8, 6}, expected_rt, tol, "narrowed - transposed");
    // A broadcast operand that is itself strided: a column of the transposed base, (8, 1).
    const Tensor column = transposed.narrow(1, 2, 1);
    std::vector<double> expected_col;
    for (int i = 0; i < 8; ++i)
      for (int j = 0; j < 6; ++j) expected_col.push_back(at_s(i, j) / at_t(i, 2));
    expect_tensor_near(stepped / column, {8, 6}, expected_col, tol, "stepped / column");
  }
}

TEST(Strided, ThreeDimPermutedInputs) {
  const Tensor x = rand_tensor({3, 4, 5}, 10, DType::Float64);
  const Tensor y = rand_tensor({5, 3, 4}, 11, DType::Float64);
  const auto vx = vals(x), vy = vals(y);
  const Tensor xp = x.permute({2, 0, 1});  // (5, 3, 4): [k][i][j] = X[i][j][k]
  std::vector<double> expected;
  for (int k = 0; k < 5; ++k)
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 4; ++j) expected.push_back(vx[i * 20 + j * 5 + k] * vy[k * 12 + i * 4 + j]);
  expect_tensor_near(xp * y, {5, 3, 4}, expected, 1e-14);
  expect_tensor_near(y * xp, {5, 3, 4}, expected, 1e-14);
}

// ---------------- unary ----------------

TEST(Unary, HandValuesAndEdges) {
  expect_tensor_near(relu(tensor({-1.f, 0.f, 2.f})), {3}, {0, 0, 2}, 0);
  expect_tensor_near(abs(tensor({-1.5f, 0, 2})), {3}, {1.5, 0, 2}, 0);
  expect_tensor_near(clamp(tensor({-5, 0.25f, 5}), -1, 1), {3}, {-1, 0.25, 1}, 0);
  expect_tensor_near(sqrt(tensor({4.f, 9.f, 0.f})), {3}, {2, 3, 0}, 0);
  expect_tensor_near(leaky_relu(tensor({-2.f, 3.f})), {2}, {-0.02, 3}, 1e-7);
  // Saturating inputs stay finite and exact at the ends.
  const auto s = vals(sigmoid(tensor({-100.f, 0.f, 100.f})));
  EXPECT_NEAR(s[0], 0, 1e-30);
  EXPECT_EQ(s[1], 0.5);
  EXPECT_EQ(s[2], 1.0);
  const auto t = vals(tanh(tensor({-50.f, 0.f, 50.f})));
  EXPECT_EQ(t[0], -1.0);
  EXPECT_EQ(t[1], 0.0);
  EXPECT_EQ(t[2], 1.0);
  // IEEE edge values.
  const auto l = vals(log(tensor({0.f, -1.f})));
  EXPECT_TRUE(std::isinf(l[0]) && l[0] < 0);
  EXPECT_TRUE(std::isnan(l[1]));
  EXPECT_TRUE(std::isnan(vals(sqrt(tensor({-1.f}, {1})))[0]));
  EXPECT_EQ(vals(exp(tensor({-1000.f}, {1})))[0], 0.0);
  EXPECT_TRUE(std::isinf(vals(exp(tensor({1000.f}, {1})))[0]));
  // 0-d in, 0-d out.
  const Tensor e = exp(scalar_tensor(1, {.dtype = DType::Float64}));
  EXPECT_EQ(e.dim(), 0);
  EXPECT_DOUBLE_EQ(e.item(), std::exp(1.0));
  // Empty in, empty out.
  EXPECT_EQ(exp(zeros({0, 4})).shape(), (Shape{0, 4}));
  EXPECT_ERROR((clamp(tensor({1.f}), 2, 1)), "clamp: min 2 is greater than max 1");
}

// ---------------- scalar operands ----------------

TEST(Scalars, EveryOperatorForm) {
  const Tensor x = tensor({1.f, 2.f, 4.f, -8.f});
  expect_tensor_near(x + 2, {4}, {3, 4, 6, -6}, 0);
  expect_tensor_near(2 + x, {4}, {3, 4, 6, -6}, 0);
  expect_tensor_near(x - 2, {4}, {-1, 0, 2, -10}, 0);
  expect_tensor_near(2 - x, {4}, {1, 0, -2, 10}, 0);
  expect_tensor_near(x * 3, {4}, {3, 6, 12, -24}, 0);
  expect_tensor_near(3 * x, {4}, {3, 6, 12, -24}, 0);
  expect_tensor_near(x / 4, {4}, {0.25, 0.5, 1, -2}, 0);
  expect_tensor_near(x / 3, {4}, {1 / 3.0, 2 / 3.0, 4 / 3.0, -8 / 3.0}, 1e-6);
  expect_tensor_near(4 / x, {4}, {4, 2, 1, -0.5}, 0);
  expect_tensor_near(x.pow(2), {4}, {1, 4, 16, 64}, 0);
  for (const Tensor& r : {x + 2, 2 - x, x * 3, x / 4, 4 / x}) EXPECT_EQ(r.dtype(), DType::Float32);
  // float64 keeps its precision through a scalar op.
  const Tensor d = tensor(std::vector<double>{0.1, 0.2});
  const Tensor scaled = d * 0.1 + 1e-10;
  EXPECT_EQ(scaled.dtype(), DType::Float64);
  expect_all_near(vals(scaled), {0.1 * 0.1 + 1e-10, 0.2 * 0.1 + 1e-10}, 1e-15);
  EXPECT_EQ((1.0 / d).dtype(), DType::Float64);
  EXPECT_EQ(vals(1.0 / d)[0], 1.0 / 0.1);
  // Division by zero in floating point gives IEEE infinities.
  const auto inf = vals(tensor({1.f, -1.f}) / 0.0);
  EXPECT_TRUE(std::isinf(inf[0]) && inf[0] > 0);
  EXPECT_TRUE(std::isinf(inf[1]) && inf[1] < 0);
}

TEST(Scalars, ZeroDimTensorOperands) {
  const Tensor x = tensor({1.f, 2.f, 3.f}, {3, 1});
  const Tensor s = scalar_tensor(10);
  expect_tensor_near(x * s, {3, 1}, {10, 20, 30}, 0);
  expect_tensor_near(s - x, {3, 1}, {9, 8, 7}, 0);
  expect_tensor_near(pow(s, x), {3, 1}, {10, 100, 1000}, 1e-6);
}

// ---------------- int64 ----------------

TEST(Int64, Arithmetic) {
  const Tensor a = tensor(std::vector<int64_t>{7, -7, 9, 0}), b = tensor(std::vector<int64_t>{2, 2, -4, 5});
  const Tensor sum = a + b, prod = a * b, quot = a / b;
  for (const Tensor& t : {sum, a - b, prod, maximum(a, b), minimum(a, b), eq(a, b), -a, abs(a)})
    EXPECT_EQ(t.dtype(), DType::Int64);
  EXPECT_EQ(sum.to_vector<int64_t>(), (std::vector<int64_t>{9, -5, 5, 5}));
  EXPECT_EQ((a - b).to_vector<int64_t>(), (std::vector<int64_t>{5, -9, 13, -5}));
  EXPECT_EQ(prod.to_vector<int64_t>(), (std::vector<int64_t>{14, -14, -36, 0}));
  // Division is true division in float32, as PyTorch's.
  EXPECT_EQ(quot.dtype(), DType::Float32);
  EXPECT_EQ(vals(quot), (std::vector<double>{3.5, -3.5, -2.25, 0}));
  EXPECT_EQ(maximum(a, b).to_vector<int64_t>(), (std::vector<int64_t>{7, 2, 9, 5}));
  EXPECT_EQ(minimum(a, b).to_vector<int64_t>(), (std::vector<int64_t>{2, -7, -4, 0}));
  EXPECT_EQ(pow(tensor(std::vector<int64_t>{2, 3}), tensor(std::vector<int64_t>{10, 3})).to_vector<int64_t>(),
            (std::vector<int64_t>{1024, 27}));
  EXPECT_EQ((-a).to_vector<int64_t>(), (std::vector<int64_t>{-7, 7, -9, 0}));
  EXPECT_EQ(abs(a).to_vector<int64_t>(), (std::vector<int64_t>{7, 7, 9, 0}));
  EXPECT_EQ(gt(a, b).to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 1, 0}));
  // Values beyond float precision stay exact.
  const int64_t big = (int64_t{1} << 53) + 1;
  EXPECT_EQ((tensor(std::vector<int64_t>{big}, {1}) + tensor(std::vector<int64_t>{1}, {1})).to_vector<int64_t>()[0],
            big + 1);
}

// int64 / int64 promotes to float32 (PyTorch's true division) on every device, so a
// zero divisor gives inf or NaN as in float, never a trap or a device-dependent 0.
TEST(Int64, DivisionByZeroIsFloatDivision) {
  const Tensor q = tensor(std::vector<int64_t>{1, -2, 0}) / tensor(std::vector<int64_t>{0, 0, 0});
  EXPECT_EQ(q.dtype(), DType::Float32);
  const auto v = vals(q);
  EXPECT_TRUE(std::isinf(v[0]) && v[0] > 0);
  EXPECT_TRUE(std::isinf(v[1]) && v[1] < 0);
  EXPECT_TRUE(std::isnan(v[2]));
}

TEST(Int64, PowIsExactAndTruncatesNegativeExponents) {
  const Tensor base = tensor(std::vector<int64_t>{3, -2, 1, -1, 5}), e = tensor(std::vector<int64_t>{39, 3, -4, -3, -1});
  EXPECT_EQ(pow(base, e).to_vector<int64_t>(), (std::vector<int64_t>{4052555153018976267, -8, 1, -1, 0}));
}

// Overflow wraps (two's complement) as in PyTorch, and is not undefined behaviour: the
// sanitizer build runs this test.
TEST(Int64, OverflowWraps) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max(), kMin = std::numeric_limits<int64_t>::min();
  const Tensor a = tensor(std::vector<int64_t>{kMax, kMin, kMax}), b = tensor(std::vector<int64_t>{1, 1, 2});
  EXPECT_EQ((a + b).to_vector<int64_t>(), (std::vector<int64_t>{kMin, kMin + 1, kMin + 1}));
  EXPECT_EQ((a - b).to_vector<int64_t>(), (std::vector<int64_t>{kMax - 1, kMax, kMax - 2}));
  EXPECT_EQ((a * b).to_vector<int64_t>(), (std::vector<int64_t>{kMax, kMin, -2}));
  EXPECT_EQ((-a).to_vector<int64_t>(), (std::vector<int64_t>{kMin + 1, kMin, kMin + 1}));
  EXPECT_EQ(abs(a).to_vector<int64_t>(), (std::vector<int64_t>{kMax, kMin, kMax}));
  EXPECT_EQ((a * 3 + 1).to_vector<int64_t>(), (std::vector<int64_t>{kMax - 1, kMin + 1, kMax - 1}));
}

TEST(Int64, ScalarsAndPromotion) {
  const Tensor a = tensor(std::vector<int64_t>{3, 4});
  EXPECT_EQ((a * 2).dtype(), DType::Int64);
  EXPECT_EQ((a * 2).to_vector<int64_t>(), (std::vector<int64_t>{6, 8}));
  EXPECT_EQ((a + 1).to_vector<int64_t>(), (std::vector<int64_t>{4, 5}));
  // A fractional scalar promotes to float32 instead of truncating.
  EXPECT_EQ((a * 0.5).dtype(), DType::Float32);
  EXPECT_EQ(vals(a * 0.5), (std::vector<double>{1.5, 2}));
  EXPECT_EQ(vals(a + 0.25), (std::vector<double>{3.25, 4.25}));
  EXPECT_EQ(vals(a / 2.0), (std::vector<double>{1.5, 2}));
  EXPECT_EQ((1.0 / a).dtype(), DType::Float32);
  EXPECT_NEAR(vals(1.0 / a)[0], 1 / 3.0, 1e-7);
  // With a float tensor: promoted.
  EXPECT_EQ(vals(a * tensor({0.5f, 0.25f})), (std::vector<double>{1.5, 1}));
  // Whole numbers beyond int64 (Inf, 1e19) promote too: converting them to int64 would be UB.
  EXPECT_EQ((a * INFINITY).dtype(), DType::Float32);
  EXPECT_EQ(vals(a * INFINITY), (std::vector<double>{INFINITY, INFINITY}));
  EXPECT_EQ(vals(a * -INFINITY), (std::vector<double>{-INFINITY, -INFINITY}));
  EXPECT_EQ(vals(a + 1e19), (std::vector<double>{double(3 + 1e19f), double(4 + 1e19f)}));
  EXPECT_EQ((a + 0x1p63).dtype(), DType::Float32);  // 2^63 is INT64_MAX + 1
  EXPECT_EQ(vals(a + 0x1p63), (std::vector<double>{0x1p63, 0x1p63}));
  EXPECT_TRUE(std::isnan(vals(a * NAN)[0]));
  // -2^63 is an int64 value (INT64_MIN): a - 2^63 stays int64, and exact.
  EXPECT_EQ((a - 0x1p63).to_vector<int64_t>(),
            (std::vector<int64_t>{std::numeric_limits<int64_t>::min() + 3, std::numeric_limits<int64_t>::min() + 4}));
  // Comparisons with such numbers are exact (in float64).
  EXPECT_EQ(lt(a, 1e19).to_vector<int64_t>(), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(gt(a, -INFINITY).to_vector<int64_t>(), (std::vector<int64_t>{1, 1}));
}

TEST(Int64, FloatOnlyOpsRefuse) {
  const Tensor a = tensor(std::vector<int64_t>{1, 2});
  EXPECT_ERROR(exp(a), "exp: not defined for int64 tensors");
  EXPECT_ERROR(log(a), "log:", "int64");
  EXPECT_ERROR(sqrt(a), "sqrt:", "int64");
  EXPECT_ERROR(relu(a), "relu:", "int64");
  EXPECT_ERROR(sigmoid(a), "sigmoid:", "int64");
  EXPECT_ERROR(tanh(a), "tanh:", "int64");
  EXPECT_ERROR((clamp(a, 0, 1)), "clamp:", "int64");
  EXPECT_ERROR((pow(a, 2.0)), "pow:", "int64");
  EXPECT_ERROR((pow(2.0, a)), "pow:", "int64");
}

// ---------------- where ----------------

TEST(Where, SelectsAndBroadcasts) {
  const Tensor cond = tensor({1.f, 0.f, 1.f, 0.f}, {2, 2});
  const Tensor a = tensor({1.f, 2.f, 3.f, 4.f}, {2, 2}), b = tensor({-1.f, -2.f, -3.f, -4.f}, {2, 2});
  expect_tensor_near(where(cond, a, b), {2, 2}, {1, -2, 3, -4}, 0);
  // cond (2,1), a (2,2), b 0-d.
  expect_tensor_near(where(tensor({0.f, 1.f}, {2, 1}), a, scalar_tensor(9)), {2, 2}, {9, 9, 3, 4}, 0);
  // cond (3,) broadcast over rows, a (2,1), b (1,3).
  expect_tensor_near(where(tensor({1.f, 0.f, 1.f}), tensor({5.f, 6.f}, {2, 1}), tensor({7.f, 8.f, 9.f}, {1, 3})), {2, 3},
                     {5, 8, 5, 6, 8, 6}, 0);
  // A mask from a comparison; strided operands.
  const Tensor x = tensor({-3.f, 1.f, -2.f, 4.f, 5.f, -6.f}, {2, 3});
  expect_tensor_near(where(gt(x, zeros({})), x, zeros({})), {2, 3}, {0, 1, 0, 4, 5, 0}, 0);
  expect_tensor_near(where(lt(x.t(), zeros({})), x.t(), -x.t()), {3, 2}, {-3, -4, -1, -5, -2, -6}, 0);
  EXPECT_ERROR((where(zeros({3}), zeros({4}), zeros({4}))), "where: cannot broadcast [3] with [4]");
}

TEST(Where, AnyNonzeroConditionIsTrue) {
  // Conditions of every dtype; nonzero (also fractional or negative) means true.
  const Tensor ia = tensor(std::vector<int64_t>{1, 2, 3}), ib = tensor(std::vector<int64_t>{-1, -2, -3});
  const Tensor fa = tensor({1.f, 2.f, 3.f}), fb = tensor({-1.f, -2.f, -3.f});
  const Tensor fcond = tensor({0.5f, 0, -0.25f});
  const Tensor icond = tensor(std::vector<int64_t>{-7, 0, 1});
  EXPECT_EQ(where(fcond, ia, ib).to_vector<int64_t>(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(where(fcond, fa, fb).to_vector<int64_t>(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(where(icond, fa, fb).to_vector<int64_t>(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(where(tensor(std::vector<double>{1e-300, 0, 2}), fa, fb).to_vector<int64_t>(),
            (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(where(fcond, ia, ib).dtype(), DType::Int64);
}

TEST(Subgradient, ReluAbsClampAtTheKink) {
  EXPECT_EQ(grad_at([](const Tensor& x) { return relu(x); }, {-1, 0, 2}), (std::vector<double>{0, 0, 1}));
  EXPECT_EQ(grad_at([](const Tensor& x) { return abs(x); }, {-1, 0, 2}), (std::vector<double>{-1, 0, 1}));
  EXPECT_EQ(grad_at([](const Tensor& x) { return leaky_relu(x, 0.1); }, {-1, 0, 2}), (std::vector<double>{0.1, 0.1, 1}));
  // clamp passes the gradient on its bounds (inclusive), 0 strictly outside.
  EXPECT_EQ(grad_at([](const Tensor& x) { return clamp(x, -1, 1); }, {-2, -1, 0, 1, 2}),
            (std::vector<double>{0, 1, 1, 1, 0}));
}

TEST(Subgradient, MaximumMinimumTiesSplitTheGradient) {
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

}  // namespace

// A NaN in the input reaches the loss: a finite loss never hides NaN weights.
TEST(NaN, ReachesTheLossThroughAnMlpStep) {
  vgrad_test::Mlp model(4, 8, 3);
  Tensor x = vgrad_test::uniform_tensor({5, 4}, 1);
  std::vector<float> values = x.to_vector<float>();
  values[6] = std::nanf("");
  x = tensor(values, {5, 4});
  const Tensor logits = model(x);
  EXPECT_TRUE(std::isnan(logits.sum().item()));
}

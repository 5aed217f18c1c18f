// Tests for Tensor itself and the creation ops: constants, ranges, host data,
// seeded random numbers, item/to_vector/printing, dtype promotion, in-place
// writes with their version counter, and raw data access checks.
#include <algorithm>
#include <limits>
#include <map>
#include <numeric>
#include <sstream>

#include "core/grad_mode.h"
#include "support.h"

namespace {

using namespace vgrad;
using vgrad_test::vals;

// ---------------- creation ----------------

TEST(Creation, ZerosOnesFull) {
  const Tensor z = zeros({2, 3});
  EXPECT_EQ(z.shape(), (Shape{2, 3}));
  EXPECT_EQ(z.dtype(), DType::Float32);
  EXPECT_TRUE(z.device().is_cpu());
  EXPECT_TRUE(z.is_contiguous());
  EXPECT_EQ(vals(z), std::vector<double>(6, 0.0));
  EXPECT_EQ(vals(ones({4}, {.dtype = DType::Float64})), std::vector<double>(4, 1.0));
  EXPECT_EQ(ones({4}, {.dtype = DType::Float64}).dtype(), DType::Float64);
  const Tensor f = full({2, 2}, 2.5);
  EXPECT_EQ(vals(f), std::vector<double>(4, 2.5));
  const Tensor fi = full({3}, 7, {.dtype = DType::Int64});
  EXPECT_EQ(fi.dtype(), DType::Int64);
  EXPECT_EQ(fi.to_vector<int64_t>(), (std::vector<int64_t>{7, 7, 7}));
  EXPECT_EQ(zeros({0, 3}).numel(), 0);
  EXPECT_TRUE(vals(zeros({0, 3})).empty());
}

TEST(Creation, LikeAndScalar) {
  const Tensor x = full({2, 5}, 3.0, {.dtype = DType::Float64});
  const Tensor z = zeros_like(x), o = ones_like(x);
  EXPECT_EQ(z.shape(), x.shape());
  EXPECT_EQ(z.dtype(), DType::Float64);
  EXPECT_EQ(vals(z), std::vector<double>(10, 0.0));
  EXPECT_EQ(vals(o), std::vector<double>(10, 1.0));
  EXPECT_FALSE(z.storage() == x.storage());
  const Tensor s = scalar_tensor(4.25);
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.numel(), 1);
  EXPECT_EQ(s.item(), 4.25);
}

TEST(Creation, RequiresGradOption) {
  const Tensor w = zeros({3}, {.requires_grad = true});
  EXPECT_TRUE(w.requires_grad());
  EXPECT_TRUE(w.is_leaf());
  EXPECT_FALSE(zeros({3}).requires_grad());
  EXPECT_ERROR((zeros({3}, {.dtype = DType::Int64, .requires_grad = true})), "requires_grad", "int64");
}

TEST(Creation, BadShapes) {
  EXPECT_ERROR((zeros({2, -1})), "negative size -1", "[2, -1]", "dim 1");
  EXPECT_ERROR((zeros({1, 1, 1, 1, 1, 1, 1, 1, 1})), "9 dims exceed the maximum of 8");
}

TEST(Creation, ArangeInt) {
  const Tensor a = arange(5);
  EXPECT_EQ(a.dtype(), DType::Int64);
  EXPECT_EQ(a.shape(), (Shape{5}));
  EXPECT_EQ(a.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(arange(0).numel(), 0);
  EXPECT_EQ(arange(3, {.dtype = DType::Float32}).dtype(), DType::Float32);
}

TEST(Creation, ArangeRanges) {
  const Tensor a = arange(1, 3, 0.5);
  EXPECT_EQ(a.dtype(), DType::Float32);
  EXPECT_EQ(vals(a), (std::vector<double>{1, 1.5, 2, 2.5}));
  // End is exclusive; a step that does not divide the range rounds the count up.
  EXPECT_EQ(vals(arange(0, 10, 3)), (std::vector<double>{0, 3, 6, 9}));
  EXPECT_EQ(vals(arange(0, 10, 4)), (std::vector<double>{0, 4, 8}));
  EXPECT_EQ(vals(arange(5, 0, -2)), (std::vector<double>{5, 3, 1}));
  EXPECT_EQ(arange(3, 3, 1).numel(), 0);
  EXPECT_EQ(arange(3, 1, 1).numel(), 0);
  const Tensor d = arange(0, 1, 0.25, {.dtype = DType::Float64});
  EXPECT_EQ(d.dtype(), DType::Float64);
  EXPECT_EQ(vals(d), (std::vector<double>{0, 0.25, 0.5, 0.75}));
  EXPECT_ERROR((arange(0, 1, 0)), "arange", "step=0");
  EXPECT_ERROR((arange(0, INFINITY, 1)), "arange", "bad range");
  // Finite arguments whose count is no int64: end - start overflows to Inf, or the quotient does.
  EXPECT_ERROR((arange(0, 1e300, 1e-300)), "arange: start=0 end=1e+300 step=1e-300", "inf elements",
               "too many for an int64 count");
  EXPECT_ERROR((arange(-1e308, 1e308, 1)), "arange", "inf elements");
  EXPECT_ERROR((arange(0, 0x1p63, 1)), "arange", "9.223372036854776e+18 elements");
  EXPECT_EQ(arange(1e308, -1e308, 1).numel(), 0);  // -Inf elements: empty, as arange(3, 1, 1)
}

TEST(Creation, Eye) {
  const Tensor e = eye(3);
  EXPECT_EQ(e.shape(), (Shape{3, 3}));
  EXPECT_EQ(e.dtype(), DType::Float32);
  EXPECT_EQ(vals(e), (std::vector<double>{1, 0, 0, 0, 1, 0, 0, 0, 1}));
  EXPECT_EQ(eye(2, {.dtype = DType::Int64}).to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 0, 1}));
  EXPECT_EQ(eye(0).numel(), 0);
}

TEST(Creation, FromVectors) {
  const Tensor f = tensor(std::vector<float>{1.5f, -2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(f.shape(), (Shape{2, 3}));
  EXPECT_EQ(f.dtype(), DType::Float32);
  EXPECT_EQ(f.to_vector<float>(), (std::vector<float>{1.5f, -2, 3, 4, 5, 6}));
  const Tensor d = tensor(std::vector<double>{0.1, 0.2, 0.3});
  EXPECT_EQ(d.dtype(), DType::Float64);
  EXPECT_EQ(d.shape(), (Shape{3}));
  EXPECT_EQ(d.to_vector<double>(), (std::vector<double>{0.1, 0.2, 0.3}));  // exact: no float32 round trip
  const Tensor i = tensor(std::vector<int64_t>{-3, 0, 1LL << 40}, {3, 1});
  EXPECT_EQ(i.dtype(), DType::Int64);
  EXPECT_EQ(i.shape(), (Shape{3, 1}));
  EXPECT_EQ(i.to_vector<int64_t>(), (std::vector<int64_t>{-3, 0, 1LL << 40}));
  const Tensor il = tensor({1.f, 2.f, 3.f, 4.f}, {2, 2});
  EXPECT_EQ(il.shape(), (Shape{2, 2}));
  EXPECT_EQ(vals(il), (std::vector<double>{1, 2, 3, 4}));
  // Values converted to a requested dtype.
  const Tensor conv = tensor(std::vector<double>{1.75, -2.5}, {2}, {.dtype = DType::Float32});
  EXPECT_EQ(conv.dtype(), DType::Float32);
  EXPECT_EQ(conv.to_vector<float>(), (std::vector<float>{1.75f, -2.5f}));
  // One value and no shape: a 0-d scalar.
  EXPECT_EQ(tensor({5.f}).shape(), (Shape{1}));  // 1-D, as the header says (scalar_tensor for 0-d)
  EXPECT_EQ(tensor({5.f}, {1}).shape(), (Shape{1}));
  EXPECT_EQ(tensor(std::vector<float>{}).shape(), (Shape{0}));
}

TEST(Creation, FromVectorsWrongCount) {
  EXPECT_ERROR((tensor({1.f, 2.f, 3.f}, {2, 2})), "tensor: 3 values do not fill shape [2, 2] (4 elements)");
  EXPECT_ERROR((tensor(std::vector<int64_t>{1, 2}, {3})), "tensor", "2 values", "[3]");
}

// ---------------- random ----------------

TEST(Random, SameSeedSameNumbers) {
  Generator g1(42), g2(42), g3(43);
  const auto a = vals(rand({1000}, {}, &g1)), b = vals(rand({1000}, {}, &g2)), c = vals(rand({1000}, {}, &g3));
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // The stream advances: the next draw differs from the first.
  const auto a2 = vals(rand({1000}, {}, &g1));
  EXPECT_NE(a, a2);
  // manual_seed restarts it.
  g1.manual_seed(42);
  EXPECT_EQ(vals(rand({1000}, {}, &g1)), a);
}

TEST(Random, EveryDistributionReproducible) {
  for (int kind = 0; kind < 4; ++kind) {
    auto draw = [&](uint64_t seed) {
      Generator g(seed);
      switch (kind) {
        case 0: return vals(rand({7, 9}, {}, &g));
        case 1: return vals(randn({7, 9}, {.dtype = DType::Float64}, &g));
        case 2: return vals(uniform({63}, -3, 5, {}, &g));
        default: return vals(normal({63}, 10, 0.5, {.dtype = DType::Float64}, &g));
      }
    };
    EXPECT_EQ(draw(7), draw(7)) << "kind " << kind;
    EXPECT_NE(draw(7), draw(8)) << "kind " << kind;
  }
}

TEST(Random, DefaultGeneratorManualSeed) {
  manual_seed(123);
  const auto a = vals(randn({50}));
  const auto a_next = vals(randn({50}));
  manual_seed(123);
  EXPECT_EQ(vals(randn({50})), a);
  EXPECT_EQ(vals(randn({50})), a_next);
  EXPECT_NE(a, a_next);
}

double mean_of(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / double(v.size()); }
double var_of(const std::vector<double>& v) {
  const double m = mean_of(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return s / double(v.size());
}

TEST(Random, UniformRangeAndMoments) {
  Generator g(1);
  const auto u = vals(rand({100000}, {.dtype = DType::Float64}, &g));
  EXPECT_GE(*std::min_element(u.begin(), u.end()), 0.0);
  EXPECT_LT(*std::max_element(u.begin(), u.end()), 1.0);
  EXPECT_NEAR(mean_of(u), 0.5, 0.01);
  EXPECT_NEAR(var_of(u), 1.0 / 12.0, 0.003);
  const auto w = vals(uniform({100000}, -3, 5, {}, &g));
  EXPECT_GE(*std::min_element(w.begin(), w.end()), -3.0);
  EXPECT_LT(*std::max_element(w.begin(), w.end()), 5.0);
  EXPECT_NEAR(mean_of(w), 1.0, 0.05);
  EXPECT_NEAR(var_of(w), 64.0 / 12.0, 0.1);
  // Roughly uniform: each tenth of [0, 1) gets about a tenth of the draws.
  std::vector<int> bins(10, 0);
  for (double x : u) bins[std::min(9, int(x * 10))]++;
  for (int count : bins) EXPECT_NEAR(count, 10000, 500);
}

TEST(Random, NormalMoments) {
  Generator g(2);
  const auto n = vals(randn({100001}, {}, &g));  // odd count: the last Box-Muller pair is half used
  EXPECT_NEAR(mean_of(n), 0.0, 0.02);
  EXPECT_NEAR(var_of(n), 1.0, 0.02);
  // About 68.3% within one standard deviation.
  const double inside = double(std::count_if(n.begin(), n.end(), [](double x) { return std::abs(x) < 1; })) / double(n.size());
  EXPECT_NEAR(inside, 0.6827, 0.01);
  const auto m = vals(normal({100000}, 10, 0.5, {.dtype = DType::Float64}, &g));
  EXPECT_NEAR(mean_of(m), 10.0, 0.01);
  EXPECT_NEAR(std::sqrt(var_of(m)), 0.5, 0.01);
  for (double x : m) ASSERT_TRUE(std::isfinite(x));
}

TEST(Random, InPlaceFillsAndDtypeCheck) {
  Tensor t = zeros({4, 4});
  const uint64_t v0 = t.version();
  Generator g(5);
  uniform_(t, 2, 3, &g);
  EXPECT_GT(t.version(), v0);
  for (double x : vals(t)) {
    EXPECT_GE(x, 2.0);
    EXPECT_LT(x, 3.0);
  }
  // A strided view is filled in place, leaving the rest alone.
  Tensor base = zeros({4, 4});
  Tensor column = base.select(1, 2);
  normal_(column, 100, 1, &g);
  const auto all = vals(base);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) {
      if (c == 2) EXPECT_GT(all[r * 4 + c], 90.0);
      else EXPECT_EQ(all[r * 4 + c], 0.0);
    }
  Tensor ints = zeros({3}, {.dtype = DType::Int64});
  EXPECT_ERROR((uniform_(ints, 0, 1)), "uniform_", "floating-point", "int64");
  EXPECT_ERROR((normal_(ints, 0, 1)), "normal_", "int64");
  // As PyTorch: a range given backwards, an infinite one, a negative stddev.
  EXPECT_ERROR((uniform({3}, 2.0, -1.0)), "uniform_: low 2 > high -1");
  EXPECT_ERROR((uniform_(t, 0, std::nan(""))), "uniform_: low 0 > high nan");
  EXPECT_ERROR((uniform_(t, -INFINITY, 1)), "uniform_: the range [-inf, 1) is not finite");
  EXPECT_ERROR((normal_(t, 0, -1)), "normal_: stddev -1 is negative");
  EXPECT_EQ(vals(uniform({2}, 1.5, 1.5)), (std::vector<double>{1.5, 1.5}));
  EXPECT_EQ(vals(normal({2}, 4, 0)), (std::vector<double>{4, 4}));
  EXPECT_ERROR((rand({2}, {.dtype = DType::Int64})), "int64");
}

TEST(Random, RandpermIsAReproduciblePermutation) {
  Generator g1(9), g2(9), g3(10);
  const auto p = randperm(1000, &g1).to_vector<int64_t>();
  EXPECT_EQ(randperm(1000, &g1).dtype(), DType::Int64);
  EXPECT_EQ(randperm(1000, &g2).to_vector<int64_t>(), p);
  EXPECT_NE(randperm(1000, &g3).to_vector<int64_t>(), p);
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> expected(1000);
  std::iota(expected.begin(), expected.end(), int64_t{0});
  EXPECT_EQ(sorted, expected);
  // Actually shuffled: few fixed points.
  int fixed = 0;
  for (int64_t i = 0; i < 1000; ++i) fixed += p[i] == i;
  EXPECT_LT(fixed, 10);
  EXPECT_EQ(randperm(0, &g1).numel(), 0);
  EXPECT_EQ(randperm(1, &g1).to_vector<int64_t>(), (std::vector<int64_t>{0}));
  EXPECT_ERROR(randperm(-1), "randperm", "-1");
}

TEST(Random, RandpermUniformOverSmallPermutations) {
  // All 6 permutations of 3 elements appear, each roughly 1/6 of the time.
  Generator g(11);
  std::map<std::vector<int64_t>, int> counts;
  for (int i = 0; i < 6000; ++i) counts[randperm(3, &g).to_vector<int64_t>()]++;
  EXPECT_EQ(counts.size(), 6u);
  for (const auto& [perm, count] : counts) EXPECT_NEAR(count, 1000, 150);
}

// ---------------- access and printing ----------------

TEST(Access, Item) {
  EXPECT_EQ(scalar_tensor(3.5).item(), 3.5);
  EXPECT_EQ(tensor({2.5f}, {1, 1}).item(), 2.5);
  EXPECT_EQ(full({}, 9, {.dtype = DType::Int64}).item<int64_t>(), 9);
  EXPECT_EQ(arange(10).select(0, 7).item<int64_t>(), 7);
  EXPECT_ERROR((zeros({2, 3}).item()), "item: tensor of shape [2, 3] has 6 elements, expected exactly 1");
  EXPECT_ERROR((zeros({0}).item()), "item", "[0]", "0 elements");
}

TEST(Access, ToVectorConvertsAndFollowsStrides) {
  const Tensor x = tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3});
  EXPECT_EQ(x.t().to_vector<float>(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  EXPECT_EQ(x.slice(1, 0, 3, 2).to_vector<int64_t>(), (std::vector<int64_t>{1, 3, 4, 6}));
  EXPECT_EQ(tensor({1.9f, -1.9f}).to_vector<int64_t>(), (std::vector<int64_t>{1, -1}));  // truncation
  EXPECT_EQ(tensor({1.f, 2.f}).expand({2, 2}).to_vector<double>(), (std::vector<double>{1, 2, 1, 2}));
}

TEST(Access, DataChecksDtype) {
  Tensor f = tensor({1.f, 2.f, 3.f});
  EXPECT_EQ(f.data<float>()[1], 2.0f);
  EXPECT_ERROR(f.data<double>(), "data: tensor is float32, asked for float64");
  EXPECT_ERROR(arange(3).data<float>(), "data: tensor is int64, asked for float32");
  EXPECT_EQ(arange(3).data<int64_t>()[2], 2);
  // data_ptr of a view points at its first element.
  const Tensor v = f.slice(0, 1, 3);
  EXPECT_EQ(v.data<float>(), f.data<float>() + 1);
  EXPECT_EQ(*v.data<float>(), 2.0f);
  // Writes through data() are seen by the tensor.
  f.data<float>()[0] = 10;
  EXPECT_EQ(vals(f)[0], 10.0);
}

TEST(Access, MetadataMethods) {
  const Tensor x = zeros({2, 3, 4});
  EXPECT_EQ(x.dim(), 3);
  EXPECT_EQ(x.size(0), 2);
  EXPECT_EQ(x.size(-1), 4);
  EXPECT_EQ(x.numel(), 24);
  EXPECT_EQ(x.strides(), (Strides{12, 4, 1}));
  EXPECT_ERROR(x.size(3), "size", "axis 3");
  EXPECT_FALSE(Tensor().defined());
  EXPECT_ERROR(Tensor().shape(), "undefined tensor");
  EXPECT_EQ(Tensor().str(), "Tensor(undefined)");
}

TEST(Print, SmallTensors) {
  EXPECT_EQ(tensor({1.5f, 2, -3}).str(), "tensor([1.5, 2, -3], shape=[3], dtype=float32)");
  EXPECT_EQ(arange(4).reshape({2, 2}).str(), "tensor([[0, 1],\n [2, 3]], shape=[2, 2], dtype=int64)");
  EXPECT_EQ(scalar_tensor(0.25, {.dtype = DType::Float64}).str(), "tensor(0.25, shape=[], dtype=float64)");
  EXPECT_EQ(zeros({0}).str(), "tensor([], shape=[0], dtype=float32)");
  EXPECT_EQ(zeros({2}, {.requires_grad = true}).str(), "tensor([0, 0], shape=[2], dtype=float32, requires_grad)");
  // Non-contiguous: printed in logical order.
  EXPECT_EQ(arange(4).reshape({2, 2}).t().str(), "tensor([[0, 2],\n [1, 3]], shape=[2, 2], dtype=int64)");
  std::ostringstream os;
  os << tensor({1.f, 2.f});
  EXPECT_EQ(os.str(), "tensor([1, 2], shape=[2], dtype=float32)");
}

TEST(Print, LargeTensorsAreAbbreviated) {
  const std::string big = arange(2000).str();
  EXPECT_EQ(big, "tensor([0, 1, 2, ..., 1997, 1998, 1999], shape=[2000], dtype=int64)");
  const std::string matrix = arange(3000).reshape({100, 30}).str();
  EXPECT_NE(matrix.find("[[0, 1, 2, ..., 27, 28, 29],"), std::string::npos) << matrix;
  EXPECT_NE(matrix.find("[2970, 2971, 2972, ..., 2997, 2998, 2999]]"), std::string::npos) << matrix;
  EXPECT_NE(matrix.find("shape=[100, 30], dtype=int64"), std::string::npos);
  EXPECT_EQ(matrix.find("1500"), std::string::npos);  // a middle row is left out
  EXPECT_LT(matrix.size(), 400u);
  // At the threshold (1000 elements) everything is printed.
  const std::string full_print = arange(1000).str();
  EXPECT_EQ(full_print.find("..."), std::string::npos);
  EXPECT_NE(full_print.find("500, 501"), std::string::npos);
}

// ---------------- dtype promotion ----------------

TEST(Promotion, Rules) {
  static_assert(promote(DType::Int64, DType::Float32) == DType::Float32);
  static_assert(promote(DType::Float32, DType::Float64) == DType::Float64);
  static_assert(promote(DType::Int64, DType::Float64) == DType::Float64);
  static_assert(promote(DType::Int64, DType::Int64) == DType::Int64);
  const Tensor i = tensor(std::vector<int64_t>{1, 2}), f = tensor({0.5f, 0.25f}),
               d = tensor(std::vector<double>{0.125, 1});
  EXPECT_EQ((i + f).dtype(), DType::Float32);
  EXPECT_EQ((f + i).dtype(), DType::Float32);
  EXPECT_EQ(vals(i + f), (std::vector<double>{1.5, 2.25}));
  EXPECT_EQ((f * d).dtype(), DType::Float64);
  EXPECT_EQ((d - i).dtype(), DType::Float64);
  EXPECT_EQ(vals(d - i), (std::vector<double>{-0.875, -1}));
  EXPECT_EQ((i * i).dtype(), DType::Int64);
  EXPECT_EQ(lt(i, f).dtype(), DType::Float32);
  EXPECT_EQ(maximum(i, d).dtype(), DType::Float64);
  EXPECT_EQ(where(tensor({1.f, 0.f}), i, d).dtype(), DType::Float64);
  EXPECT_EQ(cat({i, f}, 0).dtype(), DType::Float32);
  EXPECT_EQ(vals(cat({i, f}, 0)), (std::vector<double>{1, 2, 0.5, 0.25}));
}

TEST(Promotion, ToDtype) {
  const Tensor f = tensor({1.5f, -2.5f, 3});
  EXPECT_EQ(f.to(DType::Float32).storage(), f.storage());  // same dtype: no copy
  const Tensor d = f.to(DType::Float64);
  EXPECT_EQ(d.dtype(), DType::Float64);
  EXPECT_EQ(vals(d), (std::vector<double>{1.5, -2.5, 3}));
  EXPECT_EQ(f.to(DType::Int64).to_vector<int64_t>(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(tensor(std::vector<double>{0.1}, {1}).to(DType::Float32).to_vector<float>()[0], 0.1f);
  EXPECT_ERROR((zeros({2}, {.requires_grad = true}).to(DType::Int64)), "to", "int64", "detach");
}

// ---------------- in place ----------------

TEST(InPlace, FillZeroMul) {
  Tensor x = tensor({1.f, 2.f, 3.f, 4.f}, {2, 2});
  const uint64_t v0 = x.version();
  x.fill_(7);
  EXPECT_EQ(vals(x), std::vector<double>(4, 7.0));
  EXPECT_EQ(x.version(), v0 + 1);
  x.mul_(0.5);
  EXPECT_EQ(vals(x), std::vector<double>(4, 3.5));
  EXPECT_EQ(x.version(), v0 + 2);
  x.zero_();
  EXPECT_EQ(vals(x), std::vector<double>(4, 0.0));
  EXPECT_EQ(x.version(), v0 + 3);
  // Through a strided view: only the view's elements change, and the base sees the bump.
  Tensor base = zeros({3, 3});
  Tensor col = base.select(1, 0);
  const uint64_t vb = base.version();
  col.fill_(1);
  EXPECT_EQ(vals(base), (std::vector<double>{1, 0, 0, 1, 0, 0, 1, 0, 0}));
  EXPECT_EQ(base.version(), vb + 1);
  base.t().select(0, 0).mul_(3);  // same column through another view
  EXPECT_EQ(vals(base), (std::vector<double>{3, 0, 0, 3, 0, 0, 3, 0, 0}));
}

TEST(InPlace, CopyBroadcastsAndConverts) {
  Tensor x = zeros({2, 3});
  const uint64_t v0 = x.version();
  x.copy_(tensor({1.f, 2.f, 3.f}));
  EXPECT_EQ(vals(x), (std::vector<double>{1, 2, 3, 1, 2, 3}));
  EXPECT_EQ(x.version(), v0 + 1);
  x.copy_(tensor(std::vector<int64_t>{7, 8}, {2, 1}));
  EXPECT_EQ(vals(x), (std::vector<double>{7, 7, 7, 8, 8, 8}));
  x.copy_(tensor(std::vector<double>{1, 2, 3, 4, 5, 6}, {3, 2}).t());  // strided source
  EXPECT_EQ(vals(x), (std::vector<double>{1, 3, 5, 2, 4, 6}));
  Tensor ints = zeros({2}, {.dtype = DType::Int64});
  ints.copy_(tensor({2.7f, -1.2f}));
  EXPECT_EQ(ints.to_vector<int64_t>(), (std::vector<int64_t>{2, -1}));
  EXPECT_ERROR((x.copy_(zeros({4}))), "copy_", "[4]", "[2, 3]");
  EXPECT_ERROR((x.copy_(zeros({2, 3, 1}))), "copy_", "[2, 3, 1]");
  EXPECT_ERROR((zeros({3}).copy_(zeros({2, 3}))), "copy_", "cannot copy [2, 3] into [3]");
}

TEST(InPlace, AddWithAlphaAndBroadcast) {
  Tensor x = tensor({1.f, 2.f, 3.f, 4.f}, {2, 2});
  const uint64_t v0 = x.version();
  x.add_(tensor({10.f, 20.f}));
  EXPECT_EQ(vals(x), (std::vector<double>{11, 22, 13, 24}));
  EXPECT_EQ(x.version(), v0 + 1);
  x.add_(ones({2, 2}), -0.5);
  EXPECT_EQ(vals(x), (std::vector<double>{10.5, 21.5, 12.5, 23.5}));
  EXPECT_EQ(x.version(), v0 + 2);
  EXPECT_ERROR((x.add_(zeros({3}))), "add_", "[2, 2]", "[3]");
  EXPECT_ERROR((zeros({2}).add_(zeros({2, 2}))), "add_", "cannot add [2, 2] into [2]");
}

// alpha scales an int64 addend as an int64 only when it is an int64 value; otherwise in the
// floating destination's dtype (as PyTorch), and an int64 destination refuses it.
TEST(InPlace, AddInt64WithAlphaThatIsNoInt64) {
  const Tensor counts = tensor(std::vector<int64_t>{1, 2});
  Tensor x = zeros({2});
  x.add_(counts, 0.5);
  EXPECT_EQ(vals(x), (std::vector<double>{0.5, 1}));
  x.add_(counts, 1e19);
  EXPECT_EQ(vals(x), (std::vector<double>{double(0.5f + 1e19f), double(1.f + 2e19f)}));
  x.add_(counts, -INFINITY);
  EXPECT_EQ(vals(x), (std::vector<double>{-INFINITY, -INFINITY}));
  Tensor totals = tensor(std::vector<int64_t>{10, 20});
  totals.add_(counts, -3);
  EXPECT_EQ(totals.to_vector<int64_t>(), (std::vector<int64_t>{7, 14}));
  const uint64_t version = totals.version();
  EXPECT_ERROR(totals.add_(counts, 0.5), "add_: alpha 0.5 on an int64 tensor", "whole number");
  EXPECT_ERROR(totals.add_(counts, 1e19), "add_: alpha 1e+19");
  EXPECT_ERROR(totals.add_(counts, NAN), "add_: alpha nan");
  EXPECT_EQ(totals.to_vector<int64_t>(), (std::vector<int64_t>{7, 14}));  // refused before writing
  EXPECT_EQ(totals.version(), version);
}

// As PyTorch ("result type Float can't be cast to the desired output type Long"): an int64
// tensor cannot hold int64 + float, and nothing is written.
TEST(InPlace, AddOfAFloatingTensorIntoInt64IsRefused) {
  Tensor counts = tensor(std::vector<int64_t>{1, 2, -3});
  const uint64_t version = counts.version();
  EXPECT_ERROR(counts.add_(tensor({0.5f, 0.7f, 0.9f})), "add_: int64 tensor plus a float32 tensor gives float32",
               "use x + other");
  EXPECT_ERROR(counts.add_(tensor(std::vector<double>{2.0}, {})), "add_: int64 tensor plus a float64 tensor");
  EXPECT_EQ(counts.to_vector<int64_t>(), (std::vector<int64_t>{1, 2, -3}));
  EXPECT_EQ(counts.version(), version);
  Tensor x = zeros({3});  // the other way round is fine: float32 + int64 is float32
  x.add_(counts);
  EXPECT_EQ(vals(x), (std::vector<double>{1, 2, -3}));
}

TEST(InPlace, MulOfInt64RefusesWhatGivesFloat32) {
  Tensor labels = tensor(std::vector<int64_t>{3, -4});
  labels.mul_(-2);
  EXPECT_EQ(labels.to_vector<int64_t>(), (std::vector<int64_t>{-6, 8}));
  EXPECT_ERROR(labels.mul_(0.5), "mul_: int64 tensor times 0.5 gives float32", "use x * 0.5");
  EXPECT_ERROR(labels.mul_(1e19), "mul_: int64 tensor times 1e+19 gives float32");
  EXPECT_ERROR(labels.mul_(INFINITY), "mul_: int64 tensor times inf");
  EXPECT_EQ(labels.to_vector<int64_t>(), (std::vector<int64_t>{-6, 8}));
}

// Memory overlap, by PyTorch's rules (core/tensor.h): a destination with two elements
// at one address, or a destination and an operand that share memory partially, are
// refused before anything is written.

TEST(InPlace, DestinationWithRepeatedElementsIsRefused) {
  Tensor base = tensor({5.f});
  Tensor repeated = base.expand({4});  // four elements, one address
  const uint64_t v0 = base.version();
  const auto message = [](const char* op) {
    return std::string(op) +
           ": more than one element of the destination [4] (strides [0]) is the same memory "
           "location; clone() it first";
  };
  EXPECT_ERROR((repeated.copy_(ones({4}))), message("copy_"));
  EXPECT_ERROR((repeated.add_(ones({4}))), message("add_"));
  EXPECT_ERROR((repeated.add_(ones({4}), 3)), message("add_"));
  EXPECT_ERROR(repeated.mul_(2), message("mul_"));
  Generator g(1);
  EXPECT_ERROR((uniform_(repeated, 0, 1, &g)), message("uniform_"));
  EXPECT_ERROR((normal_(repeated, 0, 1, &g)), message("normal_"));
  EXPECT_EQ(vals(base), std::vector<double>{5});  // nothing written
  EXPECT_EQ(base.version(), v0);
  // Repeated along one dim of several: still refused, naming the shape and strides.
  Tensor rows = zeros({3, 1}).expand({3, 2});
  EXPECT_ERROR(rows.mul_(2), "mul_", "destination [3, 2] (strides [1, 0])");

  EXPECT_TRUE(has_internal_overlap(repeated));
  EXPECT_TRUE(has_internal_overlap(rows));
  EXPECT_FALSE(has_internal_overlap(zeros({2, 3})));
  EXPECT_FALSE(has_internal_overlap(zeros({3, 2}).t()));
  EXPECT_FALSE(has_internal_overlap(zeros({4, 4}).select(1, 2)));
}

TEST(InPlace, RepeatedElementsThatAreAllowed) {
  // fill_ writes one value many times, which is harmless (PyTorch skips the check too).
  Tensor base = tensor({5.f});
  base.expand({4}).fill_(2);
  EXPECT_EQ(vals(base), std::vector<double>{2});
  // Stride 0 on a size-1 dim repeats nothing.
  Tensor x = tensor({1.f, 2.f, 3.f});
  Tensor one_row = make_view(x, {1, 3}, {0, 1}, 0);
  EXPECT_FALSE(has_internal_overlap(one_row));
  one_row.add_(tensor({10.f, 20.f, 30.f}));
  EXPECT_EQ(vals(x), (std::vector<double>{11, 22, 33}));
  // An empty expanded tensor writes nothing (PyTorch allows it too).
  Tensor empty = zeros({0, 1}).expand({0, 4});
  EXPECT_FALSE(has_internal_overlap(empty));
  empty.add_(ones({0, 4}));
  EXPECT_EQ(empty.numel(), 0);
}

TEST(InPlace, PartialOverlapWithTheSourceIsRefused) {
  Tensor x = arange(0.0, 5.0);
  const uint64_t v0 = x.version();
  Tensor later = x.narrow(0, 1, 4), earlier = x.narrow(0, 0, 4);
  // The CPU loop would smear x[0] forward; a GPU's memcpy is undefined for it.
  EXPECT_ERROR((later.copy_(earlier)),
               "copy_: the source [4] (strides [1]) and the destination [4] (strides [1]) overlap in memory "
               "(partially); clone() the source first");
  EXPECT_ERROR((later.add_(earlier)), "add_: the addend [4] (strides [1]) and the destination [4]", "(partially)",
               "clone() the addend first");
  // alpha != 1 scales into a temporary, but the user's tensor is what overlaps.
  EXPECT_ERROR((earlier.add_(later, 2)), "add_", "overlap in memory (partially)");
  EXPECT_EQ(vals(x), (std::vector<double>{0, 1, 2, 3, 4}));  // nothing written
  EXPECT_EQ(x.version(), v0);
  // What the message says to do works.
  later.copy_(earlier.clone());
  EXPECT_EQ(vals(x), (std::vector<double>{0, 0, 1, 2, 3}));

  // A row of the destination, broadcast over it; the transpose over the same memory.
  Tensor m = arange(0.0, 6.0).view({2, 3});
  EXPECT_ERROR((m.add_(m[0])), "add_: the addend [3] (strides [1]) and the destination [2, 3] (strides [3, 1])");
  EXPECT_ERROR((m.copy_(m[1])), "copy_", "overlap in memory (partially)");
  Tensor square = arange(0.0, 4.0).view({2, 2});
  EXPECT_ERROR((square.copy_(square.t())),
               "copy_: the source [2, 2] (strides [1, 2]) and the destination [2, 2] "
               "(strides [2, 1])");
  EXPECT_EQ(vals(m), (std::vector<double>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(vals(square), (std::vector<double>{0, 1, 2, 3}));

  EXPECT_TRUE(overlaps_partially(later, earlier));
  EXPECT_TRUE(overlaps_partially(earlier, later));
  EXPECT_TRUE(overlaps_partially(square, square.t()));
}

TEST(InPlace, OverlapThatIsAllowed) {
  // The identical view: each element is read before it is written (PyTorch's FULL).
  Tensor x = tensor({1.f, 2.f, 3.f});
  x.add_(x);
  EXPECT_EQ(vals(x), (std::vector<double>{2, 4, 6}));
  x.add_(x, 0.5);
  EXPECT_EQ(vals(x), (std::vector<double>{3, 6, 9}));
  x.copy_(x);
  EXPECT_EQ(vals(x), (std::vector<double>{3, 6, 9}));
  x.add_(x.view({3}));  // another handle on the same view
  EXPECT_EQ(vals(x), (std::vector<double>{6, 12, 18}));
  // Deliberate difference: PyTorch refuses this (it compares raw strides); the elements
  // are the same ones at the same addresses.
  x.unsqueeze(0).add_(x);
  EXPECT_EQ(vals(x), (std::vector<double>{12, 24, 36}));
  EXPECT_FALSE(overlaps_partially(x.unsqueeze(0), x));

  // Interleaved columns share a storage and a byte range but no element (PyTorch allows
  // it: neither is dense, "too hard" to decide).
  Tensor pairs = arange(0.0, 6.0).view({3, 2});
  pairs.select(1, 0).copy_(pairs.select(1, 1));
  EXPECT_EQ(vals(pairs), (std::vector<double>{1, 1, 3, 3, 5, 5}));
  EXPECT_FALSE(overlaps_partially(pairs.select(1, 0), pairs.select(1, 1)));
  // Disjoint halves of one storage, and separate storages.
  Tensor halves = arange(0.0, 4.0);
  halves.narrow(0, 0, 2).copy_(halves.narrow(0, 2, 2));
  EXPECT_EQ(vals(halves), (std::vector<double>{2, 3, 2, 3}));
  Tensor other = halves.clone();
  halves.add_(other);
  EXPECT_EQ(vals(halves), (std::vector<double>{4, 6, 4, 6}));
  EXPECT_FALSE(overlaps_partially(halves, other));
  EXPECT_FALSE(overlaps_partially(halves.narrow(0, 0, 2), halves.narrow(0, 2, 2)));
  EXPECT_FALSE(overlaps_partially(halves, halves.narrow(0, 0, 0)));  // empty
}

TEST(InPlace, VersionSharedByViewsAndRandom) {
  Tensor x = zeros({4});
  const Tensor view = x.slice(0, 1, 3);
  const uint64_t v0 = view.version();
  x.fill_(1);
  EXPECT_EQ(view.version(), v0 + 1);
  EXPECT_EQ(vals(view), (std::vector<double>{1, 1}));
  Generator g(3);
  uniform_(x, 0, 1, &g);
  EXPECT_EQ(view.version(), v0 + 2);
  // An out-of-place op does not bump its input.
  const Tensor y = x + 1;
  EXPECT_EQ(x.version(), v0 + 2);
  EXPECT_EQ(y.version(), 0u);
}

TEST(InPlace, LeafThatRequiresGradIsProtected) {
  Tensor w = ones({3}, {.requires_grad = true});
  EXPECT_ERROR(w.fill_(0), "fill_", "leaf tensor that requires grad", "NoGradGuard");
  EXPECT_ERROR((w.add_(ones({3}))), "add_", "NoGradGuard");
  EXPECT_ERROR(w.mul_(2), "mul_");
  EXPECT_ERROR((w.copy_(ones({3}))), "copy_");
  {
    NoGradGuard guard;
    w.mul_(2);
    w.add_(ones({3}), 0.5);
  }
  EXPECT_EQ(vals(w), std::vector<double>(3, 2.5));
}

TEST(Tensor, DetachSharesStorageAndCloneDoesNot) {
  Tensor x = ones({3}, {.requires_grad = true});
  const Tensor d = x.detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_EQ(d.storage(), x.storage());
  const Tensor c = x.detach().clone();
  EXPECT_NE(c.storage(), x.storage());
  Tensor dm = x.detach();
  dm.fill_(5);  // detached tensors may be written; x sees it
  EXPECT_EQ(vals(x), std::vector<double>(3, 5.0));
  EXPECT_EQ(vals(c), std::vector<double>(3, 1.0));
}

TEST(Tensor, Flatten) {
  const Tensor x = arange(24).reshape({2, 3, 4});
  EXPECT_EQ(x.flatten().shape(), (Shape{24}));
  EXPECT_EQ(x.flatten(1).shape(), (Shape{2, 12}));
  EXPECT_EQ(x.flatten(0, 1).shape(), (Shape{6, 4}));
  EXPECT_EQ(x.flatten(-2, -1).shape(), (Shape{2, 12}));
  EXPECT_EQ(scalar_tensor(1).flatten().shape(), (Shape{1}));
  EXPECT_EQ(x.transpose(0, 2).flatten().to_vector<int64_t>()[1], 12);
  EXPECT_ERROR((x.flatten(2, 1)), "flatten", "start_dim 2 is after end_dim 1");
}

TEST(Tensor, Allclose) {
  const Tensor a = tensor({1.f, 2.f, 3.f});
  EXPECT_TRUE(allclose(a, tensor({1.f, 2.f, 3.f})));
  EXPECT_TRUE(allclose(a, tensor({1, 2, 3.00001f}), 1e-5, 1e-8));
  EXPECT_FALSE(allclose(a, tensor({1, 2, 3.001f})));
  EXPECT_TRUE(allclose(a, tensor({1, 2, 3.001f}), 1e-3));
  EXPECT_FALSE(allclose(a, tensor({1.f, 2.f, 3.f}, {3, 1})));  // shapes differ
  EXPECT_FALSE(allclose(tensor({NAN}, {1}), tensor({NAN}, {1})));
  EXPECT_TRUE(allclose(a, tensor(std::vector<double>{1, 2, 3})));  // dtypes may differ
  EXPECT_TRUE(allclose(a.reshape({3, 1}).t(), tensor({1.f, 2.f, 3.f}, {1, 3})));
}

TEST(Print, Int64IsExact) {
  const int64_t big = (int64_t{1} << 60) + 1, top = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(tensor(std::vector<int64_t>{big, -big}).str(), "tensor([1152921504606846977, -1152921504606846977], shape=[2], dtype=int64)");
  EXPECT_NE(tensor(std::vector<int64_t>{top, 0}).str().find("9223372036854775807"), std::string::npos);
}

}  // namespace

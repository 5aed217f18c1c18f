// conv2d, conv1d and pooling on the CPU: values against naive loops written here
// (direct definitions, no im2col), float64 gradchecks over strides, paddings,
// dilations and groups, the skipped input gradient, and the error messages.
// PyTorch's own numbers are checked in tests/nn/test_torch_reference.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "autograd/gradcheck.h"
#include "support.h"

namespace {

using namespace vgrad;
using vgrad_test::expect_near_all;
using vgrad_test::uniform_tensor;
using vgrad_test::vals;

struct ConvCase {
  int64_t n, c, h, w, f, kh, kw;
  Pair2 stride, padding, dilation;
  int64_t groups;
  bool bias;
};

// out[n, f, oh, ow] = b[f] + Σ_{c in f's group, kh, kw} x[n, c, oh·s − p + kh·d, ow·s − p + kw·d] · w[f, c', kh, kw]
std::vector<double> naive_conv2d(const std::vector<double>& x, const std::vector<double>& w,
                                 const std::vector<double>& b, const ConvCase& k, int64_t oh_n, int64_t ow_n) {
  const int64_t cg = k.c / k.groups, fg = k.f / k.groups;
  std::vector<double> out(size_t(k.n * k.f * oh_n * ow_n), 0.0);
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t f = 0; f < k.f; ++f)
      for (int64_t oh = 0; oh < oh_n; ++oh)
        for (int64_t ow = 0; ow < ow_n; ++ow) {
          double sum = b.empty() ? 0.0 : b[size_t(f)];
          const int64_t group = f / fg;
          for (int64_t ci = 0; ci < cg; ++ci)
            for (int64_t i = 0; i < k.kh; ++i)
              for (int64_t j = 0; j < k.kw; ++j) {
                const int64_t ih = oh * k.stride[0] - k.padding[0] + i * k.dilation[0];
                const int64_t iw = ow * k.stride[1] - k.padding[1] + j * k.dilation[1];
                if (ih < 0 || ih >= k.h || iw < 0 || iw >= k.w) continue;
                const int64_t c = group * cg + ci;
                sum += x[size_t(((n * k.c + c) * k.h + ih) * k.w + iw)] * w[size_t(((f * cg + ci) * k.kh + i) * k.kw + j)];
              }
          out[size_t(((n * k.f + f) * oh_n + oh) * ow_n + ow)] = sum;
        }
  return out;
}

const std::vector<ConvCase> kCases = {
    {2, 3, 7, 6, 4, 3, 3, {1, 1}, {0, 0}, {1, 1}, 1, true},    // plain
    {2, 3, 7, 6, 4, 3, 2, {2, 1}, {1, 0}, {1, 1}, 1, true},    // stride, padding, non-square kernel
    {1, 2, 8, 8, 2, 3, 3, {1, 2}, {2, 2}, {2, 1}, 1, false},   // dilation, no bias
    {3, 4, 5, 5, 6, 3, 3, {1, 1}, {1, 1}, {1, 1}, 2, true},    // groups
    {2, 4, 6, 5, 4, 2, 2, {2, 2}, {1, 1}, {1, 2}, 4, true},    // depthwise, everything at once
    {2, 3, 4, 4, 5, 1, 1, {1, 1}, {0, 0}, {1, 1}, 1, true},    // 1x1
};

Tensor conv_of(const ConvCase& k, const std::vector<Tensor>& in) {
  return conv2d(in[0], in[1], k.bias ? in[2] : Tensor(), k.stride, k.padding, k.dilation, k.groups);
}

std::vector<Tensor> inputs_of(const ConvCase& k, DType dtype, uint64_t seed) {
  std::vector<Tensor> in{uniform_tensor({k.n, k.c, k.h, k.w}, seed, -1, 1, dtype),
                         uniform_tensor({k.f, k.c / k.groups, k.kh, k.kw}, seed + 1, -1, 1, dtype)};
  if (k.bias) in.push_back(uniform_tensor({k.f}, seed + 2, -1, 1, dtype));
  return in;
}

TEST(Conv2d, MatchesNaiveLoopsOverStridesPaddingsDilationsGroups) {
  for (size_t i = 0; i < kCases.size(); ++i) {
    const ConvCase& k = kCases[i];
    for (DType dtype : {DType::Float32, DType::Float64}) {
      const auto in = inputs_of(k, dtype, 10 * i);
      const Tensor out = conv_of(k, in);
      const int64_t oh = (k.h + 2 * k.padding[0] - k.dilation[0] * (k.kh - 1) - 1) / k.stride[0] + 1;
      const int64_t ow = (k.w + 2 * k.padding[1] - k.dilation[1] * (k.kw - 1) - 1) / k.stride[1] + 1;
      ASSERT_EQ(out.shape(), (Shape{k.n, k.f, oh, ow})) << "case " << i;
      const auto want = naive_conv2d(vals(in[0]), vals(in[1]), k.bias ? vals(in[2]) : std::vector<double>{}, k, oh, ow);
      expect_near_all(vals(out), want, dtype == DType::Float32 ? 1e-5 : 1e-12, "conv2d");
    }
  }
}

TEST(Conv2d, GradcheckFloat64) {
  for (size_t i = 0; i < kCases.size(); ++i) {
    const ConvCase& k = kCases[i];
    const auto report = autograd::gradcheck([&](const std::vector<Tensor>& in) { return conv_of(k, in); },
                                            inputs_of(k, DType::Float64, 100 + i));
    EXPECT_TRUE(report.ok) << "case " << i << ": " << report.message;
  }
}

TEST(Conv2d, SkipsTheInputGradientWhenNotNeededAndKeepsTheOthers) {
  const ConvCase& k = kCases[3];
  auto in = inputs_of(k, DType::Float64, 7);
  in[1].requires_grad_();
  in[2].requires_grad_();
  conv_of(k, in).sum().backward();
  EXPECT_FALSE(in[0].grad().defined());
  const auto dw = vals(in[1].grad()), db = vals(in[2].grad());
  // The same weight gradient when the input does need one.
  auto again = inputs_of(k, DType::Float64, 7);
  for (auto& t : again) t.requires_grad_();
  conv_of(k, again).sum().backward();
  EXPECT_TRUE(again[0].grad().defined());
  expect_near_all(vals(again[1].grad()), dw, 1e-12, "dW");
  expect_near_all(vals(again[2].grad()), db, 1e-12, "db");
  // d(Σ out)/db[f] = N·OH·OW.
  EXPECT_DOUBLE_EQ(db[0], double(k.n * 5 * 5));
}

TEST(Conv2d, ErrorsSayWhatWhereAndWhy) {
  const Tensor x = zeros({8, 3, 28, 28}), w = zeros({16, 1, 3, 3});
  EXPECT_ERROR(conv2d(x, w), "conv2d: input [8, 3, 28, 28] has 3 channels, weight [16, 1, 3, 3] expects 1");
  EXPECT_ERROR(conv2d(zeros({3, 28, 28}), w), "conv2d: input must be 4-D (N, C, H, W), got [3, 28, 28]");
  EXPECT_ERROR(conv2d(x, zeros({16, 3, 3, 3}), zeros({8})), "bias [8] does not match weight [16, 3, 3, 3]");
  EXPECT_ERROR(conv2d(x, zeros({16, 1, 3, 3}), Tensor(), {1, 1}, {0, 0}, {1, 1}, 2), "groups 2 must divide");
  EXPECT_ERROR(conv2d(zeros({1, 1, 2, 2}), zeros({1, 1, 3, 3})), "larger than the padded input 2x2");
  EXPECT_ERROR(conv2d(x, zeros({16, 3, 3, 3}), Tensor(), {0, 1}), "conv2d: stride 0x1 must be >= 1");
  EXPECT_ERROR(conv2d(x, zeros({16, 3, 3, 3}, {.dtype = DType::Float64})), "input is float32 but weight is float64");
}

// out[n, f, l] = b[f] + Σ_{c, k} x[n, c, l·s − p + k·d] · w[f, c, k]
TEST(Conv1d, MatchesNaiveLoopAndGradchecks) {
  const Tensor x = uniform_tensor({2, 3, 11}, 1, -1, 1, DType::Float64);
  const Tensor w = uniform_tensor({4, 3, 3}, 2, -1, 1, DType::Float64), b = uniform_tensor({4}, 3, -1, 1, DType::Float64);
  const Tensor out = conv1d(x, w, b, 2, 1, 2);
  const int64_t len = (11 + 2 - 2 * 2 - 1) / 2 + 1;
  ASSERT_EQ(out.shape(), (Shape{2, 4, len}));
  const auto xv = vals(x), wv = vals(w), bv = vals(b);
  std::vector<double> want;
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t f = 0; f < 4; ++f)
      for (int64_t l = 0; l < len; ++l) {
        double sum = bv[size_t(f)];
        for (int64_t c = 0; c < 3; ++c)
          for (int64_t k = 0; k < 3; ++k) {
            const int64_t i = l * 2 - 1 + k * 2;
            if (i >= 0 && i < 11) sum += xv[size_t((n * 3 + c) * 11 + i)] * wv[size_t((f * 3 + c) * 3 + k)];
          }
        want.push_back(sum);
      }
  expect_near_all(vals(out), want, 1e-12, "conv1d");
  const auto report = autograd::gradcheck(
      [](const std::vector<Tensor>& in) { return conv1d(in[0], in[1], in[2], 2, 1, 2); }, {x, w, b});
  EXPECT_TRUE(report.ok) << report.message;
  EXPECT_ERROR(conv1d(zeros({2, 3, 11}), zeros({4, 2, 3})), "conv1d: input [2, 3, 11] has 3 channels, weight [4, 2, 3] expects 2");
}

// A window reduction over x (N, C, H, W) written directly; `reduce` sees the window's
// values, with padded positions given as `pad`.
template <class F>
std::vector<double> naive_pool(const Tensor& x, Pair2 k, Pair2 s, Pair2 p, Pair2 d, double pad, F reduce) {
  const Shape& sh = x.shape();
  const auto xv = vals(x);
  const int64_t oh_n = (sh[2] + 2 * p[0] - d[0] * (k[0] - 1) - 1) / s[0] + 1;
  const int64_t ow_n = (sh[3] + 2 * p[1] - d[1] * (k[1] - 1) - 1) / s[1] + 1;
  std::vector<double> out;
  for (int64_t nc = 0; nc < sh[0] * sh[1]; ++nc)
    for (int64_t oh = 0; oh < oh_n; ++oh)
      for (int64_t ow = 0; ow < ow_n; ++ow) {
        std::vector<double> window;
        for (int64_t i = 0; i < k[0]; ++i)
          for (int64_t j = 0; j < k[1]; ++j) {
            const int64_t ih = oh * s[0] - p[0] + i * d[0], iw = ow * s[1] - p[1] + j * d[1];
            const bool in = ih >= 0 && ih < sh[2] && iw >= 0 && iw < sh[3];
            window.push_back(in ? xv[size_t((nc * sh[2] + ih) * sh[3] + iw)] : pad);
          }
        out.push_back(reduce(window));
      }
  return out;
}

double max_of(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }
double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double e : v) s += e;
  return s / double(v.size());
}

TEST(MaxPool2d, MatchesNaiveLoopAndGradchecks) {
  const double inf = std::numeric_limits<double>::infinity();
  const Tensor x = uniform_tensor({2, 3, 7, 6}, 4, -1, 1, DType::Float64);
  struct Case { Pair2 k, s, p, d; };
  for (const Case& c : {Case{{2, 2}, {2, 2}, {0, 0}, {1, 1}}, Case{{3, 3}, {2, 1}, {1, 1}, {1, 1}},
                        Case{{2, 3}, {1, 2}, {1, 0}, {2, 1}}}) {
    const Tensor out = max_pool2d(x, c.k, c.s, c.p, c.d);
    expect_near_all(vals(out), naive_pool(x, c.k, c.s, c.p, c.d, -inf, max_of), 0, "max_pool2d");
    const auto report = autograd::gradcheck(
        [&](const std::vector<Tensor>& in) { return max_pool2d(in[0], c.k, c.s, c.p, c.d); }, {x});
    EXPECT_TRUE(report.ok) << report.message;
  }
  EXPECT_EQ(max_pool2d(x, {2, 2}).shape(), (Shape{2, 3, 3, 3}));  // stride defaults to the kernel
}

TEST(MaxPool2d, TiedMaximaSendTheGradientToTheFirstOnly) {
  Tensor x = ones({1, 1, 2, 2}, {.requires_grad = true});
  max_pool2d(x, {2, 2}).sum().backward();
  vgrad_test::expect_values(x.grad(), {1, 0, 0, 0});
}

// PyTorch's max_pool2d rule, written directly (aten/src/ATen/native/cpu/MaxPoolKernel.cpp):
// from max = −∞ and the window's first valid position, walking it row by row, a value
// wins when it is greater or NaN. Returns the values and, per output, the input index.
struct PoolResult {
  std::vector<double> values;
  std::vector<int64_t> at;  // into x's flat storage
};
PoolResult pytorch_max_pool(const Tensor& x, Pair2 k, Pair2 s, Pair2 p, Pair2 d) {
  const Shape& sh = x.shape();
  const auto xv = vals(x);
  const int64_t oh_n = (sh[2] + 2 * p[0] - d[0] * (k[0] - 1) - 1) / s[0] + 1;
  const int64_t ow_n = (sh[3] + 2 * p[1] - d[1] * (k[1] - 1) - 1) / s[1] + 1;
  PoolResult r;
  for (int64_t nc = 0; nc < sh[0] * sh[1]; ++nc)
    for (int64_t oh = 0; oh < oh_n; ++oh)
      for (int64_t ow = 0; ow < ow_n; ++ow) {
        double best = -std::numeric_limits<double>::infinity();
        int64_t at = -1;
        for (int64_t i = 0; i < k[0]; ++i)
          for (int64_t j = 0; j < k[1]; ++j) {
            const int64_t ih = oh * s[0] - p[0] + i * d[0], iw = ow * s[1] - p[1] + j * d[1];
            if (ih < 0 || ih >= sh[2] || iw < 0 || iw >= sh[3]) continue;
            const int64_t pos = (nc * sh[2] + ih) * sh[3] + iw;
            if (at < 0) at = pos;
            if (xv[size_t(pos)] > best || std::isnan(xv[size_t(pos)])) best = xv[size_t(pos)], at = pos;
          }
        r.values.push_back(best);
        r.at.push_back(at);
      }
  return r;
}

void expect_same_or_both_nan(const std::vector<double>& got, const std::vector<double>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << what << " at " << i << ": " << got[i];
    } else {
      EXPECT_EQ(got[i], want[i]) << what << " at " << i;
    }
}

TEST(MaxPool2d, NaNAndInfinityGiveTorchsValuesAndIndices) {
  // From torch 1.13.0 (CPU), F.max_pool2d(..., return_indices=True) on 2x2 inputs, kernel 2:
  //   [nan, 1, nan, 2] -> nan at 2;   [1, nan, 3, 4] -> nan at 1;   [nan, nan, nan, nan] -> nan at 3
  //   [-inf x4] -> -inf at 0;         [1, 5, 5, 2] -> 5 at 1;        [nan, 9, 1, 2] -> nan at 0
  // and kernel 3, stride 1, padding 1 on [[1, nan, 2], [nan, 3, 4], [5, 6, 7]]:
  //   values [nan x8, 7], indices [3, 3, 1, 3, 3, 1, 3, 3, 8].
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  struct Case {
    std::vector<double> x;
    double value;
    int64_t index;
  };
  const std::vector<Case> cases = {{{nan, 1, nan, 2}, nan, 2},     {{1, nan, 3, 4}, nan, 1},
                                   {{nan, nan, nan, nan}, nan, 3}, {{-inf, -inf, -inf, -inf}, -inf, 0},
                                   {{1, 5, 5, 2}, 5, 1},           {{nan, 9, 1, 2}, nan, 0}};
  for (DType dtype : {DType::Float32, DType::Float64})
    for (const Case& c : cases) {
      Tensor x = tensor(c.x, {1, 1, 2, 2}).to(dtype).requires_grad_();
      const Tensor out = max_pool2d(x, {2, 2});  // the 2x2 stride-2 path
      expect_same_or_both_nan(vals(out), {c.value}, "2x2 value");
      out.sum().backward();
      std::vector<double> one_hot(4, 0.0);
      one_hot[size_t(c.index)] = 1;
      EXPECT_EQ(vals(x.grad()), one_hot) << "2x2 index, " << dtype_name(dtype);
    }
  Tensor x = tensor(std::vector<double>{1, nan, 2, nan, 3, 4, 5, 6, 7}, {1, 1, 3, 3}).requires_grad_();
  const Tensor out = max_pool2d(x, {3, 3}, {1, 1}, {1, 1});  // the general path
  expect_same_or_both_nan(vals(out), {nan, nan, nan, nan, nan, nan, nan, nan, 7}, "3x3 values");
  out.sum().backward();  // indices [3, 3, 1, 3, 3, 1, 3, 3, 8]: 6 to position 3, 2 to 1, 1 to 8
  EXPECT_EQ(vals(x.grad()), (std::vector<double>{0, 2, 0, 6, 0, 0, 0, 0, 1}));
  // All −∞ under padding: the first valid position, as torch ([0, 0, 0, 0] for a 2x2 input).
  Tensor all_inf = full({1, 1, 2, 2}, -inf).requires_grad_();
  max_pool2d(all_inf, {3, 3}, {1, 1}, {1, 1}).sum().backward();
  EXPECT_EQ(vals(all_inf.grad()), (std::vector<double>{4, 0, 0, 0}));
}

TEST(MaxPool2d, EveryPathFollowsTorchsRuleOnTiesNaNAndInfinity) {
  // Small integers tie often; NaN and ±∞ are sprinkled in. Windows overlap in most
  // cases, so the gradient (a random weighting scattered to the indices) checks them all.
  struct Case {
    Pair2 k, s, p, d;
  };
  // Even W (the 2x2 path's flat pass over the plane) and odd W (its row by row pass).
  for (const Shape& shape : {Shape{2, 3, 9, 10}, Shape{1, 2, 8, 7}})
    for (DType dtype : {DType::Float32, DType::Float64})
      for (const Case& c : {Case{{2, 2}, {2, 2}, {0, 0}, {1, 1}}, Case{{3, 3}, {1, 1}, {1, 1}, {1, 1}},
                            Case{{3, 3}, {2, 2}, {1, 1}, {1, 1}}, Case{{2, 3}, {1, 2}, {1, 0}, {2, 1}},
                            Case{{2, 2}, {1, 1}, {0, 0}, {1, 1}}}) {
        const std::vector<double> xv = vgrad_test::ties_nan_inf_values(numel(shape), 21);
        Tensor x = tensor(xv, shape).to(dtype).requires_grad_();
        const PoolResult want = pytorch_max_pool(x.detach(), c.k, c.s, c.p, c.d);
        const Tensor out = max_pool2d(x, c.k, c.s, c.p, c.d);
        expect_same_or_both_nan(vals(out), want.values, "values");
        const Tensor weighting = uniform_tensor(out.shape(), 22, -1, 1, dtype);
        (out * weighting).sum().backward();
        std::vector<double> grad(xv.size(), 0.0);
        const auto wv = vals(weighting);
        for (size_t i = 0; i < want.at.size(); ++i) grad[size_t(want.at[i])] += wv[i];
        expect_near_all(vals(x.grad()), grad, 1e-6, "gradient at the indices");
      }
}

TEST(AvgPool2d, MatchesNaiveLoopCountingPaddingAndGradchecks) {
  const Tensor x = uniform_tensor({2, 2, 6, 7}, 5, -1, 1, DType::Float64);
  struct Case { Pair2 k, s, p; };
  for (const Case& c : {Case{{2, 2}, {2, 2}, {0, 0}}, Case{{3, 3}, {2, 2}, {1, 1}}, Case{{3, 2}, {1, 1}, {1, 0}}}) {
    const Tensor out = avg_pool2d(x, c.k, c.s, c.p);
    expect_near_all(vals(out), naive_pool(x, c.k, c.s, c.p, {1, 1}, 0.0, mean_of), 1e-12, "avg_pool2d");
    const auto report =
        autograd::gradcheck([&](const std::vector<Tensor>& in) { return avg_pool2d(in[0], c.k, c.s, c.p); }, {x});
    EXPECT_TRUE(report.ok) << report.message;
  }
  EXPECT_ERROR(avg_pool2d(x, {2, 2}, {2, 2}, {2, 0}), "avg_pool2d: padding 2x0 must be at most half the kernel 2x2");
}

TEST(AdaptiveAvgPool2d, UnevenWindowsAsPyTorchAndGradchecks) {
  const Tensor x = uniform_tensor({2, 3, 5, 7}, 6, -1, 1, DType::Float64);
  const Tensor out = adaptive_avg_pool2d(x, {3, 2});
  ASSERT_EQ(out.shape(), (Shape{2, 3, 3, 2}));
  // Window i of n over L spans [floor(i·L/n), ceil((i+1)·L/n)).
  const auto xv = vals(x);
  std::vector<double> want;
  for (int64_t nc = 0; nc < 6; ++nc)
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t h0 = i * 5 / 3, h1 = ((i + 1) * 5 + 2) / 3, w0 = j * 7 / 2, w1 = ((j + 1) * 7 + 1) / 2;
        double s = 0;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) s += xv[size_t((nc * 5 + h) * 7 + w)];
        want.push_back(s / double((h1 - h0) * (w1 - w0)));
      }
  expect_near_all(vals(out), want, 1e-12, "adaptive_avg_pool2d");
  const auto report =
      autograd::gradcheck([](const std::vector<Tensor>& in) { return adaptive_avg_pool2d(in[0], {3, 2}); }, {x});
  EXPECT_TRUE(report.ok) << report.message;
  // Output 1x1 is the global average.
  expect_near_all(vals(adaptive_avg_pool2d(x, {1, 1})), vals(mean(x, {2, 3})), 1e-12, "global average");
}

}  // namespace

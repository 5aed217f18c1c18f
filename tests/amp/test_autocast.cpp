// amp::Autocast op by op: the output dtype each list gives (low: matmul, linear,
// einsum, attention's products, conv1d, conv2d; float32: softmax, log_softmax, losses,
// exp, log, pow, reductions, batch_norm, layer_norm, group_norm; others promote) and
// closeness to the float32 result; the weight-cast cache (once per step, cleared by an
// optimizer step and by leaving the scope); gradients reaching float32 master weights;
// backward run inside the scope.
#include <gtest/gtest.h>

#include <optional>

#include "amp/autocast.h"
#include "autograd/node.h"
#include "nn/functional.h"
#include "nn/layers.h"
#include "optim/optimizer.h"
#include "low_precision.h"
#include "support.h"

namespace {

using namespace vgrad;
using vgrad_test::expect_near_all;
using vgrad_test::uniform_tensor;
using vgrad_test::vals;

using vgrad_test::kLowTypes;
const auto tolerance = vgrad_test::low_precision_tolerance;

TEST(Autocast, LowPrecisionOps) {
  for (DType low : kLowTypes) {
    const Tensor a = uniform_tensor({16, 64}, 1), b = uniform_tensor({64, 8}, 2), w = uniform_tensor({8, 64}, 3);
    const Tensor bias = uniform_tensor({8}, 4);
    const Tensor q = uniform_tensor({2, 5, 16}, 5), k = uniform_tensor({2, 6, 16}, 6), v = uniform_tensor({2, 6, 16}, 7);
    Tensor mm, lin, ein, att;
    {
      amp::Autocast autocast(low);
      mm = matmul(a, b);
      lin = linear(a, w, bias);
      ein = einsum("ik,kj->ij", a, b);
      att = nn::functional::scaled_dot_product_attention(q, k, v);
      EXPECT_EQ(matmul(a.to(DType::Float64), b.to(DType::Float64)).dtype(), DType::Float64);  // float64 untouched
    }
    for (const Tensor& t : {mm, lin, ein, att}) EXPECT_EQ(t.dtype(), low);
    expect_near_all(vals(mm), vals(matmul(a, b)), tolerance(low), "matmul");
    expect_near_all(vals(lin), vals(linear(a, w, bias)), tolerance(low), "linear");
    expect_near_all(vals(ein), vals(einsum("ik,kj->ij", a, b)), tolerance(low), "einsum");
    expect_near_all(vals(att), vals(nn::functional::scaled_dot_product_attention(q, k, v)), tolerance(low), "attention");
  }
}

// conv2d and conv1d join the low list (input, weight and bias cast); their gradients reach
// the float32 weights, and a CNN block (conv -> batch_norm -> relu -> max_pool) leaves
// batch_norm in float32.
TEST(Autocast, ConvolutionsRunInTheLowDtype) {
  for (DType low : kLowTypes) {
    const Tensor x = uniform_tensor({2, 4, 7, 6}, 13, -1, 1), x1 = uniform_tensor({2, 4, 11}, 14, -1, 1);
    Tensor w = uniform_tensor({6, 2, 3, 3}, 15, -0.5, 0.5).requires_grad_(),
           b = uniform_tensor({6}, 16).requires_grad_();
    const Tensor w1 = uniform_tensor({5, 4, 3}, 17, -0.5, 0.5);
    const Tensor gamma = ones({6}), beta = zeros({6});
    Tensor conv, conv_1d, block;
    {
      amp::Autocast autocast(low);
      conv = conv2d(x, w, b, {2, 1}, {1, 1}, {1, 1}, 2);
      conv_1d = conv1d(x1, w1, Tensor(), 2, 1);
      const Tensor normed =
          nn::F::batch_norm(conv2d(x, w, b, {1, 1}, {1, 1}, {1, 1}, 2), Tensor(), Tensor(), gamma, beta, true);
      EXPECT_EQ(normed.dtype(), DType::Float32);
      block = max_pool2d(relu(normed), {2, 2});
      conv.sum().backward();
    }
    EXPECT_EQ(conv.dtype(), low);
    EXPECT_EQ(conv_1d.dtype(), low);
    EXPECT_EQ(block.dtype(), DType::Float32);
    EXPECT_EQ(w.grad().dtype(), DType::Float32);  // reached the float32 master weight
    EXPECT_EQ(b.grad().dtype(), DType::Float32);
    expect_near_all(vals(conv), vals(conv2d(x, w.detach(), b.detach(), {2, 1}, {1, 1}, {1, 1}, 2)), tolerance(low),
                    "conv2d");
    expect_near_all(vals(conv_1d), vals(conv1d(x1, w1, Tensor(), 2, 1)), tolerance(low), "conv1d");
    // dW = Σ over N·OH·OW windows of x: float32 accumulation of 16-bit products.
    Tensor w32 = w.detach().requires_grad_();
    conv2d(x, w32, b.detach(), {2, 1}, {1, 1}, {1, 1}, 2).sum().backward();
    expect_near_all(vals(w.grad()), vals(w32.grad()), tolerance(low), "conv2d weight gradient");
  }
}

TEST(Autocast, Float32OpsWidenSixteenBitInputs) {
  for (DType low : kLowTypes) {
    const Tensor x32 = uniform_tensor({6, 10}, 8, 0.5, 2), x = x32.to(low), x_exact = x.to(DType::Float32);
    const Tensor target = tensor(std::vector<int64_t>{0, 3, 9, 2, 1, 5});
    const Tensor w = uniform_tensor({10}, 11, 0.5, 1.5), b = uniform_tensor({10}, 12);  // float32 norm parameters
    amp::Autocast autocast(low);
    const std::vector<std::pair<const char*, std::pair<Tensor, Tensor>>> cases = {
        {"softmax", {softmax(x, 1), softmax(x_exact, 1)}},
        {"log_softmax", {log_softmax(x, 1), log_softmax(x_exact, 1)}},
        {"cross_entropy", {nn::cross_entropy(x, target), nn::cross_entropy(x_exact, target)}},
        {"mse_loss", {nn::mse_loss(x, x * 0.5), nn::mse_loss(x_exact, x_exact * 0.5)}},
        {"exp", {exp(x), exp(x_exact)}},
        {"log", {log(x), log(x_exact)}},
        {"pow", {pow(x, 3.0), pow(x_exact, 3.0)}},
        {"sum", {sum(x, {1}), sum(x_exact, {1})}},
        {"mean", {x.mean(), x_exact.mean()}},
        {"var", {var(x, {0}), var(x_exact, {0})}},
        {"batch_norm",
         {nn::F::batch_norm(x, Tensor(), Tensor(), w, b, true),
          nn::F::batch_norm(x_exact, Tensor(), Tensor(), w, b, true)}},
        {"layer_norm", {nn::F::layer_norm(x, 1, w, b), nn::F::layer_norm(x_exact, 1, w, b)}},
        {"group_norm", {nn::F::group_norm(x, 2, w, b), nn::F::group_norm(x_exact, 2, w, b)}},
    };
    for (const auto& [name, pair] : cases) {
      EXPECT_EQ(pair.first.dtype(), DType::Float32) << name;
      expect_near_all(vals(pair.first), vals(pair.second), 1e-6, name);  // the same float32 computation
    }
  }
}

TEST(Autocast, OtherOpsPromoteToTheWidestInput) {
  const Tensor x = uniform_tensor({4}, 9).to(DType::BFloat16), y = uniform_tensor({4}, 10);
  amp::Autocast autocast(DType::BFloat16);
  EXPECT_EQ(relu(x).dtype(), DType::BFloat16);
  EXPECT_EQ(add(x, y).dtype(), DType::Float32);
  EXPECT_EQ((x * 2.0).dtype(), DType::BFloat16);
  EXPECT_EQ(add(x, y.to(DType::Float16)).dtype(), DType::Float32);
}

TEST(Autocast, WeightsAreCastOncePerStepAndGradientsReachFloat32Masters) {
  Tensor w = uniform_tensor({8, 32}, 11).requires_grad_(), bias = zeros({8}).requires_grad_();
  const Tensor x = uniform_tensor({4, 32}, 12);
  optim::SGD sgd({w, bias}, {.lr = 0.1});
  Tensor loss;
  {
    amp::Autocast autocast(DType::BFloat16);
    const Tensor first = autograd::autocast::to_low(w);
    EXPECT_TRUE(autograd::autocast::to_low(w).is_same(first));  // cached: one cast per step
    EXPECT_EQ(autograd::autocast::cache_bytes(), size_t(8 * 32 * 2));
    loss = nn::mse_loss(linear(x, w, bias), zeros({4, 8}));  // float32 loss over a bf16 linear
    EXPECT_EQ(loss.dtype(), DType::Float32);
    loss.backward();  // inside the scope: the engine suspends autocast for the rules
    EXPECT_EQ(w.grad().dtype(), DType::Float32);
    sgd.step();
    EXPECT_EQ(autograd::autocast::cache_bytes(), 0u);  // the step changed the weights
    const Tensor after_step = autograd::autocast::to_low(w);
    EXPECT_FALSE(after_step.is_same(first));
  }
  EXPECT_EQ(autograd::autocast::cache_bytes(), 0u);  // leaving the scope clears it
  // The gradient is float32 linear's, to bfloat16 accuracy.
  Tensor w32 = w.detach().clone().requires_grad_();
  const Tensor before = w32 + sgd.params()[0].grad() * 0.1;  // undo the step: the weights the backward saw
  Tensor w_ref = before.detach().requires_grad_(), b_ref = zeros({8}).requires_grad_();
  nn::mse_loss(linear(x, w_ref, b_ref), zeros({4, 8})).backward();
  expect_near_all(vals(w.grad()), vals(w_ref.grad()), 3e-2, "dW");
}

// linear on a float32 master weight takes its own backward path under autocast (the weight
// is the node's input, its gradient written in float32): the same values as the composed
// path (cast node, then linear on 16-bit operands) for x, W and b.
TEST(Autocast, LinearOnAMasterWeightMatchesTheComposedCasts) {
  for (DType low : kLowTypes) {
    SCOPED_TRACE(dtype_name(low));
    Tensor w = uniform_tensor({300, 40}, 21).requires_grad_(), b = uniform_tensor({300}, 22).requires_grad_();
    Tensor x = uniform_tensor({3, 5, 40}, 23).requires_grad_();  // leading dims folded
    const Tensor weights = uniform_tensor({3, 5, 300}, 24);
    Tensor fused_out;
    {
      amp::Autocast autocast(low);
      fused_out = linear(x, w, b);
      EXPECT_EQ(fused_out.dtype(), low);
      (fused_out.to(DType::Float32) * weights).sum().backward();
    }
    const Tensor fused_dx = x.grad().clone(), fused_dw = w.grad().clone(), fused_db = b.grad().clone();
    EXPECT_EQ(fused_dw.dtype(), DType::Float32);
    x.zero_grad(), w.zero_grad(), b.zero_grad();
    const Tensor composed_out = linear(x.to(low), w.to(low), b.to(low));  // no autocast: plain 16-bit linear
    (composed_out.to(DType::Float32) * weights).sum().backward();
    EXPECT_EQ(vals(fused_out), vals(composed_out));
    EXPECT_EQ(vals(fused_dx), vals(x.grad()));
    EXPECT_EQ(vals(fused_db), vals(b.grad()));
    // dW goes through 16-bit GEMMs over blocks of rows: float32 accumulation, then rounded.
    expect_near_all(vals(fused_dw), vals(w.grad()), low == DType::BFloat16 ? 1.0 / 128 : 1.0 / 1024, "dW");
  }
}

// linear_relu under autocast: on a float32 master weight (linear's master path, then the
// ReLU) and on a 16-bit weight (the fused op in the low dtype) it gives relu(linear)'s values
// and gradients under the same autocast, bit for bit, in the low dtype.
TEST(Autocast, LinearReluIsReluOfLinearOnMasterAndLowWeights) {
  for (DType low : kLowTypes) {
    for (const bool master : {true, false}) {
      SCOPED_TRACE(std::string(dtype_name(low)) + (master ? " master weight" : " 16-bit weight"));
      std::vector<std::vector<double>> results[2];
      for (const bool fused : {true, false}) {
        Tensor w = uniform_tensor({30, 40}, 21), b = uniform_tensor({30}, 22);
        if (!master) w = w.to(low), b = b.to(low);
        w.requires_grad_(), b.requires_grad_();
        Tensor x = uniform_tensor({7, 40}, 23).requires_grad_();
        amp::Autocast autocast(low);
        const Tensor y = fused ? linear_relu(x, w, b) : relu(linear(x, w, b));
        EXPECT_EQ(y.dtype(), low);
        (y.to(DType::Float32) * uniform_tensor({7, 30}, 24)).sum().backward();
        results[fused ? 0 : 1] = {vals(y), vals(x.grad()), vals(w.grad()), vals(b.grad())};
        EXPECT_EQ(w.grad().dtype(), w.dtype());
      }
      EXPECT_EQ(results[0], results[1]);
    }
  }
}

// matmul(x, W) on a float32 master weight W (D_in, D_out), and matmul(W, x) on W (D_out,
// D_in) first, share linear's path under autocast: the same values as the composed path
// (cast node, then matmul on 16-bit operands) for x and W, with x of 3, 2 and 1 dims, and with
// x needing no gradient.
void expect_master_matmul_matches_composed_casts(bool weight_first) {
  const auto product = [&](const Tensor& x, const Tensor& w) { return weight_first ? matmul(w, x) : matmul(x, w); };
  const Shape w_shape = weight_first ? Shape{300, 40} : Shape{40, 300};
  const std::vector<Shape> x_shapes = weight_first ? std::vector<Shape>{{3, 40, 5}, {40, 7}, {40}}
                                                   : std::vector<Shape>{{3, 5, 40}, {7, 40}, {40}};
  for (DType low : kLowTypes) {
    for (const Shape& x_shape : x_shapes) {
      for (bool x_needs_grad : {true, false}) {
        SCOPED_TRACE(std::string(dtype_name(low)) + " x " + shape_str(x_shape) + (x_needs_grad ? "" : " (no dx)") +
                     (weight_first ? " W·x" : " x·W"));
        Tensor w = uniform_tensor(w_shape, 21).requires_grad_();
        Tensor x = uniform_tensor(x_shape, 23).requires_grad_(x_needs_grad);
        Tensor fused_out, weights;
        {
          amp::Autocast autocast(low);
          fused_out = product(x, w);
          EXPECT_EQ(fused_out.dtype(), low);
          EXPECT_EQ(fused_out.grad_fn()->name(), "matmul");
          weights = uniform_tensor(fused_out.shape(), 24);
          (fused_out.to(DType::Float32) * weights).sum().backward();
        }
        const Tensor fused_dw = w.grad().clone();
        const Tensor fused_dx = x_needs_grad ? x.grad().clone() : Tensor();
        EXPECT_EQ(fused_dw.dtype(), DType::Float32);
        EXPECT_EQ(fused_dw.shape(), w_shape);
        w.zero_grad();
        if (x_needs_grad) x.zero_grad();
        const Tensor composed_out = product(x.to(low), w.to(low));  // no autocast: plain 16-bit matmul
        (composed_out.to(DType::Float32) * weights).sum().backward();
        EXPECT_EQ(vals(fused_out), vals(composed_out));
        if (x_needs_grad) {
          EXPECT_EQ(fused_dx.dtype(), DType::Float32);
          EXPECT_EQ(vals(fused_dx), vals(x.grad()));
        }
        // dW goes through 16-bit GEMMs over blocks of rows: float32 accumulation, then rounded
        // once. So it is checked against float32 products of the 16-bit operands: the composed
        // W·x on a batched x rounds each batch's dW to 16-bit before summing them, and there
        // cancellation puts it a dozen units of roundoff away.
        Tensor w_rounded = w.detach().to(low).to(DType::Float32).requires_grad_();
        (product(x.detach().to(low).to(DType::Float32), w_rounded) * weights.to(low).to(DType::Float32)).sum().backward();
        const double tol = low == DType::BFloat16 ? 1.0 / 128 : 1.0 / 1024;
        expect_near_all(vals(fused_dw), vals(w_rounded.grad()), tol, "dW");
        if (!weight_first || x_shape.size() < 3) expect_near_all(vals(fused_dw), vals(w.grad()), tol, "dW, composed");
        EXPECT_EQ(autograd::autocast::cache_bytes(), 0u);  // no cast outlives backward
      }
    }
  }
}

TEST(Autocast, MatmulOnAMasterWeightMatchesTheComposedCasts) {
  expect_master_matmul_matches_composed_casts(false);
  // Shape errors still name matmul and its operands.
  Tensor w = uniform_tensor({40, 300}, 21).requires_grad_();
  amp::Autocast autocast(DType::BFloat16);
  EXPECT_ERROR(matmul(uniform_tensor({3, 41}, 25), w), "matmul: [3, 41] @ [40, 300]: inner dimensions differ (41 vs 40)");
}

TEST(Autocast, WeightFirstMatmulOnAMasterWeightMatchesTheComposedCasts) {
  expect_master_matmul_matches_composed_casts(true);
  Tensor w = uniform_tensor({300, 40}, 21).requires_grad_();
  amp::Autocast autocast(DType::BFloat16);
  EXPECT_ERROR(matmul(w, uniform_tensor({41, 3}, 25)), "matmul: [300, 40] @ [41, 3]: inner dimensions differ (40 vs 41)");
}

// A step through matmuls on float32 master weights (512-2048-2048-10 as x·W, batch 128; or
// as W·x on feature-major activations) peaks below the old path's (cast node, 16-bit GEMMs, a
// 16-bit dW beside the float32 one), and leaves only the float32 gradients behind, as the
// float32 step does.
void expect_master_matmul_step_peaks_below_composed(bool weight_first) {
  SCOPED_TRACE(weight_first ? "W·x" : "x·W");
  manual_seed(4);
  const std::vector<int64_t> widths = {512, 2048, 2048, 10};
  const double ranges[] = {0.05, 0.03, 0.03};
  std::vector<Tensor> weights;
  for (size_t i = 0; i + 1 < widths.size(); ++i) {
    const Shape shape = weight_first ? Shape{widths[i + 1], widths[i]} : Shape{widths[i], widths[i + 1]};
    weights.push_back(uniform_tensor(shape, 41 + i, -ranges[i], ranges[i]).requires_grad_());
  }
  const Tensor x = uniform_tensor({128, 512}, 44), y = (uniform_tensor({128}, 45, 0, 9.99)).to(DType::Int64);
  const Tensor columns = x.transpose(0, 1).contiguous();  // W·x: features first, (512, 128)
  enum class Path { Float32, Composed, Master };
  auto step = [&](Path path) {
    for (Tensor w : weights) w.zero_grad();
    reset_peak_memory(kCPU);
    const uint64_t before = memory_allocated(kCPU);
    {
      std::optional<amp::Autocast> autocast;
      if (path != Path::Float32) autocast.emplace(DType::BFloat16);
      Tensor h = weight_first ? columns : x;
      for (size_t i = 0; i < weights.size(); ++i) {
        // The composed path: the cached cast (a node, not a leaf) reaches matmul.
        const Tensor w = path == Path::Composed ? autograd::autocast::to_low(weights[i]) : weights[i];
        h = weight_first ? matmul(w, h) : matmul(h, w);
        if (i + 1 < weights.size()) h = relu(h);
      }
      nn::cross_entropy(weight_first ? h.transpose(0, 1) : h, y).backward();
    }
    for (const Tensor& w : weights) EXPECT_EQ(w.grad().dtype(), DType::Float32);
    return std::pair{memory_allocated(kCPU) - before, max_memory_allocated(kCPU) - before};
  };
  const auto [wide_after, wide_peak] = step(Path::Float32);
  const auto [composed_after, composed_peak] = step(Path::Composed);
  const auto [master_after, master_peak] = step(Path::Master);
  const std::string order = weight_first ? "_weight_first" : "";
  ::testing::Test::RecordProperty("peak_bytes_float32" + order, std::to_string(wide_peak));  // --gtest_output=xml shows them
  ::testing::Test::RecordProperty("peak_bytes_composed" + order, std::to_string(composed_peak));
  ::testing::Test::RecordProperty("peak_bytes_master" + order, std::to_string(master_peak));
  EXPECT_EQ(master_after, wide_after) << "bytes left after backward: float32 gradients only";
  EXPECT_LT(master_peak, composed_peak) << "master-weight path's peak " << master_peak << " B, composed path's "
                                        << composed_peak << " B (float32's " << wide_peak << " B)";
  EXPECT_EQ(autograd::autocast::cache_bytes(), 0u);
}

TEST(Autocast, MatmulOnMasterWeightsPeaksBelowTheComposedPath) { expect_master_matmul_step_peaks_below_composed(false); }

TEST(Autocast, WeightFirstMatmulOnMasterWeightsPeaksBelowTheComposedPath) {
  expect_master_matmul_step_peaks_below_composed(true);
}

// A training step's memory under bf16 autocast (784-4096-4096-10 shrunk to 512-2048-2048-10,
// batch 128): no cast and no 16-bit gradient outlives backward (what remains is float32's
// gradients, as in the float32 step), and the step's peak is about float32's: 1.035x here
// (the CPU's 16-bit GEMM needs up to 3 MiB of float32 tiles, which weighs at this size; at
// 784-4096-4096-10, batch 256, it is 0.997x). Casts kept through backward made it 1.6-1.7x.
TEST(Autocast, StepPeakMemoryBelowFloat32) {
  manual_seed(3);
  nn::Sequential model({std::make_shared<nn::Linear>(512, 2048), std::make_shared<nn::ReLU>(),
                        std::make_shared<nn::Linear>(2048, 2048), std::make_shared<nn::ReLU>(),
                        std::make_shared<nn::Linear>(2048, 10)});
  const Tensor x = uniform_tensor({128, 512}, 31), y = (uniform_tensor({128}, 32, 0, 9.99)).to(DType::Int64);
  auto step = [&](bool mixed) {
    model.zero_grad();
    reset_peak_memory(kCPU);
    const uint64_t before = memory_allocated(kCPU);
    {
      std::optional<amp::Autocast> autocast;
      if (mixed) autocast.emplace(DType::BFloat16);
      nn::cross_entropy(model(x), y).backward();
    }
    return std::pair{memory_allocated(kCPU) - before, max_memory_allocated(kCPU) - before};
  };
  const auto [wide_after, wide_peak] = step(false);
  const auto [mixed_after, mixed_peak] = step(true);
  EXPECT_EQ(mixed_after, wide_after) << "bytes left after backward: float32 gradients only";
  EXPECT_LT(double(mixed_peak), 1.1 * double(wide_peak))
      << "bf16 step's peak " << mixed_peak << " B, float32's " << wide_peak << " B";
  EXPECT_EQ(autograd::autocast::cache_bytes(), 0u);
}

TEST(Autocast, RefusesAWideDtype) {
  EXPECT_ERROR(amp::Autocast(DType::Float32), "autocast: the low dtype must be bfloat16 or float16, got float32");
  EXPECT_FALSE(autograd::autocast::is_enabled());
}

}  // namespace

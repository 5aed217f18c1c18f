// Tests for optim: SGD/Adam/AdamW against hand-computed PyTorch steps, gradient
// accumulation equivalence on a real MLP, clipping, schedulers, option errors, that a
// steady-state training step makes no system allocation, and capturable optimizers (the
// same bits as without, set_lr and schedulers, checkpoints both ways, state loaded in place).
#include <cmath>
#include <functional>
#include <gtest/gtest.h>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "capturable_check.h"
#include "core/allocator.h"
#include "core/error.h"
#include "core/grad_mode.h"
#include "nn/functional.h"
#include "nn/layers.h"
#include "optim/optimizer.h"
#include "optim/scheduler.h"
#include "support.h"
#include "update_many_check.h"

namespace {

using vgrad_test::vals;

using namespace vgrad;



// Fixed gradients for three steps of a three-element parameter.
const std::vector<std::vector<double>> kGrads = {{0.5, -1.0, 2.0}, {-0.25, 0.75, 1.5}, {1.0, 0.1, -3.0}};
const std::vector<double> kInit = {1.0, -2.0, 0.5};

Tensor make_param(DType dtype = DType::Float64) {
  return tensor(kInit, {3}).to(dtype).requires_grad_();
}

// Runs `steps` optimizer steps with kGrads set as the gradient, returning the parameter after each.
std::vector<std::vector<double>> run_steps(optim::Optimizer& opt, Tensor& p, size_t steps) {
  std::vector<std::vector<double>> out;
  for (size_t s = 0; s < steps; ++s) {
    p.set_grad(tensor(kGrads[s % kGrads.size()], {3}).to(p.dtype()));
    opt.step();
    out.push_back(vals(p));
  }
  return out;
}

// PyTorch's SGD, written out.
std::vector<std::vector<double>> sgd_reference(const optim::SGDOptions& o, size_t steps) {
  std::vector<double> p = kInit, buf(3);
  std::vector<std::vector<double>> out;
  for (size_t s = 0; s < steps; ++s) {
    for (size_t i = 0; i < 3; ++i) {
      double d = kGrads[s % kGrads.size()][i] + o.weight_decay * p[i];
      if (o.momentum != 0) {
        buf[i] = s == 0 ? d : o.momentum * buf[i] + (1 - o.dampening) * d;
        d = o.nesterov ? d + o.momentum * buf[i] : buf[i];
      }
      p[i] -= o.lr * d;
    }
    out.push_back(p);
  }
  return out;
}

void expect_steps_near(const std::vector<std::vector<double>>& got, const std::vector<std::vector<double>>& want,
                       double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t s = 0; s < got.size(); ++s)
    for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(got[s][i], want[s][i], tol) << what << " step " << s + 1 << " elem " << i;
}

TEST(SGD, PlainStepsByHand) {
  // p ← p − lr·g, written out for the first step.
  Tensor p = make_param();
  optim::SGD sgd({p}, {.lr = 0.1});
  const auto got = run_steps(sgd, p, 1);
  EXPECT_NEAR(got[0][0], 1.0 - 0.1 * 0.5, 1e-15);
  EXPECT_NEAR(got[0][1], -2.0 + 0.1 * 1.0, 1e-15);
  EXPECT_NEAR(got[0][2], 0.5 - 0.1 * 2.0, 1e-15);
}

TEST(SGD, MomentumStepsByHand) {
  // μ = 0.9, lr = 0.1, element 0: g = 0.5, −0.25, 1.0.
  // step 1: b = 0.5;               p = 1 − 0.05 = 0.95
  // step 2: b = 0.45 − 0.25 = 0.2; p = 0.95 − 0.02 = 0.93
  // step 3: b = 0.18 + 1.0 = 1.18; p = 0.93 − 0.118 = 0.812
  Tensor p = make_param();
  optim::SGD sgd({p}, {.lr = 0.1, .momentum = 0.9});
  const auto got = run_steps(sgd, p, 3);
  EXPECT_NEAR(got[0][0], 0.95, 1e-12);
  EXPECT_NEAR(got[1][0], 0.93, 1e-12);
  EXPECT_NEAR(got[2][0], 0.812, 1e-12);
}

struct SgdCase {
  const char* name;
  optim::SGDOptions options;
};

TEST(SGD, MatchesPyTorchRulesOverSeveralSteps) {
  const std::vector<SgdCase> cases = {
      {"plain", {.lr = 0.1}},
      {"weight decay", {.lr = 0.1, .weight_decay = 0.05}},
      {"momentum", {.lr = 0.05, .momentum = 0.9}},
      {"dampening", {.lr = 0.05, .momentum = 0.9, .dampening = 0.3}},
      {"nesterov", {.lr = 0.05, .momentum = 0.8, .nesterov = true}},
      {"nesterov + wd", {.lr = 0.05, .momentum = 0.8, .weight_decay = 0.01, .nesterov = true}},
      {"all", {.lr = 0.02, .momentum = 0.7, .dampening = 0.1, .weight_decay = 0.1}},
  };
  for (const auto& c : cases) {
    for (DType dtype : {DType::Float64, DType::Float32}) {
      Tensor p = make_param(dtype);
      optim::SGD sgd({p}, c.options);
      const auto got = run_steps(sgd, p, 7);
      expect_steps_near(got, sgd_reference(c.options, 7), dtype == DType::Float64 ? 1e-12 : 1e-5,
                        std::string(c.name) + (dtype == DType::Float64 ? " f64" : " f32"));
    }
  }
  // The dampening case really differs from plain momentum after step 1 (PyTorch does not damp step 1).
  const auto damped = sgd_reference({.lr = 0.05, .momentum = 0.9, .dampening = 0.3}, 2);
  const auto undamped = sgd_reference({.lr = 0.05, .momentum = 0.9}, 2);
  EXPECT_EQ(damped[0], undamped[0]);
  EXPECT_NE(damped[1], undamped[1]);
}

TEST(SGD, SkipsParametersWithoutGradient) {
  Tensor a = make_param(), b = make_param();
  optim::SGD sgd({a, b}, {.lr = 0.1, .momentum = 0.9});
  a.set_grad(tensor(kGrads[0], {3}));
  sgd.step();
  EXPECT_EQ(vals(b), kInit);
  EXPECT_NE(vals(a), kInit);
  EXPECT_EQ(sgd.state_dict().size(), 1u);  // no momentum buffer for b
}

// PyTorch's Adam/AdamW, written out.
std::vector<std::vector<double>> adam_reference(const optim::AdamOptions& o, bool decoupled, size_t steps) {
  std::vector<double> p = kInit, m(3, 0.0), v(3, 0.0);
  std::vector<std::vector<double>> out;
  for (size_t s = 0; s < steps; ++s) {
    const double t = double(s + 1);
    for (size_t i = 0; i < 3; ++i) {
      double g = kGrads[s % kGrads.size()][i];
      if (decoupled) p[i] *= 1 - o.lr * o.weight_decay;
      else g += o.weight_decay * p[i];
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
      const double m_hat = m[i] / (1 - std::pow(o.beta1, t)), v_hat = v[i] / (1 - std::pow(o.beta2, t));
      p[i] -= o.lr * m_hat / (std::sqrt(v_hat) + o.eps);
    }
    out.push_back(p);
  }
  return out;
}

TEST(Adam, FirstStepIsLrTimesSignOfGradient) {
  // With bias correction, step 1 moves every element by lr·g/(|g| + ε) ≈ ±lr.
  Tensor p = make_param();
  optim::Adam adam({p}, {.lr = 0.01});
  const auto got = run_steps(adam, p, 1);
  EXPECT_NEAR(got[0][0], 1.0 - 0.01, 1e-9);
  EXPECT_NEAR(got[0][1], -2.0 + 0.01, 1e-9);
  EXPECT_NEAR(got[0][2], 0.5 - 0.01, 1e-9);
}

TEST(Adam, MatchesPyTorchRulesOverSeveralSteps) {
  const std::vector<optim::AdamOptions> cases = {
      {.lr = 0.01},
      {.lr = 0.1, .beta1 = 0.8, .beta2 = 0.99, .eps = 1e-6},
      {.lr = 0.05, .weight_decay = 0.1},
  };
  for (const auto& o : cases)
    for (DType dtype : {DType::Float64, DType::Float32}) {
      Tensor p = make_param(dtype);
      optim::Adam adam({p}, o);
      EXPECT_EQ(adam.name(), "Adam");
      expect_steps_near(run_steps(adam, p, 8), adam_reference(o, false, 8), dtype == DType::Float64 ? 1e-12 : 1e-5,
                        "Adam lr " + std::to_string(o.lr));
    }
}

TEST(Adam, StepCountIsPerParameter) {
  // PyTorch keeps one step count per parameter, advanced only when that parameter has a
  // gradient: a parameter whose first gradient arrives at step 3 gets step-1 bias correction
  // (a first move of ≈ lr·sign(g)), the same as a fresh optimizer would give it.
  Tensor a = make_param(), late = make_param();
  optim::Adam adam({a, late}, {.lr = 0.01});
  for (int s = 0; s < 2; ++s) {
    a.set_grad(tensor(kGrads[size_t(s)], {3}));
    adam.step();
  }
  EXPECT_EQ(vals(late), kInit);  // no gradient yet: untouched
  late.set_grad(tensor(kGrads[0], {3}));
  a.set_grad(tensor(kGrads[2], {3}));
  adam.step();
  expect_steps_near({vals(late)}, {adam_reference({.lr = 0.01}, false, 1)[0]}, 1e-12, "late parameter");
  expect_steps_near({vals(a)}, {adam_reference({.lr = 0.01}, false, 3)[2]}, 1e-12, "early parameter");
  const auto state = adam.state_dict();
  EXPECT_EQ(state.at("state.0.step").item<int64_t>(), 3);
  EXPECT_EQ(state.at("state.1.step").item<int64_t>(), 1);
}

TEST(Adam, StateDictRoundTripContinuesIdentically) {
  Tensor a = make_param(), b = make_param();
  optim::Adam first({a}, {.lr = 0.02, .weight_decay = 0.1});
  run_steps(first, a, 2);
  optim::Adam second({b}, {.lr = 0.02, .weight_decay = 0.1});
  second.load_state_dict(first.state_dict());
  b.detach().copy_(a);
  EXPECT_EQ(run_steps(first, a, 3), run_steps(second, b, 3));
  // A checkpoint with one global "step" (the older layout) still loads.
  auto state = first.state_dict();
  state.erase("state.0.step");
  state["step"] = scalar_tensor(5.0, {.dtype = DType::Int64});
  second.load_state_dict(state);
  EXPECT_EQ(second.state_dict().at("state.0.step").item<int64_t>(), 5);
}

TEST(AdamW, MatchesPyTorchRulesOverSeveralSteps) {
  const optim::AdamOptions o{.lr = 0.05, .weight_decay = 0.2};
  Tensor p = make_param();
  optim::AdamW adamw({p}, o);
  EXPECT_EQ(adamw.name(), "AdamW");
  const auto got = run_steps(adamw, p, 8);
  expect_steps_near(got, adam_reference(o, true, 8), 1e-12, "AdamW");
  // Decoupled decay differs from L2 decay inside the moments.
  const auto coupled = adam_reference(o, false, 8);
  EXPECT_GT(std::abs(got[7][0] - coupled[7][0]), 1e-4);
}

// ---------------- gradient accumulation ----------------

struct Mlp : nn::Module {
  Mlp() {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(20, 32));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(32, 16));
    fc3 = register_module("fc3", std::make_shared<nn::Linear>(16, 5));
  }
  Tensor forward(const Tensor& x) override { return (*fc3)(relu((*fc2)(relu((*fc1)(x))))); }
  std::shared_ptr<nn::Linear> fc1, fc2, fc3;
};

// The classification batches: x (B, 20), y (B) in [0, 5).
struct Batches {
  std::vector<Tensor> x, y;
};
Batches make_batches(int count, int64_t batch, uint64_t seed) {
  Batches b;
  Generator gen(seed);
  for (int i = 0; i < count; ++i) {
    b.x.push_back(randn({batch, 20}, {}, &gen));
    const Tensor u = rand({batch}, {}, &gen);
    b.y.push_back(affine(u, 5.0, 0.0).to(DType::Int64));
  }
  return b;
}

void expect_same_parameters(const nn::Module& a, const nn::Module& b, double tol) {
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    const auto va = vals(pa[i].second), vb = vals(pb[i].second);
    double worst = 0;
    for (size_t j = 0; j < va.size(); ++j) worst = std::max(worst, std::abs(va[j] - vb[j]));
    EXPECT_LE(worst, tol) << pa[i].first;
  }
}

void accumulation_equivalence(const optim::SGDOptions& options) {
  const int64_t batch = 64, k = 4, micro = batch / k;
  manual_seed(1);
  Mlp big, small;
  small.load_state_dict(big.state_dict());
  optim::SGD sgd_big(big.parameters(), options), sgd_small(small.parameters(), options);
  optim::GradientAccumulation accumulate(sgd_small, k);
  const Batches data = make_batches(5, batch, 2);

  const auto initial = vals(big.fc1->weight);
  for (int step = 0; step < 5; ++step) {
    sgd_big.zero_grad();
    nn::cross_entropy(big(data.x[step]), data.y[step]).backward();
    sgd_big.step();

    for (int64_t m = 0; m < k; ++m) {
      const Tensor x = data.x[step].narrow(0, m * micro, micro), y = data.y[step].narrow(0, m * micro, micro);
      const bool complete = accumulate.backward(nn::cross_entropy(small(x), y));
      EXPECT_EQ(complete, m == k - 1);
      EXPECT_EQ(accumulate.pending(), m + 1);
      if (complete) accumulate.step();
    }
  }
  // The parameters moved (the comparison is not vacuous) and agree to float tolerance.
  double moved = 0;
  const auto final_w = vals(big.fc1->weight);
  for (size_t i = 0; i < final_w.size(); ++i) moved = std::max(moved, std::abs(final_w[i] - initial[i]));
  EXPECT_GT(moved, 1e-3);
  expect_same_parameters(big, small, 2e-6);
  // After a step the gradients were cleared for the next group (dropped, or zeroed in place).
  for (const Tensor& p : small.parameters()) {
    if (!p.grad().defined()) continue;
    for (double g : vals(p.grad())) ASSERT_EQ(g, 0.0);
  }
}

TEST(GradientAccumulation, EqualsOneBigBatchWithPlainSgd) { accumulation_equivalence({.lr = 0.1}); }

TEST(GradientAccumulation, EqualsOneBigBatchWithMomentum) {
  accumulation_equivalence({.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-3});
}

TEST(GradientAccumulation, StepsOneIsPlain) {
  Tensor p = make_param();
  optim::SGD sgd({p}, {.lr = 1.0});
  optim::GradientAccumulation single(sgd, 1);
  EXPECT_TRUE(single.backward(sum(p * 2.0)));
  EXPECT_EQ(vals(p), kInit);  // the program steps, not backward()
  single.step();
  EXPECT_EQ(vals(p), (std::vector<double>{-1.0, -4.0, -1.5}));
  EXPECT_ERROR(optim::GradientAccumulation(sgd, 0), "steps must be at least 1, got 0");
}

// ---------------- clipping ----------------

TEST(ClipGradNorm, ReturnsTheNormAndScales) {
  Tensor a = tensor(std::vector<double>{0, 0}, {2}).requires_grad_();
  Tensor b = tensor(std::vector<double>{0, 0, 0}, {3}).requires_grad_();
  Tensor c = tensor(std::vector<double>{0}, {1}).requires_grad_();  // no gradient: ignored
  a.set_grad(tensor(std::vector<double>{3, 4}, {2}));
  b.set_grad(tensor(std::vector<double>{0, 12, 0}, {3}));
  // ‖(3, 4, 0, 12, 0)‖ = 13
  EXPECT_DOUBLE_EQ(optim::clip_grad_norm({a, b, c}, 100.0), 13.0);
  EXPECT_EQ(vals(a.grad()), (std::vector<double>{3, 4}));  // under the limit: unchanged
  const double norm = optim::clip_grad_norm({a, b, c}, 6.5);
  EXPECT_DOUBLE_EQ(norm, 13.0);
  const double scale = 6.5 / (13.0 + 1e-6);
  EXPECT_NEAR(vals(a.grad())[0], 3 * scale, 1e-12);
  EXPECT_NEAR(vals(a.grad())[1], 4 * scale, 1e-12);
  EXPECT_NEAR(vals(b.grad())[1], 12 * scale, 1e-12);
  EXPECT_FALSE(c.grad().defined());
  EXPECT_NEAR(optim::clip_grad_norm({a, b}, 100.0), 6.5, 1e-6);  // the new norm
  // float32 gradients too.
  Tensor f = zeros({4}).requires_grad_();
  f.set_grad(full({4}, 2.0));
  EXPECT_NEAR(optim::clip_grad_norm({f}, 1.0), 4.0, 1e-6);
  for (double g : vals(f.grad())) EXPECT_NEAR(g, 2.0 / 4.0, 1e-6);  // 2 · (1 / 4)
}

// The norm is each gradient's own double sum of squares, added in parameter order: the
// same bits as before all gradients went to the backend in one call.
TEST(ClipGradNorm, CpuNormIsThePerParameterSumInOrder) {
  std::vector<Tensor> params;
  double total = 0;
  for (int64_t n : {1000, 3, 257, 64 * 64}) {
    Tensor p = zeros({n}).requires_grad_();
    p.set_grad(vgrad_test::uniform_tensor({n}, static_cast<uint64_t>(n), -3, 3));
    double sum = 0;
    for (float g : p.grad().to_vector<float>()) sum += double(g) * double(g);
    total += sum;
    params.push_back(p);
  }
  EXPECT_EQ(optim::clip_grad_norm(params, 1e9), std::sqrt(total));
}

// ---------------- schedulers ----------------

TEST(Schedulers, StepLR) {
  Tensor p = make_param();
  optim::SGD sgd({p}, {.lr = 0.1});
  optim::StepLR schedule(sgd, 3, 0.5);
  EXPECT_DOUBLE_EQ(sgd.lr(), 0.1);
  const std::vector<double> expect = {0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025};  // after steps 1..7
  for (size_t i = 0; i < expect.size(); ++i) {
    schedule.step();
    EXPECT_NEAR(sgd.lr(), expect[i], 1e-15) << "after step " << i + 1;
  }
  EXPECT_EQ(schedule.count(), 7);
  EXPECT_NEAR(schedule.lr_at(30), 0.1 * std::pow(0.5, 10), 1e-15);
  EXPECT_ERROR(optim::StepLR(sgd, 0), "step_size must be at least 1, got 0");
}

TEST(Schedulers, CosineWithWarmup) {
  Tensor p = make_param();
  optim::SGD sgd({p}, {.lr = 0.2});
  optim::CosineWithWarmup schedule(sgd, 10, 110, 0.02);
  EXPECT_DOUBLE_EQ(sgd.lr(), 0.0);  // warm-up starts from zero
  EXPECT_NEAR(schedule.lr_at(0), 0.0, 1e-15);
  EXPECT_NEAR(schedule.lr_at(5), 0.1, 1e-15);
  EXPECT_NEAR(schedule.lr_at(10), 0.2, 1e-15);
  EXPECT_NEAR(schedule.lr_at(60), 0.02 + 0.5 * 0.18, 1e-12);  // halfway: cos(π/2) = 0
  EXPECT_NEAR(schedule.lr_at(35), 0.02 + 0.5 * 0.18 * (1 + std::cos(M_PI * 0.25)), 1e-12);
  EXPECT_NEAR(schedule.lr_at(110), 0.02, 1e-15);
  EXPECT_NEAR(schedule.lr_at(500), 0.02, 1e-15);  // stays at the floor
  for (int i = 0; i < 5; ++i) schedule.step();
  EXPECT_NEAR(sgd.lr(), 0.1, 1e-15);
  // Decreasing after the warm-up.
  double previous = schedule.lr_at(10);
  for (int s = 11; s <= 110; ++s) {
    ASSERT_LE(schedule.lr_at(s), previous);
    previous = schedule.lr_at(s);
  }
  optim::SGD other({p}, {.lr = 0.3});
  optim::CosineWithWarmup no_warmup(other, 0, 10);
  EXPECT_DOUBLE_EQ(other.lr(), 0.3);
  EXPECT_ERROR(optim::CosineWithWarmup(other, 10, 10), "need 0 <= warmup_steps (10) < total_steps (10)");
  EXPECT_ERROR(optim::CosineWithWarmup(other, -1, 10), "warmup_steps (-1)");
}

// ---------------- option errors ----------------

TEST(OptimizerErrors, BadOptionsAndParameters) {
  Tensor p = make_param();
  EXPECT_ERROR(optim::SGD({p}, {.lr = -0.1}), "learning rate -0.1 is negative");
  EXPECT_ERROR(optim::SGD({p}, {.lr = 0.1, .momentum = -0.5}), "momentum -0.5 is negative");
  EXPECT_ERROR(optim::SGD({p}, {.lr = 0.1, .nesterov = true}), "Nesterov momentum needs momentum > 0");
  EXPECT_ERROR(optim::SGD({p}, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}),
                   "dampening 0");
  EXPECT_ERROR(optim::Adam({p}, {.beta1 = 1.0}), "betas (1, 0.999) must be in [0, 1)");
  EXPECT_ERROR(optim::AdamW({p}, {.beta2 = -0.1}), "AdamW: betas");
  EXPECT_ERROR(optim::Adam({p}, {.eps = -1}), "eps -1 is negative");
  const Tensor frozen = zeros({3});
  EXPECT_ERROR(optim::SGD({p, frozen}, {}), "SGD: parameter 1 does not require grad");
  EXPECT_ERROR(optim::SGD({p * 2.0}, {}), "SGD: parameter 0 is not a leaf tensor (computed by affine)",
               "never be updated");
  EXPECT_ERROR(optim::Adam({p, exp(make_param())}, {}), "Adam: parameter 1 is not a leaf tensor (computed by exp)");
  const Tensor ints = zeros({3}, {.dtype = DType::Int64});
  EXPECT_ERROR(optim::Adam({ints}, {}), "not floating point");
  Tensor strided = zeros({4, 4}).t().requires_grad_();
  EXPECT_ERROR(optim::SGD({strided}, {}), "parameter 0 is not contiguous");
  EXPECT_ERROR(optim::AdamW({p}, {.lr = std::nan("")}), "AdamW: learning rate nan is not a finite number");
  const Tensor other = make_param();
  EXPECT_ERROR(optim::SGD({p, other, p}, {}),
               "SGD: parameter 2 is parameter 0 again (each parameter may be listed once)");
}

TEST(OptimizerErrors, NoParametersIsAnErrorNamingTheOptimizer) {
  EXPECT_ERROR(optim::SGD({}, {}), "SGD: no parameters to optimize");
  EXPECT_ERROR(optim::Adam({}, {}), "Adam: no parameters to optimize");
  EXPECT_ERROR(optim::AdamW({}, {}), "AdamW: no parameters to optimize");
}

TEST(OptimizerErrors, SetLrRefusesNegativeNaNAndInfiniteAndKeepsTheOldLr) {
  optim::SGD sgd({make_param()}, {.lr = 0.1});
  EXPECT_ERROR(sgd.set_lr(-1), "SGD: learning rate -1 is negative");
  EXPECT_ERROR(sgd.set_lr(std::nan("")), "SGD: learning rate nan is not a finite number");
  optim::AdamW adamw({make_param()}, {.lr = 0.1});
  EXPECT_ERROR(adamw.set_lr(std::numeric_limits<double>::infinity()), "AdamW: learning rate inf is not a finite number");
  EXPECT_EQ(sgd.lr(), 0.1);
  EXPECT_EQ(adamw.lr(), 0.1);
  sgd.set_lr(0);  // zero is allowed (a warm-up starts there)
  EXPECT_EQ(sgd.lr(), 0);
}

TEST(Optimizer, HyperparametersRoundTripAndAreChecked) {
  optim::SGD sgd({make_param()}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4, .nesterov = true});
  sgd.set_lr(0.05);  // as a scheduler would
  const auto saved = sgd.hyperparameters();
  EXPECT_EQ(saved.at("lr"), 0.05);
  EXPECT_EQ(saved.at("nesterov"), 1.0);
  optim::SGD other({make_param()}, {.lr = 1});
  other.load_hyperparameters(saved);
  EXPECT_EQ(other.hyperparameters(), saved);
  EXPECT_TRUE(other.options().nesterov);
  EXPECT_ERROR(other.load_hyperparameters({{"betas", 0.9}}), "SGD: unknown hyper-parameter 'betas'");
  EXPECT_ERROR(other.load_hyperparameters({{"momentum", -1}}), "SGD: momentum -1 is negative");
  EXPECT_EQ(other.hyperparameters(), saved);  // a refused load changes nothing

  optim::Adam adam({make_param()}, {.lr = 0.01, .beta1 = 0.8});
  optim::Adam adam2({make_param()}, {});
  adam2.load_hyperparameters(adam.hyperparameters());
  EXPECT_EQ(adam2.hyperparameters(), adam.hyperparameters());
  EXPECT_ERROR(adam2.load_hyperparameters({{"beta2", 1.0}}), "Adam: betas (0.8, 1) must be in [0, 1)");
  adam2.load_hyperparameters({{"eps", 1e-6}});  // a missing name keeps its value
  EXPECT_EQ(adam2.hyperparameters().at("beta1"), 0.8);
}

TEST(GradientAccumulation, RestorePendingIsRangeChecked) {
  Tensor p = make_param();
  optim::SGD sgd({p}, {.lr = 0.1});
  optim::GradientAccumulation accumulate(sgd, 4);
  accumulate.restore_pending(3);
  EXPECT_EQ(accumulate.pending(), 3);
  EXPECT_ERROR(accumulate.restore_pending(4), "pending count 4 out of range for 4 steps");
  EXPECT_ERROR(accumulate.restore_pending(-1), "pending count -1");
}

// ---------------- allocations ----------------

TEST(SteadyState, SgdTrainingStepMakesNoSystemAllocation) {
  manual_seed(3);
  Mlp model;
  optim::SGD sgd(model.parameters(), {.lr = 0.05, .momentum = 0.9});
  const Batches data = make_batches(2, 32, 4);
  auto train_step = [&](int i) {
    sgd.zero_grad();
    Tensor loss = nn::cross_entropy(model(data.x[i % 2]), data.y[i % 2]);
    loss.backward();
    sgd.step();
    return loss.item();
  };
  for (int i = 0; i < 3; ++i) train_step(i);
  const MemoryStats before = memory_stats(kCPU);
  double last = 0;
  for (int i = 3; i < 8; ++i) last = train_step(i);
  const MemoryStats after = memory_stats(kCPU);
  EXPECT_TRUE(std::isfinite(last));
  EXPECT_EQ(after.system_allocations, before.system_allocations)
      << "steady-state steps reached malloc " << after.system_allocations - before.system_allocations << " times";
  EXPECT_GT(after.cache_hits, before.cache_hits);  // the steps did allocate tensors, from the cache
  // The counter is live: a block of a size never seen before does reach malloc.
  const Tensor fresh = Tensor::empty({12345679});
  EXPECT_GT(memory_stats(kCPU).system_allocations, after.system_allocations);
}

// ---- capturable = true: lr and Adam's step counts in memory the kernels read ----

using vgrad_test::bytes_of;
using vgrad_test::MakeOptimizer;
using vgrad_test::OptimizerRun;

MakeOptimizer make_sgd(optim::SGDOptions options) {
  return [options](std::vector<Tensor> params, bool capturable) -> std::unique_ptr<optim::Optimizer> {
    optim::SGDOptions o = options;
    o.capturable = capturable;
    return std::make_unique<optim::SGD>(std::move(params), o);
  };
}

MakeOptimizer make_adam(optim::AdamOptions options, bool decoupled) {
  return [options, decoupled](std::vector<Tensor> params, bool capturable) -> std::unique_ptr<optim::Optimizer> {
    optim::AdamOptions o = options;
    o.capturable = capturable;
    return std::make_unique<optim::Adam>(std::move(params), o, decoupled);
  };
}

void expect_same_bits(const OptimizerRun& got, const OptimizerRun& want, const std::string& what) {
  ASSERT_EQ(got.params.size(), want.params.size());
  for (size_t j = 0; j < got.params.size(); ++j)
    EXPECT_EQ(bytes_of(got.params[j]), bytes_of(want.params[j])) << what << ": parameter " << j;
  ASSERT_EQ(got.state.size(), want.state.size()) << what << ": the same state_dict keys";
  for (const auto& [key, value] : want.state) {
    ASSERT_TRUE(got.state.count(key)) << what << ": " << key;
    EXPECT_EQ(got.state.at(key).dtype(), value.dtype()) << what << ": " << key;
    EXPECT_EQ(bytes_of(got.state.at(key)), bytes_of(value)) << what << ": " << key;
  }
}

// The parameters moved from where they started (the runs compared did something).
void expect_moved(const OptimizerRun& run, DType dtype, const std::string& what) {
  for (size_t j = 0; j < run.params.size(); ++j)
    EXPECT_NE(bytes_of(run.params[j]),
              bytes_of(vgrad_test::uniform_tensor({vgrad_test::kCapturableSizes[j]}, 100 + j, -1, 1, dtype)))
        << what << ": parameter " << j << " did not move";
}

TEST(Capturable, SgdGivesTheBitsOfSgdWithoutIt) {
  const struct {
    optim::SGDOptions options;
    const char* what;
  } variants[] = {{{.lr = 0.1, .weight_decay = 1e-2}, "weight decay"},
                  {{.lr = 0.1, .momentum = 0.9, .dampening = 0.3, .weight_decay = 1e-3}, "momentum, dampening"},
                  {{.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-3, .nesterov = true}, "Nesterov"}};
  for (const auto& v : variants)
    for (const DType dtype : {DType::Float32, DType::Float64}) {
      const std::string what = std::string("SGD ") + v.what + " " + dtype_name(dtype);
      const OptimizerRun plain = vgrad_test::run_optimizer(kCPU, dtype, make_sgd(v.options), false);
      const OptimizerRun capturable = vgrad_test::run_optimizer(kCPU, dtype, make_sgd(v.options), true);
      expect_same_bits(capturable, plain, what);
      expect_moved(capturable, dtype, what);
      EXPECT_EQ(capturable.state.size(), v.options.momentum != 0 ? 4u : 0u) << what << ": the late one has a buffer";
    }
}

TEST(Capturable, AdamAndAdamWGiveTheBitsOfAdamWithoutIt) {
  for (const bool decoupled : {false, true})
    for (const double weight_decay : {0.0, 0.01})
      for (const DType dtype : {DType::Float32, DType::Float64}) {
        const std::string what = std::string(decoupled ? "AdamW" : "Adam") + " weight decay " +
                                 std::to_string(weight_decay) + " " + dtype_name(dtype);
        const MakeOptimizer make = make_adam({.lr = 1e-2, .weight_decay = weight_decay}, decoupled);
        const OptimizerRun plain = vgrad_test::run_optimizer(kCPU, dtype, make, false);
        const OptimizerRun capturable = vgrad_test::run_optimizer(kCPU, dtype, make, true);
        expect_same_bits(capturable, plain, what);
        expect_moved(capturable, dtype, what);
        // Per-parameter counts, advanced where the kernels read them: 5 steps, the late one 3.
        EXPECT_EQ(capturable.state.at("state.0.step").item<int64_t>(), 5) << what;
        EXPECT_EQ(capturable.state.at("state.2.step").item<int64_t>(), 3) << what;
        EXPECT_EQ(capturable.state.at("state.3.step").item<int64_t>(), 5) << what;
      }
}

// lr 0.1, then set_lr(0.5): the next step uses the new lr (the device copy was written).
TEST(Capturable, SetLrAndSchedulersChangeTheLrTheStepReads) {
  Tensor p = tensor({1.0}).requires_grad_();
  optim::SGD sgd({p}, {.lr = 0.1, .capturable = true});
  ASSERT_TRUE(sgd.capturable());
  p.set_grad(tensor({1.0}));
  sgd.step();
  EXPECT_FLOAT_EQ(p.item<float>(), 0.9f);
  sgd.set_lr(0.5);
  EXPECT_DOUBLE_EQ(sgd.lr(), 0.5);
  sgd.step();
  EXPECT_FLOAT_EQ(p.item<float>(), 0.4f);
  EXPECT_ERROR(sgd.set_lr(-1.0), "SGD: learning rate -1 is negative");
  sgd.step();
  EXPECT_FLOAT_EQ(p.item<float>(), -0.1f) << "a refused lr leaves the device lr as it was";
  sgd.load_hyperparameters({{"lr", 0.25}});
  sgd.step();
  EXPECT_FLOAT_EQ(p.item<float>(), -0.35f) << "load_hyperparameters sets the device lr";

  // Adam: each of these steps moves by lr/(1 + eps) (m̂ = g, v̂ = g² for a constant gradient
  // of 1), so the scheduler's lr of each step shows in the parameter.
  Tensor q = tensor({1.0}, {1}, {.dtype = DType::Float64}).requires_grad_();
  optim::Adam adam({q}, {.lr = 0.1, .capturable = true});
  optim::StepLR schedule(adam, 1, 0.5);
  double expected = 1.0;
  for (int s = 0; s < 4; ++s) {
    q.set_grad(tensor({1.0}, {1}, {.dtype = DType::Float64}));
    expected -= adam.lr() / (1 + 1e-8);
    adam.step();
    schedule.step();
    EXPECT_NEAR(q.item<double>(), expected, 1e-13) << "step " << s;
  }
  EXPECT_DOUBLE_EQ(adam.lr(), 0.1 / 16);
}

// Steps `optimizer` with seeded gradients; the same seed gives the same gradients.
void step_with(optim::Optimizer& optimizer, uint64_t seed, double lr) {
  optimizer.set_lr(lr);
  for (size_t j = 0; j < optimizer.params().size(); ++j) {
    const Tensor& p = optimizer.params()[j];
    Tensor(p).set_grad(vgrad_test::uniform_tensor(p.shape(), seed * 31 + j, -1, 1, p.dtype()));
  }
  optimizer.step();
}

std::vector<Tensor> fresh_params() {
  return {vgrad_test::uniform_tensor({7}, 1).requires_grad_(), vgrad_test::uniform_tensor({3, 5}, 2).requires_grad_()};
}

// A checkpoint of one kind loaded into the other continues with the same bits; into a
// capturable optimizer that already has state, it is copied in place (a captured step reads
// that memory).
TEST(Capturable, CheckpointsMoveBetweenCapturableAndNotAndLoadInPlace) {
  const std::vector<std::pair<std::string, MakeOptimizer>> kinds = {
      {"SGD", make_sgd({.lr = 0.1, .momentum = 0.9, .nesterov = true})},
      {"Adam", make_adam({.lr = 1e-2, .weight_decay = 0.01}, false)},
      {"AdamW", make_adam({.lr = 1e-2, .weight_decay = 0.01}, true)}};
  for (const auto& [kind, make] : kinds)
    for (const bool from_capturable : {false, true}) {
      const std::string what = kind + (from_capturable ? ", capturable to not" : ", not to capturable");
      const std::vector<Tensor> a = fresh_params();
      const auto saved = make(a, from_capturable);
      for (uint64_t s = 0; s < 3; ++s) step_with(*saved, s, 0.1 / double(s + 1));
      const std::map<std::string, Tensor> checkpoint = saved->state_dict();

      const std::vector<Tensor> b = fresh_params();
      const auto loaded = make(b, !from_capturable);
      step_with(*loaded, 7, 0.3);  // state of its own, overwritten by the load
      const std::map<std::string, Tensor> before = loaded->state_dict();
      {
        NoGradGuard no_grad;
        for (size_t j = 0; j < a.size(); ++j) Tensor(b[j]).copy_(a[j]);
      }
      loaded->load_state_dict(checkpoint);
      const std::map<std::string, Tensor> after = loaded->state_dict();
      ASSERT_EQ(after.size(), checkpoint.size()) << what;
      for (const auto& [key, value] : checkpoint) {
        EXPECT_EQ(bytes_of(after.at(key)), bytes_of(value)) << what << ": " << key << " loaded";
        if (!from_capturable && key.find(".step") == std::string::npos) {
          EXPECT_EQ(after.at(key).view().data, before.at(key).view().data) << what << ": " << key << " in place";
        }
      }
      for (uint64_t s = 3; s < 5; ++s) {
        step_with(*saved, s, 0.02 * double(s));
        step_with(*loaded, s, 0.02 * double(s));
      }
      for (size_t j = 0; j < a.size(); ++j) EXPECT_EQ(bytes_of(b[j]), bytes_of(a[j])) << what << ": parameter " << j;
      for (const auto& [key, value] : saved->state_dict())
        EXPECT_EQ(bytes_of(loaded->state_dict().at(key)), bytes_of(value)) << what << ": " << key << " after";
      if (kind != "SGD") {
        EXPECT_EQ(loaded->state_dict().at("state.1.step").item<int64_t>(), 5) << what;
      }
    }
}

// A checkpoint without a parameter's state (here: none at all) leaves it without state:
// its next step is a first step again (Adam: count 1, zero moments), capturable or not.
TEST(Capturable, ACheckpointWithoutStateStartsItAfresh) {
  for (const bool capturable : {false, true}) {
    const std::vector<Tensor> a = fresh_params(), b = fresh_params();
    const auto used = make_adam({.lr = 1e-2}, false)(a, capturable);
    const auto fresh = make_adam({.lr = 1e-2}, false)(b, capturable);
    step_with(*used, 1, 0.1);
    used->load_state_dict({});
    EXPECT_TRUE(used->state_dict().empty()) << capturable;
    {
      NoGradGuard no_grad;
      for (size_t j = 0; j < a.size(); ++j) Tensor(b[j]).copy_(a[j]);
    }
    step_with(*used, 2, 0.1);
    step_with(*fresh, 2, 0.1);
    for (size_t j = 0; j < a.size(); ++j) EXPECT_EQ(bytes_of(a[j]), bytes_of(b[j])) << capturable << " " << j;
    EXPECT_EQ(used->state_dict().at("state.0.step").item<int64_t>(), 1) << capturable;
  }
}

}  // namespace

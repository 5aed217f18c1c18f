// Extending vgrad: a user-defined layer (PReLU, a learnable slope per feature) and a
// custom differentiable op with a hand-written backward (Swish, via autograd::Function),
// trained together on a small synthetic problem and checked with gradcheck.
// Not a benchmark. Exits non-zero if a gradcheck fails or the loss does not go down.
#include <vgrad/vgrad.h>

#include "common.h"

using namespace vgrad;
using autograd::Context;

namespace {

// A custom op: swish(x) = x * sigmoid(x);   d/dx = s + x * s * (1 - s),  s = sigmoid(x).
// forward and backward run with recording off; the engine handles += and unbroadcasting.
struct Swish : autograd::Function<Swish> {
  static const char* name() { return "swish"; }  // shown in error messages
  static Tensor forward(Context& ctx, const Tensor& x) {
    ctx.save_for_backward({x});
    return x * sigmoid(x);
  }
  static std::vector<Tensor> backward(Context& ctx, const Tensor& grad_output) {
    const Tensor x = ctx.saved(0), s = sigmoid(x);
    return {grad_output * (s + x * s * (1.0 - s))};
  }
};

// y = x for x > 0, alpha * x otherwise; x (N, D), alpha (D) broadcast over N.
// Built from differentiable ops, so its backward comes for free:
//   dx = grad * (x > 0 ? 1 : alpha),   dalpha = Σ_rows grad * min(x, 0).
Tensor prelu(const Tensor& x, const Tensor& alpha) { return relu(x) - alpha * relu(-x); }

// A custom layer is a named parameter and a forward.
struct PReLU : nn::Module {
  explicit PReLU(int64_t features, double init = 0.25)
      : alpha(register_parameter("alpha", full({features}, init))) {}
  Tensor forward(const Tensor& x) override { return prelu(x, alpha); }
  std::string describe() const override { return "PReLU"; }
  Tensor alpha;
};

// 2 -> H (Swish) -> H (PReLU) -> 2 classes.
struct Net : nn::Module {
  explicit Net(int64_t hidden)
      : fc1(register_module("fc1", std::make_shared<nn::Linear>(2, hidden))),
        fc2(register_module("fc2", std::make_shared<nn::Linear>(hidden, hidden))),
        act(register_module("act", std::make_shared<PReLU>(hidden))),
        fc3(register_module("fc3", std::make_shared<nn::Linear>(hidden, 2))) {}
  Tensor forward(const Tensor& x) override { return (*fc3)((*act)((*fc2)(Swish::apply((*fc1)(x))))); }
  std::shared_ptr<nn::Linear> fc1, fc2;
  std::shared_ptr<PReLU> act;
  std::shared_ptr<nn::Linear> fc3;
};

bool report(const std::string& what, const autograd::GradcheckReport& r) {
  fmt::print("gradcheck {:<37} {}  worst: input {} element {}: analytic {:.6g} vs numeric {:.6g} (abs {:.2e}, rel {:.2e})\n",
             what, r.ok ? "ok" : "FAILED", r.worst_input, r.worst_element, r.analytic, r.numeric, r.abs_error,
             r.rel_error);
  if (!r.ok) fmt::print("  {}\n", r.message);
  return r.ok;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"A custom layer and a custom differentiable op in vgrad"};
  int steps = 300, print_every = 50;
  int64_t hidden = 32, samples = 512;
  double lr = 0.01;
  uint64_t seed = 0;
  app.add_option("--steps", steps, "training steps (full batch)")->check(examples::AtLeastOne);
  app.add_option("--print-every", print_every, "print the loss every this many steps")->check(examples::AtLeastOne);
  app.add_option("--hidden", hidden, "hidden width")->check(examples::AtLeastOne);
  app.add_option("--samples", samples, "synthetic training points")->check(examples::AtLeastOne);
  app.add_option("--lr", lr, "Adam learning rate");
  app.add_option("--seed", seed, "seed for data and initialisation");
  CLI11_PARSE(app, argc, argv);

  return examples::run([&] {
    manual_seed(seed);

    // 1. Check the custom op and the layer's math against central differences (float64).
    //    Inputs are kept away from the kink of relu at 0 (prelu) by much more than eps.
    fmt::print("-- gradient checks\n");
    Generator gen(seed + 1);
    const Tensor x_check = randn({5, 4}, {}, &gen);
    const Tensor away_from_zero = x_check + where(ge(x_check, zeros({})), full({}, 0.1), full({}, -0.1));
    bool ok = true;
    ok &= report("Swish (5x4)", autograd::gradcheck([](const std::vector<Tensor>& in) { return Swish::apply(in[0]); },
                                                     {x_check}));
    ok &= report("Swish(x) * w, w (4) broadcast",
                 autograd::gradcheck([](const std::vector<Tensor>& in) { return Swish::apply(in[0]) * in[1]; },
                                     {x_check, randn({4}, {}, &gen)}));
    ok &= report("prelu(x, alpha), alpha (4) broadcast",
                 autograd::gradcheck([](const std::vector<Tensor>& in) { return prelu(in[0], in[1]); },
                                     {away_from_zero, uniform({4}, 0.1, 0.5, {}, &gen)}));
    {
      // The layer itself, with respect to its input and its alpha: nn::gradcheck runs the
      // float32 layer in float64 for the check and converts it back.
      PReLU layer(4, 0.3);
      ok &= report("PReLU layer, d/dx and d/dalpha", nn::gradcheck(layer, away_from_zero));
    }
    if (!ok) {
      spdlog::error("gradcheck failed");
      return 1;
    }

    // 2. Train: is a 2-D point inside the circle of radius 1.2? (about half the points are)
    Tensor x = uniform({samples, 2}, -2.0, 2.0);
    Tensor y = to_dtype(lt(sum(square(x), {1}), full({}, 1.2 * 1.2)), DType::Int64);
    Net model(hidden);
    optim::Adam adam(model.parameters(), {.lr = lr});
    fmt::print("-- training {} -> {} (Swish) -> {} (PReLU) -> 2 on {} points, Adam lr {}\n", 2, hidden, hidden,
               samples, lr);
    for (const auto& [name, p] : model.named_parameters()) fmt::print("   {:<10} {}\n", name, fmt::join(p.shape(), "x"));

    double first_loss = 0, last_loss = 0;
    for (int step = 1; step <= steps; ++step) {
      Tensor loss = nn::cross_entropy(model(x), y);
      adam.zero_grad();
      loss.backward();
      adam.step();
      last_loss = loss.item();
      if (step == 1) first_loss = last_loss;
      if (step == 1 || step % print_every == 0) fmt::print("step {:4d}  loss {:.4f}\n", step, last_loss);
    }
    double accuracy;
    {
      NoGradGuard no_grad;
      accuracy = mean(to_dtype(eq(argmax(model(x), 1), y), DType::Float32)).item();
    }
    fmt::print("train accuracy {:.1f}%, learned PReLU slopes in [{:.3f}, {:.3f}]\n", 100 * accuracy,
               model.act->alpha.min().item(), model.act->alpha.max().item());
    if (!(last_loss < 0.5 * first_loss)) {
      spdlog::error("the loss did not go down enough: {:.4f} -> {:.4f}", first_loss, last_loss);
      return 1;
    }
    return 0;
  });
}

// Loop versus vectorized: a Linear layer's forward and backward for one batch,
// (a) with plain per-sample loops over std::vector<float>, as one would first write them,
// (b) with vgrad (nn::Linear forward, autograd backward: whole-batch GEMMs).
// Checks that both give the same numbers, then times them. Not a BLAS benchmark (see bench/).
// The loops are compiled with this program's flags (-O3 in a Release build, no
// -ffast-math, so the dot products stay scalar); the GEMMs are OpenBLAS's kernels.
//
//   forward   Z = X·Wᵀ + b          X (N, D_in), W (D_out, D_in), b (D_out)
//   backward  dW = Δᵀ·X,  db = Σ_rows Δ,  dX = Δ·W      Δ = ∂L/∂Z (N, D_out)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <thread>
#include <vector>
#include <vgrad/vgrad.h>

#include "common.h"

using namespace vgrad;

namespace {

// ---------------- (a) the per-sample loops ----------------
// Row-major plain arrays: x[i*d_in + k], w[o*d_in + k], z[i*d_out + o].
struct LoopLinear {
  int64_t d_in, d_out;
  std::vector<float> w, b;    // (D_out, D_in), (D_out)
  std::vector<float> dw, db;  // gradients, same shapes

  // For each sample i:  z_i = W x_i + b.
  void forward(const std::vector<float>& x, int64_t n, std::vector<float>& z) const {
    for (int64_t i = 0; i < n; ++i) {
      const float* x_i = &x[i * d_in];
      for (int64_t o = 0; o < d_out; ++o) {
        float acc = b[o];
        for (int64_t k = 0; k < d_in; ++k) acc += w[o * d_in + k] * x_i[k];
        z[i * d_out + o] = acc;
      }
    }
  }

  // For each sample i, with δ_i = ∂L/∂z_i:  dW += δ_i x_iᵀ,  db += δ_i,  dx_i = Wᵀ δ_i.
  void backward(const std::vector<float>& x, const std::vector<float>& delta, int64_t n, std::vector<float>& dx) {
    std::fill(dw.begin(), dw.end(), 0.0f);
    std::fill(db.begin(), db.end(), 0.0f);
    std::fill(dx.begin(), dx.end(), 0.0f);
    for (int64_t i = 0; i < n; ++i) {
      const float* x_i = &x[i * d_in];
      float* dx_i = &dx[i * d_in];
      for (int64_t o = 0; o < d_out; ++o) {
        const float d = delta[i * d_out + o];
        db[o] += d;
        for (int64_t k = 0; k < d_in; ++k) {
          dw[o * d_in + k] += d * x_i[k];
          dx_i[k] += w[o * d_in + k] * d;
        }
      }
    }
  }
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

// max |a - b| and max |b| over all elements.
std::pair<double, double> max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, double(std::fabs(a[i] - b[i])));
    scale = std::max(scale, double(std::fabs(b[i])));
  }
  return {diff, scale};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"A Linear layer's forward and backward: per-sample loops versus vgrad's vectorized ops"};
  int64_t n = 64, d_in = 784, d_out = 256;
  int repeats = 11;
  double tolerance = 1e-4;
  uint64_t seed = 0;
  app.add_option("-N,--batch", n, "batch size N")->check(examples::AtLeastOne);
  app.add_option("--in", d_in, "input features D_in")->check(examples::AtLeastOne);
  app.add_option("--out", d_out, "output features D_out")->check(examples::AtLeastOne);
  app.add_option("--repeats", repeats, "timed repetitions (the median is reported)")->check(examples::AtLeastOne);
  app.add_option("--tolerance", tolerance, "max |loop - vgrad| allowed, relative to max |vgrad| (at least 1)");
  app.add_option("--seed", seed, "seed for the layer, the inputs and the upstream gradient");
  CLI11_PARSE(app, argc, argv);

  return examples::run([&] {
    manual_seed(seed);
    // vgrad side: the layer, an input batch and an upstream gradient Δ.
    nn::Linear layer(d_in, d_out);
    Tensor x = randn({n, d_in}).requires_grad_();
    const Tensor delta = randn({n, d_out});

    // Loop side: the same numbers, copied into plain vectors.
    LoopLinear loop{d_in, d_out, layer.weight.to_vector<float>(), layer.bias.to_vector<float>(),
                    std::vector<float>(size_t(d_out * d_in)), std::vector<float>(size_t(d_out))};
    const std::vector<float> x_host = x.to_vector<float>(), delta_host = delta.to_vector<float>();
    std::vector<float> z_loop(size_t(n * d_out)), dx_loop(size_t(n * d_in));

    // One vectorized step: forward (recording the graph), then backward from Δ.
    // Gradients add up across backward() calls, so they are cleared first.
    Tensor z;
    const auto vgrad_forward = [&] { z = layer(x); };
    const auto vgrad_backward = [&] {
      layer.zero_grad();
      x.zero_grad();
      z.backward(delta);
    };

    // 1. Do both agree?
    loop.forward(x_host, n, z_loop);
    loop.backward(x_host, delta_host, n, dx_loop);
    vgrad_forward();
    vgrad_backward();
    struct Check {
      const char* name;
      const std::vector<float>& loop;
      Tensor vgrad;
    };
    bool agree = true;
    fmt::print("Linear {} -> {}, batch {}: loops vs vgrad, max |difference|\n", d_in, d_out, n);
    for (const Check& c : {Check{"Z  = X·Wᵀ + b", z_loop, z}, Check{"dW = Δᵀ·X", loop.dw, layer.weight.grad()},
                           Check{"db = Σ_rows Δ", loop.db, layer.bias.grad()}, Check{"dX = Δ·W", dx_loop, x.grad()}}) {
      const auto [diff, scale] = max_diff(c.loop, c.vgrad.to_vector<float>());
      const bool ok = diff <= tolerance * std::max(1.0, scale);
      agree &= ok;
      fmt::print("  {:<16} {:.3e}  (max |value| {:.3g})  {}\n", c.name, diff, scale, ok ? "ok" : "DISAGREE");
    }
    if (!agree) {
      spdlog::error("the loop and vectorized results disagree beyond tolerance {}", tolerance);
      return 1;
    }

    // 2. How long does each take? One untimed warm-up, then the median of `repeats`.
    // setup() runs before each repetition, untimed (the backward needs a fresh graph:
    // backward() frees the one it ran on).
    const auto time = [&](auto&& setup, auto&& fn) {
      setup();
      fn();
      std::vector<double> t;
      for (int r = 0; r < repeats; ++r) {
        setup();
        const auto start = std::chrono::steady_clock::now();
        fn();
        t.push_back(seconds_since(start));
      }
      return median(t);
    };
    const auto nothing = [] {};
    const double loop_fwd = time(nothing, [&] { loop.forward(x_host, n, z_loop); });
    const double loop_bwd = time(nothing, [&] { loop.backward(x_host, delta_host, n, dx_loop); });
    const double vec_fwd = time(nothing, vgrad_forward);
    const double vec_bwd = time(vgrad_forward, vgrad_backward);

    const double fwd_flops = 2.0 * double(n) * double(d_in) * double(d_out);
    const double bwd_flops = 4.0 * double(n) * double(d_in) * double(d_out);
    const auto row = [&](const char* name, double fwd, double bwd) {
      fmt::print("  {:<11} {:9.3f} ms {:7.2f} GFLOP/s   {:9.3f} ms {:7.2f} GFLOP/s   {:9.3f} ms\n", name, 1e3 * fwd,
                 fwd_flops / fwd * 1e-9, 1e3 * bwd, bwd_flops / bwd * 1e-9, 1e3 * (fwd + bwd));
    };
    fmt::print("\nmedian of {} runs; forward {:.1f} MFLOP, backward {:.1f} MFLOP\n", repeats, fwd_flops * 1e-6,
               bwd_flops * 1e-6);
    const char* blas_threads = std::getenv("OPENBLAS_NUM_THREADS");
    fmt::print("(loops: one thread; vectorized: OpenBLAS threads: {}, {} hardware threads here)\n",
               blas_threads ? blas_threads : "its default", std::thread::hardware_concurrency());
    fmt::print("  {:<11} {:>28}   {:>28}   {:>12}\n", "", "forward", "backward", "total");
    row("loops", loop_fwd, loop_bwd);
    row("vectorized", vec_fwd, vec_bwd);
    fmt::print("  {:<11} {:>27.1f}x   {:>27.1f}x   {:>11.1f}x\n", "speedup", loop_fwd / vec_fwd, loop_bwd / vec_bwd,
               (loop_fwd + loop_bwd) / (vec_fwd + vec_bwd));
    return 0;
  });
}

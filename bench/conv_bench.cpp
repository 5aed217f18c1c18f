// Convolution benchmark: one conv2d layer forward+backward at a shape of the
// mnist_cnn example (default: batch 64, 16 -> 32 channels, 14x14, 3x3, padding 1),
// its pieces alone (im2col, the forward GEMM, col2im) and the GEMM floor, medians
// of --repeats runs. Prints one JSON line, like bench/torch_conv.py for PyTorch.
// --profile-steps N also trains examples/mnist_cnn's model for N steps on random
// batches under vgrad::profiler and prints its per-op table to stderr.
// --epochs N instead trains that model on Fashion-MNIST (Adam lr 1e-3, cosine decay,
// the DataLoader as in the example) for N timed epochs after --warmup-steps steps and
// prints one JSON line like bench/torch_cnn.py and bench/jax_cnn.py (the peers of
// bench/compare.py --model cnn), with the convolution GEMMs' time alone per epoch as the
// floor. --steps S times only S steps per epoch, scaled to the whole epoch.
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vgrad/vgrad.h>

using namespace vgrad;

namespace {

// Median seconds of fn over `repeats` runs, after two warm-up runs.
double time_median(int repeats, Backend& backend, const std::function<void()>& fn) {
  for (int i = 0; i < 2; ++i) fn();
  std::vector<double> seconds;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    backend.synchronize();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

// examples/mnist_cnn's model at its defaults.
struct Cnn : nn::Module {
  Cnn()
      : conv1(register_module("conv1", std::make_shared<nn::Conv2d>(1, 16, 3, nn::Conv2dOptions{.padding = {1, 1}}))),
        bn1(register_module("bn1", std::make_shared<nn::BatchNorm2d>(16))),
        conv2(register_module("conv2", std::make_shared<nn::Conv2d>(16, 32, 3, nn::Conv2dOptions{.padding = {1, 1}}))),
        bn2(register_module("bn2", std::make_shared<nn::BatchNorm2d>(32))),
        fc1(register_module("fc1", std::make_shared<nn::Linear>(32 * 7 * 7, 128))),
        fc2(register_module("fc2", std::make_shared<nn::Linear>(128, 10))) {}
  Tensor forward(const Tensor& x) override {
    Tensor h = max_pool2d(relu((*bn1)((*conv1)(x.reshape({-1, 1, 28, 28})))), {2, 2});
    h = max_pool2d(relu((*bn2)((*conv2)(h))), {2, 2});
    return (*fc2)(nn::F::dropout(relu((*fc1)(h.flatten(1))), 0.25, true));
  }
  std::shared_ptr<nn::Conv2d> conv1;
  std::shared_ptr<nn::BatchNorm2d> bn1;
  std::shared_ptr<nn::Conv2d> conv2;
  std::shared_ptr<nn::BatchNorm2d> bn2;
  std::shared_ptr<nn::Linear> fc1, fc2;
};

Tensor randint_like_targets(int64_t batch, Device device) {
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < batch; ++i) labels.push_back(i % 10);
  return tensor(labels).to(device);
}

void profile_model(int steps, int64_t batch, Device device) {
  Cnn model;
  model.to(device);
  optim::Adam opt(model.parameters(), optim::AdamOptions{.lr = 1e-3});
  const Tensor x = randn({batch, 1, 28, 28}).to(device);
  const Tensor y = randint_like_targets(batch, device);
  auto step = [&] {
    opt.zero_grad();
    nn::cross_entropy(model(x), y).backward();
    opt.step();
  };
  for (int i = 0; i < 3; ++i) step();
  backend_for(device).synchronize();
  profiler::Profile profile;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) step();
  backend_for(device).synchronize();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  profile.stop();
  std::fprintf(stderr, "mnist_cnn model, batch %ld, %d steps: %.2f ms/step (%.1f s per 60k-sample epoch)\n%s",
               long(batch), steps, 1e3 * seconds / steps, seconds / steps * 60000.0 / double(batch),
               profile.table().c_str());
}

// Seconds of the convolution GEMMs of one training step of the model alone (through
// Backend::gemm, on preallocated buffers): per conv layer the forward W·col, the weight
// gradient dY·colᵀ (as col·dYᵀ where col has more rows than dY, as conv2d computes it)
// and, for conv2 only (conv1's input needs no gradient), Wᵀ·dY.
double conv_gemm_step_seconds(int64_t batch, int repeats, Device device) {
  Backend& backend = backend_for(device);
  struct Layer { int64_t in, out, side; bool input_grad; };
  double total = 0;
  for (const Layer& layer : {Layer{1, 16, 28, false}, Layer{16, 32, 14, true}}) {
    const int64_t rows = layer.in * 9, cols = batch * layer.side * layer.side;
    const Tensor w = randn({layer.out, rows}).to(device), col = randn({rows, cols}).to(device);
    const Tensor dy = randn({layer.out, cols}).to(device);
    Tensor y = Tensor::empty({layer.out, cols}, DType::Float32, device);
    Tensor dw = Tensor::empty({layer.out, rows}, DType::Float32, device);
    Tensor dcol = Tensor::empty({rows, cols}, DType::Float32, device);
    GemmArgs forward{.m = layer.out, .n = cols, .k = rows, .a = w.data_ptr(), .lda = rows, .b = col.data_ptr(),
                     .ldb = cols, .c = y.data_ptr(), .ldc = cols};
    GemmArgs weight_grad{.trans_b = true, .m = layer.out, .n = rows, .k = cols, .a = dy.data_ptr(), .lda = cols,
                         .b = col.data_ptr(), .ldb = cols, .c = dw.data_ptr(), .ldc = rows};
    if (rows > layer.out)
      weight_grad = {.trans_b = true, .m = rows, .n = layer.out, .k = cols, .a = col.data_ptr(), .lda = cols,
                     .b = dy.data_ptr(), .ldb = cols, .c = dw.data_ptr(), .ldc = layer.out};
    GemmArgs input_grad{.trans_a = true, .m = rows, .n = cols, .k = layer.out, .a = w.data_ptr(), .lda = rows,
                        .b = dy.data_ptr(), .ldb = cols, .c = dcol.data_ptr(), .ldc = cols};
    total += time_median(repeats, backend, [&] {
      backend.gemm(forward);
      backend.gemm(weight_grad);
      if (layer.input_grad) backend.gemm(input_grad);
    });
  }
  return total;
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;
}

// Trains the model on Fashion-MNIST and prints one JSON line (see the top of the file).
void train_epochs(int epochs, int steps, int warmup_steps, int64_t batch, const std::string& data_dir, Device device) {
  data::Mnist train(data_dir, "train");
  const auto normalizer = data::Normalizer::fit_scalar(train.inputs());  // one mean/std, as the peers
  Tensor x = train.inputs();
  normalizer.apply_(x);
  const auto dataset = std::make_shared<data::TensorDataset>(x, train.targets());
  data::DataLoader loader(dataset, {.batch_size = batch, .shuffle = true, .seed = 0, .device = device});
  const int64_t steps_per_epoch = loader.num_batches();
  const int64_t timed_steps = steps > 0 ? std::min<int64_t>(steps, steps_per_epoch) : steps_per_epoch;
  Cnn model;
  model.to(device);
  optim::Adam opt(model.parameters(), optim::AdamOptions{.lr = 1e-3});
  optim::CosineWithWarmup schedule(opt, 0, warmup_steps + epochs * timed_steps);
  // Trains up to `count` steps of a new epoch; returns (seconds, mean loss).
  auto run = [&](int64_t count) {
    const auto start = std::chrono::steady_clock::now();
    Tensor total = zeros({}, {.device = device});
    int64_t done = 0, samples = 0;
    for (auto& [inputs, targets] : loader) {
      if (done++ == count) break;
      Tensor loss = nn::cross_entropy(model(inputs), targets);
      opt.zero_grad();
      loss.backward();
      opt.step();
      schedule.step();
      NoGradGuard no_grad;
      total.add_(loss.detach(), double(targets.shape()[0]));
      samples += targets.shape()[0];
    }
    const double mean_loss = total.item() / double(samples);  // one host read per epoch
    return std::pair{std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), mean_loss};
  };
  run(warmup_steps);
  std::vector<double> seconds;
  double last_loss = 0;
  for (int e = 0; e < epochs; ++e) {
    const auto [s, loss] = run(timed_steps);
    seconds.push_back(s * double(steps_per_epoch) / double(timed_steps));
    last_loss = loss;
    std::fprintf(stderr, "epoch %d  %.3f s  loss %.4f\n", e + 1, seconds.back(), loss);
  }
  const double peak = peak_rss_mb();  // before the floor's buffers
  const double floor = conv_gemm_step_seconds(batch, 20, device) * double(steps_per_epoch);
  std::vector<double> sorted = seconds;
  std::sort(sorted.begin(), sorted.end());
  std::string list;
  for (double s : seconds) list += (list.empty() ? "" : ", ") + fmt::format("{:.4f}", s);
  std::printf("%s\n", fmt::format(R"({{"impl": "vgrad", "model": "cnn", "device": "{}", "batch": {}, "steps_timed": {}, )"
                                  R"("epoch_s": [{}], "epoch_s_median": {:.4f}, "final_loss": {:.5f}, )"
                                  R"("conv_gemm_floor_s": {:.4f}, "peak_rss_mb": {:.1f}}})",
                                  device.str(), batch, timed_steps, list, sorted[sorted.size() / 2], last_loss, floor,
                                  peak).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vgrad conv2d benchmark (JSON output)"};
  int64_t n = 64, c = 16, f = 32, h = 14, k = 3, pad = 1;
  int repeats = 30, profile_steps = 0, epochs = 0, steps = 0, warmup_steps = 50;
  std::string device_name = "cpu", data_dir = data::Mnist::default_directory();
  app.add_option("--batch", n);
  app.add_option("--in", c);
  app.add_option("--out", f);
  app.add_option("--size", h, "height = width");
  app.add_option("--kernel", k);
  app.add_option("--padding", pad);
  app.add_option("--repeats", repeats);
  app.add_option("--device", device_name);
  app.add_option("--profile-steps", profile_steps, "also profile this many training steps of mnist_cnn's model");
  app.add_option("--epochs", epochs, "train mnist_cnn's model on Fashion-MNIST this many timed epochs (JSON)");
  app.add_option("--steps", steps, "with --epochs: time only this many steps per epoch (0: all)");
  app.add_option("--warmup-steps", warmup_steps, "with --epochs: untimed steps first");
  app.add_option("--data-dir", data_dir, "with --epochs: the IDX files");
  CLI11_PARSE(app, argc, argv);

  const Device device(device_name);
  if (epochs > 0) {
    manual_seed(0);
    train_epochs(epochs, steps, warmup_steps, n, data_dir, device);
    return 0;
  }
  Backend& backend = backend_for(device);
  manual_seed(0);
  Tensor x = randn({n, c, h, h}).to(device), w = randn({f, c, k, k}).to(device), b = randn({f}).to(device);
  w.requires_grad_();
  b.requires_grad_();
  const int64_t out = h + 2 * pad - k + 1;
  auto run_forward = [&] {
    NoGradGuard no_grad;
    (void)conv2d(x, w, b, {1, 1}, {pad, pad});
  };
  // A dense output gradient, as a training step's (a .sum()'s would be an expanded
  // stride-0 tensor that every backward copy reads the slow way).
  const Tensor grad_out = randn({n, f, h + 2 * pad - k + 1, h + 2 * pad - k + 1}).to(device);
  auto run_step = [&](bool input_grad) {
    x.requires_grad_(input_grad);
    w.zero_grad();
    b.zero_grad();
    if (input_grad) x.zero_grad();
    conv2d(x, w, b, {1, 1}, {pad, pad}).backward(grad_out);
  };
  const double forward = time_median(repeats, backend, run_forward);
  const double step = time_median(repeats, backend, [&] { run_step(true); });
  const double step_no_dx = time_median(repeats, backend, [&] { run_step(false); });

  // The pieces alone, through the Backend.
  WindowGeometry g;
  g.batch = n, g.channels = c, g.height = g.width = h, g.kernel_h = g.kernel_w = k, g.pad_h = g.pad_w = pad;
  g.out_h = g.out_w = out;
  Tensor col = Tensor::empty({g.col_rows(), g.col_cols()}, DType::Float32, device);
  Tensor y = Tensor::empty({f, g.col_cols()}, DType::Float32, device);
  Tensor dx = Tensor::empty(x.shape(), DType::Float32, device);
  const Tensor wd = w.detach();
  const double im2col = time_median(repeats, backend, [&] { backend.im2col(x.view(), g, col.view()); });
  const double col2im = time_median(repeats, backend, [&] { backend.col2im(col.view(), g, dx.view()); });
  GemmArgs gemm;
  gemm.m = f, gemm.n = g.col_cols(), gemm.k = g.col_rows();
  gemm.a = wd.data_ptr(), gemm.lda = g.col_rows();
  gemm.b = col.data_ptr(), gemm.ldb = g.col_cols();
  gemm.c = y.data_ptr(), gemm.ldc = g.col_cols();
  const double forward_gemm = time_median(repeats, backend, [&] { backend.gemm(gemm); });
  // The layout change (F, N·OH·OW) -> (N, F, OH, OW) after the forward GEMM.
  Tensor nchw = Tensor::empty({n, f, out, out}, DType::Float32, device);
  const View permuted = make_view(y, {n, f, out, out}, {out * out, n * out * out, out, 1}, 0).view();
  const double permute = time_median(repeats, backend, [&] { backend.copy(permuted, nchw.view()); });
  Tensor db = Tensor::empty({f, 1}, DType::Float32, device);
  const double bias_sum = time_median(repeats, backend, [&] { backend.reduce(ReduceOp::Sum, y.view(), db.view()); });
  // Max pooling 2x2 of the conv's output, forward and backward.
  WindowGeometry pool;
  pool.batch = n, pool.channels = f, pool.height = pool.width = out, pool.kernel_h = pool.kernel_w = 2;
  pool.stride_h = pool.stride_w = 2, pool.out_h = pool.out_w = out / 2;
  Tensor pooled = Tensor::empty({n, f, out / 2, out / 2}, DType::Float32, device);
  Tensor where = Tensor::empty(pooled.shape(), DType::Int64, device);
  const double max_pool =
      time_median(repeats, backend, [&] { backend.max_pool2d(nchw.view(), pool, pooled.view(), where.view()); });
  const double max_pool_backward = time_median(
      repeats, backend, [&] { backend.max_pool2d_backward(pooled.view(), where.view(), pool, nchw.view()); });
  const double flops = 2.0 * double(f) * double(g.col_cols()) * double(g.col_rows());
  std::printf(
      "{\"framework\": \"vgrad\", \"device\": \"%s\", \"shape\": \"N%ld C%ld->%ld %ldx%ld k%ld p%ld\", "
      "\"forward_ms\": %.3f, \"forward_backward_ms\": %.3f, \"forward_backward_no_input_grad_ms\": %.3f, "
      "\"im2col_ms\": %.3f, \"forward_gemm_ms\": %.3f, \"col2im_ms\": %.3f, \"forward_gemm_gflops\": %.1f, "
      "\"gemm_floor_step_ms\": %.3f, \"permute_ms\": %.3f, \"bias_grad_sum_ms\": %.3f, \"max_pool_ms\": %.3f, \"max_pool_backward_ms\": %.3f}\n",
      device.str().c_str(), long(n), long(c), long(f), long(h), long(h), long(k), long(pad), 1e3 * forward, 1e3 * step,
      1e3 * step_no_dx, 1e3 * im2col, 1e3 * forward_gemm, 1e3 * col2im, flops / forward_gemm * 1e-9,
      3e3 * forward_gemm, 1e3 * permute, 1e3 * bias_sum, 1e3 * max_pool, 1e3 * max_pool_backward);  // the step's three GEMMs have the same multiply-adds
  if (profile_steps > 0) profile_model(profile_steps, n, device);
  return 0;
}

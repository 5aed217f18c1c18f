// The training benchmark, vgrad's side: Fashion-MNIST in memory (float32,
// normalised), MLP 784-256-128-10, ReLU, cross-entropy, SGD lr 0.1 (--optimizer adam: Adam
// lr 1e-3, PyTorch's other defaults), reshuffled each epoch, last partial batch kept. Prints one
// JSON line, like bench/torch_mlp.py.
// Batches come from data::DataLoader, whose prefetch thread gathers the next batch while
// this one trains (--gather step: index_select on the training thread, as before issue 16).
// --amp bf16|fp16: forward and loss under amp::Autocast (fp16 with amp::GradScaler), as
// torch_mlp.py --amp; the JSON line then also gives the device's peak allocated memory.
// --tf32: float32 matmul and convolution on TF32 tensor cores (CUDA), as torch_mlp.py --tf32.
// --host-data sync|async (a GPU): the training set stays in host memory and the DataLoader
// feeds it; sync copies each batch with to(device) on the training thread (a host wait on
// the compute stream per batch, as the loader did before its copy stream), async lets the
// loader upload it through page-locked staging on the copy stream (docs/gpu.md, "Streams").
// --cuda-graph: after the warm-up epoch, each full batch's indices are copied into a static
// input and the step (gather, forward, backward, optimizer) is one cuda::Graph replay (the last
// partial batch runs eagerly); with --optimizer adam, Adam is made capturable (its lr and step
// counts on the device), as a non-capturable Adam refuses to step inside a capture.
// --fused-relu: each hidden Linear + ReLU as one nn::LinearReLU (on CUDA one cuBLASLt GEMM whose
// epilogue adds the bias, then the ReLU kernel); the same model and values as without it.
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <vgrad/vgrad.h>

#include "core/cpu/thread_pool.h"

using namespace vgrad;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// 784 -> hidden... -> 10 with ReLU between, as nn.Sequential in the PyTorch peer; with
// `fused_relu`, each hidden layer is one LinearReLU (the same parameters, drawn in the same order).
std::shared_ptr<nn::Sequential> make_model(const std::vector<int64_t>& hidden, bool fused_relu) {
  auto model = std::make_shared<nn::Sequential>();
  int64_t width = 784;
  for (int64_t h : hidden) {
    if (fused_relu) {
      model->push_back(std::make_shared<nn::LinearReLU>(width, h));
    } else {
      model->push_back(std::make_shared<nn::Linear>(width, h));
      model->push_back(std::make_shared<nn::ReLU>());
    }
    width = h;
  }
  model->push_back(std::make_shared<nn::Linear>(width, 10));
  return model;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vgrad training benchmark (JSON output)"};
  int64_t batch = 64;
  int epochs = 5;
  double momentum = 0.0, target = 0.0;
  std::string data_dir = data::Mnist::default_directory(), device_name = "cpu";
  app.add_option("--batch", batch)->check(CLI::PositiveNumber);
  app.add_option("--epochs", epochs, "timed epochs after one warm-up epoch")->check(CLI::PositiveNumber);
  app.add_option("--momentum", momentum, "SGD's momentum");
  std::string optimizer = "sgd";
  app.add_option("--optimizer", optimizer, "sgd (lr 0.1, --momentum) or adam (lr 1e-3, betas 0.9/0.999, eps 1e-8)")
      ->check(CLI::IsMember({"sgd", "adam"}));
  app.add_option("--to-accuracy", target,
                 "train batch 64 (SGD lr 0.1, or --optimizer adam) until this test accuracy (max 10 epochs)");
  app.add_option("--data", data_dir);
  app.add_option("--device", device_name);
  std::vector<int64_t> hidden{256, 128};
  app.add_option("--hidden", hidden, "hidden layer widths")->delimiter(',');
  std::string gather = "loader";
  app.add_option("--gather", gather, "loader: the DataLoader's prefetch thread (CPU only); step: on the training thread")
      ->check(CLI::IsMember({"loader", "step"}));
  std::string amp_mode = "off";
  app.add_option("--amp", amp_mode, "mixed precision: off, bf16, or fp16 (with loss scaling)")
      ->check(CLI::IsMember({"off", "bf16", "fp16"}));
  bool profile = false;
  app.add_flag("--profile", profile, "print vgrad::profiler's table for one epoch (to stderr)");
  std::string host_data = "off";
  app.add_option("--host-data", host_data,
                 "a GPU: off (the training set on the device), sync (batches from host memory, to(device) on the "
                 "training thread) or async (the loader's copy stream)")
      ->check(CLI::IsMember({"off", "sync", "async"}));
  bool tf32 = false;
  app.add_flag("--tf32", tf32, "float32 matmul and convolution on TF32 tensor cores (CUDA; off by default)");
  bool cuda_graph = false;
  app.add_flag("--cuda-graph", cuda_graph, "CUDA: replay each full batch's step as one captured cuda::Graph");
  bool fused_relu = false;
  app.add_flag("--fused-relu", fused_relu, "each hidden Linear + ReLU as one nn::LinearReLU (cuBLASLt epilogue on CUDA)");
  CLI11_PARSE(app, argc, argv);
  cuda::set_tf32_matmul_enabled(tf32);
  cuda::set_tf32_conv_enabled(tf32);

  const Device device(device_name);
  if (cuda_graph && (!device.is_cuda() || amp_mode != "off" || target > 0)) {
    std::fprintf(stderr, "--cuda-graph needs --device cuda, --amp off and no --to-accuracy\n");
    return 2;
  }
  if (optimizer == "adam" && momentum != 0) {
    std::fprintf(stderr, "--momentum is SGD's; --optimizer adam takes none\n");
    return 2;
  }
  manual_seed(0);
  data::Mnist train(data_dir, "train");
  const auto normalizer = data::Normalizer::fit_scalar(train.inputs());  // one mean/std, as bench/torch_mlp.py
  Tensor x = train.inputs(), y = train.targets();
  normalizer.apply_(x);
  if (host_data == "off") {
    x = x.to(device);
    y = y.to(device);
  }
  const int64_t n = x.shape()[0];
  auto model = make_model(hidden, fused_relu);
  model->to(device);
  Generator shuffle(0);
  if (!device.is_cpu()) gather = host_data == "off" ? "step" : "loader";  // the loader gathers on the CPU
  const Device loader_device = host_data == "async" ? device : kCPU;
  const auto dataset = std::make_shared<data::TensorDataset>(x, y);
  std::map<int64_t, std::unique_ptr<data::DataLoader>> loaders;  // one per batch size: its epochs reshuffle
  // Made after model->to(device): a capturable optimizer keeps its lr and counts there. SGD
  // without momentum captures as it is (its lr is a constant of the graph); Adam's step count
  // and bias corrections change every step, so a captured Adam must read them from the device.
  auto make_optimizer = [&](double sgd_momentum) -> std::unique_ptr<optim::Optimizer> {
    if (optimizer == "adam")
      return std::make_unique<optim::Adam>(model->parameters(),
                                           optim::AdamOptions{.lr = 1e-3, .capturable = cuda_graph});
    return std::make_unique<optim::SGD>(model->parameters(), optim::SGDOptions{.lr = 0.1, .momentum = sgd_momentum});
  };

  std::optional<DType> low_dtype;
  if (amp_mode != "off") low_dtype = amp_mode == "bf16" ? DType::BFloat16 : DType::Float16;
  amp::GradScaler scaler({.enabled = amp_mode == "fp16"});  // bfloat16 needs no loss scaling
  auto train_step = [&](optim::Optimizer& opt, const Tensor& inputs, const Tensor& targets, Tensor& total) {
    Tensor loss;
    {
      std::optional<amp::Autocast> autocast;
      if (low_dtype) autocast.emplace(*low_dtype);
      loss = nn::cross_entropy((*model)(inputs), targets);
    }
    opt.zero_grad();
    scaler.scale(loss).backward();
    scaler.step(opt);
    scaler.update();
    NoGradGuard no_grad;
    total.add_(loss.detach(), double(targets.numel()));
  };
  // --cuda-graph: the static batch indices a replay reads (the gathers are in the graph, so
  // a step queues no eager index check, which would make the replay wait for the device),
  // and the loss it writes.
  cuda::Graph graph;
  bool graph_ready = false;  // after the warm-up epoch
  Tensor static_idx, graph_loss;
  auto graph_step = [&](optim::Optimizer& opt, const Tensor& idx, Tensor& total) {
    NoGradGuard no_grad;
    if (!graph.captured()) static_idx = zeros(idx.shape(), {.dtype = DType::Int64, .device = device});
    static_idx.copy_(idx);
    if (!graph.captured()) {
      graph.capture([&] {
        EnableGradGuard grad_on;
        opt.zero_grad();
        graph_loss = nn::cross_entropy((*model)(x.index_select(0, static_idx)), y.index_select(0, static_idx));
        graph_loss.backward();
        opt.step();
      });
    }
    graph.replay();
    total.add_(graph_loss.detach(), double(idx.numel()));
  };
  auto train_epoch = [&](optim::Optimizer& opt, int64_t b) {
    const auto start = std::chrono::steady_clock::now();
    Tensor total = zeros({}, {.device = device});
    if (gather == "loader") {
      auto& loader = loaders[b];
      if (!loader)
        loader = std::make_unique<data::DataLoader>(dataset, data::LoaderOptions{.batch_size = b, .device = loader_device});
      for (auto& [inputs, targets] : *loader) {
        if (inputs.device() == device) train_step(opt, inputs, targets, total);
        else train_step(opt, inputs.to(device), targets.to(device), total);  // --host-data sync
      }
    } else {
      const Tensor perm = randperm(n, &shuffle).to(device);
      for (int64_t i = 0; i < n; i += b) {
        const Tensor idx = perm.narrow(0, i, std::min(b, n - i));
        if (cuda_graph && graph_ready && idx.numel() == b)
          graph_step(opt, idx, total);
        else
          train_step(opt, x.index_select(0, idx), y.index_select(0, idx), total);
      }
    }
    const double loss = total.item() / double(n);  // one host read per epoch
    return std::pair{std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), loss};
  };

  // Adam's lines say so (SGD's lines are as they were before --optimizer).
  const std::string optimizer_fields = optimizer == "adam" ? R"("optimizer":"adam","lr":0.001,)" : "";
  std::string json;
  if (target > 0) {
    data::Mnist test(data_dir, "test");
    Tensor xt = test.inputs();
    normalizer.apply_(xt);
    xt = xt.to(device);
    const Tensor yt = test.targets().to(device);
    const auto opt = make_optimizer(0.0);  // the example's plain SGD, or Adam
    double seconds = 0;
    std::vector<double> accuracy;
    for (int epoch = 0; epoch < 10; ++epoch) {
      seconds += train_epoch(*opt, 64).first;
      NoGradGuard no_grad;
      accuracy.push_back(double(sum(eq(argmax((*model)(xt), 1), yt)).item<int64_t>()) / double(yt.numel()));
      if (accuracy.back() >= target) break;
    }
    json = fmt::format(
        R"({{"impl":"vgrad",{}"mode":"to_accuracy","target":{},"reached":{},"seconds":{:.4f},"epochs":{},"accuracy":[{:.4f}]}})",
        optimizer_fields, target, accuracy.back() >= target ? "true" : "false", seconds, accuracy.size(),
        fmt::join(accuracy, ","));
  } else {
    const auto optimizer_ptr = make_optimizer(momentum);
    optim::Optimizer& opt = *optimizer_ptr;
    train_epoch(opt, batch);  // warm-up (Adam's moments start here, before any capture)
    graph_ready = true;
    if (profile) {
      profiler::Profile recording;
      const double seconds = train_epoch(opt, batch).first;
      std::fprintf(stderr, "one epoch, batch %lld: %.3f s\n%s", static_cast<long long>(batch), seconds,
                   recording.table().c_str());
    }
    std::vector<double> times;
    double final_loss = 0;
    const cpu::ThreadPool::Counts pool_before = cpu::ThreadPool::instance().counts();
    reset_peak_memory(device);
    const int64_t waits_before = device.is_cpu() ? 0 : cuda::host_wait_count(device.index);
    for (int e = 0; e < epochs; ++e) {
      auto [seconds, loss] = train_epoch(opt, batch);
      times.push_back(seconds);
      final_loss = loss;
    }
    const double med = median(times);
    const int64_t host_waits = device.is_cpu() ? 0 : cuda::host_wait_count(device.index) - waits_before;
    json = fmt::format(
        R"({{"impl":"vgrad",{}"device":"{}","gather":"{}","host_data":"{}","hidden":"{}","amp":"{}","tf32":{},"cuda_graph":{},"fused_relu":{},"batch":{},"momentum":{},"epoch_s":[{:.4f}],"epoch_s_median":{:.4f},"samples_per_s":{:.1f},"final_loss":{:.5f})",
        optimizer_fields, device.str(), gather, host_data, fmt::join(hidden, ","), amp_mode, tf32, cuda_graph,
        fused_relu, batch, momentum, fmt::join(times, ","), med, double(n) / med, final_loss);
    json += fmt::format(R"(,"system_allocations_per_epoch":{},"peak_allocated_mib":{:.1f},"host_waits_per_epoch":{:.1f}}})",
                        memory_stats(device).system_allocations, double(max_memory_allocated(device)) / 1048576.0,
                        double(host_waits) / double(epochs));
    // The CPU pool over the timed epochs: jobs offered to the workers, how many of them its
    // back-off ran on the caller alone, and the pieces the workers took.
    const cpu::ThreadPool::Counts pool = cpu::ThreadPool::instance().counts();
    json.insert(json.size() - 1, fmt::format(R"(,"pool_threaded_jobs":{},"pool_backed_off_jobs":{},"pool_worker_pieces":{})",
                                             pool.threaded_jobs - pool_before.threaded_jobs,
                                             pool.backed_off_jobs - pool_before.backed_off_jobs,
                                             pool.worker_pieces - pool_before.worker_pieces));
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  json.insert(json.size() - 1, fmt::format(R"(,"peak_rss_mb":{:.1f})", double(usage.ru_maxrss) / 1024.0));
  std::printf("%s\n", json.c_str());
  return 0;
}

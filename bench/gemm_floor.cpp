// gemm_floor: times OpenBLAS sgemm alone on the GEMM shapes of one training step
// of the MLP 784-256-128-10 (forward, weight grads, input grads of layers 2-3),
// scaled to one Fashion-MNIST epoch (60,000 samples, last partial batch kept).
// This is the "floor" vgrad's epoch time is compared to. One JSON line per batch.
// --shapes: instead, a table of each of the step's GEMMs timed alone with OpenBLAS on 1
// and 2 threads and with vgrad's own sgemm (core/cpu/sgemm.h) on 1 and 2 threads,
// interleaved round by round, medians in microseconds per call (--square N: N x N x N),
// how many of vgrad's 2-thread calls its pool's back-off ran on one thread, and how many
// pieces per call its worker ran. --per-call N: vgrad's calls one by one (bench_per_call).
#include <cblas.h>

#include "core/cpu/sgemm.h"
#include "core/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <time.h>
#include <unistd.h>
#include <vector>

namespace {

constexpr int kSamples = 60000, kEpochs = 7;
constexpr int kDims[4] = {784, 256, 128, 10};

// One GEMM of the step, row-major: C(m,n) = op(A) * op(B), k the inner size.
struct Gemm {
  CBLAS_TRANSPOSE ta, tb;
  int m, n, k;
  const float* a;
  int lda;
  const float* b;
  int ldb;
  float* c;
  int ldc;
  int threads = 1;
  void run() const {
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
  }
};

struct Buffers {
  std::vector<float> act[4], w[3], dw[3], delta[3], dact[3];
};

// Order: fwd1 fwd2 fwd3 dW3 dX3 dW2 dX2 dW1. Weights W[l] are (out,in) like nn.Linear. act[0]=X, act[l+1]=layer l output;
// delta[l] = dL/d(pre-activation of layer l), dact[l] = dL/d act[l].
std::vector<Gemm> step_gemms(Buffers& b, int batch) {
  std::vector<Gemm> g;
  for (int l = 0; l < 3; ++l)  // forward: act[l+1](B,out) = act[l](B,in) * W^T
    g.push_back({CblasNoTrans, CblasTrans, batch, kDims[l + 1], kDims[l], b.act[l].data(),
                 kDims[l], b.w[l].data(), kDims[l], b.act[l + 1].data(), kDims[l + 1]});
  for (int l = 2; l >= 0; --l) {  // dW(out,in) = delta^T(out,B) * act[l](B,in)
    g.push_back({CblasTrans, CblasNoTrans, kDims[l + 1], kDims[l], batch, b.delta[l].data(),
                 kDims[l + 1], b.act[l].data(), kDims[l], b.dw[l].data(), kDims[l]});
    if (l > 0)  // dX(B,in) = delta(B,out) * W(out,in); not needed for layer 1
      g.push_back({CblasNoTrans, CblasNoTrans, batch, kDims[l], kDims[l + 1], b.delta[l].data(),
                   kDims[l + 1], b.w[l].data(), kDims[l], b.dact[l].data(), kDims[l]});
  }
  return g;
}

double thread_cpu() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void run_step(const std::vector<Gemm>& gemms, int& cur_threads) {
  for (const Gemm& g : gemms) {
    if (g.threads != cur_threads) openblas_set_num_threads(cur_threads = g.threads);
    g.run();
  }
}

// Default thread policy (no --threads): OpenBLAS's own choice is not always the
// fastest on 2 cores (small GEMMs lose to thread hand-off), so for each GEMM
// shape we time 1 and 2 threads once at startup and keep the faster. The floor
// is thus the best plain sgemm can do per shape; vgrad may choose likewise.
int pick_threads(Gemm g) {
  double best = 1e30;
  int best_t = 1;
  for (int t : {1, 2}) {
    openblas_set_num_threads(t);
    for (int i = 0; i < 20; ++i) g.run();
    double tmin = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      double t0 = now();
      for (int i = 0; i < 50; ++i) g.run();
      tmin = std::min(tmin, now() - t0);
    }
    if (tmin < best) best = tmin, best_t = t;
  }
  return best_t;
}

// The step's operands for one batch size, filled with uniform(-1, 1) values.
Buffers make_buffers(int batch) {
  Buffers b;
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto fill = [&](std::vector<float>& v, size_t n) {
    v.resize(n);
    for (float& x : v) x = u(rng);
  };
  for (int l = 0; l < 4; ++l) fill(b.act[l], size_t(batch) * kDims[l]);
  for (int l = 0; l < 3; ++l) {
    fill(b.w[l], size_t(kDims[l + 1]) * kDims[l]);
    fill(b.dw[l], size_t(kDims[l + 1]) * kDims[l]);
    fill(b.delta[l], size_t(batch) * kDims[l + 1]);
    fill(b.dact[l], size_t(batch) * kDims[l]);
  }
  return b;
}

void bench(int batch, int fixed_threads) {
  Buffers b = make_buffers(batch);
  std::vector<Gemm> full = step_gemms(b, batch);
  std::vector<int> threads;
  for (Gemm& g : full) threads.push_back(g.threads = fixed_threads > 0 ? fixed_threads : pick_threads(g));
  const int steps = (kSamples + batch - 1) / batch, last = kSamples - (steps - 1) * batch;
  std::vector<Gemm> tail = step_gemms(b, last);  // last partial batch, same threads
  for (size_t i = 0; i < tail.size(); ++i) tail[i].threads = threads[i];

  double flops = 0;  // per epoch
  for (const Gemm& g : full) flops += 2.0 * g.m * g.n * g.k * (steps - 1);
  for (const Gemm& g : tail) flops += 2.0 * g.m * g.n * g.k;

  int cur = -1;
  std::vector<double> epochs;
  for (int e = 0; e <= kEpochs; ++e) {  // epoch 0 is the warm-up
    double t0 = now();
    for (int s = 0; s < steps - 1; ++s) run_step(full, cur);
    run_step(tail, cur);
    if (e > 0) epochs.push_back(now() - t0);
  }
  std::vector<double> sorted = epochs;
  std::sort(sorted.begin(), sorted.end());
  double median = sorted[sorted.size() / 2];
  std::printf("{\"impl\":\"gemm_floor\",\"batch\":%d,\"epoch_s_median\":%.4f,\"epoch_s\":[", batch, median);
  for (size_t i = 0; i < epochs.size(); ++i) std::printf("%s%.4f", i ? "," : "", epochs[i]);
  std::printf("],\"gflops\":%.1f,\"threads\":[", flops / median * 1e-9);
  for (size_t i = 0; i < threads.size(); ++i) std::printf("%s%d", i ? "," : "", threads[i]);
  std::printf("],\"openblas_core\":\"%s\"}\n", openblas_get_corename());
  std::fflush(stdout);
}

// Median microseconds per call of each implementation on one shape, interleaved.
void time_shape(const Gemm& g, const char* name, int batch) {
  using vgrad::cpu::SgemmProblem;
  SgemmProblem p;
  p.trans_a = g.ta == CblasTrans, p.trans_b = g.tb == CblasTrans;
  p.m = g.m, p.n = g.n, p.k = g.k, p.a = g.a, p.lda = g.lda, p.b = g.b, p.ldb = g.ldb, p.c = g.c, p.ldc = g.ldc;
  const vgrad::cpu::SgemmKernels& kernels = vgrad::cpu::sgemm_kernels(vgrad::cpu::active_isa());
  auto openblas = [&](int t) { return [&g, t] { openblas_set_num_threads(t); g.run(); }; };
  auto ours = [&](int t) { return [&p, &kernels, t] { vgrad::cpu::sgemm(p, kernels, t); }; };
  const std::function<void()> impls[4] = {openblas(1), openblas(2), ours(1), ours(2)};
  const double macs = double(g.m) * g.n * g.k;
  const int calls = std::max(2, int(5.0e7 / std::max(macs, 1.0)));  // ~2-4 ms per timing
  // Wall time for all four; the calling thread's CPU time too for the one-thread runs,
  // which a shared machine's preemption does not inflate. OpenBLAS's pair first, then
  // vgrad's: OpenBLAS's threads keep spinning on the other core for a while after a
  // call, which would make vgrad's pool back off (thread_pool.cpp) and time one thread.
  std::vector<double> wall[4], cpu[4];
  vgrad::cpu::ThreadPool& pool = vgrad::cpu::ThreadPool::instance();
  const vgrad::cpu::ThreadPool::Counts before = pool.counts();
  for (int pair : {0, 2})
    for (int round = 0; round < 21; ++round)
      for (int i = pair; i < pair + 2; ++i) {
        openblas_set_num_threads(i == 1 ? 2 : 1);
        if (i == 3) pool.end_back_off();  // each round gives the threads a fresh chance
        impls[i]();
        const double t0 = now(), c0 = thread_cpu();
        for (int c = 0; c < calls; ++c) impls[i]();
        if (round > 0) {
          wall[i].push_back((now() - t0) / calls * 1e6);
          cpu[i].push_back((thread_cpu() - c0) / calls * 1e6);
        }
      }
  const uint64_t backed_off = pool.counts().backed_off_jobs - before.backed_off_jobs;
  const double worker_share = double(pool.counts().worker_pieces - before.worker_pieces) /
                              double(std::max<uint64_t>(1, pool.counts().threaded_jobs - before.threaded_jobs));
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf("| %d | %s | %s%s | %d | %d | %d | %.1f | %.1f / %.1f | %.1f | %.1f / %.1f | %.1f | %.1f | %llu / %.2f |\n", batch,
              name, p.trans_a ? "T" : "N", p.trans_b ? "T" : "N", g.m, g.n, g.k, macs / 1e3, median(cpu[0]),
              median(wall[0]), median(wall[1]), median(cpu[2]), median(wall[2]), median(wall[3]),
              median(cpu[0]) / median(cpu[2]), static_cast<unsigned long long>(backed_off), worker_share);
  std::fflush(stdout);
}

// --per-call N: vgrad's sgemm alone on each of the step's shapes, N single calls each on
// 1 and 2 threads (interleaved, the back-off ended before each 2-thread call), as min /
// 10th percentile / median microseconds, and the median of the 2-thread calls in which
// the worker took at least half the pieces: on a shared machine the other vCPU is often
// busy, and the medians alone then show one thread twice.
void bench_per_call(int batch, int calls) {
  using vgrad::cpu::ThreadPool;
  Buffers b = make_buffers(batch);
  const char* names[8] = {"fwd1", "fwd2", "fwd3", "dW3", "dX3", "dW2", "dX2", "dW1"};
  const std::vector<Gemm> gemms = step_gemms(b, batch);
  const vgrad::cpu::SgemmKernels& kernels = vgrad::cpu::sgemm_kernels(vgrad::cpu::active_isa());
  ThreadPool& pool = ThreadPool::instance();
  for (size_t s = 0; s < gemms.size(); ++s) {
    const Gemm& g = gemms[s];
    vgrad::cpu::SgemmProblem p;
    p.trans_a = g.ta == CblasTrans, p.trans_b = g.tb == CblasTrans;
    p.m = g.m, p.n = g.n, p.k = g.k, p.a = g.a, p.lda = g.lda, p.b = g.b, p.ldb = g.ldb, p.c = g.c, p.ldc = g.ldc;
    std::vector<double> one, two, two_shared;
    for (int c = 0; c < calls; ++c)
      for (int threads : {1, 2}) {
        pool.end_back_off();
        const uint64_t before = pool.counts().worker_pieces;
        const double t0 = now();
        vgrad::cpu::sgemm(p, kernels, threads);
        const double us = (now() - t0) * 1e6;
        (threads == 1 ? one : two).push_back(us);
        // Half the pieces: the driver makes min(panels, 4) of them.
        if (threads == 2 && 2 * (pool.counts().worker_pieces - before) >= 4) two_shared.push_back(us);
      }
    auto at = [](std::vector<double> v, double q) {
      if (v.empty()) return 0.0;
      std::sort(v.begin(), v.end());
      return v[size_t(q * double(v.size() - 1))];
    };
    std::printf("| %d | %s | %d | %d | %d | %.1f / %.1f / %.1f | %.1f / %.1f / %.1f | %zu | %.1f |\n", batch, names[s], g.m,
                g.n, g.k, at(one, 0), at(one, 0.1), at(one, 0.5), at(two, 0), at(two, 0.1), at(two, 0.5),
                two_shared.size(), at(two_shared, 0.5));
    std::fflush(stdout);
  }
}

void bench_shapes(int batch) {
  Buffers b = make_buffers(batch);
  const char* names[8] = {"fwd1", "fwd2", "fwd3", "dW3", "dX3", "dW2", "dX2", "dW1"};
  const std::vector<Gemm> gemms = step_gemms(b, batch);
  for (size_t i = 0; i < gemms.size(); ++i) time_shape(gemms[i], names[i], batch);
}

// Square products N x N x N (NN and NT), to place the switch to OpenBLAS for large GEMMs.
void bench_square(int size) {
  std::vector<float> a(size_t(size) * size, 0.5f), b(a), c(a);
  for (auto [ta, tb, name] : {std::tuple{CblasNoTrans, CblasNoTrans, "NxN NN"}, {CblasNoTrans, CblasTrans, "NxN NT"}})
    time_shape({ta, tb, size, size, size, a.data(), size, b.data(), size, c.data(), size}, name, 0);
}

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: gemm_floor [--batch B[,B...]]... [--threads T] [--shapes 1] [--per-call N] [--square N[,N...]]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  // OpenBLAS 0.3.21 does not know newer CPUs (e.g. Xeon model 207) and falls back to
  // its SSE3 "Prescott" kernels, 2-4x slower. The core is chosen when the library
  // loads, so re-run this program with OPENBLAS_CORETYPE set to what the CPU supports.
  if (std::string_view(openblas_get_corename()) == "Prescott" && !std::getenv("OPENBLAS_CORETYPE")) {
    const char* core = __builtin_cpu_supports("avx512f") ? "SkylakeX"
                       : __builtin_cpu_supports("avx2") ? "Haswell" : nullptr;
    if (core) {
      std::fprintf(stderr, "gemm_floor: OpenBLAS chose Prescott; re-running with OPENBLAS_CORETYPE=%s\n", core);
      setenv("OPENBLAS_CORETYPE", core, 1);
      execv("/proc/self/exe", argv);
    }
  }
  std::vector<int> batches;
  int threads = 0;
  bool shapes = false;
  int per_call = 0;
  std::vector<int> squares;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (i + 1 >= argc) usage();
    if (arg == "--batch") {
      std::stringstream ss(argv[++i]);
      for (std::string item; std::getline(ss, item, ',');) batches.push_back(std::atoi(item.c_str()));
    } else if (arg == "--square") {
      std::stringstream ss(argv[++i]);
      for (std::string item; std::getline(ss, item, ',');) squares.push_back(std::atoi(item.c_str()));
      shapes = true;
    } else if (arg == "--shapes") {
      shapes = std::atoi(argv[++i]) != 0;
    } else if (arg == "--per-call") {
      per_call = std::atoi(argv[++i]);
      if (per_call <= 0) usage();
    } else if (arg == "--threads") {
      threads = std::atoi(argv[++i]);
    } else {
      usage();
    }
  }
  if (batches.empty() && squares.empty()) batches = {32, 64, 128, 256};
  if (shapes)
    std::printf("OpenBLAS core %s, vgrad kernels %s; us per call, median of 20 interleaved rounds; "
                "1 thr: calling thread's CPU time / wall time; 2 thr: wall time\n"
                "| batch | gemm | op | m | n | k | kMAC | OpenBLAS 1 thr | OpenBLAS 2 thr | vgrad 1 thr | vgrad 2 thr | "
                "OpenBLAS/vgrad 1 thr CPU | vgrad 2 thr: calls backed off / worker pieces per call |\n"
                "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
                openblas_get_corename(), std::string(vgrad::cpu::isa_name(vgrad::cpu::active_isa())).c_str());
  if (per_call > 0)
    std::printf("vgrad kernels %s; us per single call over %d calls: min / p10 / median; 'shared': the 2-thread calls "
                "in which the worker ran at least half the pieces\n"
                "| batch | gemm | m | n | k | 1 thr | 2 thr | shared calls | shared median |\n"
                "|---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
                std::string(vgrad::cpu::isa_name(vgrad::cpu::active_isa())).c_str(), per_call);
  for (int bsz : batches) {
    if (bsz <= 0) usage();
    if (per_call > 0)
      bench_per_call(bsz, per_call);
    else if (shapes)
      bench_shapes(bsz);
    else
      bench(bsz, threads);
  }
  for (int size : squares) bench_square(size);
}

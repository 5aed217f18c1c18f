// Google Benchmark suite of vgrad's core primitives, each beside the plain loop a
// newcomer writes over std::vector<float> for the same work (same compiler flags:
// Release, -O3 -march=native, no -ffast-math; vectors 64-byte aligned as vgrad's
// buffers are). Training-sized float32 shapes.
//
// Names are PRIMITIVE/SHAPE/VARIANT with VARIANT one of
//   vgrad     the vgrad op (its output comes from the caching allocator: no malloc
//             in steady state, but the allocation is inside the timing)
//   naive     the plain loop, writing into a preallocated std::vector (GEMM: the
//             cache-friendly i-k-j triple loop; naive_ijk: the textbook i-j-k one)
//   openblas  raw cblas_sgemm from the same OpenBLAS that vgrad loaded (GEMM only),
//             on the thread count vgrad picks for the shape, to show vgrad's overhead
// and overhead/*/2x2/vgrad: a few ops on a (2,2) tensor, i.e. the fixed cost per call.
// Counters: bytes/s (operands read + written once), FLOP/s (GEMM: 2·m·n·k), and
// items/s (output elements; input elements for reductions; rows for cross_entropy;
// multiply-adds for GEMM). Rates are per CPU second of the benchmark thread (steadier
// on a shared machine), except GEMM when OpenBLAS has several threads: wall-clock time
// there (run with OPENBLAS_NUM_THREADS=1 for single-thread GEMM in CPU time). Before timing, every vgrad benchmark checks that its
// result matches the naive loop's, so both sides do the same work.
//
//   ./build-bench/bench/primitives --benchmark_min_time=0.2 --benchmark_repetitions=3
//       --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <numeric>
#include <random>
#include <string>
#include <vector>
#include <vgrad/vgrad.h>

using namespace vgrad;

namespace {

using benchmark::Counter;
using benchmark::State;

// 64-byte aligned, like vgrad's allocator: without it the naive side's time depended
// on where malloc put the vectors (the (64,256) column sum ran 1.0 or 2.2 µs from run
// to run with 16-byte-aligned vectors on this AVX-512 machine).
template <class T>
struct Aligned64 {
  using value_type = T;
  Aligned64() = default;
  template <class U> Aligned64(const Aligned64<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <class U> bool operator==(const Aligned64<U>&) const { return true; }
};
using Vec = std::vector<float, Aligned64<float>>;

std::vector<float> std_vec(const Vec& v) { return std::vector<float>(v.begin(), v.end()); }

Vec random_floats(size_t n, uint32_t seed, float lo = -2.f, float hi = 2.f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  Vec v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

std::string dims(std::initializer_list<int64_t> d) {
  std::string s;
  for (int64_t x : d) {
    if (!s.empty()) s.push_back('x');
    s.append(std::to_string(x));
  }
  return s;
}

struct Work {
  double bytes = 0;   // per iteration
  double flops = 0;   // per iteration
  int64_t items = 0;  // per iteration
};

void report(State& st, const Work& w) {
  const double iters = double(st.iterations());
  if (w.bytes > 0) st.counters["bytes/s"] = Counter(w.bytes * iters, Counter::kIsRate);
  if (w.flops > 0) st.counters["FLOP/s"] = Counter(w.flops * iters, Counter::kIsRate);
  st.SetItemsProcessed(w.items * st.iterations());
}

// vgrad's result must match the naive loop's before either side is timed.
bool matches(State& st, const Tensor& got, const Vec& want, double tol) {
  const std::vector<float> g = got.contiguous().to_vector<float>();
  if (g.size() != want.size()) {
    st.SkipWithError("vgrad's result has a different size from the naive loop's");
    return false;
  }
  for (size_t i = 0; i < g.size(); ++i) {
    if (!(std::abs(double(g[i]) - double(want[i])) <= tol * (1.0 + std::abs(double(want[i]))))) {
      const std::string msg = "vgrad differs from the naive loop at element " + std::to_string(i) + ": " +
                              std::to_string(g[i]) + " vs " + std::to_string(want[i]);
      st.SkipWithError(msg.c_str());
      return false;
    }
  }
  return true;
}

// Runs `check` (true when vgrad matches the naive loop) on the first call only: Google
// Benchmark calls a benchmark function several times (sizing runs, repetitions).
template <class Check>
bool verified(State& st, const std::shared_ptr<int>& status, Check check) {
  if (*status == 0) *status = check() ? 1 : -1;
  if (*status < 0 && !st.error_occurred()) st.SkipWithError("vgrad's result differs from the naive loop's");
  return *status > 0;
}

// Registers NAME/naive: `naive()` runs the loop into `*out`.
template <class NaiveOp> void add_naive(const std::string& name, Work work, NaiveOp naive, std::shared_ptr<Vec> out) {
  benchmark::RegisterBenchmark((name + "/naive").c_str(), [=](State& st) {
    for (auto _ : st) {
      naive();
      benchmark::DoNotOptimize(out->data());
      benchmark::ClobberMemory();
    }
    report(st, work);
  });
}

// Registers NAME/vgrad and NAME/naive. `vg()` returns vgrad's result; `naive()` runs the
// loop into `*out` (which the check then compares with vgrad's result).
template <class VgradOp, class NaiveOp>
void add_pair(const std::string& name, Work work, VgradOp vg, NaiveOp naive, std::shared_ptr<Vec> out,
              double tol = 1e-5) {
  auto status = std::make_shared<int>(0);
  benchmark::RegisterBenchmark((name + "/vgrad").c_str(), [=](State& st) {
    if (!verified(st, status, [&] {
          naive();
          return matches(st, vg(), *out, tol);
        }))
      return;
    for (auto _ : st) {
      Tensor y = vg();
      benchmark::DoNotOptimize(y);
      benchmark::ClobberMemory();
    }
    report(st, work);
  });
  add_naive(name, work, naive, out);
}

// ---------------------------------------------------------------- elementwise

void register_elementwise(int64_t n, int64_t d) {
  const std::string shape = dims({n, d});
  const size_t count = size_t(n * d);
  const int64_t items = n * d;
  const double fbytes = double(sizeof(float));
  auto a = std::make_shared<Vec>(random_floats(count, 1));
  auto b = std::make_shared<Vec>(random_floats(count, 2));
  auto bias = std::make_shared<Vec>(random_floats(size_t(d), 3));
  auto out = std::make_shared<Vec>(count);
  const Tensor ta = tensor(std_vec(*a), {n, d}), tb = tensor(std_vec(*b), {n, d}), tbias = tensor(std_vec(*bias), {d});

  add_pair("add/" + shape, {3 * fbytes * items, 0, items}, [=] { return ta + tb; },
           [=] {
             Vec& o = *out;
             const Vec&x = *a, &y = *b;
             for (size_t i = 0; i < o.size(); ++i) o[i] = x[i] + y[i];
           },
           out);

  add_pair("add_bias/" + shape + "+" + std::to_string(d), {fbytes * (2.0 * items + d), 0, items},
           [=] { return ta + tbias; },
           [=] {
             Vec& o = *out;
             const Vec&x = *a, &y = *bias;
             for (int64_t r = 0; r < n; ++r)
               for (int64_t c = 0; c < d; ++c) o[r * d + c] = x[r * d + c] + y[c];
           },
           out);

  add_pair("relu/" + shape, {2 * fbytes * items, 0, items}, [=] { return ta.relu(); },
           [=] {
             Vec& o = *out;
             const Vec& x = *a;
             for (size_t i = 0; i < o.size(); ++i) o[i] = std::max(x[i], 0.0f);
           },
           out);

  add_pair("exp/" + shape, {2 * fbytes * items, 0, items}, [=] { return ta.exp(); },
           [=] {
             Vec& o = *out;
             const Vec& x = *a;
             for (size_t i = 0; i < o.size(); ++i) o[i] = std::exp(x[i]);
           },
           out, 1e-5);

  add_pair("sigmoid/" + shape, {2 * fbytes * items, 0, items}, [=] { return ta.sigmoid(); },
           [=] {
             Vec& o = *out;
             const Vec& x = *a;
             for (size_t i = 0; i < o.size(); ++i) o[i] = 1.0f / (1.0f + std::exp(-x[i]));
           },
           out, 1e-5);

  add_pair("mul_scalar/" + shape, {2 * fbytes * items, 0, items}, [=] { return ta * 0.5; },
           [=] {
             Vec& o = *out;
             const Vec& x = *a;
             for (size_t i = 0; i < o.size(); ++i) o[i] = x[i] * 0.5f;
           },
           out);
}

// ---------------------------------------------------------------- reductions

void register_reductions(int64_t n, int64_t d) {
  const std::string shape = dims({n, d});
  const int64_t items = n * d;
  const double fbytes = double(sizeof(float));
  auto a = std::make_shared<Vec>(random_floats(size_t(items), 4));
  const Tensor ta = tensor(std_vec(*a), {n, d});

  // The serial float sum differs from vgrad's 8-lane sum by rounding only.
  auto one = std::make_shared<Vec>(1);
  add_pair("sum_all/" + shape, {fbytes * items, 0, items}, [=] { return ta.sum(); },
           [=] {
             const Vec& x = *a;
             float s = 0;
             for (size_t i = 0; i < x.size(); ++i) s += x[i];
             (*one)[0] = s;
           },
           one, 1e-3);

  auto cols = std::make_shared<Vec>(size_t(d));
  add_pair("sum_dim0/" + shape, {fbytes * (items + d), 0, items}, [=] { return ta.sum({0}); },
           [=] {
             Vec& o = *cols;
             const Vec& x = *a;
             std::fill(o.begin(), o.end(), 0.0f);
             for (int64_t r = 0; r < n; ++r)
               for (int64_t c = 0; c < d; ++c) o[c] += x[r * d + c];
           },
           cols, 1e-4);

  auto rows = std::make_shared<Vec>(size_t(n));
  add_pair("sum_lastdim/" + shape, {fbytes * (items + n), 0, items}, [=] { return ta.sum({-1}); },
           [=] {
             Vec& o = *rows;
             const Vec& x = *a;
             for (int64_t r = 0; r < n; ++r) {
               float s = 0;
               for (int64_t c = 0; c < d; ++c) s += x[r * d + c];
               o[r] = s;
             }
           },
           rows, 1e-4);

  add_pair("max_lastdim/" + shape, {fbytes * (items + n), 0, items}, [=] { return ta.max(-1); },
           [=] {
             Vec& o = *rows;
             const Vec& x = *a;
             for (int64_t r = 0; r < n; ++r) {
               float m = -std::numeric_limits<float>::infinity();
               for (int64_t c = 0; c < d; ++c) m = std::max(m, x[r * d + c]);
               o[r] = m;
             }
           },
           rows, 0);
}

// ---------------------------------------------------------------- GEMM

// Raw OpenBLAS, reached through the library vgrad already dlopen-ed (so the same
// kernel choice), to compare vgrad's matmul with the BLAS call underneath it.
struct RawBlas {
  using Sgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*,
                         int);
  Sgemm sgemm = nullptr;
  int (*get_threads)() = nullptr;
  char* (*corename)() = nullptr;
  int max_threads = 1;
  enum { RowMajor = 101, NoTrans = 111, Trans = 112 };
};

const RawBlas& raw_blas() {
  static const RawBlas blas = [] {
    // A product far above vgrad's threading threshold: vgrad loads OpenBLAS (choosing
    // its kernel) and leaves it at its full thread count, which we read back.
    (void)matmul(ones({1024, 1024}), ones({1024, 1024}));
    RawBlas r;
    void* h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_NOLOAD);
    if (!h) return r;
    r.sgemm = reinterpret_cast<RawBlas::Sgemm>(dlsym(h, "cblas_sgemm"));
    r.get_threads = reinterpret_cast<int (*)()>(dlsym(h, "openblas_get_num_threads"));
    r.corename = reinterpret_cast<char* (*)()>(dlsym(h, "openblas_get_corename"));
    if (!r.sgemm || !r.get_threads) r.sgemm = nullptr;
    else r.max_threads = r.get_threads();
    return r;
  }();
  return blas;
}

// C (m,n) = A (m,k) · B (k,n), the cache-friendly i-k-j order that vectorises the inner loop.
void naive_gemm_ikj(const float* a, const float* b, float* c, int64_t m, int64_t k, int64_t n) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) c[i * n + j] = 0;
    for (int64_t p = 0; p < k; ++p) {
      const float aip = a[i * k + p];
      for (int64_t j = 0; j < n; ++j) c[i * n + j] += aip * b[p * n + j];
    }
  }
}

// The textbook i-j-k order: a dot product per output, striding down B's columns.
void naive_gemm_ijk(const float* a, const float* b, float* c, int64_t m, int64_t k, int64_t n) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      float s = 0;
      for (int64_t p = 0; p < k; ++p) s += a[i * k + p] * b[p * n + j];
      c[i * n + j] = s;
    }
}

enum class Trans { None, A, B };

// vgrad matmul of (batch,) m x k @ k x n, raw sgemm under the same thread rule,
// and (with_naive) the two naive loops. Trans::A stores A as (k, m) and passes a.t();
// Trans::B stores B as (n, k) and passes b.t() (Linear's x·Wᵀ).
void register_gemm(const std::string& label, int64_t batch, int64_t m, int64_t k, int64_t n, Trans trans,
                   bool with_naive) {
  const double flops = 2.0 * double(batch) * double(m) * double(n) * double(k);
  const Work work{4.0 * double(batch) * double(m * k + k * n + m * n), flops, batch * m * n * k};
  auto a = std::make_shared<Vec>(random_floats(size_t(batch * m * k), 5, -1, 1));
  auto b = std::make_shared<Vec>(random_floats(size_t(batch * k * n), 6, -1, 1));
  auto c = std::make_shared<Vec>(size_t(batch * m * n));
  Tensor ta, tb;
  if (trans == Trans::A) ta = tensor(std_vec(*a), {k, m}).t();
  else ta = batch > 1 ? tensor(std_vec(*a), {batch, m, k}) : tensor(std_vec(*a), {m, k});
  if (trans == Trans::B) tb = tensor(std_vec(*b), {n, k}).t();
  else tb = batch > 1 ? tensor(std_vec(*b), {batch, k, n}) : tensor(std_vec(*b), {k, n});
  const double tol = 1e-4;
  // The thread count vgrad picks for this product (core/cpu/gemm.cpp: one thread for small
  // ones). With several, the benchmark thread's CPU time misses the workers' share:
  // use wall-clock time then (OPENBLAS_NUM_THREADS=1 gives CPU time throughout).
  const RawBlas& blas = raw_blas();  // first: its warm-up product changes the count
  (void)matmul(ta, tb);
  const int threads = blas.sgemm ? blas.get_threads() : 1;
  const bool threaded = threads > 1;
  auto timing = [threaded](benchmark::internal::Benchmark* b) {
    if (threaded) b->UseRealTime();
  };

  // The reference: A and B laid out as stored, read the way the variant reads them.
  auto reference = [=] {
    Vec& o = *c;
    const Vec&x = *a, &y = *b;
    for (int64_t q = 0; q < batch; ++q)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double s = 0;
          for (int64_t p = 0; p < k; ++p) {
            const float av = trans == Trans::A ? x[p * m + i] : x[q * m * k + i * k + p];
            const float bv = trans == Trans::B ? y[j * k + p] : y[q * k * n + p * n + j];
            s += double(av) * double(bv);
          }
          o[q * m * n + i * n + j] = float(s);
        }
  };

  auto status = std::make_shared<int>(0);
  timing(benchmark::RegisterBenchmark((label + "/vgrad").c_str(), [=](State& st) {
    if (!verified(st, status, [&] {
          reference();
          return matches(st, matmul(ta, tb), *c, tol);
        }))
      return;
    for (auto _ : st) {
      Tensor y = matmul(ta, tb);
      benchmark::DoNotOptimize(y);
      benchmark::ClobberMemory();
    }
    report(st, work);
    st.counters["threads"] = threads;
  }));

  timing(benchmark::RegisterBenchmark((label + "/openblas").c_str(), [=](State& st) {
    const RawBlas& blas = raw_blas();
    if (!blas.sgemm) {
      st.SkipWithError("libopenblas.so.0 not loaded");
      return;
    }
    // One vgrad matmul of this shape leaves OpenBLAS at the thread count vgrad picks
    // for it, so the raw calls run under the same rule (and vgrad's cache stays true).
    (void)matmul(ta, tb);
    const int ta_flag = trans == Trans::A ? RawBlas::Trans : RawBlas::NoTrans;
    const int tb_flag = trans == Trans::B ? RawBlas::Trans : RawBlas::NoTrans;
    const int lda = int(trans == Trans::A ? m : k), ldb = int(trans == Trans::B ? k : n);
    auto run = [&] {
      for (int64_t q = 0; q < batch; ++q)
        blas.sgemm(RawBlas::RowMajor, ta_flag, tb_flag, int(m), int(n), int(k), 1.0f, a->data() + q * m * k, lda,
                   b->data() + q * k * n, ldb, 0.0f, c->data() + q * m * n, int(n));
    };
    for (auto _ : st) {
      run();
      benchmark::DoNotOptimize(c->data());
      benchmark::ClobberMemory();
    }
    report(st, work);
    st.counters["threads"] = blas.get_threads();
  }));

  if (!with_naive || trans != Trans::None) return;
  timing(benchmark::RegisterBenchmark((label + "/naive").c_str(), [=](State& st) {
    for (auto _ : st) {
      for (int64_t q = 0; q < batch; ++q)
        naive_gemm_ikj(a->data() + q * m * k, b->data() + q * k * n, c->data() + q * m * n, m, k, n);
      benchmark::DoNotOptimize(c->data());
      benchmark::ClobberMemory();
    }
    report(st, work);
  }));
  if (batch != 1) return;
  timing(benchmark::RegisterBenchmark((label + "/naive_ijk").c_str(), [=](State& st) {
    for (auto _ : st) {
      naive_gemm_ijk(a->data(), b->data(), c->data(), m, k, n);
      benchmark::DoNotOptimize(c->data());
      benchmark::ClobberMemory();
    }
    report(st, work);
  }));
}

// ---------------------------------------------------------------- softmax

// The naive softmax's first pass over one row of d: y = exp(x - max(x)); returns the
// max and the sum of y (softmax, log_softmax and cross_entropy's references all start so).
struct ShiftedExp {
  float max, sum;
};
ShiftedExp shifted_exp_row(const float* x, float* y, int64_t d) {
  const float mx = *std::max_element(x, x + d);
  std::transform(x, x + d, y, [mx](float v) { return std::exp(v - mx); });
  return {mx, std::accumulate(y, y + d, 0.0f)};
}

void register_softmax(int64_t n, int64_t d, bool log) {
  const std::string name = std::string(log ? "log_softmax/" : "softmax/") + dims({n, d});
  const int64_t items = n * d;
  auto a = std::make_shared<Vec>(random_floats(size_t(items), 7, -5, 5));
  auto out = std::make_shared<Vec>(size_t(items));
  const Tensor ta = tensor(std_vec(*a), {n, d});
  add_pair(name, {2.0 * sizeof(float) * items, 0, items},
           [=] { return log ? ta.log_softmax(-1) : ta.softmax(-1); },
           [=] {
             Vec& o = *out;
             const Vec& x = *a;
             for (int64_t r = 0; r < n; ++r) {
               const float* xr = &x[r * d];
               float* yr = &o[r * d];
               const auto [mx, s] = shifted_exp_row(xr, yr, d);
               if (log) {
                 const float ls = std::log(s);
                 for (int64_t c = 0; c < d; ++c) yr[c] = xr[c] - mx - ls;
               } else {
                 for (int64_t c = 0; c < d; ++c) yr[c] /= s;
               }
             }
           },
           out, 1e-5);
}

// ---------------------------------------------------------------- index_select

// A data loader's batch: 64 rows of a (60000, 784) table, a different random batch
// each iteration (a shuffled epoch), so the rows come from memory, not from cache.
void register_index_select() {
  constexpr int64_t rows = 60000, d = 784, batch = 64;
  struct Data {
    Vec table;
    Tensor table_t;
    std::vector<std::vector<int64_t>> batches;
    std::vector<Tensor> batch_t;
  };
  // Built on first use (376 MB in all), so filtering it out costs nothing.
  auto data = [] {
    static const std::shared_ptr<Data> shared = [] {
      auto p = std::make_shared<Data>();
      p->table = random_floats(size_t(rows * d), 8);
      p->table_t = tensor(std_vec(p->table), {rows, d});
      std::vector<int64_t> perm(rows);
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), std::mt19937(9));
      for (int64_t s = 0; s + batch <= rows; s += batch) {
        p->batches.emplace_back(perm.begin() + s, perm.begin() + s + batch);
        p->batch_t.push_back(tensor(p->batches.back(), {batch}));
      }
      return p;
    }();
    return shared;
  };
  auto out = std::make_shared<Vec>(size_t(batch * d));
  const Work work{2.0 * sizeof(float) * batch * d, 0, batch * d};
  const std::string name = "index_select/64_of_60000x784";
  auto status = std::make_shared<int>(0);

  benchmark::RegisterBenchmark((name + "/vgrad").c_str(), [=](State& st) {
    const auto p = data();
    if (!verified(st, status, [&] {
          Vec& o = *out;
          for (int64_t r = 0; r < batch; ++r)
            std::copy_n(&p->table[size_t(p->batches[0][r] * d)], d, &o[size_t(r * d)]);
          return matches(st, p->table_t.index_select(0, p->batch_t[0]), o, 0);
        }))
      return;
    size_t i = 0;
    for (auto _ : st) {
      Tensor y = p->table_t.index_select(0, p->batch_t[i]);
      benchmark::DoNotOptimize(y);
      benchmark::ClobberMemory();
      if (++i == p->batch_t.size()) i = 0;
    }
    report(st, work);
  });
  benchmark::RegisterBenchmark((name + "/naive").c_str(), [=](State& st) {
    const auto p = data();
    Vec& o = *out;
    const Vec& x = p->table;
    size_t i = 0;
    for (auto _ : st) {
      const std::vector<int64_t>& idx = p->batches[i];
      for (int64_t r = 0; r < batch; ++r)
        for (int64_t c = 0; c < d; ++c) o[r * d + c] = x[idx[r] * d + c];
      benchmark::DoNotOptimize(o.data());
      benchmark::ClobberMemory();
      if (++i == p->batches.size()) i = 0;
    }
    report(st, work);
  });
}

// ---------------------------------------------------------------- cross_entropy

// Mean cross-entropy over (N, C) logits, forward and backward (the gradient of the logits).
// The timed loop: cross_entropy forward and backward, x's gradient dropped after each.
void time_loss_steps(State& st, Tensor& x, const std::function<Tensor(const Tensor&)>& loss_of) {
  for (auto _ : st) {
    Tensor y = loss_of(x);
    y.backward();
    benchmark::DoNotOptimize(x.grad());
    benchmark::ClobberMemory();
    x.zero_grad();
  }
}

void register_cross_entropy(int64_t n, int64_t d) {
  const std::string name = "cross_entropy_fwd_bwd/" + dims({n, d});
  auto logits = std::make_shared<Vec>(random_floats(size_t(n * d), 10, -3, 3));
  auto target = std::make_shared<std::vector<int64_t>>(size_t(n));
  std::mt19937 gen(11);
  for (int64_t& t : *target) t = int64_t(gen() % uint32_t(d));
  auto grad = std::make_shared<Vec>(size_t(n * d));
  auto loss = std::make_shared<float>(0.0f);
  const Work work{4.0 * double(n * d) * 2, 0, n};
  auto status = std::make_shared<int>(0);

  auto naive = [=] {
    const Vec& x = *logits;
    const std::vector<int64_t>& t = *target;
    Vec& g = *grad;
    float total = 0;
    for (int64_t r = 0; r < n; ++r) {
      const float* xr = &x[r * d];
      float* gr = &g[r * d];
      const auto [mx, s] = shifted_exp_row(xr, gr, d);
      total += std::log(s) + mx - xr[t[r]];
      for (int64_t c = 0; c < d; ++c) gr[c] = gr[c] / s / float(n);
      gr[t[r]] -= 1.0f / float(n);
    }
    *loss = total / float(n);
  };

  benchmark::RegisterBenchmark((name + "/vgrad").c_str(), [=](State& st) {
    Tensor x = tensor(std_vec(*logits), {n, d});
    x.requires_grad_();
    const Tensor t = tensor(*target, {n});
    if (!verified(st, status, [&] {
          naive();
          const Tensor l = nn::cross_entropy(x, t);
          if (std::abs(l.item() - double(*loss)) > 1e-5 * (1 + std::abs(double(*loss)))) {
            st.SkipWithError("vgrad's loss differs from the naive loop's");
            return false;
          }
          l.backward();
          const bool ok = matches(st, x.grad(), *grad, 1e-5);
          x.zero_grad();
          return ok;
        }))
      return;
    time_loss_steps(st, x, [&](const Tensor& logits) { return nn::cross_entropy(logits, t); });
    report(st, work);
  });
  benchmark::RegisterBenchmark((name + "/naive").c_str(), [=](State& st) {
    for (auto _ : st) {
      naive();
      benchmark::DoNotOptimize(grad->data());
      benchmark::DoNotOptimize(*loss);
      benchmark::ClobberMemory();
    }
    report(st, work);
  });
}

// The forms cross_entropy composes beside its fused kernel, on the logits of
// cross_entropy_fwd_bwd: a row ignored (the fused kernel, masked), class weights (log_softmax
// + nll), and nll_loss after log_softmax. Their values are tested against PyTorch
// (tests/nn/test_torch_reference.cpp); here only their time, beside the fused path's.
void register_loss_forms(int64_t n, int64_t d) {
  const Vec logits = random_floats(size_t(n * d), 10, -3, 3);
  std::vector<int64_t> target(static_cast<size_t>(n)), ignored;
  std::mt19937 gen(11);
  for (int64_t& t : target) t = int64_t(gen() % uint32_t(d));
  ignored = target;
  ignored[0] = nn::kDefaultIgnoreIndex;
  const std::vector<std::pair<std::string, std::function<Tensor(const Tensor&, const Tensor&, const Tensor&)>>> forms =
      {{"ignore", [](const Tensor& x, const Tensor&, const Tensor& i) { return nn::cross_entropy(x, i); }},
       {"weight",
        [](const Tensor& x, const Tensor& t, const Tensor&) {
          return nn::cross_entropy(x, t, nn::Reduction::Mean, 0.0, full({x.shape()[1]}, 0.5));
        }},
       {"nll_loss",
        [](const Tensor& x, const Tensor& t, const Tensor&) { return nn::nll_loss(log_softmax(x, 1), t); }}};
  for (const auto& [form, loss_of] : forms)
    benchmark::RegisterBenchmark(("cross_entropy_forms/" + dims({n, d}) + "/" + form).c_str(), [=](State& st) {
      Tensor x = tensor(std_vec(logits), {n, d});
      x.requires_grad_();
      const Tensor t = tensor(target, {n}), i = tensor(ignored, {n});
      time_loss_steps(st, x, [&](const Tensor& logits) { return loss_of(logits, t, i); });
    });
}

// ---------------------------------------------------------------- fixed cost per op

// vgrad ops on a (2, 2) tensor: what one call costs beyond its arithmetic (shape
// checks, output allocation from the cache, dispatch; autograd for cross_entropy).
void register_overhead() {
  const Tensor a = tensor({1.f, -2.f, 3.f, 0.5f}, {2, 2}), b = tensor({0.5f, 1.f, -1.f, 2.f}, {2, 2});
  const Tensor target = tensor(std::vector<int64_t>{1, 0}, {2});
  auto reg = [](const std::string& name, auto op) {
    benchmark::RegisterBenchmark(("overhead/" + name + "/2x2/vgrad").c_str(), [=](State& st) {
      for (auto _ : st) {
        Tensor y = op();
        benchmark::DoNotOptimize(y);
        benchmark::ClobberMemory();
      }
      st.SetItemsProcessed(st.iterations());
    });
  };
  reg("add", [=] { return a + b; });
  reg("relu", [=] { return a.relu(); });
  reg("sum_all", [=] { return a.sum(); });
  reg("sum_dim0", [=] { return a.sum({0}); });
  reg("softmax", [=] { return a.softmax(-1); });
  reg("matmul", [=] { return matmul(a, b); });
  benchmark::RegisterBenchmark("overhead/cross_entropy_fwd_bwd/2x2/vgrad", [=](State& st) {
    Tensor x = a.detach().clone();
    x.requires_grad_();
    time_loss_steps(st, x, [&](const Tensor& logits) { return nn::cross_entropy(logits, target); });
    st.SetItemsProcessed(st.iterations());
  });
}

// ---------------------------------------------------------------- optimizer steps

// One optimizer step over the MLP's parameters (784-256-128-10: 235,146 float32 values in
// 6 tensors), through optim::SGD / optim::Adam's step() (the fused update, one pass per
// parameter), beside the plain loop of PyTorch's single-tensor rule over one flat vector.
// Before timing, one step of each from the same values must agree (the loop's step count
// and bias corrections are PyTorch's, in double). Bytes: what the rule reads and writes once.
// As in training, vgrad splits a parameter of more than 200K values across the CPU pool's
// threads (the first layer here), whose time the per-thread CPU clock does not count: compare
// the wall-clock column. The naive Adam loop's std::sqrt does not vectorise (errno, as the
// suite's flags leave it on); vgrad's file is compiled with -fno-math-errno.
void register_optimizer_steps() {
  const std::vector<std::vector<int64_t>> shapes{{256, 784}, {256}, {128, 256}, {128}, {10, 128}, {10}};
  struct Setting {
    std::string name;
    bool adam;
    double momentum;
    int streams;  // float32 arrays read or written per element: param, grad, state...
  };
  for (const Setting& s :
       {Setting{"sgd", false, 0.0, 3}, Setting{"sgd_momentum", false, 0.9, 5}, Setting{"adam", true, 0.0, 7}}) {
    std::vector<Tensor> params;
    int64_t total = 0;
    for (size_t j = 0; j < shapes.size(); ++j) {
      int64_t n = 1;
      for (int64_t d : shapes[j]) n *= d;
      Tensor p = tensor(std_vec(random_floats(size_t(n), uint32_t(40 + j), -0.1f, 0.1f)), shapes[j]);
      p.requires_grad_();
      p.set_grad(tensor(std_vec(random_floats(size_t(n), uint32_t(60 + j), -0.01f, 0.01f)), shapes[j]));
      params.push_back(p);
      total += n;
    }
    std::shared_ptr<optim::Optimizer> opt;
    if (s.adam)
      opt = std::make_shared<optim::Adam>(params, optim::AdamOptions{.lr = 1e-3});
    else
      opt = std::make_shared<optim::SGD>(params, optim::SGDOptions{.lr = 0.1, .momentum = s.momentum});
    // The loop's flat copies of the same values, and its state.
    auto w = std::make_shared<Vec>(), g = std::make_shared<Vec>();
    for (const Tensor& p : params) {
      for (float v : p.to_vector<float>()) w->push_back(v);
      for (float v : p.grad().to_vector<float>()) g->push_back(v);
    }
    auto m = std::make_shared<Vec>(w->size(), 0.0f), v = std::make_shared<Vec>(w->size(), 0.0f);
    auto steps = std::make_shared<int64_t>(0);
    auto naive = [=, adam = s.adam, mom = float(s.momentum)] {
      const float lr = adam ? 1e-3f : 0.1f;
      float* __restrict pw = w->data();
      const float* __restrict pg = g->data();
      float* __restrict pm = m->data();
      float* __restrict pv = v->data();
      const size_t n = w->size();
      const bool first = (*steps)++ == 0;
      if (!adam && mom == 0) {
        for (size_t i = 0; i < n; ++i) pw[i] -= lr * pg[i];
      } else if (!adam) {
        for (size_t i = 0; i < n; ++i) {
          pm[i] = first ? pg[i] : mom * pm[i] + pg[i];
          pw[i] -= lr * pm[i];
        }
      } else {
        const double t = double(*steps);
        const float step_size = float(-(1e-3 / (1 - std::pow(0.9, t))));
        const float bias2 = float(std::sqrt(1 - std::pow(0.999, t)));
        for (size_t i = 0; i < n; ++i) {
          pm[i] = pm[i] + 0.1f * (pg[i] - pm[i]);
          pv[i] = pv[i] * 0.999f + 0.001f * pg[i] * pg[i];
          pw[i] = pw[i] + step_size * (pm[i] / (std::sqrt(pv[i]) / bias2 + 1e-8f));
        }
      }
    };
    const Work work{double(s.streams) * double(sizeof(float)) * double(total), 0, total};
    const std::string name = "optim_step/" + s.name + "/235146";
    auto status = std::make_shared<int>(0);
    benchmark::RegisterBenchmark((name + "/vgrad").c_str(), [=](State& st) {
      if (!verified(st, status, [&] {
            opt->step();
            naive();
            std::vector<Tensor> flat;
            for (const Tensor& p : params) flat.push_back(p.detach().reshape({-1}));
            return matches(st, cat(flat, 0), *w, 1e-6);
          }))
        return;
      for (auto _ : st) {
        opt->step();
        benchmark::ClobberMemory();
      }
      report(st, work);
    });
    add_naive(name, work, naive, w);
  }
}

void register_all() {
  for (auto [n, d] : {std::pair<int64_t, int64_t>{64, 256}, {1024, 1024}}) register_elementwise(n, d);
  for (auto [n, d] : {std::pair<int64_t, int64_t>{64, 256}, {1024, 1024}}) register_reductions(n, d);

  register_gemm("matmul/64x784@784x256", 1, 64, 784, 256, Trans::None, true);
  register_gemm("matmul_tA/(784x64).t()@784x256", 1, 64, 784, 256, Trans::A, false);
  register_gemm("matmul_tB/64x784@(256x784).t()", 1, 64, 784, 256, Trans::B, false);
  register_gemm("matmul/128x784@784x256", 1, 128, 784, 256, Trans::None, false);
  register_gemm("matmul/1024x1024@1024x1024", 1, 1024, 1024, 1024, Trans::None, false);
  register_gemm("matmul_tB/1024x1024@(1024x1024).t()", 1, 1024, 1024, 1024, Trans::B, false);
  register_gemm("bmm/8x64x64@8x64x64", 8, 64, 64, 64, Trans::None, true);

  for (bool log : {false, true}) {
    register_softmax(64, 10, log);
    register_softmax(1024, 1000, log);
  }
  register_index_select();
  register_cross_entropy(64, 10);
  register_loss_forms(64, 10);
  register_optimizer_steps();
  register_overhead();
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_all();
  const RawBlas& blas = raw_blas();
  if (blas.corename)
    benchmark::AddCustomContext("openblas", std::string(blas.corename()) + ", " + std::to_string(blas.max_threads) +
                                                " threads");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// GEMM: float32 through vgrad's own kernels (sgemm.h) where they measured faster, the
// rest (float64, large float32 products) through OpenBLAS's cblas, with transposes as
// flags (never copies).
// OpenBLAS is loaded with dlopen on first use rather than linked: its DYNAMIC_ARCH
// kernel choice happens when the library initialises, and on CPUs it does not
// recognise (seen here: a virtualised AVX-512 Xeon) it falls back to the SSE3
// "Prescott" kernel, 3-4x slower. Loading it ourselves lets us pick the kernel
// family from the CPU's features first (unless OPENBLAS_CORETYPE is already set).
// bfloat16/float16 widen to float32 tile by tile and run sgemm (float32 accumulation),
// then round back. NOTE: Debian's OpenBLAS 0.3.21 is built without BUILD_BFLOAT16: it exports no
// cblas_sbgemm (only support_avx512_bf16), so there is no native bf16 GEMM to pick.
#include <cblas.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/cpu/cpu_backend.h"
#include "core/cpu/sgemm.h"
#include "core/error.h"

namespace vgrad::cpu {
namespace {

struct OpenBlas {
  decltype(&cblas_sgemm) sgemm = nullptr;
  decltype(&cblas_dgemm) dgemm = nullptr;
  decltype(&openblas_set_num_threads) set_num_threads = nullptr;
  decltype(&openblas_get_num_threads) get_num_threads = nullptr;
  decltype(&openblas_get_corename) get_corename = nullptr;
};

template <class Fn> void bind(void* handle, const char* name, Fn& fn) {
  fn = reinterpret_cast<Fn>(dlsym(handle, name));
  if (!fn) fail("blas: libopenblas.so.0 has no symbol {}", name);
}

OpenBlas load_openblas() {
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
      setenv("OPENBLAS_CORETYPE", "SkylakeX", 0);
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      setenv("OPENBLAS_CORETYPE", "Haswell", 0);
  }
  void* handle = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
  if (!handle) fail("blas: cannot load OpenBLAS (libopenblas.so.0): {}; install libopenblas0", dlerror());
  OpenBlas lib;
  bind(handle, "cblas_sgemm", lib.sgemm);
  bind(handle, "cblas_dgemm", lib.dgemm);
  bind(handle, "openblas_set_num_threads", lib.set_num_threads);
  bind(handle, "openblas_get_num_threads", lib.get_num_threads);
  bind(handle, "openblas_get_corename", lib.get_corename);
  return lib;
}

const OpenBlas& openblas() {
  static const OpenBlas lib = load_openblas();
  return lib;
}

// OpenBLAS's threads cost more than they give on small products. Measured on the
// 2-core machine, quiet (vgrad_bench, median of 4 epochs): threading the GEMMs from
// 4M multiply-adds up gives 0.586 s/epoch at batch 64 and 0.505 at 128, against
// 0.659/0.625 from 30M up and 0.667/0.553 from 1M up. Under load from other
// processes the second thread hurts instead; quiet is what we tune for.
constexpr double kThreadedGemmMinFlops = 4.0e6;
constexpr int kMaxThreads = 1 << 16;  // sgemm: as many as the pool has

void set_threads_for(double multiply_adds) {
  static const int max_threads = openblas().get_num_threads();
  static int current = max_threads;
  const int wanted = multiply_adds < kThreadedGemmMinFlops ? 1 : max_threads;
  if (wanted != current) {
    openblas().set_num_threads(wanted);
    current = wanted;
  }
}

// A float32 buffer from the CPU allocator (so it shows in the memory accounting).
struct Float32Buffer {
  CachingAllocator& allocator;
  size_t bytes;
  float* data;
  Float32Buffer(CachingAllocator& a, int64_t count)
      : allocator(a), bytes(size_t(count) * sizeof(float)), data(static_cast<float*>(a.allocate(bytes))) {}
  ~Float32Buffer() { allocator.deallocate(data, bytes); }
  Float32Buffer(const Float32Buffer&) = delete;
  Float32Buffer& operator=(const Float32Buffer&) = delete;
};

// Which float32 products run on vgrad's kernels (sgemm.h): all whose packed operands fit
// in kOwnSgemmMaxPackedFloats (16 MiB; the MLP's largest, batch 256, packs 1.6 MiB).
// Measured with bench/gemm_floor --shapes 1 (2-vCPU AMD EPYC Zen 5, calling thread's CPU
// time per call, batch 64, OpenBLAS 0.3.21 with the preset OPENBLAS_CORETYPE=Haswell):
//   fwd1 64x256x784 NT 235 us OpenBLAS / 152 ours; fwd2 64x128x256 37.4 / 19.7;
//   dW1 256x784x64 TN 211 / 111; dW2 36.4 / 18.8; dX2 64x256x128 NN 37.1 / 19.6;
//   dW3 2.3 / 1.6; dX3 1.8 / 1.0; fwd3 64x10x128 2.5 / 3.4 (2.0 since AVX-512's narrow
//   16 x 16 tile for n <= 16; bench/gemm_floor --per-call).
// With OpenBLAS's own AVX-512 kernels (OPENBLAS_CORETYPE unset: Cooperlake) the two are
// level (fwd1 143 / 152, dW1 121 / 114, wall time) and so are 1024^3 products (68 ms
// each); beyond the limit whole-operand packing stops paying (memory, cache), and
// OpenBLAS's blocked kernels take over. float64 always runs on OpenBLAS.
constexpr double kOwnSgemmMaxPackedFloats = 4.0 * 1024 * 1024;

bool use_own_sgemm(const GemmArgs& g) {
  static const bool forced_openblas = [] {
    const char* choice = std::getenv("VGRAD_GEMM");  // "openblas": every GEMM on OpenBLAS (A/B benchmarks)
    return choice != nullptr && std::strcmp(choice, "openblas") == 0;
  }();
  const double packed = double(g.m + 16) * double(g.k) + double(g.k) * double(g.n + 32);
  return !forced_openblas && g.dtype == DType::Float32 && packed <= kOwnSgemmMaxPackedFloats;
}

}  // namespace

// 16-bit GEMM in tiles of at most kHalfTile in m, n and k: each tile of A and B widened
// to float32, sgemm accumulating into a float32 tile of C (beta for the first k-chunk,
// then 1), rounded back once. Tiles bound the float32 scratch to 3 MiB (less for small operands): widening whole
// operands cost a float32 copy of every weight (64 MiB for 4096x4096). Re-widening a
// tile per pass is O(mk·n/512 + kn·m/512) against the O(mnk) product.
void CpuBackend::gemm_half(const GemmArgs& g) {
  constexpr int64_t kHalfTile = 512;
  const int64_t tile_m = std::min(kHalfTile, g.m), tile_n = std::min(kHalfTile, g.n), tile_k = std::min(kHalfTile, g.k);
  Float32Buffer a(allocator_, tile_m * tile_k), b(allocator_, tile_k * tile_n), c(allocator_, tile_m * tile_n);
  const int64_t elem = int64_t(dtype_size(g.dtype));
  // The (rows x cols) block at (row, col) of a matrix stored with leading dimension ld,
  // seen as op(M) when transposed.
  auto block = [&](const void* base, int64_t ld, bool transposed, int64_t row, int64_t col, int64_t rows,
                   int64_t cols) {
    return transposed
               ? matrix_view(static_cast<const char*>(base) + (col * ld + row) * elem, g.dtype, cols, rows, ld, 1)
               : matrix_view(static_cast<const char*>(base) + (row * ld + col) * elem, g.dtype, rows, cols, ld, 1);
  };
  for (int64_t i = 0; i < g.batch; ++i) {
    const char* a_data = static_cast<const char*>(g.a) + i * g.stride_a * elem;
    const char* b_data = static_cast<const char*>(g.b) + i * g.stride_b * elem;
    char* c_data = static_cast<char*>(g.c) + i * g.stride_c * elem;
    for (int64_t m0 = 0; m0 < g.m; m0 += kHalfTile)
      for (int64_t n0 = 0; n0 < g.n; n0 += kHalfTile) {
        const int64_t mb = std::min(kHalfTile, g.m - m0), nb = std::min(kHalfTile, g.n - n0);
        const View c_half = block(c_data, g.ldc, false, m0, n0, mb, nb);
        const View c_wide = matrix_view(c.data, DType::Float32, mb, nb, nb, 1);
        if (g.beta != 0.0) copy_impl(c_half, c_wide);
        for (int64_t k0 = 0; k0 < g.k; k0 += kHalfTile) {
          const int64_t kb = std::min(kHalfTile, g.k - k0);
          // Widened tiles are stored as they were (transposed or not), so the flags carry over.
          const View a_tile = block(a_data, g.lda, g.trans_a, m0, k0, mb, kb);
          const View b_tile = block(b_data, g.ldb, g.trans_b, k0, n0, kb, nb);
          copy_impl(a_tile, matrix_view(a.data, DType::Float32, a_tile.shape[0], a_tile.shape[1], a_tile.shape[1], 1));
          copy_impl(b_tile, matrix_view(b.data, DType::Float32, b_tile.shape[0], b_tile.shape[1], b_tile.shape[1], 1));
          GemmArgs wide = g;
          wide.dtype = DType::Float32;
          wide.batch = 1;
          wide.m = mb, wide.n = nb, wide.k = kb;
          wide.a = a.data, wide.lda = a_tile.shape[1];
          wide.b = b.data, wide.ldb = b_tile.shape[1];
          wide.c = c.data, wide.ldc = nb;
          wide.beta = k0 == 0 ? g.beta : 1.0;
          gemm_impl(wide);
        }
        copy_impl(c_wide, c_half);
      }
  }
}

void CpuBackend::gemm_impl(const GemmArgs& g) {
  if (is_half(g.dtype)) return gemm_half(g);
  if (use_own_sgemm(g)) {
    static const SgemmKernels& kernels = sgemm_kernels(active_isa());
    for (int64_t i = 0; i < g.batch; ++i) {
      SgemmProblem p;
      p.trans_a = g.trans_a, p.trans_b = g.trans_b;
      p.m = g.m, p.n = g.n, p.k = g.k;
      p.a = static_cast<const float*>(g.a) + i * g.stride_a, p.lda = g.lda;
      p.b = static_cast<const float*>(g.b) + i * g.stride_b, p.ldb = g.ldb;
      p.c = static_cast<float*>(g.c) + i * g.stride_c, p.ldc = g.ldc;
      p.alpha = float(g.alpha), p.beta = float(g.beta);
      sgemm(p, kernels, kMaxThreads);
    }
    return;
  }
  const OpenBlas& lib = openblas();
  set_threads_for(double(g.m) * double(g.n) * double(g.k));
  const auto ta = g.trans_a ? CblasTrans : CblasNoTrans, tb = g.trans_b ? CblasTrans : CblasNoTrans;
  for (int64_t i = 0; i < g.batch; ++i) {
    if (g.dtype == DType::Float32) {
      lib.sgemm(CblasRowMajor, ta, tb, int(g.m), int(g.n), int(g.k), float(g.alpha),
                static_cast<const float*>(g.a) + i * g.stride_a, int(g.lda),
                static_cast<const float*>(g.b) + i * g.stride_b, int(g.ldb), float(g.beta),
                static_cast<float*>(g.c) + i * g.stride_c, int(g.ldc));
    } else {
      lib.dgemm(CblasRowMajor, ta, tb, int(g.m), int(g.n), int(g.k), g.alpha,
                static_cast<const double*>(g.a) + i * g.stride_a, int(g.lda),
                static_cast<const double*>(g.b) + i * g.stride_b, int(g.ldb), g.beta,
                static_cast<double*>(g.c) + i * g.stride_c, int(g.ldc));
    }
  }
}

}  // namespace vgrad::cpu

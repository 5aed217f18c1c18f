// The driver of vgrad's float32 GEMM (sgemm.h): kernel tables by ISA, per-thread packing
// scratch, and the split of one product between the pool's threads.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "core/cpu/sgemm.h"
#include "core/cpu/thread_pool.h"
#include "core/error.h"

namespace vgrad::cpu {
namespace {

// Below this many multiply-adds one thread: a threaded call hands off once, ~0.4 us
// (measured when the other vCPU is busy and the caller runs every piece), against ~10 us
// of work for batch 32's 1M-MAC shapes. Measured (bench/gemm_floor --per-call 1000
// --batch 32, 2-vCPU EPYC Zen 5, median us, 1 thread -> 2 threads in the calls the
// worker shared): fwd2 32x128x256 10.2 -> 6.5, dX2 32x256x128 10.0 -> 6.4; with the
// other vCPU busy (most calls on this shared machine) 10.4 -> 10.8. From 2M up (batch
// 64's 64x128x256 and the like) 18.5 -> 11. The pool's back-off (thread_pool.cpp) keeps
// a busy machine from paying more than that: under load average 11, 2 threads stayed
// within -3%..+10% of 1 thread on every MLP shape.
constexpr double kThreadedMinMultiplyAdds = 1.0e6;
// Pieces per thread: more than one lets the caller take over the work of a worker that
// wakes late (the other vCPU busy).
constexpr int kPiecesPerThread = 2;

// A 64-byte aligned view of `buffer`, grown to hold `floats` (kept between calls).
float* aligned(std::vector<float>& buffer, size_t floats) {
  if (floats + 16 > buffer.size()) buffer.resize(floats + 16);
  const uintptr_t address = reinterpret_cast<uintptr_t>(buffer.data());
  return buffer.data() + (64 - address % 64) % 64 / sizeof(float);
}

// Each sgemm call's id, so a thread packs the shared operand once per call however
// many of its pieces it takes.
std::atomic<uint64_t> last_call{0};

// p restricted to C's columns [j0, j0 + n) or rows [i0, i0 + m): the same products.
SgemmProblem columns_of(const SgemmProblem& p, int64_t j0, int64_t n) {
  SgemmProblem s = p;
  s.n = n;
  s.b = p.trans_b ? p.b + j0 * p.ldb : p.b + j0;
  s.c = p.c + j0;
  return s;
}
SgemmProblem rows_of(const SgemmProblem& p, int64_t i0, int64_t m) {
  SgemmProblem s = p;
  s.m = m;
  s.a = p.trans_a ? p.a + i0 : p.a + i0 * p.lda;
  s.c = p.c + i0 * p.ldc;
  return s;
}

// The panels [begin, end) of C along the split side (columns of nr when split_columns,
// else rows of mr), on the calling thread. The other operand is packed whole into this
// thread's scratch (once per call); each panel of the split operand is packed just
// before its product, into a panel buffer of this thread, so it is read from this core's
// own cache: nothing packed by one core is read by the other. Before (one pack round of
// both operands in shares, then a multiply round splitting C's rows), fwd1 64x256x784
// read all of the 800 KB packed Wᵀ on both cores, half from the other core's L2, each
// panel against 16 rows only. Measured with the other vCPU free (2-vCPU EPYC Zen 5,
// median us per call over 1000 calls, worker took its share): fwd1 69 -> 61, fwd2
// 64x128x256 12.0 -> 10.5, dX2 64x256x128 11.1 -> 10.1, dW2 128x256x64 10.7 -> 9.7,
// dW1 256x784x64 55 -> 55; one thread equal or 1-5% faster (fwd1 117 -> 115).
void multiply_panels(const SgemmProblem& p, const SgemmKernels& kernels, bool split_columns, int64_t begin,
                     int64_t end, uint64_t call) {
  thread_local std::vector<float> whole_buffer, panel_buffer;
  thread_local uint64_t whole_packed_for = 0;
  const int64_t row_panels = (p.m + kernels.mr - 1) / kernels.mr, col_panels = (p.n + kernels.nr - 1) / kernels.nr;
  float* whole = aligned(whole_buffer, split_columns ? kernels.packed_a_floats(p) : kernels.packed_b_floats(p));
  if (whole_packed_for != call) {
    if (split_columns)
      kernels.pack_a(p, 0, row_panels, whole);
    else
      kernels.pack_b(p, 0, col_panels, whole);
    whole_packed_for = call;
  }
  for (int64_t panel = begin; panel < end; ++panel) {
    if (split_columns) {
      const SgemmProblem s = columns_of(p, panel * kernels.nr, std::min(kernels.nr, p.n - panel * kernels.nr));
      float* packed_b = aligned(panel_buffer, kernels.packed_b_floats(s));
      kernels.pack_b(s, 0, 1, packed_b);
      kernels.multiply(s, whole, packed_b, 0, row_panels, 0, 1);
    } else {
      const SgemmProblem s = rows_of(p, panel * kernels.mr, std::min(kernels.mr, p.m - panel * kernels.mr));
      float* packed_a = aligned(panel_buffer, kernels.packed_a_floats(s));
      kernels.pack_a(s, 0, 1, packed_a);
      kernels.multiply(s, packed_a, whole, 0, 1, 0, col_panels);
    }
  }
}

}  // namespace

const SgemmKernels& sgemm_kernels(Isa isa) {
  if (!cpu_supports(isa)) fail("sgemm: this CPU lacks {} for the {} kernels", isa_requirement(isa), isa_name(isa));
  const SgemmKernels* kernels = isa == Isa::Avx512 ? sgemm_kernels_avx512()
                                : isa == Isa::Avx2 ? sgemm_kernels_avx2()
                                                   : &sgemm_kernels_generic();
  if (kernels == nullptr) fail("sgemm: this build has no {} kernels", isa_name(isa));
  return *kernels;
}

int sgemm_threads_for(const SgemmProblem& p, int max_threads) {
  const double multiply_adds = double(p.m) * double(p.n) * double(p.k);
  if (multiply_adds < kThreadedMinMultiplyAdds) return 1;
  return std::max(1, std::min(max_threads, ThreadPool::instance().threads()));
}

void sgemm(const SgemmProblem& p, const SgemmKernels& wide_kernels, int max_threads) {
  if (p.m == 0 || p.n == 0) return;
  const SgemmKernels& kernels =
      wide_kernels.narrow != nullptr && p.n <= wide_kernels.narrow->nr ? *wide_kernels.narrow : wide_kernels;
  const uint64_t call = last_call.fetch_add(1, std::memory_order_relaxed) + 1;
  // Split the side whose operand is the larger (B when n >= m): that operand is then
  // packed once in all, in shares, and the smaller one whole by each thread.
  const int64_t row_panels = (p.m + kernels.mr - 1) / kernels.mr, col_panels = (p.n + kernels.nr - 1) / kernels.nr;
  const bool split_columns = p.n >= p.m ? col_panels > 1 || row_panels == 1 : row_panels == 1 && col_panels > 1;
  const int64_t panels = split_columns ? col_panels : row_panels;
  const int threads = sgemm_threads_for(p, max_threads);
  if (threads == 1 || panels == 1) return multiply_panels(p, kernels, split_columns, 0, panels, call);
  const int pieces = int(std::min<int64_t>(panels, threads * kPiecesPerThread));
  ThreadPool::instance().run(pieces, threads, [&](int piece) {
    multiply_panels(p, kernels, split_columns, panels * piece / pieces, panels * (piece + 1) / pieces, call);
  });
}

}  // namespace vgrad::cpu

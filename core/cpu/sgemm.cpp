// The driver of vgrad's float32 GEMM (sgemm.h): kernel tables by ISA, per-thread packing
// scratch, and the split of one product between the pool's threads.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/cpu/sgemm.h"
#include "core/cpu/thread_pool.h"
#include "core/error.h"

namespace vgrad::cpu {
namespace {

// Below this many multiply-adds one thread: a threaded call hands off twice (pack, then
// multiply), a few microseconds, against ~10 us of work for batch 32's 1M-MAC shapes.
// From 2M up (batch 64's 64x128x256 and the like, ~19 us on one thread) the split is
// taken. Measured (bench/gemm_floor --shapes 1, 2-vCPU EPYC Zen 5) only under heavy
// load from other programs (load average 11 on 2 vCPUs): there the pool's back-off
// (thread_pool.cpp) kept 2 threads within -3%..+10% of 1 thread on every MLP shape
// (fwd1 batch 256: 515 us 1 thr, 510 us 2 thr), where OpenBLAS's 2 threads took 1.1-450x
// its 1-thread time. The gain on a quiet machine is not measured here.
constexpr double kThreadedMinMultiplyAdds = 2.0e6;
// Pieces per thread: more than one lets the caller take over the work of a worker that
// wakes late (the other vCPU busy).
constexpr int kPiecesPerThread = 2;

// The packing scratch of the calling thread, grown on demand and kept (64-byte aligned);
// the workers write their shares into the caller's.
float* scratch(size_t floats) {
  thread_local std::vector<float> buffer;
  if (floats + 16 > buffer.size()) buffer.resize(floats + 16);
  const uintptr_t address = reinterpret_cast<uintptr_t>(buffer.data());
  return buffer.data() + (64 - address % 64) % 64 / sizeof(float);
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

void sgemm(const SgemmProblem& p, const SgemmKernels& kernels, int max_threads) {
  if (p.m == 0 || p.n == 0) return;
  const int64_t row_panels = (p.m + kernels.mr - 1) / kernels.mr, col_panels = (p.n + kernels.nr - 1) / kernels.nr;
  const size_t a_floats = kernels.packed_a_floats(p);
  float* packed_a = scratch(a_floats + kernels.packed_b_floats(p));
  float* packed_b = packed_a + a_floats;
  const int threads = sgemm_threads_for(p, max_threads);
  if (threads == 1) {
    kernels.pack_a(p, 0, row_panels, packed_a);
    kernels.pack_b(p, 0, col_panels, packed_b);
    return kernels.multiply(p, packed_a, packed_b, 0, row_panels, 0, col_panels);
  }
  // Two rounds: the threads pack shares of both operands, then compute shares of C,
  // split along its longer side in whole panels.
  const int pieces = threads * kPiecesPerThread;
  auto share = [pieces](int64_t extent, int piece) {
    return std::pair{extent * piece / pieces, extent * (piece + 1) / pieces};
  };
  ThreadPool& pool = ThreadPool::instance();
  pool.run(pieces, threads, [&](int piece) {
    const auto [a_begin, a_end] = share(row_panels, piece);
    const auto [b_begin, b_end] = share(col_panels, piece);
    if (a_begin < a_end) kernels.pack_a(p, a_begin, a_end, packed_a);
    if (b_begin < b_end) kernels.pack_b(p, b_begin, b_end, packed_b);
  });
  const bool split_rows = row_panels >= col_panels;
  pool.run(pieces, threads, [&](int piece) {
    const auto [begin, end] = share(split_rows ? row_panels : col_panels, piece);
    if (begin >= end) return;
    if (split_rows)
      kernels.multiply(p, packed_a, packed_b, begin, end, 0, col_panels);
    else
      kernels.multiply(p, packed_a, packed_b, 0, row_panels, begin, end);
  });
}

}  // namespace vgrad::cpu

// vgrad's own float32 GEMM for the skinny shapes of small-batch training (an MLP step's
// eight GEMMs), row-major C = alpha·op(A)·op(B) + beta·C with transposes handled while
// packing (callers never copy). Kernels per ISA (sgemm_{avx512,avx2,generic}.cpp),
// picked at run time; the threading and the choice against OpenBLAS live in sgemm.cpp
// and gemm.cpp. Not a general BLAS: float32 only, no batching, no float64.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/cpu/isa.h"

namespace vgrad::cpu {

// C (m x n, ldc) = alpha·op(A)·op(B) + beta·C; op(A) is m x k, op(B) k x n. A transposed
// is stored k x m (lda), B transposed n x k (ldb). beta = 0 never reads C (as BLAS).
// k >= 1 (Backend::gemm turns k = 0 into C = beta·C before any kernel runs).
struct SgemmProblem {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  int64_t lda = 0;
  const float* b = nullptr;
  int64_t ldb = 0;
  float* c = nullptr;
  int64_t ldc = 0;
  float alpha = 1.0f, beta = 0.0f;
};

// One ISA's kernels. The operands are packed (the transposes happen there), op(A) in
// panels of mr rows and op(B) in panels of nr columns (zero-padded, k blocked), then C is
// computed tile by tile; sgemm.cpp's driver says which thread packs what.
struct SgemmKernels {
  Isa isa;
  int64_t mr, nr;  // the register tile: rows x columns of C
  void (*pack_a)(const SgemmProblem& p, int64_t panel_begin, int64_t panel_end, float* packed_a);
  void (*pack_b)(const SgemmProblem& p, int64_t panel_begin, int64_t panel_end, float* packed_b);
  void (*multiply)(const SgemmProblem& p, const float* packed_a, const float* packed_b, int64_t row_panel_begin,
                   int64_t row_panel_end, int64_t col_panel_begin, int64_t col_panel_end);
  // Kernels with a narrower register tile for products of at most narrow->nr columns (the
  // MLP's 10-class layer would waste two thirds of a 32-wide tile); nullptr: none.
  const SgemmKernels* narrow = nullptr;
  size_t packed_a_floats(const SgemmProblem& p) const { return size_t((p.m + mr - 1) / mr * mr * p.k); }
  size_t packed_b_floats(const SgemmProblem& p) const { return size_t((p.n + nr - 1) / nr * nr * p.k); }
};

// The tables; nullptr where this build has no such kernels (not x86-64).
const SgemmKernels* sgemm_kernels_avx512();
const SgemmKernels* sgemm_kernels_avx2();
const SgemmKernels& sgemm_kernels_generic();
// The kernels for an ISA; fails if this build or CPU lacks it.
const SgemmKernels& sgemm_kernels(Isa isa);

// Runs p with `kernels` on up to max_threads threads of the CPU pool (1: the calling
// thread only). Splits only products big enough to pay for it (sgemm.cpp says why).
// Each thread packs into its own scratch: the smaller operand whole, ((m or n) + 32)·k
// floats, and one panel of the other at a time.
void sgemm(const SgemmProblem& p, const SgemmKernels& kernels, int max_threads);
// The threads sgemm would use for p given max_threads (for benchmarks and tests).
int sgemm_threads_for(const SgemmProblem& p, int max_threads);

}  // namespace vgrad::cpu

// The float32 GEMM kernels, written once over a vector type `Simd` and compiled once per
// ISA: sgemm_{avx512,avx2,generic}.cpp each define Simd, include this file, and export
// one SgemmKernels table. NOTE: those files are compiled with -mavx512f/-mavx2 etc., so
// everything here stays in an anonymous namespace and calls no std:: function: an inline
// function they shared with the rest of the library could be merged by the linker into
// an AVX-512 copy and then run on a CPU without AVX-512.
//
// Simd provides: V, kLanes, zero(), load(p), load_partial(p, n), store(p, v),
// store_partial(p, v, n), broadcast(x), fma(a, b, c) = a·b + c, mul(a, b), and
// transpose_block(src, ld_src, dst, ld_dst) for a kBlock x kBlock block.
#pragma once
#include "core/cpu/sgemm.h"

namespace vgrad::cpu {
namespace {

constexpr int64_t min_of(int64_t a, int64_t b) { return a < b ? a : b; }

// C tile (rows x cols of a kRows x kLanes·kVectors tile) = alpha·acc + beta·C, one
// vector at a time; partial vectors on the right edge.
template <class S, int kRows, int kVectors>
inline void store_tile(typename S::V (&acc)[kRows][kVectors], float* c, int64_t ldc, int64_t rows,
                       int64_t cols, float alpha, float beta) {
  using V = typename S::V;
  const V va = S::broadcast(alpha), vb = S::broadcast(beta);
  const bool full = cols == int64_t(kVectors) * S::kLanes;
#pragma GCC unroll 16
  for (int i = 0; i < kRows; ++i) {
    if (i >= rows) break;
    float* row = c + i * ldc;
#pragma GCC unroll 8
    for (int v = 0; v < kVectors; ++v) {
      const int64_t count = min_of(cols - int64_t(v) * S::kLanes, S::kLanes);
      if (count <= 0) break;
      float* dst = row + v * S::kLanes;
      V r = S::mul(acc[i][v], va);
      if (full) {
        if (beta != 0.0f) r = S::fma(vb, S::load(dst), r);
        S::store(dst, r);
      } else {
        if (beta != 0.0f) r = S::fma(vb, S::load_partial(dst, int(count)), r);
        S::store_partial(dst, r, int(count));
      }
    }
  }
}

// ---- C tile (kMr x kNr) from an A panel (kc x kMr) and a B panel (kc x kNr) ----

template <class S, int kMr, int kVectors>
void packed_micro_kernel(int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc, int64_t rows,
                         int64_t cols, float alpha, float beta) {
  using V = typename S::V;
  constexpr int kNr = kVectors * S::kLanes;
  V acc[kMr][kVectors];
#pragma GCC unroll 16
  for (int i = 0; i < kMr; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < kVectors; ++v) acc[i][v] = S::zero();
  for (int64_t p = 0; p < kc; ++p) {
    V b[kVectors];
#pragma GCC unroll 8
    for (int v = 0; v < kVectors; ++v) b[v] = S::load(bp + p * kNr + v * S::kLanes);
#pragma GCC unroll 16
    for (int i = 0; i < kMr; ++i) {
      const V a = S::broadcast(ap[p * kMr + i]);
#pragma GCC unroll 8
      for (int v = 0; v < kVectors; ++v) acc[i][v] = S::fma(a, b[v], acc[i][v]);
    }
  }
  store_tile<S, kMr, kVectors>(acc, c, ldc, rows, cols, alpha, beta);
}

// dst (kc x kWidth) = the first kc columns of `rows` source rows, transposed and
// zero-padded to kWidth: the packing of op(A) = A and op(B) = Bᵀ. Whole panels go
// through the ISA's kBlock x kBlock register transpose.
template <class S, int kWidth>
void pack_transposed(const float* src, int64_t ld_src, int64_t rows, int64_t kc, float* dst) {
  int64_t q = 0;
  if (rows == kWidth && kWidth % S::kBlock == 0)
    for (; q + S::kBlock <= kc; q += S::kBlock)
      for (int r = 0; r < kWidth; r += S::kBlock) S::transpose_block(src + r * ld_src + q, ld_src, dst + q * kWidth + r, kWidth);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = q; t < kc; ++t) dst[t * kWidth + r] = src[r * ld_src + t];
  for (int64_t t = q; t < kc; ++t)
    for (int64_t r = rows; r < kWidth; ++r) dst[t * kWidth + r] = 0.0f;
}

// dst (kc x kWidth) = kc source rows of `cols` floats, zero-padded to kWidth: the packing
// of op(A) = Aᵀ and op(B) = B.
template <int kWidth>
void pack_copied(const float* src, int64_t ld_src, int64_t cols, int64_t kc, float* dst) {
  if (cols == kWidth) {
    for (int64_t q = 0; q < kc; ++q)
      for (int c = 0; c < kWidth; ++c) dst[q * kWidth + c] = src[q * ld_src + c];
    return;
  }
  for (int64_t q = 0; q < kc; ++q)
    for (int64_t c = 0; c < kWidth; ++c) dst[q * kWidth + c] = c < cols ? src[q * ld_src + c] : 0.0f;
}

// op(A) rows [i0, i0+mc), k [p0, p0+kc) as panels of kMr rows, each kc x kMr.
template <class S, int kMr>
void pack_a(const SgemmProblem& p, int64_t i0, int64_t mc, int64_t p0, int64_t kc, float* dst) {
  for (int64_t ip = 0; ip < mc; ip += kMr, dst += kc * kMr) {
    const int64_t rows = min_of(kMr, mc - ip);
    if (p.trans_a)  // A stored k x m
      pack_copied<kMr>(p.a + p0 * p.lda + i0 + ip, p.lda, rows, kc, dst);
    else
      pack_transposed<S, kMr>(p.a + (i0 + ip) * p.lda + p0, p.lda, rows, kc, dst);
  }
}

// op(B) k [p0, p0+kc), columns [j0, j0+nc) as panels of kNr columns, each kc x kNr.
template <class S, int kNr>
void pack_b(const SgemmProblem& p, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float* dst) {
  for (int64_t jp = 0; jp < nc; jp += kNr, dst += kc * kNr) {
    const int64_t cols = min_of(kNr, nc - jp);
    if (p.trans_b)  // B stored n x k
      pack_transposed<S, kNr>(p.b + (j0 + jp) * p.ldb + p0, p.ldb, cols, kc, dst);
    else
      pack_copied<kNr>(p.b + p0 * p.ldb + j0 + jp, p.ldb, cols, kc, dst);
  }
}

constexpr int64_t round_up(int64_t x, int64_t step) { return (x + step - 1) / step * step; }

// All of op(A) packed: for each block of kKc along k (offset k0·round_up(m, kMr)), the
// row panels [panel_begin, panel_end) of kMr rows, each kc x kMr.
template <class S, int kMr, int64_t kKc>
void pack_a_panels(const SgemmProblem& p, int64_t panel_begin, int64_t panel_end, float* packed) {
  const int64_t rows = round_up(p.m, kMr);
  for (int64_t k0 = 0; k0 < p.k; k0 += kKc) {
    const int64_t kc = min_of(kKc, p.k - k0), i0 = panel_begin * kMr;
    pack_a<S, kMr>(p, i0, min_of(panel_end * kMr, p.m) - i0, k0, kc, packed + k0 * rows + i0 * kc);
  }
}

// All of op(B) packed: for each block of kKc along k (offset k0·round_up(n, kNr)), the
// column panels [panel_begin, panel_end) of kNr columns, each kc x kNr.
template <class S, int kNr, int64_t kKc>
void pack_b_panels(const SgemmProblem& p, int64_t panel_begin, int64_t panel_end, float* packed) {
  const int64_t cols = round_up(p.n, kNr);
  for (int64_t k0 = 0; k0 < p.k; k0 += kKc) {
    const int64_t kc = min_of(kKc, p.k - k0), j0 = panel_begin * kNr;
    pack_b<S, kNr>(p, k0, kc, j0, min_of(panel_end * kNr, p.n) - j0, packed + k0 * cols + j0 * kc);
  }
}

// The C tiles of row panels [row_begin, row_end) x column panels [col_begin, col_end)
// from the packed operands. Per k block, one B panel (kKc x kNr, L1-sized) meets every A
// panel of the range (the A block stays in L2).
template <class S, int kMr, int kVectors, int64_t kKc>
void multiply_packed(const SgemmProblem& p, const float* packed_a, const float* packed_b, int64_t row_begin,
                     int64_t row_end, int64_t col_begin, int64_t col_end) {
  constexpr int kNr = kVectors * S::kLanes;
  const int64_t rows = round_up(p.m, kMr), cols = round_up(p.n, kNr);
  for (int64_t k0 = 0; k0 < p.k; k0 += kKc) {
    const int64_t kc = min_of(kKc, p.k - k0);
    const float beta = k0 == 0 ? p.beta : 1.0f;  // later k blocks add to the first
    for (int64_t jp = col_begin; jp < col_end; ++jp)
      for (int64_t ip = row_begin; ip < row_end; ++ip)
        packed_micro_kernel<S, kMr, kVectors>(kc, packed_a + k0 * rows + ip * kMr * kc,
                                              packed_b + k0 * cols + jp * kNr * kc, p.c + ip * kMr * p.ldc + jp * kNr,
                                              p.ldc, min_of(kMr, p.m - ip * kMr), min_of(kNr, p.n - jp * kNr), p.alpha,
                                              beta);
  }
}

// The table for one ISA, with its tile and block sizes.
template <class S, int kMr, int kVectors, int64_t kKc>
constexpr SgemmKernels make_kernels(Isa isa, const SgemmKernels* narrow = nullptr) {
  return SgemmKernels{isa,
                      kMr,
                      kVectors * S::kLanes,
                      &pack_a_panels<S, kMr, kKc>,
                      &pack_b_panels<S, kVectors * S::kLanes, kKc>,
                      &multiply_packed<S, kMr, kVectors, kKc>,
                      narrow};
}

}  // namespace
}  // namespace vgrad::cpu

// How a row-major GEMM with its epilogue (core's GemmEpilogueArgs) reads as one cuBLASLt
// matmul: cuda/gemm.cpp's mapping (row-major C = op(A)·op(B) is column-major
// Cᵀ = op(B)ᵀ·op(A)ᵀ: B first, A second, m and n swapped), the epilogue that follows from it,
// when vgrad declines Lt, and the key of a cached plan. Header-only and free of CUDA, so the
// CPU build tests it (tests/cuda/test_gemm_lt.cpp); cuda/gemm_lt.cpp turns it into Lt calls.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>

#include "core/kernel_types.h"

namespace vgrad::cuda {

// cuBLASLt's epilogues that vgrad uses (cublasLtEpilogue_t in cuda/gemm_lt.cpp). Not its RELU
// ones: they compute max(x, 0), which turns NaN into 0, where vgrad's ReLU (and PyTorch's) keeps
// NaN; linear_relu takes the BIAS epilogue and then vgrad's ReLU kernel.
enum class LtEpilogue { Bias, BiasGradB };

// One stored operand in Lt's column-major terms: `rows` x `cols` with leading dimension `ld`,
// read transposed when `transposed` (so op(operand) is cols x rows then).
struct LtOperand {
  const void* data = nullptr;
  bool transposed = false;
  int64_t rows = 0, cols = 0, ld = 0;
};

struct LtProblem {
  int64_t m = 0, n = 0, k = 0;  // D (m x n) = op(first) (m x k) · op(second) (k x n)
  LtOperand first, second;      // row-major B and A
  int64_t ldd = 0;              // D's leading dimension (row-major C's ldc)
  LtEpilogue epilogue = LtEpilogue::Bias;
  // Bias: m values (one per row of D: per column of row-major C). Bias gradient: n values, the
  // second operand summed over k (BGRADB: row-major A's op(A) over k, linear's db from
  // dW = Δᵀ·x). NOTE: not BGRADA: the swap makes row-major A Lt's B.
  int64_t bias_length = 0;
};

inline LtProblem lt_problem(const GemmEpilogueArgs& args) {
  const GemmArgs& g = args.gemm;
  LtProblem p;
  p.m = g.n, p.n = g.m, p.k = g.k;
  // Row-major B (k x n, or n x k read transposed) is column-major n x k (k x n): Lt's first.
  p.first = {g.b, g.trans_b, g.trans_b ? g.k : g.n, g.trans_b ? g.n : g.k, g.ldb};
  p.second = {g.a, g.trans_a, g.trans_a ? g.m : g.k, g.trans_a ? g.k : g.m, g.lda};
  p.ldd = g.ldc;
  switch (args.epilogue) {
    case GemmEpilogue::Bias:
    case GemmEpilogue::BiasRelu:
      p.epilogue = LtEpilogue::Bias;
      break;  // the ReLU follows as its own kernel
    case GemmEpilogue::BiasGrad: p.epilogue = LtEpilogue::BiasGradB; break;
  }
  p.bias_length = p.epilogue == LtEpilogue::BiasGradB ? p.n : p.m;
  return p;
}

// The largest power of two (at most 256) that divides the address: what Lt's
// CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES says of a pointer (its default assumes 256).
inline uint32_t pointer_alignment(const void* ptr) {
  const auto address = reinterpret_cast<uintptr_t>(ptr);
  uint32_t alignment = 1;
  while (alignment < 256 && address % (2 * alignment) == 0) alignment *= 2;
  return alignment;
}

// The bias (or bias gradient) vector's alignment vgrad asks of Lt: Lt's heuristics read the
// pointer's value to choose an algorithm, and users of the bias epilogues report wrong or
// failed results below 16 bytes; a less aligned vector (a bias viewed at an odd offset) takes
// the composed path.
constexpr uint32_t kLtBiasAlignment = 16;

// Where vgrad does not ask Lt: float64 (the composed path: cuBLAS's DGEMM, then the bias, ReLU
// or row sum as their own kernels), a bias vector below kLtBiasAlignment, a bias gradient
// whose row-major A is not transposed (Lt's BGRADB wants its B transposed; linear's Δᵀ is,
// but a batch of one is stored as an untransposed column), and a ReLU without a bias (Lt would
// add nothing to cuBLAS's GEMM and the ReLU kernel).
inline bool lt_declines(const GemmEpilogueArgs& args) {
  if (args.gemm.dtype != DType::Float32 && args.gemm.dtype != DType::BFloat16 && args.gemm.dtype != DType::Float16)
    return true;
  if (args.epilogue == GemmEpilogue::BiasRelu && args.bias == nullptr) return true;
  if (args.epilogue == GemmEpilogue::BiasGrad && !args.gemm.trans_a) return true;
  const void* vector = args.epilogue == GemmEpilogue::BiasGrad ? static_cast<const void*>(args.bias_grad) : args.bias;
  return vector != nullptr && pointer_alignment(vector) < kLtBiasAlignment;
}

// A plan's key: everything its descriptors and its algorithm depend on. The pointers enter
// only through their alignment (the heuristic assumed it), so one plan serves every batch of
// a shape; TF32 is part of it, so switching it off never reuses a TF32 plan.
using LtPlanKey = std::array<int64_t, 16>;
inline LtPlanKey lt_plan_key(const LtProblem& p, DType dtype, bool tf32, const void* c, const void* bias) {
  return {int64_t(p.epilogue),
          int64_t(dtype),
          int64_t(tf32 && dtype == DType::Float32),
          p.m,
          p.n,
          p.k,
          int64_t(p.first.transposed),
          p.first.ld,
          int64_t(p.second.transposed),
          p.second.ld,
          p.ldd,
          pointer_alignment(p.first.data),
          pointer_alignment(p.second.data),
          pointer_alignment(c),
          bias != nullptr ? pointer_alignment(bias) : 0,
          p.bias_length};
}

#if VGRAD_WITH_CUDA
// Builds and destroys the cuBLASLt descriptors and search preferences of `args`'s plan, as
// cuda/gemm_lt.cpp does before asking the heuristic: Lt's descriptor calls need no GPU, so a
// CUDA build's tests check on any machine that Lt takes every attribute vgrad sets (a wrong
// size or value throws, naming the call). The heuristic and the matmul need a GPU.
void check_lt_descriptors(const GemmEpilogueArgs& args, bool tf32);
#endif

}  // namespace vgrad::cuda

// What a kernel sees, shared by the CPU backend (core/cpu/) and the CUDA kernels
// (cuda/*.cu): View, the size limit, the reduction ops and the parameter structs of
// the fused primitives (the elementwise op table is core/scalar_ops.h). C++17 and free of host-only headers, so nvcc
// compiles it; there is no mirror of these types anywhere else.
#pragma once
#include <cstdint>

#include "core/dtype.h"

// Marks what runs on the host and on a CUDA device alike (plain C++ elsewhere).
#if defined(__CUDACC__)
#define VGRAD_HOST_DEVICE __host__ __device__
#else
#define VGRAD_HOST_DEVICE
#endif

namespace vgrad {

constexpr int kMaxDims = 8;

// A strided window on device memory: what a kernel needs, passable by value to CUDA.
// `data` already includes the element offset. Strides are in elements and may be 0
// (a broadcast dimension) but never negative.
struct View {
  void* data = nullptr;
  DType dtype = DType::Float32;
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};

  constexpr int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  constexpr bool is_contiguous() const {
    int64_t expected = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      if (shape[i] != 1 && strides[i] != expected) return false;
      expected *= shape[i];
    }
    return true;
  }
  template <class T> T* ptr() const { return static_cast<T*>(data); }
};

// A (rows, cols) window on `data` with the given strides (a GEMM operand, a bias row).
inline View matrix_view(const void* data, DType dtype, int64_t rows, int64_t cols, int64_t row_stride,
                        int64_t col_stride) {
  View v;
  v.data = const_cast<void*>(data);
  v.dtype = dtype;
  v.ndim = 2;
  v.shape[0] = rows, v.shape[1] = cols;
  v.strides[0] = row_stride, v.strides[1] = col_stride;
  return v;
}

// Reductions over the dims where out's shape is 1 and in's is not (keepdim form).
enum class ReduceOp { Sum, Max, Min, ArgMax, ArgMin };

// The name for messages. An exhaustive switch: a new enumerator without a name fails
// the build (-Wswitch).
constexpr const char* op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Max: return "max";
    case ReduceOp::Min: return "min";
    case ReduceOp::ArgMax: return "argmax";
    case ReduceOp::ArgMin: return "argmin";
  }
  return "reduce";
}

struct GemmArgs {  // row-major C[batch] = alpha * op(A[batch]) · op(B[batch]) + beta * C[batch]
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0, batch = 1;
  const void* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const void* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  void* c = nullptr;
  int64_t ldc = 0, stride_c = 0;
  double alpha = 1.0, beta = 0.0;
  DType dtype = DType::Float32;  // float32 or float64
};

// What a GEMM's epilogue does to its product P = op(A)·op(B) (M, N), in the same launch where
// the device can (Backend::gemm_epilogue; cuBLASLt on CUDA): linear's bias, linear_relu's
// bias (its ReLU a kernel after it on CUDA: cuda/gemm_lt.h), and linear's bias gradient from
// its dW = Δᵀ·X product.
enum class GemmEpilogue {
  Bias,      // C = P + bias                          bias: N values, one per column of C
  BiasRelu,  // C = relu(P + bias), or relu(P) where bias is null (relu's NaN rule: scalar_ops.h)
  BiasGrad,  // C = P and bias_grad = op(A) summed over k: M values (row-major A's column sums
             // for dW = Δᵀ·X, where op(A) = Δᵀ: db = Σ_rows Δ)
};

constexpr const char* op_name(GemmEpilogue epilogue) {
  switch (epilogue) {
    case GemmEpilogue::Bias: return "bias";
    case GemmEpilogue::BiasRelu: return "bias+relu";
    case GemmEpilogue::BiasGrad: return "bias gradient";
  }
  return "epilogue";
}

// One GEMM and its epilogue: gemm.batch 1, alpha 1, beta 0 (C is written, never read).
// bias and bias_grad are contiguous, of gemm.dtype.
struct GemmEpilogueArgs {
  GemmArgs gemm;
  GemmEpilogue epilogue = GemmEpilogue::Bias;
  const void* bias = nullptr;  // Bias (required), BiasRelu (optional)
  void* bias_grad = nullptr;   // BiasGrad (required)
};

// The geometry of a 2-D sliding window over NCHW input (conv2d and pooling; conv1d
// is H = 1). im2col unfolds x (N, C, H, W) into col (C·KH·KW, N·OH·OW): row
// (c, kh, kw), column (n, oh, ow) holds x[n, c, oh·stride_h − pad_h + kh·dilation_h,
// ow·stride_w − pad_w + kw·dilation_w], or 0 where that lies outside x (padding).
struct WindowGeometry {
  int64_t batch = 0, channels = 0, height = 0, width = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t out_h = 0, out_w = 0;  // (H + 2·pad − dilation·(K − 1) − 1) / stride + 1
  VGRAD_HOST_DEVICE constexpr int64_t col_rows() const { return channels * kernel_h * kernel_w; }
  VGRAD_HOST_DEVICE constexpr int64_t col_cols() const { return batch * out_h * out_w; }
};

// A convolution x (N, C, H, W) ⊛ weight (F, C/groups, KH, KW) -> y (N, F, OH, OW), as
// PyTorch's conv2d (cross-correlation); `window` slides the kernel over x (channels = C).
struct ConvGeometry {
  WindowGeometry window;
  int64_t filters = 0, groups = 1;
};

// Which of conv2d's three tensors a direct convolution computes from the other two.
enum class ConvPass { Forward, BackwardData, BackwardFilter };  // y, dx, dweight

// A counter-based random stream: the same (seed, offset) gives the same numbers.
struct RandomState {
  uint64_t seed = 0;
  uint64_t offset = 0;  // advanced by the number of values drawn
};

// Capturable steps (PyTorch's capturable=True, optim/optimizer.h) read their varying scalars
// from memory on the parameter's device when the step runs, not from these host fields: a
// CUDA graph replays the read, so a value written there between replays is the one used.
// Null: the host field is used.
struct SgdParams {
  double lr = 0.01, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
  bool first_step = true;             // momentum buffer starts as the gradient (PyTorch's rule)
  const double* lr_source = nullptr;  // capturable: the lr, replacing `lr`
};

struct AdamParams {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool decoupled = false;  // AdamW
  int64_t step = 1;        // 1-based, for bias correction
  const double* lr_source = nullptr;     // capturable: the lr, replacing `lr`
  const int64_t* step_source = nullptr;  // capturable: the steps taken before this one (this
                                         // step is *step_source + 1), replacing `step`
};

// The scalars a capturable step reads (above), as host values: called where the step runs
// (the CPU loop, or each CUDA thread once per parameter chunk), so both read at step time.
VGRAD_HOST_DEVICE inline SgdParams read_sources(SgdParams p) {
  if (p.lr_source != nullptr) p.lr = *p.lr_source;
  return p;
}
VGRAD_HOST_DEVICE inline AdamParams read_sources(AdamParams p) {
  if (p.lr_source != nullptr) p.lr = *p.lr_source;
  if (p.step_source != nullptr) p.step = *p.step_source + 1;
  return p;
}

// One parameter's share of a many-parameter step (Backend::sgd_update_many and
// adam_update_many): its tensors and its own scalars (first_step and step differ per
// parameter, as in PyTorch's per-parameter state).
struct SgdUpdate {
  View param, grad, momentum_buffer;  // momentum_buffer: data null without momentum
  SgdParams params;
};
struct AdamUpdate {
  View param, grad, exp_avg, exp_avg_sq;
  AdamParams params;
};

}  // namespace vgrad

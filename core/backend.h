// The primitive set every device implements, and the one place that picks the
// implementation for a device (backend_for). CPU lives in core/cpu/, CUDA in cuda/;
// a build without CUDA links a stub that throws. Kernels see plain Views, not Tensors.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/allocator.h"
#include "core/device.h"
#include "core/dtype.h"

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

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  bool is_contiguous() const {
    int64_t expected = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      if (shape[i] != 1 && strides[i] != expected) return false;
      expected *= shape[i];
    }
    return true;
  }
  template <class T> T* ptr() const { return static_cast<T*>(data); }
};

// y = f(x), elementwise. `a` and `b` are the op's scalar parameters.
enum class UnaryOp {
  Neg, Exp, Log, Sqrt, Abs, Sign, Relu, Sigmoid, Tanh, Gelu,
  Affine,     // a*x + b   (scalar add/sub/mul/div without a scalar tensor)
  PowScalar,  // x^a
  RPowScalar, // a^x
  Clamp,      // min(max(x, a), b)
  LeakyRelu,  // x > 0 ? x : a*x
  Square, Reciprocal,
  Cast,       // plain conversion to the output dtype
};

// out = f(a, b), elementwise, with a and b already broadcast to out's shape
// (0 strides). Comparisons give 1 or 0 in out's dtype. The *Backward ops are
// fused gradient rules: a is the incoming gradient, b what the forward saved.
enum class BinaryOp {
  Add, Sub, Mul, Div, Pow, Maximum, Minimum,
  Eq, Ne, Lt, Le, Gt, Ge,
  ReluBackward,     // b > 0 ? a : 0          (b = forward input; subgradient 0 at 0)
  SigmoidBackward,  // a * b * (1 - b)        (b = forward output)
  TanhBackward,     // a * (1 - b*b)          (b = forward output)
  GeluBackward,     // a * gelu'(b)           (b = forward input)
};

// Reductions over the dims where out's shape is 1 and in's is not (keepdim form).
enum class ReduceOp { Sum, Max, Min, ArgMax, ArgMin };

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

// A counter-based random stream: the same (seed, offset) gives the same numbers.
struct RandomState {
  uint64_t seed = 0;
  uint64_t offset = 0;  // advanced by the number of values drawn
};

struct SgdParams {
  double lr = 0.01, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
  bool first_step = true;  // momentum buffer starts as the gradient (PyTorch's rule)
};

struct AdamParams {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool decoupled = false;  // AdamW
  int64_t step = 1;        // 1-based, for bias correction
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual CachingAllocator& allocator() = 0;

  // Host <-> device transfers of contiguous bytes; synchronous for the host.
  virtual void copy_from_host(void* dst, const void* src, size_t bytes) = 0;
  virtual void copy_to_host(void* dst, const void* src, size_t bytes) = 0;
  virtual void synchronize() = 0;

  virtual void fill(const View& out, double value) = 0;
  // out = src elementwise (strided; converts dtype); src may broadcast (0 strides).
  virtual void copy(const View& src, const View& out) = 0;
  virtual void unary(UnaryOp op, const View& x, const View& out, double a, double b) = 0;
  virtual void binary(BinaryOp op, const View& a, const View& b, const View& out) = 0;
  virtual void where(const View& cond, const View& a, const View& b, const View& out) = 0;
  // out has in's ndim, 1 in reduced dims; Sum is multiplied by `scale` (mean = 1/n).
  virtual void reduce(ReduceOp op, const View& in, const View& out, double scale) = 0;
  virtual void gemm(const GemmArgs& args) = 0;

  // Over the last dim of contiguous (rows, C) data.
  virtual void softmax(const View& x, const View& out, bool log) = 0;
  virtual void softmax_backward(const View& y, const View& grad_y, const View& grad_x, bool log) = 0;
  // Fused softmax-cross-entropy. logits (N, C) contiguous, target int64 (N).
  // Writes probs = softmax(logits) and loss_rows[i] = -sum_c q_ic log p_ic where q is the
  // one-hot target smoothed by `smoothing`. Throws naming the row of a target out of [0, C).
  virtual void cross_entropy(const View& logits, const View& target, double smoothing, const View& probs,
                             const View& loss_rows) = 0;
  // grad_logits = scale * (probs - smoothed onehot(target)); scale is dL/dloss / N for a mean.
  virtual void cross_entropy_backward(const View& probs, const View& target, double smoothing, double scale,
                                      const View& grad_logits) = 0;

  // out = x gathered along `dim` at index (int64, 1-D); indices are checked.
  virtual void index_select(const View& x, int dim, const View& index, const View& out) = 0;
  // out[.., index[i], ..] += src[.., i, ..] along dim (the gradient of index_select).
  virtual void index_add(const View& out, int dim, const View& index, const View& src) = 0;

  virtual void uniform(const View& out, double low, double high, RandomState& state) = 0;
  virtual void normal(const View& out, double mean, double stddev, RandomState& state) = 0;
  // mask = (u >= p) / (1 - p) with u uniform in [0,1): Dropout's scaled keep mask.
  virtual void dropout_mask(const View& out, double p, RandomState& state) = 0;

  // Fused optimizer updates on contiguous tensors of one dtype; buffers updated in place.
  virtual void sgd_update(const View& param, const View& grad, const View& momentum_buffer, const SgdParams& p) = 0;
  virtual void adam_update(const View& param, const View& grad, const View& exp_avg, const View& exp_avg_sq,
                           const AdamParams& p) = 0;
  // Sum of squares of a contiguous tensor, accumulated in double (for clip_grad_norm).
  virtual double sum_of_squares(const View& x) = 0;
};

// The single dispatch point: CPU, or the CUDA backend (a stub that throws when
// this build has no CUDA support, or when no GPU is present).
Backend& backend_for(Device device);
Backend& cpu_backend();

// CUDA availability, answered without throwing (false in builds without CUDA).
bool cuda_is_available();
int cuda_device_count();

}  // namespace vgrad

// The internal seam between CudaBackend (cuda/backend.cpp, C++20) and the kernels
// (cuda/*.cu, compiled by nvcc as C++17): plain structs and launcher functions, so
// nvcc never sees core's C++20 headers. Not part of the public API.
// Launchers validate nothing that CudaBackend already checked; all work is queued on
// ctx.stream, and only the functions documented "synchronizes" wait for the device.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace vgrad::cuda::kernels {

constexpr int kMaxDims = 8;  // == vgrad::kMaxDims (checked in backend.cpp)

// A strided window on device memory: core's View, field for field.
struct Array {
  void* data;
  DType dtype;
  int ndim;
  int64_t shape[kMaxDims];
  int64_t strides[kMaxDims];

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
};

// Temporary device memory, stream-ordered: a block released while a queued kernel
// still reads it is only reused by later work on the same stream.
class Scratch {
 public:
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr, size_t bytes) = 0;

 protected:
  ~Scratch() = default;
};

struct Context {
  cudaStream_t stream = nullptr;
  int sm_count = 1;
  Scratch* scratch = nullptr;
  // 64 bytes of device memory and 64 bytes of pinned host memory for values the host
  // must read back (error flags, sum_of_squares). The caller serializes their use.
  void* device_result = nullptr;
  void* host_result = nullptr;
};

// Same order as vgrad::UnaryOp / BinaryOp / ReduceOp (backend.cpp maps them by switch).
enum class Unary {
  Neg, Exp, Log, Sqrt, Abs, Sign, Relu, Sigmoid, Tanh, Gelu, Affine, PowScalar, RPowScalar, Clamp, LeakyRelu,
  Square, Reciprocal,
};
enum class Binary {
  Add, Sub, Mul, Div, Pow, Maximum, Minimum, Eq, Ne, Lt, Le, Gt, Ge,
  ReluBackward, SigmoidBackward, TanhBackward, GeluBackward,
};
enum class Reduce { Sum, Max, Min, ArgMax, ArgMin };

// ---- elementwise (elementwise.cu); inputs broadcast to out's shape (0 strides) ----
void fill(const Context& ctx, const Array& out, double value);
void copy(const Context& ctx, const Array& src, const Array& out);  // any dtype to any dtype
// x, a, b and out share one dtype (backend.cpp converts first); int64 only for the
// ops that are defined on integers (backend.cpp checks).
void unary(const Context& ctx, Unary op, const Array& x, const Array& out, double a, double b);
void binary(const Context& ctx, Binary op, const Array& a, const Array& b, const Array& out);
void where(const Context& ctx, const Array& cond, const Array& a, const Array& b, const Array& out);

// ---- reductions (reduce.cu) ----
// out has in's ndim with 1 in reduced dims; Sum/Max/Min write in's dtype, Arg* int64.
// The reduced extent is not empty (backend.cpp handles that).
void reduce(const Context& ctx, Reduce op, const Array& in, const Array& out, double scale);
double sum_of_squares(const Context& ctx, const Array& x);  // contiguous; synchronizes

// ---- softmax and cross-entropy (softmax.cu), rows of C contiguous elements ----
void softmax(const Context& ctx, const Array& x, const Array& out, bool log);
void softmax_backward(const Context& ctx, const Array& y, const Array& grad_y, const Array& grad_x, bool log);
// Returns the first row whose target is outside [0, C), or -1. Synchronizes.
int64_t cross_entropy(const Context& ctx, const Array& logits, const Array& target, double smoothing,
                      const Array& probs, const Array& loss_rows);
void cross_entropy_backward(const Context& ctx, const Array& probs, const Array& target, double smoothing,
                            double scale, const Array& grad_logits);

// ---- gather / scatter-add (index.cu) ----
// Both return the first position i of `index` whose value is outside [0, size of dim),
// or -1 (elements at bad positions are skipped). Both synchronize.
int64_t index_select(const Context& ctx, const Array& x, int dim, const Array& index, const Array& out);
int64_t index_add(const Context& ctx, const Array& out, int dim, const Array& index, const Array& src);

// ---- random post-processing (random.cu), on n contiguous cuRAND uniforms in (0, 1] ----
void uniform_transform(const Context& ctx, void* data, DType dtype, int64_t n, double low, double high);
void dropout_transform(const Context& ctx, void* data, DType dtype, int64_t n, double p);

// ---- fused optimizer steps (optim.cu), contiguous, one floating dtype ----
struct SgdConfig {
  double lr, momentum, dampening, weight_decay;
  bool nesterov, first_step;
};
struct AdamConfig {
  double lr, beta1, beta2, eps, weight_decay;
  bool decoupled;
  double bias_correction1, bias_correction2_sqrt;  // 1 - beta1^t, sqrt(1 - beta2^t)
};
void sgd_update(const Context& ctx, const Array& param, const Array& grad, const Array& momentum_buffer,
                const SgdConfig& config);
void adam_update(const Context& ctx, const Array& param, const Array& grad, const Array& exp_avg,
                 const Array& exp_avg_sq, const AdamConfig& config);

}  // namespace vgrad::cuda::kernels

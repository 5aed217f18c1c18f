// The CUDA backend: CudaBackend checks every request and names what is wrong, runs GEMM
// through cuBLAS and random numbers through cuRAND, and queues everything else as the
// kernels of cuda/*.cu; plus the entry points of cuda/cuda.h. One non-blocking stream
// per device; the host waits only where it needs a value (copies to the host, error
// flags, sum_of_squares, synchronize). Compiled by the host compiler (C++20), not nvcc.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <curand.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_set>

#include "core/backend.h"
#include "core/error.h"
#include "cuda/check.h"
#include "cuda/cuda.h"
#include "cuda/geometry.h"
#include "cuda/kernels.h"

namespace vgrad::cuda {
namespace {

namespace k = kernels;
static_assert(k::kMaxDims == vgrad::kMaxDims, "kernels.h and core/backend.h disagree on kMaxDims");

// ---------------- devices ----------------

struct DeviceQuery {
  int count = 0;
  cudaError_t error = cudaSuccess;
};

// Asked once: with no driver or no GPU, cudaGetDeviceCount fails (and leaves its output
// alone): any error means "no device".
const DeviceQuery& device_query() {
  static const DeviceQuery query = [] {
    DeviceQuery q;
    int count = 0;
    q.error = cudaGetDeviceCount(&count);
    if (q.error != cudaSuccess) {
      (void)cudaGetLastError();
      count = 0;
    }
    q.count = count > 0 ? count : 0;
    return q;
  }();
  return query;
}

void select_device(int index) {
  int current = -1;
  VGRAD_CUDA_CHECK(cudaGetDevice(&current));
  if (current != index) VGRAD_CUDA_CHECK(cudaSetDevice(index));
}

// ---------------- the raw allocator under CachingAllocator ----------------

// NOTE: CachingAllocator retries a failed raw allocation once, after releasing its cache,
// and then throws its own message, which cannot know the device's free memory. So the
// first failure returns nullptr (letting the cache be released), and a failure of that
// retry — same thread, same size, after the release freed blocks — throws here with the
// figures from cudaMemGetInfo. (When nothing was cached there is no retry, and the core
// allocator's message is the one seen.)
struct PendingOutOfMemory {
  bool pending = false;
  size_t bytes = 0;
  int device = -1;
  uint64_t frees = 0;
};
thread_local PendingOutOfMemory pending_oom;
thread_local uint64_t raw_frees = 0;

[[noreturn]] void throw_out_of_memory(size_t bytes, int device) {
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    fail("cuda:{}: out of memory allocating {} bytes (free memory unknown; cached blocks were released first)",
         device, bytes);
  }
  fail("cuda:{}: out of memory allocating {} bytes ({} bytes free of {}; cached blocks were released first)", device,
       bytes, free_bytes, total_bytes);
}

void* raw_device_alloc(size_t bytes, int device) {
  const bool is_retry = pending_oom.pending && pending_oom.bytes == bytes && pending_oom.device == device &&
                        pending_oom.frees != raw_frees;
  pending_oom.pending = false;
  select_device(device);
  void* ptr = nullptr;
  const cudaError_t status = cudaMalloc(&ptr, bytes);
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // not sticky: clear it so later launch checks stay clean
    if (is_retry) throw_out_of_memory(bytes, device);
    pending_oom = PendingOutOfMemory{true, bytes, device, raw_frees};
    return nullptr;
  }
  VGRAD_CUDA_CHECK(status);
  return ptr;
}

// Never throws: it runs while caches are released, destructors included.
void raw_device_free(void* ptr, int device) {
  ++raw_frees;
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current != device) (void)cudaSetDevice(device);
  if (cudaFree(ptr) != cudaSuccess) (void)cudaGetLastError();
}

// ---------------- views, names and checks ----------------

k::Array to_array(const View& v) {
  k::Array a{};
  a.data = v.data;
  a.dtype = v.dtype;
  a.ndim = v.ndim;
  for (int d = 0; d < kMaxDims; ++d) {
    a.shape[d] = v.shape[d];
    a.strides[d] = v.strides[d];
  }
  return a;
}

k::Array contiguous_array(void* data, DType dtype, int ndim, const int64_t* shape) {
  k::Array a{};
  a.data = data;
  a.dtype = dtype;
  a.ndim = ndim;
  int64_t stride = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    a.shape[d] = shape[d];
    a.strides[d] = stride;
    stride *= shape[d];
  }
  return a;
}

std::string dims(const View& v) {
  std::string s = "[";
  for (int d = 0; d < v.ndim; ++d) {
    if (d > 0) s += ", ";
    s += std::to_string(v.shape[d]);
  }
  return s + "]";
}

std::string dtype_str(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Int64: return "int64";
  }
  return "?";
}

const char* unary_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::Neg: return "neg";
    case UnaryOp::Exp: return "exp";
    case UnaryOp::Log: return "log";
    case UnaryOp::Sqrt: return "sqrt";
    case UnaryOp::Abs: return "abs";
    case UnaryOp::Sign: return "sign";
    case UnaryOp::Relu: return "relu";
    case UnaryOp::Sigmoid: return "sigmoid";
    case UnaryOp::Tanh: return "tanh";
    case UnaryOp::Gelu: return "gelu";
    case UnaryOp::Affine: return "affine";
    case UnaryOp::PowScalar: return "pow";
    case UnaryOp::RPowScalar: return "rpow";
    case UnaryOp::Clamp: return "clamp";
    case UnaryOp::LeakyRelu: return "leaky_relu";
    case UnaryOp::Square: return "square";
    case UnaryOp::Reciprocal: return "reciprocal";
    case UnaryOp::Cast: return "cast";
  }
  return "unary";
}

const char* binary_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return "add";
    case BinaryOp::Sub: return "sub";
    case BinaryOp::Mul: return "mul";
    case BinaryOp::Div: return "div";
    case BinaryOp::Pow: return "pow";
    case BinaryOp::Maximum: return "maximum";
    case BinaryOp::Minimum: return "minimum";
    case BinaryOp::Eq: return "eq";
    case BinaryOp::Ne: return "ne";
    case BinaryOp::Lt: return "lt";
    case BinaryOp::Le: return "le";
    case BinaryOp::Gt: return "gt";
    case BinaryOp::Ge: return "ge";
    case BinaryOp::ReluBackward: return "relu_backward";
    case BinaryOp::SigmoidBackward: return "sigmoid_backward";
    case BinaryOp::TanhBackward: return "tanh_backward";
    case BinaryOp::GeluBackward: return "gelu_backward";
  }
  return "binary";
}

const char* reduce_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Max: return "max";
    case ReduceOp::Min: return "min";
    case ReduceOp::ArgMax: return "argmax";
    case ReduceOp::ArgMin: return "argmin";
  }
  return "reduce";
}

// Exhaustive switches: a new enumerator in core/backend.h fails the build (-Wswitch)
// until it is mapped here and implemented in the kernels.
k::Unary to_kernel(UnaryOp op) {
  switch (op) {
    case UnaryOp::Neg: return k::Unary::Neg;
    case UnaryOp::Exp: return k::Unary::Exp;
    case UnaryOp::Log: return k::Unary::Log;
    case UnaryOp::Sqrt: return k::Unary::Sqrt;
    case UnaryOp::Abs: return k::Unary::Abs;
    case UnaryOp::Sign: return k::Unary::Sign;
    case UnaryOp::Relu: return k::Unary::Relu;
    case UnaryOp::Sigmoid: return k::Unary::Sigmoid;
    case UnaryOp::Tanh: return k::Unary::Tanh;
    case UnaryOp::Gelu: return k::Unary::Gelu;
    case UnaryOp::Affine: return k::Unary::Affine;
    case UnaryOp::PowScalar: return k::Unary::PowScalar;
    case UnaryOp::RPowScalar: return k::Unary::RPowScalar;
    case UnaryOp::Clamp: return k::Unary::Clamp;
    case UnaryOp::LeakyRelu: return k::Unary::LeakyRelu;
    case UnaryOp::Square: return k::Unary::Square;
    case UnaryOp::Reciprocal: return k::Unary::Reciprocal;
    case UnaryOp::Cast: break;  // a copy, handled before the kernels
  }
  fail("cuda unary: internal error: no kernel for {}", unary_name(op));
}

k::Binary to_kernel(BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return k::Binary::Add;
    case BinaryOp::Sub: return k::Binary::Sub;
    case BinaryOp::Mul: return k::Binary::Mul;
    case BinaryOp::Div: return k::Binary::Div;
    case BinaryOp::Pow: return k::Binary::Pow;
    case BinaryOp::Maximum: return k::Binary::Maximum;
    case BinaryOp::Minimum: return k::Binary::Minimum;
    case BinaryOp::Eq: return k::Binary::Eq;
    case BinaryOp::Ne: return k::Binary::Ne;
    case BinaryOp::Lt: return k::Binary::Lt;
    case BinaryOp::Le: return k::Binary::Le;
    case BinaryOp::Gt: return k::Binary::Gt;
    case BinaryOp::Ge: return k::Binary::Ge;
    case BinaryOp::ReluBackward: return k::Binary::ReluBackward;
    case BinaryOp::SigmoidBackward: return k::Binary::SigmoidBackward;
    case BinaryOp::TanhBackward: return k::Binary::TanhBackward;
    case BinaryOp::GeluBackward: return k::Binary::GeluBackward;
  }
  fail("cuda binary: internal error: unknown op");
}

k::Reduce to_kernel(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return k::Reduce::Sum;
    case ReduceOp::Max: return k::Reduce::Max;
    case ReduceOp::Min: return k::Reduce::Min;
    case ReduceOp::ArgMax: return k::Reduce::ArgMax;
    case ReduceOp::ArgMin: return k::Reduce::ArgMin;
  }
  fail("cuda reduce: internal error: unknown op");
}

bool unary_defined_on_int64(UnaryOp op) {
  switch (op) {
    case UnaryOp::Neg:
    case UnaryOp::Abs:
    case UnaryOp::Sign:
    case UnaryOp::Relu:
    case UnaryOp::Affine:
    case UnaryOp::Clamp:
    case UnaryOp::Square:
    case UnaryOp::Cast: return true;
    default: return false;
  }
}

bool binary_defined_on_int64(BinaryOp op) {
  switch (op) {
    case BinaryOp::Pow:
    case BinaryOp::SigmoidBackward:
    case BinaryOp::TanhBackward:
    case BinaryOp::GeluBackward: return false;
    default: return true;
  }
}

bool is_comparison(BinaryOp op) {
  switch (op) {
    case BinaryOp::Eq:
    case BinaryOp::Ne:
    case BinaryOp::Lt:
    case BinaryOp::Le:
    case BinaryOp::Gt:
    case BinaryOp::Ge: return true;
    default: return false;
  }
}

void check_broadcast(const char* op, const char* what, const View& in, const View& out) {
  int64_t strides[kMaxDims];
  if (!broadcast_strides(in.ndim, in.shape, in.strides, out.ndim, out.shape, strides))
    fail("{}: {} {} does not broadcast to the output {}", op, what, dims(in), dims(out));
}

void check_same_shape(const char* op, const char* what, const View& v, const View& like, const char* like_name) {
  bool same = v.ndim == like.ndim;
  for (int d = 0; same && d < v.ndim; ++d) same = v.shape[d] == like.shape[d];
  if (!same) fail("{}: {} {} does not match {} {}", op, what, dims(v), like_name, dims(like));
}

void check_floating(const char* op, const char* what, const View& v) {
  if (!is_floating(v.dtype)) fail("{}: {} must be float32 or float64, got {}", op, what, dtype_str(v.dtype));
}

void check_dtype(const char* op, const char* what, const View& v, DType dtype) {
  if (v.dtype != dtype) fail("{}: {} must be {}, got {}", op, what, dtype_str(dtype), dtype_str(v.dtype));
}

void check_contiguous(const char* op, const char* what, const View& v) {
  if (!v.is_contiguous()) fail("{}: {} {} must be contiguous", op, what, dims(v));
}

// A 1-D int64 index/target as the kernels read it: element i at data + i * strides[0].
k::Array as_vector(const char* op, const char* what, const View& v) {
  k::Array a = to_array(v);
  const int64_t n = v.numel();
  int64_t stride = 1;
  if (!v.is_contiguous()) {
    // Strided with one non-trivial dim: that dim's stride.
    int non_trivial = 0;
    for (int d = 0; d < v.ndim; ++d)
      if (v.shape[d] != 1) {
        ++non_trivial;
        stride = v.strides[d];
      }
    if (non_trivial > 1) fail("{}: {} must be 1-D, got {}", op, what, dims(v));
  }
  a.ndim = 1;
  a.shape[0] = n;
  a.strides[0] = stride;
  return a;
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

// ---------------- the backend ----------------

class CudaBackend final : public Backend, private k::Scratch {
 public:
  explicit CudaBackend(int index);
  ~CudaBackend() override { destroy_handles(); }
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  Device device() const override { return cuda_device(index_); }
  CachingAllocator& allocator() override { return allocator_; }

  void copy_from_host(void* dst, const void* src, size_t bytes) override;
  void copy_to_host(void* dst, const void* src, size_t bytes) override;
  void synchronize() override;

  void fill(const View& out, double value) override;
  void copy(const View& src, const View& out) override;
  void unary(UnaryOp op, const View& x, const View& out, double a, double b) override;
  void binary(BinaryOp op, const View& a, const View& b, const View& out) override;
  void where(const View& cond, const View& a, const View& b, const View& out) override;
  void reduce(ReduceOp op, const View& in, const View& out, double scale) override;
  void gemm(const GemmArgs& args) override;

  void softmax(const View& x, const View& out, bool log) override;
  void softmax_backward(const View& y, const View& grad_y, const View& grad_x, bool log) override;
  void cross_entropy(const View& logits, const View& target, double smoothing, const View& probs,
                     const View& loss_rows) override;
  void cross_entropy_backward(const View& probs, const View& target, double smoothing, double scale,
                              const View& grad_logits) override;

  void index_select(const View& x, int dim, const View& index, const View& out) override;
  void index_add(const View& out, int dim, const View& index, const View& src) override;

  void uniform(const View& out, double low, double high, RandomState& state) override;
  void normal(const View& out, double mean, double stddev, RandomState& state) override;
  void dropout_mask(const View& out, double p, RandomState& state) override;

  void sgd_update(const View& param, const View& grad, const View& momentum_buffer, const SgdParams& p) override;
  void adam_update(const View& param, const View& grad, const View& exp_avg, const View& exp_avg_sq,
                   const AdamParams& p) override;
  double sum_of_squares(const View& x) override;

 private:
  // A contiguous device temporary from the caching allocator, returned at scope exit
  // (safe while kernels still use it: later work on the one stream is ordered after).
  class Temp {
   public:
    Temp(CachingAllocator& allocator, DType dtype, int ndim, const int64_t* shape) : allocator_(allocator) {
      int64_t n = 1;
      for (int d = 0; d < ndim; ++d) n *= shape[d];
      bytes_ = static_cast<size_t>(std::max<int64_t>(n, 1)) * dtype_size(dtype);
      ptr_ = allocator_.allocate(bytes_);
      array_ = contiguous_array(ptr_, dtype, ndim, shape);
    }
    ~Temp() { allocator_.deallocate(ptr_, bytes_); }
    Temp(const Temp&) = delete;
    Temp& operator=(const Temp&) = delete;
    const k::Array& array() const { return array_; }

   private:
    CachingAllocator& allocator_;
    size_t bytes_ = 0;
    void* ptr_ = nullptr;
    k::Array array_{};
  };

  // Scratch, for the kernels' own temporaries.
  void* allocate(size_t bytes) override { return allocator_.allocate(bytes); }
  void deallocate(void* ptr, size_t bytes) override { allocator_.deallocate(ptr, bytes); }

  void activate() const { select_device(index_); }
  k::Context context() {
    k::Context ctx;
    ctx.stream = stream_;
    ctx.sm_count = sm_count_;
    ctx.scratch = this;
    ctx.device_result = device_result_;
    ctx.host_result = host_result_;
    return ctx;
  }
  // v as dtype: v itself, or a converted copy (with v's shape) held in `holder`.
  k::Array as_dtype(const View& v, DType dtype, std::optional<Temp>& holder) {
    if (v.dtype == dtype) return to_array(v);
    holder.emplace(allocator_, dtype, v.ndim, v.shape);
    k::copy(context(), to_array(v), holder->array());
    return holder->array();
  }
  int64_t read_int64(const void* device_ptr) {
    int64_t value = 0;
    copy_to_host(&value, device_ptr, sizeof(value));
    return value;
  }
  k::Array check_indexed(const char* op, const char* rows_name, const View& table, int dim, const View& index,
                         const View& rows);
  [[noreturn]] void fail_bad_index(const char* op, const View& index, const k::Array& index_array, int64_t bad,
                                   int dim, int64_t size);
  // cuRAND uniforms in (0, 1] into n contiguous values; returns the 32-bit words used.
  uint64_t generate_uniform(void* data, DType dtype, int64_t n, const RandomState& state);
  void destroy_handles() noexcept;

  int index_;
  CachingAllocator allocator_;
  int sm_count_ = 1;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  curandGenerator_t curand_ = nullptr;
  void* device_result_ = nullptr;  // 64 bytes: error flags, sum_of_squares
  void* host_result_ = nullptr;    // 64 bytes, pinned
  std::mutex result_mutex_;        // guards device_result_ / host_result_
  std::mutex cublas_mutex_;        // a cuBLAS handle must not be used by two threads at once
  std::mutex curand_mutex_;        // seed/offset/generate must not interleave
};

CudaBackend::CudaBackend(int index) : index_(index), allocator_(&raw_device_alloc, &raw_device_free, index) {
  try {
    VGRAD_CUDA_CHECK(cudaSetDevice(index));
    VGRAD_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, index));
    if (sm_count_ < 1) sm_count_ = 1;
    VGRAD_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    VGRAD_CUBLAS_CHECK(cublasCreate(&cublas_));
    VGRAD_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    VGRAD_CURAND_CHECK(curandCreateGenerator(&curand_, CURAND_RNG_PSEUDO_PHILOX4_32_10));
    VGRAD_CURAND_CHECK(curandSetStream(curand_, stream_));
    VGRAD_CUDA_CHECK(cudaMalloc(&device_result_, 64));
    VGRAD_CUDA_CHECK(cudaHostAlloc(&host_result_, 64, cudaHostAllocDefault));
  } catch (...) {
    destroy_handles();
    throw;
  }
}

void CudaBackend::destroy_handles() noexcept {
  if (curand_ != nullptr) (void)curandDestroyGenerator(curand_);
  if (cublas_ != nullptr) (void)cublasDestroy(cublas_);
  if (device_result_ != nullptr) (void)cudaFree(device_result_);
  if (host_result_ != nullptr) (void)cudaFreeHost(host_result_);
  if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  curand_ = nullptr;
  cublas_ = nullptr;
  device_result_ = host_result_ = nullptr;
  stream_ = nullptr;
  (void)cudaGetLastError();
}

// ---- transfers ----

void CudaBackend::copy_from_host(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  activate();
  VGRAD_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
  VGRAD_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host may reuse src at once
}

void CudaBackend::copy_to_host(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  activate();
  VGRAD_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  VGRAD_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::synchronize() {
  activate();
  VGRAD_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

// ---- elementwise ----

void CudaBackend::fill(const View& out, double value) {
  activate();
  k::fill(context(), to_array(out), value);
}

void CudaBackend::copy(const View& src, const View& out) {
  check_broadcast("copy", "source", src, out);
  activate();
  k::copy(context(), to_array(src), to_array(out));
}

void CudaBackend::unary(UnaryOp op, const View& x, const View& out, double a, double b) {
  const char* name = unary_name(op);
  check_broadcast(name, "input", x, out);
  if (op == UnaryOp::Cast) return copy(x, out);
  const DType compute = promote(x.dtype, out.dtype);
  if (compute == DType::Int64 && !unary_defined_on_int64(op))
    fail("{}: not defined for int64 tensors (convert to float32 first)", name);
  activate();
  std::optional<Temp> x_holder, out_holder;
  const k::Array xa = as_dtype(x, compute, x_holder);
  if (out.dtype != compute) out_holder.emplace(allocator_, compute, out.ndim, out.shape);
  const k::Array oa = out_holder ? out_holder->array() : to_array(out);
  k::unary(context(), to_kernel(op), xa, oa, a, b);
  if (out_holder) k::copy(context(), oa, to_array(out));
}

void CudaBackend::binary(BinaryOp op, const View& a, const View& b, const View& out) {
  const char* name = binary_name(op);
  check_broadcast(name, "first operand", a, out);
  check_broadcast(name, "second operand", b, out);
  // Comparisons compare in the operands' common dtype and write 1/0 in out's dtype;
  // arithmetic computes in the common dtype of all three.
  const DType inputs = promote(a.dtype, b.dtype);
  const DType compute = is_comparison(op) ? inputs : promote(inputs, out.dtype);
  if (compute == DType::Int64 && !binary_defined_on_int64(op))
    fail("{}: not defined for int64 tensors (convert to float32 first)", name);
  activate();
  std::optional<Temp> a_holder, b_holder, out_holder;
  const k::Array aa = as_dtype(a, compute, a_holder);
  const k::Array ba = as_dtype(b, compute, b_holder);
  if (out.dtype != compute) out_holder.emplace(allocator_, compute, out.ndim, out.shape);
  const k::Array oa = out_holder ? out_holder->array() : to_array(out);
  k::binary(context(), to_kernel(op), aa, ba, oa);
  if (out_holder) k::copy(context(), oa, to_array(out));
}

void CudaBackend::where(const View& cond, const View& a, const View& b, const View& out) {
  check_broadcast("where", "condition", cond, out);
  check_broadcast("where", "first operand", a, out);
  check_broadcast("where", "second operand", b, out);
  activate();
  std::optional<Temp> a_holder, b_holder;
  const k::Array aa = as_dtype(a, out.dtype, a_holder);
  const k::Array ba = as_dtype(b, out.dtype, b_holder);
  k::where(context(), to_array(cond), aa, ba, to_array(out));
}

// ---- reductions ----

void CudaBackend::reduce(ReduceOp op, const View& in, const View& out, double scale) {
  const char* name = reduce_name(op);
  if (in.ndim != out.ndim)
    fail("{}: output {} must keep the input's {} dims (1 in reduced dims), input {}", name, dims(out), in.ndim, dims(in));
  int64_t reduced = 1;
  for (int d = 0; d < in.ndim; ++d) {
    if (out.shape[d] != in.shape[d] && out.shape[d] != 1)
      fail("{}: output {} does not fit input {} (dim {}: {} vs {})", name, dims(out), dims(in), d, out.shape[d],
           in.shape[d]);
    if (out.shape[d] != in.shape[d]) reduced *= in.shape[d];
  }
  if (out.numel() == 0) return;
  activate();
  if (reduced == 0) {
    if (op != ReduceOp::Sum) fail("{}: reducing an empty dimension of {} has no result", name, dims(in));
    k::fill(context(), to_array(out), 0.0);
    return;
  }
  const bool arg = op == ReduceOp::ArgMax || op == ReduceOp::ArgMin;
  const DType natural = arg ? DType::Int64 : in.dtype;
  std::optional<Temp> out_holder;
  if (out.dtype != natural) out_holder.emplace(allocator_, natural, out.ndim, out.shape);
  const k::Array oa = out_holder ? out_holder->array() : to_array(out);
  k::reduce(context(), to_kernel(op), to_array(in), oa, scale);
  if (out_holder) k::copy(context(), oa, to_array(out));
}

double CudaBackend::sum_of_squares(const View& x) {
  activate();
  std::optional<Temp> holder;
  k::Array xa = to_array(x);
  if (!x.is_contiguous()) {
    holder.emplace(allocator_, x.dtype, x.ndim, x.shape);
    k::copy(context(), xa, holder->array());
    xa = holder->array();
  }
  std::lock_guard lock(result_mutex_);
  return k::sum_of_squares(context(), xa);
}

// ---- GEMM ----

// Row-major C = op(A)·op(B) is, read column-major, Cᵀ = op(B)ᵀ·op(A)ᵀ: cuBLAS gets B as
// its first operand and A as its second, with m and n swapped, and no data moves.
void CudaBackend::gemm(const GemmArgs& g) {
  if (g.dtype != DType::Float32 && g.dtype != DType::Float64)
    fail("gemm: {} is not supported (float32 or float64)", dtype_str(g.dtype));
  if (g.m < 0 || g.n < 0 || g.k < 0 || g.batch < 0)
    fail("gemm: negative size (m={}, n={}, k={}, batch={})", g.m, g.n, g.k, g.batch);
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  activate();
  if (g.k == 0) {  // C = beta * C: an empty sum
    k::Array c{};
    c.data = g.c;
    c.dtype = g.dtype;
    c.ndim = 3;
    c.shape[0] = g.batch;
    c.shape[1] = g.m;
    c.shape[2] = g.n;
    c.strides[0] = g.stride_c;
    c.strides[1] = g.ldc;
    c.strides[2] = 1;
    if (g.beta == 0.0) {
      k::fill(context(), c, 0.0);
    } else {
      k::unary(context(), k::Unary::Affine, c, c, g.beta, 0.0);
    }
    return;
  }
  // A leading dimension is the distance between rows; it must cover a row, except when
  // there is a single row (then it is never used, and cuBLAS still wants it >= the row).
  auto leading = [](const char* name, int64_t ld, int64_t rows, int64_t row_length) -> int64_t {
    const int64_t need = std::max<int64_t>(1, row_length);
    if (ld >= need) return ld;
    if (rows <= 1) return need;
    fail("gemm: {} = {} is smaller than the row length {}", name, ld, row_length);
  };
  const int64_t lda = leading("lda", g.lda, g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k);
  const int64_t ldb = leading("ldb", g.ldb, g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n);
  const int64_t ldc = leading("ldc", g.ldc, g.m, g.n);
  for (int64_t v : {g.m, g.n, g.k, lda, ldb, ldc, g.batch})
    if (v > INT_MAX) fail("gemm: size {} exceeds cuBLAS's 32-bit limit (m={}, n={}, k={})", v, g.m, g.n, g.k);
  const int m = static_cast<int>(g.n);  // cuBLAS's view
  const int n = static_cast<int>(g.m);
  const int kk = static_cast<int>(g.k);
  const cublasOperation_t op_first = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  std::lock_guard lock(cublas_mutex_);
  if (g.dtype == DType::Float32) {
    const float alpha = static_cast<float>(g.alpha), beta = static_cast<float>(g.beta);
    const auto* a = static_cast<const float*>(g.a);
    const auto* b = static_cast<const float*>(g.b);
    auto* c = static_cast<float*>(g.c);
    if (g.batch == 1) {
      VGRAD_CUBLAS_CHECK(cublasSgemm(cublas_, op_first, op_second, m, n, kk, &alpha, b, static_cast<int>(ldb), a,
                                     static_cast<int>(lda), &beta, c, static_cast<int>(ldc)));
    } else {
      VGRAD_CUBLAS_CHECK(cublasSgemmStridedBatched(cublas_, op_first, op_second, m, n, kk, &alpha, b,
                                                   static_cast<int>(ldb), g.stride_b, a, static_cast<int>(lda),
                                                   g.stride_a, &beta, c, static_cast<int>(ldc), g.stride_c,
                                                   static_cast<int>(g.batch)));
    }
  } else {
    const double alpha = g.alpha, beta = g.beta;
    const auto* a = static_cast<const double*>(g.a);
    const auto* b = static_cast<const double*>(g.b);
    auto* c = static_cast<double*>(g.c);
    if (g.batch == 1) {
      VGRAD_CUBLAS_CHECK(cublasDgemm(cublas_, op_first, op_second, m, n, kk, &alpha, b, static_cast<int>(ldb), a,
                                     static_cast<int>(lda), &beta, c, static_cast<int>(ldc)));
    } else {
      VGRAD_CUBLAS_CHECK(cublasDgemmStridedBatched(cublas_, op_first, op_second, m, n, kk, &alpha, b,
                                                   static_cast<int>(ldb), g.stride_b, a, static_cast<int>(lda),
                                                   g.stride_a, &beta, c, static_cast<int>(ldc), g.stride_c,
                                                   static_cast<int>(g.batch)));
    }
  }
}

// ---- softmax and cross-entropy ----

void CudaBackend::softmax(const View& x, const View& out, bool log) {
  const char* name = log ? "log_softmax" : "softmax";
  check_floating(name, "input", x);
  check_dtype(name, "output", out, x.dtype);
  check_same_shape(name, "output", out, x, "input");
  check_contiguous(name, "input", x);
  check_contiguous(name, "output", out);
  if (x.ndim == 0) fail("{}: needs at least one dim", name);
  activate();
  k::softmax(context(), to_array(x), to_array(out), log);
}

void CudaBackend::softmax_backward(const View& y, const View& grad_y, const View& grad_x, bool log) {
  const char* name = log ? "log_softmax backward" : "softmax backward";
  check_floating(name, "output", y);
  check_dtype(name, "gradient", grad_y, y.dtype);
  check_dtype(name, "input gradient", grad_x, y.dtype);
  check_same_shape(name, "gradient", grad_y, y, "output");
  check_same_shape(name, "input gradient", grad_x, y, "output");
  check_contiguous(name, "output", y);
  check_contiguous(name, "gradient", grad_y);
  check_contiguous(name, "input gradient", grad_x);
  if (y.ndim == 0) fail("{}: needs at least one dim", name);
  activate();
  k::softmax_backward(context(), to_array(y), to_array(grad_y), to_array(grad_x), log);
}

void CudaBackend::cross_entropy(const View& logits, const View& target, double smoothing, const View& probs,
                                const View& loss_rows) {
  const char* name = "cross_entropy";
  if (logits.ndim != 2) fail("cross_entropy: logits must be (N, C), got {}", dims(logits));
  check_floating(name, "logits", logits);
  check_contiguous(name, "logits", logits);
  check_dtype(name, "probs", probs, logits.dtype);
  check_same_shape(name, "probs", probs, logits, "logits");
  check_contiguous(name, "probs", probs);
  check_dtype(name, "target", target, DType::Int64);
  check_dtype(name, "loss", loss_rows, logits.dtype);
  const int64_t rows = logits.shape[0], classes = logits.shape[1];
  if (target.numel() != rows)
    fail("cross_entropy: target {} has {} entries for {} rows of logits {}", dims(target), target.numel(), rows,
         dims(logits));
  if (loss_rows.numel() != rows)
    fail("cross_entropy: loss {} has {} entries for {} rows", dims(loss_rows), loss_rows.numel(), rows);
  if (!(smoothing >= 0.0 && smoothing <= 1.0)) fail("cross_entropy: label smoothing {} is outside [0, 1]", smoothing);
  if (rows == 0) return;
  activate();
  const k::Array target_array = as_vector(name, "target", target);
  const k::Array loss_array = as_vector(name, "loss", loss_rows);
  std::lock_guard lock(result_mutex_);
  const int64_t bad_row =
      k::cross_entropy(context(), to_array(logits), target_array, smoothing, to_array(probs), loss_array);
  if (bad_row >= 0) {
    const auto* where = static_cast<const int64_t*>(target.data) + bad_row * target_array.strides[0];
    fail("cross_entropy: target {} out of range for {} classes (row {})", read_int64(where), classes, bad_row);
  }
}

void CudaBackend::cross_entropy_backward(const View& probs, const View& target, double smoothing, double scale,
                                         const View& grad_logits) {
  const char* name = "cross_entropy backward";
  if (probs.ndim != 2) fail("cross_entropy backward: probs must be (N, C), got {}", dims(probs));
  check_floating(name, "probs", probs);
  check_contiguous(name, "probs", probs);
  check_dtype(name, "gradient", grad_logits, probs.dtype);
  check_same_shape(name, "gradient", grad_logits, probs, "probs");
  check_contiguous(name, "gradient", grad_logits);
  check_dtype(name, "target", target, DType::Int64);
  if (target.numel() != probs.shape[0])
    fail("cross_entropy backward: target {} has {} entries for {} rows", dims(target), target.numel(), probs.shape[0]);
  if (probs.numel() == 0) return;
  activate();
  k::cross_entropy_backward(context(), to_array(probs), as_vector(name, "target", target), smoothing, scale, to_array(grad_logits));
}

// ---- gather / scatter ----

// index_select and index_add share their checks: `table` is indexed along `dim` by the
// 1-D int64 `index`, and `rows` holds one slice per index (the output of index_select,
// the source of index_add). Returns the index as the kernels take it.
k::Array CudaBackend::check_indexed(const char* op, const char* rows_name, const View& table, int dim,
                                    const View& index, const View& rows) {
  if (dim < 0 || dim >= table.ndim) fail("{}: dim {} out of range for {}", op, dim, dims(table));
  check_dtype(op, "index", index, DType::Int64);
  if (index.ndim > 1) fail("{}: index must be 1-D, got {}", op, dims(index));
  check_dtype(op, rows_name, rows, table.dtype);
  if (rows.ndim != table.ndim) fail("{}: {} {} and {} differ in rank", op, rows_name, dims(rows), dims(table));
  for (int d = 0; d < table.ndim; ++d) {
    const int64_t want = d == dim ? index.numel() : table.shape[d];
    if (rows.shape[d] != want)
      fail("{}: {} {} should be {} in dim {} ({} indices into {})", op, rows_name, dims(rows), want, d,
           index.numel(), dims(table));
  }
  return as_vector(op, "index", index);
}

// Raises the error for the first out-of-range position a kernel reported (bad >= 0).
void CudaBackend::fail_bad_index(const char* op, const View& index, const k::Array& index_array, int64_t bad, int dim,
                                 int64_t size) {
  const auto* where = static_cast<const int64_t*>(index.data) + bad * index_array.strides[0];
  fail("{}: index {} out of range for dim {} of size {} (position {})", op, read_int64(where), dim, size, bad);
}

void CudaBackend::index_select(const View& x, int dim, const View& index, const View& out) {
  const k::Array index_array = check_indexed("index_select", "output", x, dim, index, out);
  if (out.numel() == 0) return;
  activate();
  std::lock_guard lock(result_mutex_);
  const int64_t bad = k::index_select(context(), to_array(x), dim, index_array, to_array(out));
  if (bad >= 0) fail_bad_index("index_select", index, index_array, bad, dim, x.shape[dim]);
}

void CudaBackend::index_add(const View& out, int dim, const View& index, const View& src) {
  const k::Array index_array = check_indexed("index_add", "source", out, dim, index, src);
  if (src.numel() == 0) return;
  activate();
  std::lock_guard lock(result_mutex_);
  const int64_t bad = k::index_add(context(), to_array(out), dim, index_array, to_array(src));
  if (bad >= 0) fail_bad_index("index_add", index, index_array, bad, dim, out.shape[dim]);
}

// ---- random numbers ----

// Philox4x32-10, positioned at (seed, offset): the same pair gives the same numbers.
// The offset counts 32-bit outputs; a double uses two, so state.offset advances by the
// words consumed, which keeps consecutive draws disjoint.
uint64_t CudaBackend::generate_uniform(void* data, DType dtype, int64_t n, const RandomState& state) {
  VGRAD_CURAND_CHECK(curandSetPseudoRandomGeneratorSeed(curand_, state.seed));
  VGRAD_CURAND_CHECK(curandSetGeneratorOffset(curand_, state.offset));
  if (dtype == DType::Float32) {
    VGRAD_CURAND_CHECK(curandGenerateUniform(curand_, static_cast<float*>(data), static_cast<size_t>(n)));
    return static_cast<uint64_t>(n);
  }
  VGRAD_CURAND_CHECK(curandGenerateUniformDouble(curand_, static_cast<double*>(data), static_cast<size_t>(n)));
  return 2 * static_cast<uint64_t>(n);
}

void CudaBackend::uniform(const View& out, double low, double high, RandomState& state) {
  check_floating("uniform", "output", out);
  const int64_t n = out.numel();
  if (n == 0) return;
  activate();
  std::lock_guard lock(curand_mutex_);
  const bool direct = out.is_contiguous() && aligned16(out.data);
  std::optional<Temp> temp;
  if (!direct) temp.emplace(allocator_, out.dtype, out.ndim, out.shape);
  void* data = direct ? out.data : temp->array().data;
  const uint64_t words = generate_uniform(data, out.dtype, n, state);
  k::uniform_transform(context(), data, out.dtype, n, low, high);
  if (temp) k::copy(context(), temp->array(), to_array(out));
  state.offset += words;
}

void CudaBackend::dropout_mask(const View& out, double p, RandomState& state) {
  check_floating("dropout_mask", "output", out);
  if (!(p >= 0.0 && p <= 1.0)) fail("dropout_mask: probability {} is outside [0, 1]", p);
  const int64_t n = out.numel();
  if (n == 0) return;
  activate();
  std::lock_guard lock(curand_mutex_);
  const bool direct = out.is_contiguous() && aligned16(out.data);
  std::optional<Temp> temp;
  if (!direct) temp.emplace(allocator_, out.dtype, out.ndim, out.shape);
  void* data = direct ? out.data : temp->array().data;
  const uint64_t words = generate_uniform(data, out.dtype, n, state);
  k::dropout_transform(context(), data, out.dtype, n, p);
  if (temp) k::copy(context(), temp->array(), to_array(out));
  state.offset += words;
}

// cuRAND's Box-Muller makes normals in pairs: an odd count (or an unaligned or strided
// output) goes through an even-sized temporary.
void CudaBackend::normal(const View& out, double mean, double stddev, RandomState& state) {
  check_floating("normal", "output", out);
  if (!(stddev >= 0.0)) fail("normal: standard deviation {} must be >= 0", stddev);
  const int64_t n = out.numel();
  if (n == 0) return;
  activate();
  std::lock_guard lock(curand_mutex_);
  const int64_t count = n + (n % 2);
  const bool direct = count == n && out.is_contiguous() && aligned16(out.data);
  std::optional<Temp> temp;
  if (!direct) {
    const int64_t shape[1] = {count};
    temp.emplace(allocator_, out.dtype, 1, shape);
  }
  void* data = direct ? out.data : temp->array().data;
  VGRAD_CURAND_CHECK(curandSetPseudoRandomGeneratorSeed(curand_, state.seed));
  VGRAD_CURAND_CHECK(curandSetGeneratorOffset(curand_, state.offset));
  uint64_t words = 0;
  if (out.dtype == DType::Float32) {
    VGRAD_CURAND_CHECK(curandGenerateNormal(curand_, static_cast<float*>(data), static_cast<size_t>(count),
                                            static_cast<float>(mean), static_cast<float>(stddev)));
    words = static_cast<uint64_t>(count);
  } else {
    VGRAD_CURAND_CHECK(curandGenerateNormalDouble(curand_, static_cast<double*>(data), static_cast<size_t>(count), mean,
                                                  stddev));
    words = 2 * static_cast<uint64_t>(count);
  }
  if (temp) {
    // The first n values, in out's shape and strides.
    const k::Array values = contiguous_array(data, out.dtype, out.ndim, out.shape);
    k::copy(context(), values, to_array(out));
  }
  state.offset += words;
}

// ---- optimizers ----

void CudaBackend::sgd_update(const View& param, const View& grad, const View& momentum_buffer, const SgdParams& p) {
  const char* name = "sgd_update";
  check_floating(name, "parameter", param);
  check_dtype(name, "gradient", grad, param.dtype);
  check_contiguous(name, "parameter", param);
  check_contiguous(name, "gradient", grad);
  if (grad.numel() != param.numel())
    fail("sgd_update: gradient {} does not match parameter {}", dims(grad), dims(param));
  if (p.momentum != 0.0) {
    if (momentum_buffer.data == nullptr) fail("sgd_update: momentum {} needs a momentum buffer", p.momentum);
    check_dtype(name, "momentum buffer", momentum_buffer, param.dtype);
    check_contiguous(name, "momentum buffer", momentum_buffer);
    if (momentum_buffer.numel() != param.numel())
      fail("sgd_update: momentum buffer {} does not match parameter {}", dims(momentum_buffer), dims(param));
  }
  if (p.nesterov && (p.momentum <= 0.0 || p.dampening != 0.0))
    fail("sgd_update: Nesterov momentum requires a momentum and zero dampening");
  activate();
  const k::SgdConfig config{p.lr, p.momentum, p.dampening, p.weight_decay, p.nesterov, p.first_step};
  k::sgd_update(context(), to_array(param), to_array(grad), to_array(momentum_buffer), config);
}

void CudaBackend::adam_update(const View& param, const View& grad, const View& exp_avg, const View& exp_avg_sq,
                              const AdamParams& p) {
  const char* name = p.decoupled ? "adamw_update" : "adam_update";
  check_floating(name, "parameter", param);
  check_contiguous(name, "parameter", param);
  const View* others[3] = {&grad, &exp_avg, &exp_avg_sq};
  const char* names[3] = {"gradient", "exp_avg", "exp_avg_sq"};
  for (int i = 0; i < 3; ++i) {
    check_dtype(name, names[i], *others[i], param.dtype);
    check_contiguous(name, names[i], *others[i]);
    if (others[i]->numel() != param.numel())
      fail("{}: {} {} does not match parameter {}", name, names[i], dims(*others[i]), dims(param));
  }
  if (p.step < 1) fail("{}: step {} must be >= 1 (bias correction is 1-based)", name, p.step);
  activate();
  const double steps = static_cast<double>(p.step);
  k::AdamConfig config{};
  config.lr = p.lr;
  config.beta1 = p.beta1;
  config.beta2 = p.beta2;
  config.eps = p.eps;
  config.weight_decay = p.weight_decay;
  config.decoupled = p.decoupled;
  config.bias_correction1 = 1.0 - std::pow(p.beta1, steps);
  config.bias_correction2_sqrt = std::sqrt(1.0 - std::pow(p.beta2, steps));
  k::adam_update(context(), to_array(param), to_array(grad), to_array(exp_avg), to_array(exp_avg_sq), config);
}

// ---- the per-device instances ----

constexpr int kMaxDevices = 64;

std::string no_gpu_reason(const DeviceQuery& q) {
  if (q.error != cudaSuccess)
    return std::string("cudaGetDeviceCount: ") + cudaGetErrorString(q.error) + " (" + cudaGetErrorName(q.error) + ")";
  return "the CUDA runtime reports 0 devices";
}

// Page-locked blocks handed out by pinned_alloc (everything else came from malloc).
std::mutex& pinned_mutex() {
  static std::mutex mutex;
  return mutex;
}
std::unordered_set<void*>& pinned_blocks() {
  static auto* blocks = new std::unordered_set<void*>();  // never destroyed: frees may come at exit
  return *blocks;
}

}  // namespace

bool is_available() { return device_count() > 0; }

int device_count() { return device_query().count; }

bool built_with_cuda() { return true; }

Backend& backend(int index) {
  const DeviceQuery& q = device_query();
  if (q.count == 0) fail("cuda: no GPU found ({}); cuda:{} is not available", no_gpu_reason(q), index);
  if (index < 0 || index >= q.count) fail("cuda:{}: no such GPU ({} available)", index, q.count);
  if (index >= kMaxDevices) fail("cuda:{}: vgrad supports at most {} GPUs", index, kMaxDevices);
  // NOTE: the backends are never destroyed: at exit the CUDA runtime may already be torn
  // down, and freeing streams, handles or memory then fails or crashes.
  static std::atomic<CudaBackend*> backends[kMaxDevices];
  static std::mutex creation_mutex;
  CudaBackend* instance = backends[index].load(std::memory_order_acquire);
  if (instance != nullptr) return *instance;
  std::lock_guard lock(creation_mutex);
  instance = backends[index].load(std::memory_order_relaxed);
  if (instance == nullptr) {
    instance = new CudaBackend(index);
    backends[index].store(instance, std::memory_order_release);
  }
  return *instance;
}

void* pinned_alloc(size_t bytes) {
  if (bytes > 0 && is_available()) {
    void* ptr = nullptr;
    if (cudaHostAlloc(&ptr, bytes, cudaHostAllocPortable) == cudaSuccess && ptr != nullptr) {
      try {
        std::lock_guard lock(pinned_mutex());
        pinned_blocks().insert(ptr);
        return ptr;
      } catch (...) {
        (void)cudaFreeHost(ptr);
      }
    } else {
      (void)cudaGetLastError();
    }
  }
  return std::malloc(bytes);
}

void pinned_free(void* ptr) {
  if (ptr == nullptr) return;
  bool pinned = false;
  {
    std::lock_guard lock(pinned_mutex());
    pinned = pinned_blocks().erase(ptr) > 0;
  }
  if (pinned) {
    if (cudaFreeHost(ptr) != cudaSuccess) (void)cudaGetLastError();
  } else {
    std::free(ptr);
  }
}

}  // namespace vgrad::cuda

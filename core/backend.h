// The primitive set every device implements, and the one place that picks the
// implementation for a device (backend_for). The public entry points are non-virtual:
// they check their arguments once, here in core, for every device (a failed check
// leaves every output untouched), and then call the device's *_impl. CPU lives in
// core/cpu/, CUDA in cuda/, split by the same op families; a build without CUDA
// links cuda/stub/, which throws. Kernels see plain Views (core/kernel_types.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/allocator.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/kernel_types.h"
#include "core/scalar_ops.h"

namespace vgrad {

// The device implementations every backend overrides, listed once: Backend declares
// them `virtual ... = 0`, CpuBackend and CudaBackend `... override`. Arguments are
// already checked (shapes, dtypes, contiguity, index ranges), outputs are not empty,
// and elementwise operands are broadcast to out's shape (same ndim, stride 0 where they
// repeat). check_index_impl: refuses a value of a non-empty 1-D int64 `index` outside
// [0, check.limit) with fail_index_out_of_range, at once on the CPU and at the next host
// wait on CUDA (see Backend::check_index).
// An index range check, and what its error names: `op` (a string literal: CUDA reports it
// later), and either the indexed dim (index_select, index_add, embedding) or, with
// `class_targets`, the classes of a loss. Valid values are [0, limit). With
// `probabilities`, the index is a flag per element of a loss's input (1 where it lies
// outside [0, 1], limit 1), so a GPU refuses a bad probability without a host wait.
struct IndexCheck {
  const char* op;
  int64_t limit;
  int dim = 0;
  bool class_targets = false;
  bool probabilities = false;
};
// Throws the error of `check` for `value` at `position` of the index:
//   index_select: index 7 out of range for dim 1 of size 4 (position 1)
//   cross_entropy: target 12 out of range for 10 classes (row 3)
//   binary_cross_entropy: input element 5 (flat index) is outside [0, 1] ...
[[noreturn]] void fail_index_out_of_range(const IndexCheck& check, int64_t position, int64_t value);

#define VGRAD_BACKEND_IMPLS(PREFIX, SUFFIX)                                                                         \
  PREFIX void fill_impl(const View& out, double value) SUFFIX;                                                      \
  PREFIX void copy_impl(const View& src, const View& out) SUFFIX;                                                   \
  PREFIX void unary_impl(UnaryOp op, const View& x, const View& out, double a, double b) SUFFIX;                    \
  PREFIX void binary_impl(BinaryOp op, const View& a, const View& b, const View& out) SUFFIX;                       \
  PREFIX void where_impl(const View& cond, const View& a, const View& b, const View& out) SUFFIX;                   \
  PREFIX void reduce_impl(ReduceOp op, const View& in, const View& out, double scale) SUFFIX;                       \
  PREFIX double sum_of_squares_impl(const View* xs, size_t count) SUFFIX;                                           \
  PREFIX void unscale_and_check_impl(const View* grads, size_t count, double inverse, const View& found) SUFFIX;    \
  PREFIX void gemm_impl(const GemmArgs& args) SUFFIX;                                                               \
  PREFIX void im2col_impl(const View& x, const WindowGeometry& g, const View& col) SUFFIX;                          \
  PREFIX void col2im_impl(const View& col, const WindowGeometry& g, const View& x) SUFFIX;                          \
  PREFIX bool conv2d_impl(ConvPass pass, const View& x, const View& weight, const View& y, const ConvGeometry& g)   \
      SUFFIX;                                                                                                       \
  PREFIX void max_pool2d_impl(const View& x, const WindowGeometry& g, const View& out, const View& indices) SUFFIX; \
  PREFIX void max_pool2d_backward_impl(const View& grad_out, const View& indices, const WindowGeometry& g,          \
                                       const View& grad_x) SUFFIX;                                                  \
  PREFIX bool batch_norm_impl(const View& x, const View& weight, const View& bias, double eps, const View& y,       \
                              const View& mean, const View& var) SUFFIX;                                            \
  PREFIX bool batch_norm_backward_impl(const View& grad_y, const View& x, const View& mean, const View& var,        \
                                       const View& weight, double eps, const View& grad_x, const View& grad_weight, \
                                       const View& grad_bias) SUFFIX;                                               \
  PREFIX void softmax_impl(const View& x, const View& out, bool log) SUFFIX;                                        \
  PREFIX void softmax_backward_impl(const View& y, const View& grad_y, const View& grad_x, bool log) SUFFIX;        \
  PREFIX void cross_entropy_impl(const View& logits, const View& target, double smoothing, const View& probs,       \
                                 const View& loss_rows) SUFFIX;                                                     \
  PREFIX void cross_entropy_backward_impl(const View& probs, const View& target, double smoothing, double scale,    \
                                          const View& grad_logits) SUFFIX;                                          \
  PREFIX void index_select_impl(const View& x, int dim, const View& index, const View& out) SUFFIX;                 \
  PREFIX void index_add_impl(const View& out, int dim, const View& index, const View& src) SUFFIX;                  \
  PREFIX void check_index_impl(const IndexCheck& check, const View& index) SUFFIX;                                  \
  PREFIX void uniform_impl(const View& out, double low, double high, RandomState& state) SUFFIX;                    \
  PREFIX void normal_impl(const View& out, double mean, double stddev, RandomState& state) SUFFIX;                  \
  PREFIX void dropout_mask_impl(const View& out, double p, RandomState& state) SUFFIX;                              \
  PREFIX void sgd_update_impl(const View& param, const View& grad, const View& momentum_buffer, const SgdParams& p) \
      SUFFIX;                                                                                                       \
  PREFIX void adam_update_impl(const View& param, const View& grad, const View& exp_avg, const View& exp_avg_sq,    \
                               const AdamParams& p) SUFFIX;

class Backend;

// A point in a device's queued work (a CUDA event on its copy stream, Backend::upload);
// empty when there is nothing to wait for (the CPU copies at once). Move-only; its
// destructor gives the event back without waiting.
class DeviceFence {
 public:
  DeviceFence() = default;
  DeviceFence(Backend* backend, void* handle) : backend_(backend), handle_(handle) {}
  DeviceFence(DeviceFence&& other) noexcept : backend_(other.backend_), handle_(other.handle_) {
    other.handle_ = nullptr;
  }
  DeviceFence& operator=(DeviceFence&& other) noexcept;
  DeviceFence(const DeviceFence&) = delete;
  DeviceFence& operator=(const DeviceFence&) = delete;
  ~DeviceFence();

  bool empty() const { return handle_ == nullptr; }
  // The host waits until the device has reached it, and for nothing else (not the compute stream).
  void wait_host() const;
  // Work queued on the device's compute stream from now on waits for it on the device: no host wait.
  void make_compute_wait() const;

 private:
  Backend* backend_ = nullptr;
  void* handle_ = nullptr;
};

// One contiguous host->device copy of an upload.
struct HostCopy {
  void* dst;
  const void* src;
  size_t bytes;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual CachingAllocator& allocator() = 0;
  // The cap on the bytes all of this device's pools hold from the system (set_memory_limit);
  // a member of the base, so it outlives the pools of every backend.
  MemoryLimit& memory_limit() { return memory_limit_; }
  // While a CUDA graph captures work on this device (cuda::Graph, core/cuda_graph.h): the
  // graph's private pool, which every block allocated meanwhile comes from (Storage keeps
  // the pool it came from), so no allocation outside the graph gets memory its replays
  // write. Null otherwise, and always on the CPU.
  virtual std::shared_ptr<CachingAllocator> capture_pool() { return nullptr; }
  // Where temporaries come from now: the capture pool during a capture, else allocator().
  // A temporary goes back before the call that took it returns, so to the same one.
  CachingAllocator& temporary_allocator() {
    const std::shared_ptr<CachingAllocator> pool = capture_pool();  // kept alive by the capture
    return pool ? *pool : allocator();
  }

  // Host <-> device transfers of contiguous bytes; synchronous for the host.
  virtual void copy_from_host(void* dst, const void* src, size_t bytes) = 0;
  virtual void copy_to_host(void* dst, const void* src, size_t bytes) = 0;
  virtual void synchronize() = 0;

  // ---- asynchronous uploads: the DataLoader's batches (docs/gpu.md, "Streams") ----
  // The pool an upload's destinations come from. A GPU keeps one for its copy stream: its
  // blocks are read by kernels on the compute stream, so a freed one is reused only after
  // a fence recorded there is done. Elsewhere the device's allocator().
  virtual CachingAllocator& upload_allocator() { return allocator(); }
  // Every pool of this device, allocator() first: what memory_stats, empty_cache and
  // reset_peak_memory cover (a GPU: its compute, upload and device-table pools; not a CUDA
  // graph's private pool, which cuda::graph_pool_stats counts).
  virtual std::vector<CachingAllocator*> pools() { return {&allocator()}; }
  // Queues the copies, from page-locked host memory (cuda::pinned_alloc) to destinations
  // from upload_allocator(), in order on the copy stream, and returns the fence after the
  // last: wait_host() before the host reuses a source, make_compute_wait() before the
  // compute stream reads a destination. The CPU copies at once and returns an empty fence.
  virtual DeviceFence upload(std::span<const HostCopy> copies);

  // ---- elementwise (core/cpu/elementwise.cpp, cuda/elementwise.cu) ----
  void fill(const View& out, double value);
  // out = src elementwise (strided; converts dtype); src may broadcast (0 strides).
  void copy(const View& src, const View& out);
  // x and out share one dtype; x may broadcast to out.
  void unary(UnaryOp op, const View& x, const View& out, double a = 0, double b = 0);
  // a, b and out share one dtype; a and b may broadcast to out.
  void binary(BinaryOp op, const View& a, const View& b, const View& out);
  // cond, a, b and out share one dtype (nonzero cond = true); all broadcast to out.
  void where(const View& cond, const View& a, const View& b, const View& out);

  // ---- reductions (reduce) ----
  // out has in's ndim, 1 in reduced dims; Sum is multiplied by `scale` (mean = 1/n).
  // Sum/Max/Min write in's dtype, ArgMax/ArgMin int64 (over one reduced dim).
  void reduce(ReduceOp op, const View& in, const View& out, double scale = 1.0);
  // The sum of the squares of every element of `count` contiguous floating tensors,
  // accumulated in double (for clip_grad_norm's global norm). The CPU adds each tensor's
  // own sum in turn; CUDA accumulates all of them on the device and reads once.
  double sum_of_squares(const View* xs, size_t count);
  double sum_of_squares(const View& x) { return sum_of_squares(&x, 1); }
  // Loss scaling's unscale (amp::GradScaler; PyTorch's _amp_foreach_non_finite_check_and_unscale_):
  // each gradient *= inverse in place, in one pass, and found (a float32 scalar) is set to 1
  // when a stored product is Inf or NaN, else left alone. The flag stays on the device.
  // Gradients: floating (16-bit ones computed in float32 and rounded; the rounded value is
  // checked), contiguous.
  void unscale_and_check(const View* grads, size_t count, double inverse, const View& found);

  // ---- matrix products (gemm) ----
  void gemm(const GemmArgs& args);
  // The GEMM args.gemm with its epilogue (GemmEpilogue): checked as gemm is, plus batch 1,
  // alpha 1, beta 0 and the bias pointers the epilogue needs. A device fuses it where its
  // library can (CUDA: cuBLASLt, float32/bfloat16/float16, aligned operands); elsewhere, and
  // for empty sizes, it is composed of the primitives above (Backend::gemm_epilogue_impl):
  // the same values, within the GEMM's own rounding.
  void gemm_epilogue(const GemmEpilogueArgs& args);

  // ---- sliding windows (conv), contiguous NCHW ----
  // col (C·KH·KW, N·OH·OW) = the windows of x (N, C, H, W); see WindowGeometry.
  void im2col(const View& x, const WindowGeometry& g, const View& col);
  // x (N, C, H, W) = the sum of every col entry back at the pixel it was read from
  // (overwrites x; the adjoint of im2col, so dX = col2im(dcol)). Padding drops out.
  void col2im(const View& col, const WindowGeometry& g, const View& x);
  // A direct convolution, where the device has a library for it (cuDNN): computes the one
  // of x (N, C, H, W), weight (F, C/G, KH, KW) and y (N, F, OH, OW) that `pass` names
  // from the other two (Forward: y; BackwardData: x = dx from y = dy; BackwardFilter:
  // weight = dweight from x and y = dy), overwriting it. Returns false, writing nothing,
  // where the device has none (the CPU; CUDA without cuDNN, or with it switched off by
  // cuda::set_cudnn_enabled): the caller then uses im2col + GEMM.
  bool conv2d(ConvPass pass, const View& x, const View& weight, const View& y, const ConvGeometry& g);
  // out (N, C, OH, OW) = the max of each window of x (padding never wins; a NaN is the
  // max), and indices (int64, out's shape) = where it is, as h·W + w in its (n, c)
  // plane: PyTorch's return_indices rule, the first of tied maxima and the last NaN
  // (walking the window row by row, a value wins when it is greater or NaN).
  void max_pool2d(const View& x, const WindowGeometry& g, const View& out, const View& indices);
  // grad_x (N, C, H, W) = the sum of the grad_out entries whose index points at each
  // pixel (overwrites grad_x).
  void max_pool2d_backward(const View& grad_out, const View& indices, const WindowGeometry& g, const View& grad_x);

  // ---- normalization (norm), contiguous x (N, C, ...) of float32 or float64 ----
  // Training-mode batch norm, per channel c over its M = N·(spatial size) values: mean[c],
  // the biased var[c] and y = (x − mean)·(var + eps)^−½·weight[c] + bias[c]. weight and
  // bias (C) may be empty Views (data null: 1 and 0); mean, var (C) and y are of x's dtype.
  // Returns false, writing nothing, where the device has no fused kernel (CUDA for now;
  // 16-bit dtypes): the caller composes it from reductions (autograd/ops/norm.cpp).
  bool batch_norm(const View& x, const View& weight, const View& bias, double eps, const View& y, const View& mean,
                  const View& var);
  // Its gradients from grad_y (x's shape), with x̂ = (x − mean)·invstd, invstd = (var + eps)^−½:
  // grad_bias = Σ grad_y, grad_weight = Σ grad_y·x̂ (both always written) and
  // grad_x = weight·invstd/M · (M·grad_y − grad_bias − x̂·grad_weight). False as batch_norm.
  bool batch_norm_backward(const View& grad_y, const View& x, const View& mean, const View& var, const View& weight,
                           double eps, const View& grad_x, const View& grad_weight, const View& grad_bias);

  // ---- softmax and losses (softmax), over the last dim of contiguous (rows, C) data ----
  void softmax(const View& x, const View& out, bool log);
  void softmax_backward(const View& y, const View& grad_y, const View& grad_x, bool log);
  // Fused softmax-cross-entropy. logits (N, C) contiguous, target int64 (N).
  // Writes probs = softmax(logits) and loss_rows[i] = -sum_c q_ic log p_ic where q is the
  // one-hot target smoothed by `smoothing`. A target out of [0, C) is an error naming the row.
  void cross_entropy(const View& logits, const View& target, double smoothing, const View& probs,
                     const View& loss_rows);
  // grad_logits = scale * (probs - smoothed onehot(target)); scale is dL/dloss / N for a mean.
  void cross_entropy_backward(const View& probs, const View& target, double smoothing, double scale,
                              const View& grad_logits);

  // ---- gather / scatter (index) ----
  // Refuses a value of `index` (1-D int64) outside [0, check.limit), naming the first bad
  // position and its value (fail_index_out_of_range). index_select, index_add and
  // cross_entropy run it first; nll_loss calls it directly.
  // NOTE: a deliberate difference between devices, as in PyTorch (whose device-side
  // asserts surface later): the CPU throws here, before anything is written. CUDA never
  // waits for the scan: a kernel records the first bad position and value in a device
  // record, the ops run on with the bad elements skipped (never read or written out of
  // bounds; a gather writes 0 there), and the error is thrown at the device's next host
  // wait, before any value reaches the host: item(), a copy to the CPU, synchronize(),
  // sum_of_squares, and at the latest when cuda::kIndexChecksPerWait checks are pending.
  void check_index(const IndexCheck& check, const View& index);
  // out = x gathered along `dim` at index (int64, 1-D). Indices are checked first.
  void index_select(const View& x, int dim, const View& index, const View& out);
  // out[.., index[i], ..] += src[.., i, ..] along dim (the gradient of index_select).
  void index_add(const View& out, int dim, const View& index, const View& src);

  // ---- random numbers (random), counter-based ----
  void uniform(const View& out, double low, double high, RandomState& state);
  void normal(const View& out, double mean, double stddev, RandomState& state);
  // mask = (u >= p) / (1 - p) with u uniform in [0,1): Dropout's scaled keep mask.
  void dropout_mask(const View& out, double p, RandomState& state);

  // ---- fused optimizer steps (optim), contiguous tensors of one floating dtype ----
  void sgd_update(const View& param, const View& grad, const View& momentum_buffer, const SgdParams& p);
  void adam_update(const View& param, const View& grad, const View& exp_avg, const View& exp_avg_sq,
                   const AdamParams& p);
  // The same steps for many parameters at once (PyTorch's foreach/fused optimizers): every
  // entry is checked as the one-parameter form checks it (errors name the entry: "sgd_update
  // (parameter 3): ..."), and parameters may not share memory, all before any device writes;
  // then each entry gets exactly the bits the one-parameter form would give it. CUDA updates
  // the float32 and float64 entries in one launch per dtype.
  void sgd_update_many(std::span<const SgdUpdate> updates);
  void adam_update_many(std::span<const AdamUpdate> updates);

 protected:
  VGRAD_BACKEND_IMPLS(virtual, = 0)
  // The many-parameter steps after the checks, for float32/float64 entries that are not
  // empty (16-bit ones take the one-parameter path). By default one *_update_impl per entry,
  // which is what the CPU keeps; CUDA overrides them (cuda/optim.cu).
  virtual void sgd_update_many_impl(std::span<const SgdUpdate> updates);
  virtual void adam_update_many_impl(std::span<const AdamUpdate> updates);
  // A GEMM with its epilogue after the checks, with m, n, k >= 1. By default composed of
  // the checked primitives (bias: a broadcast copy into C and a GEMM with beta 1; ReLU: a
  // unary op; bias gradient: a GEMM and a row-sum reduction), which is what the CPU keeps;
  // CUDA overrides it with one cuBLASLt call and falls back to this where Lt declines.
  virtual void gemm_epilogue_impl(const GemmEpilogueArgs& args);

 private:
  MemoryLimit memory_limit_;
  class Float32Scratch;  // float32 copies of 16-bit operands for the whole-row kernels (backend.cpp)
  // A non-empty DeviceFence's handle, on the device that made it (never called on the CPU).
  friend class DeviceFence;
  virtual void fence_wait_host(void* handle);
  virtual void fence_make_compute_wait(void* handle);
  virtual void fence_release(void* handle) noexcept;
};

// The single dispatch point: CPU, or the CUDA backend (a stub that throws when
// this build has no CUDA support, or when no GPU is present).
Backend& backend_for(Device device);
Backend& cpu_backend();

// The CUDA side as core sees it: declared here, defined in cuda/ (or cuda/stub/ in a
// build without CUDA), so core never includes cuda/.
namespace cuda {
bool built_with_cuda();
bool is_available();  // a CUDA build and at least one usable GPU; never throws
int device_count();   // 0 without a build or a GPU; never throws
// The backend of GPU `index`; throws a clear error in a build without CUDA or
// when that GPU does not exist.
Backend& backend(int index);
// Page-locked host buffers, so host->device batch copies can be asynchronous.
// Fall back to ordinary memory (never throw) when CUDA is unavailable.
void* pinned_alloc(size_t bytes);
void pinned_free(void* ptr);
// cuDNN (cuda/cudnn.cpp): built in when CMake found it (VGRAD_CUDNN). The CUDA
// backends use it for conv2d while enabled: by default, unless the environment sets
// VGRAD_CUDNN=0; tests switch it to compare it with im2col + cuBLAS. Never throw.
bool built_with_cudnn();
bool cudnn_enabled();             // built with it, switched on, and it loads on this machine
void set_cudnn_enabled(bool on);  // for this process; off falls back to im2col + cuBLAS
// How many times the host has waited for GPU `index`'s stream: every transfer (item(),
// to(), tensor creation from host values), synchronize(), sum_of_squares and the
// periodic index-error check. For tests and profiling; 0 without that GPU. Never throws.
int64_t host_wait_count(int index);
// How many Backend::gemm_epilogue calls GPU `index` ran as one cuBLASLt matmul with its
// epilogue (the rest were composed: float64, unaligned operands, no Lt algorithm). For tests
// and profiling; 0 without that GPU. Never throws.
int64_t fused_gemm_epilogue_count(int index);
// How many device tables of the many-tensor launches (optimizer steps, GradScaler's unscale)
// GPU `index` has written: a set of tensors seen before is found in the backend's cache and
// costs none. For tests and profiling; 0 without that GPU. Never throws.
int64_t table_upload_count(int index);
// GPU `index`'s compute stream, a cudaStream_t: every vgrad op on that GPU runs on it, in
// order, so a custom CUDA kernel launched there is ordered with them (PyTorch:
// torch.cuda.current_stream().cuda_stream). Throws as backend() does without that GPU.
void* compute_stream(int index);
// The pending index checks (Backend::check_index) after which a GPU waits to report a
// bad index even when nothing else reads from it: a loop that never reads from the
// device stops within this many checks of its first bad index.
constexpr int kIndexChecksPerWait = 64;
// TF32 (cuda/tf32.cpp): float32 products on tensor cores with inputs rounded to TF32's 10
// mantissa bits (about 1e-3 relative per product; accumulation stays float32). Off by
// default, so float32 on the GPU matches the CPU within float32 rounding; both switches act
// for this process, on every GPU, from the next call. Matmul: every float32 GEMM through
// cuBLAS (matmul, linear, and conv2d's im2col path). Conv: float32 convolutions through cuDNN
// (PyTorch: torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32; the
// latter is on by default there, off here: docs/gpu.md). A build without CUDA answers false.
bool tf32_matmul_enabled();
void set_tf32_matmul_enabled(bool on);
bool tf32_conv_enabled();
void set_tf32_conv_enabled(bool on);
}  // namespace cuda

inline bool cuda_is_available() { return cuda::is_available(); }
inline int cuda_device_count() { return cuda::device_count(); }

}  // namespace vgrad

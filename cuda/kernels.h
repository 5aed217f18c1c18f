// The launchers of the CUDA kernels (cuda/*.cu), called by CudaBackend's *_impl
// methods: core's own View, op enums and parameter structs (core/kernel_types.h,
// core/scalar_ops.h),
// with no mirror of them. Not part of the public API. Arguments were checked by
// core's Backend; all work is queued on ctx.stream, and none of them waits for the
// device: values the host wants land in ctx.results, which CudaBackend reads back at
// its next wait.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/kernel_types.h"
#include "core/scalar_ops.h"

namespace vgrad::cuda::kernels {

// Temporary device memory, stream-ordered: a block released while a queued kernel
// still reads it is only reused by later work on the same stream.
class Scratch {
 public:
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr, size_t bytes) = 0;

 protected:
  ~Scratch() = default;
};

// The first bad index of the checks pending since the host last looked: `first` packs
// (check number << kIndexPositionBits) | position, lowered with atomicMin, so it is the
// first bad position of the first check (in stream order) that had one.
constexpr int kIndexPositionBits = 40;
constexpr unsigned long long kNoIndexError = ~0ull;
struct IndexErrorRecord {
  unsigned long long first;  // kNoIndexError when every index was in range
  int64_t value;             // the value at `first`
  unsigned int blocks_done;  // the scan's last-block counter, 0 between scans
};

// What the kernels leave for the host to read at the backend's next wait (device memory,
// mirrored in pinned host memory). The backend serializes their use.
struct DeviceResults {
  double sum_of_squares;
  IndexErrorRecord index_error;
};

struct Context;

// The device tables of the many-tensor launches (cuda/optim_table.h: the optimizer steps,
// unscale_and_check), kept by the backend between steps: table() gives device memory
// holding `bytes` (whole 16-byte words), written with store_table on ctx.stream the first
// time those bytes are asked for, and valid for work queued on ctx.stream after it.
class DeviceTables {
 public:
  virtual const void* table(const Context& ctx, const std::vector<unsigned char>& bytes) = 0;

 protected:
  ~DeviceTables() = default;
};

struct Context {
  cudaStream_t stream = nullptr;
  int sm_count = 1;
  Scratch* scratch = nullptr;
  DeviceResults* results = nullptr;  // device memory
  DeviceTables* tables = nullptr;
};

// ---- elementwise (elementwise.cu); operands have out's shape (0 strides where they repeat) ----
void fill(const Context& ctx, const View& out, double value);
void copy(const Context& ctx, const View& src, const View& out);  // any dtype to any dtype
// x, a, b and out share one dtype; the scalar functors are core/scalar_ops.h's.
void unary(const Context& ctx, UnaryOp op, const View& x, const View& out, double a, double b);
void binary(const Context& ctx, BinaryOp op, const View& a, const View& b, const View& out);
void where(const Context& ctx, const View& cond, const View& a, const View& b, const View& out);

// ---- reductions (reduce.cu) ----
// out has in's ndim with 1 in reduced dims; Sum/Max/Min write in's dtype, Arg* int64.
// The reduced extent is not empty (core handles that).
void reduce(const Context& ctx, ReduceOp op, const View& in, const View& out, double scale);
// results->sum_of_squares = the sum of the squares of `count` contiguous, non-empty tensors.
void sum_of_squares(const Context& ctx, const View* xs, size_t count);
// Each of grads (contiguous, floating, non-empty) *= inverse in place; *found (float32,
// device) = 1 where a stored value is Inf or NaN (Backend::unscale_and_check). One launch
// per dtype, with its table from ctx.tables.
void unscale_and_check(const Context& ctx, const View* grads, size_t count, double inverse, float* found);

// ---- sliding windows (conv.cu), contiguous NCHW; see WindowGeometry ----
void im2col(const Context& ctx, const View& x, const WindowGeometry& g, const View& col);
void col2im(const Context& ctx, const View& col, const WindowGeometry& g, const View& x);  // overwrites x
void max_pool2d(const Context& ctx, const View& x, const WindowGeometry& g, const View& out, const View& indices);
void max_pool2d_backward(const Context& ctx, const View& grad_out, const View& indices, const WindowGeometry& g,
                         const View& grad_x);  // overwrites grad_x

// ---- softmax and cross-entropy (softmax.cu), rows of C contiguous elements ----
void softmax(const Context& ctx, const View& x, const View& out, bool log);
void softmax_backward(const Context& ctx, const View& y, const View& grad_y, const View& grad_x, bool log);
// A target outside [0, C) (check_index reports it later) gives a NaN loss and loses its
// one-hot in backward; it is never dereferenced.
void cross_entropy(const Context& ctx, const View& logits, const View& target, double smoothing,
                      const View& probs, const View& loss_rows);
void cross_entropy_backward(const Context& ctx, const View& probs, const View& target, double smoothing,
                            double scale, const View& grad_logits);

// ---- gather / scatter-add (index.cu); a bad index (check_index reports it later) is
// never dereferenced: index_select writes 0 there, index_add skips it ----
void index_select(const Context& ctx, const View& x, int dim, const View& index, const View& out);
void index_add(const Context& ctx, const View& out, int dim, const View& index, const View& src);

// ---- random draws (random.cu) from vgrad's stream at (seed, offset): element i of out
// in row-major order uses counter offset + i, any strides ----
void uniform(const Context& ctx, const View& out, double low, double high, uint64_t seed, uint64_t offset);
void dropout_mask(const Context& ctx, const View& out, double p, uint64_t seed, uint64_t offset);

// ---- fused optimizer steps (optim.cu), contiguous, one floating dtype ----
void sgd_update(const Context& ctx, const View& param, const View& grad, const View& momentum_buffer,
                const SgdParams& params);
void adam_update(const Context& ctx, const View& param, const View& grad, const View& exp_avg,
                 const View& exp_avg_sq, const AdamParams& params);
// The many-parameter forms: one launch per dtype (float32, float64) for all `count` entries,
// each non-empty; the same bits as one sgd_update/adam_update per entry.
void sgd_update_many(const Context& ctx, const SgdUpdate* updates, size_t count);
void adam_update_many(const Context& ctx, const AdamUpdate* updates, size_t count);
// Writes `size` bytes (whole 16-byte words) from the host to device memory `dst` through
// kernel arguments: nothing reads `bytes` after the call, and a CUDA graph may capture it.
void store_table(const Context& ctx, void* dst, const unsigned char* bytes, size_t size);

// ---- index range check (index.cu) ----
// Lowers results->index_error.first to (check << kIndexPositionBits) | i for the first
// position i of the 1-D int64 `index` whose value is outside [0, limit), and stores that
// value when it is the record's first. check < 2^(64 - kIndexPositionBits).
void check_index(const Context& ctx, const View& index, int64_t limit, int check);
// Sets results->index_error to "none".
void reset_index_error(const Context& ctx);

}  // namespace vgrad::cuda::kernels

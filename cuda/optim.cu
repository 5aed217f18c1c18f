// Fused optimizer steps, following PyTorch's update rules op for op (torch.optim.SGD and
// Adam/AdamW) so results match closely: one kernel per parameter (sgd_update, adam_update),
// or one launch for many parameters of a dtype (sgd_update_many, adam_update_many: the
// foreach/fused form). Both run the same element rule, one `update(t, i)` per optimizer, so
// they give the same bits. Adam's rule is core/optim_step.h, shared with the CPU. Scalars
// are rounded to the tensor dtype once, on the host, as PyTorch does, and travel as kernel
// arguments; the many form's table of pointers stays on the device between steps
// (cuda/optim_table.h). A capturable step (SgdParams/AdamParams::lr_source, step_source)
// reads its lr and step counts from device memory instead: each thread once per parameter
// chunk, before its elements (`Rule::for_tensor`). Side by side with core/cpu/optim.cpp.
#include <cmath>
#include <cstring>
#include <vector>

#include "core/optim_step.h"
#include "cuda/kernel_utils.cuh"
#include "cuda/optim_table.h"

namespace vgrad::cuda::kernels {
namespace {

TensorPointers pointers_of(const SgdUpdate& u) {
  return {u.param.data, u.grad.data, u.momentum_buffer.data, nullptr, u.param.numel()};
}
TensorPointers pointers_of(const AdamUpdate& u) {
  return {u.param.data, u.grad.data, u.exp_avg.data, u.exp_avg_sq.data, u.param.numel(), u.params.step_source};
}

// The lr of a step: the same source, or (without one) the same value.
template <class Params> bool same_lr(const Params& a, const Params& b) {
  return a.lr_source == b.lr_source && (a.lr_source != nullptr || a.lr == b.lr);
}

// Parameters whose steps share every scalar share a launch (in steady state: all of a dtype).
// A capturable Adam's step counts are per parameter, read through the table: they need not agree.
bool same_scalars(const SgdParams& a, const SgdParams& b) {
  return same_lr(a, b) && a.momentum == b.momentum && a.dampening == b.dampening && a.weight_decay == b.weight_decay &&
         a.nesterov == b.nesterov && a.first_step == b.first_step;
}
bool same_scalars(const AdamParams& a, const AdamParams& b) {
  const bool counted = a.step_source != nullptr;
  return same_lr(a, b) && a.beta1 == b.beta1 && a.beta2 == b.beta2 && a.eps == b.eps &&
         a.weight_decay == b.weight_decay && a.decoupled == b.decoupled && counted == (b.step_source != nullptr) &&
         (counted || a.step == b.step);
}

// One parameter's SGD step, element by element:
// d = g + wd * p
// momentum: buf = first_step ? d : momentum * buf + (1 - dampening) * d
//           d = nesterov ? d + momentum * buf : buf
// p -= lr * d
template <class T> struct SgdRule {
  T lr, momentum, one_minus_dampening, weight_decay;
  bool use_decay, use_momentum, nesterov, first_step;  // decided on the doubles, as PyTorch and the CPU do
  const double* lr_source;  // capturable: lr is read here at the step

  static SgdRule from(const SgdParams& c) {
    return {static_cast<T>(c.lr),
            static_cast<T>(c.momentum),
            static_cast<T>(1.0 - c.dampening),
            static_cast<T>(c.weight_decay),
            c.weight_decay != 0.0,
            c.momentum != 0.0,
            c.nesterov,
            c.first_step,
            c.lr_source};
  }

  // The rule for one parameter's elements, once per thread per chunk: the lr read and
  // rounded as the host rounds it (static_cast, round to nearest).
  __device__ __forceinline__ SgdRule for_tensor(const TensorPointers&) const {
    SgdRule rule = *this;
    if (lr_source != nullptr) rule.lr = static_cast<T>(*lr_source);
    return rule;
  }

  __device__ __forceinline__ void update(const TensorPointers& t, int64_t i) const {
    T* const param = static_cast<T*>(t.param);
    T* const buffer = static_cast<T*>(t.state1);  // null without momentum
    const T p = param[i];
    T d = static_cast<const T*>(t.grad)[i];
    if (use_decay) d = d + weight_decay * p;
    if (use_momentum) {
      const T b = first_step ? d : buffer[i] * momentum + one_minus_dampening * d;
      buffer[i] = b;
      d = nesterov ? d + momentum * b : b;
    }
    param[i] = p + (-lr) * d;
  }
};

template <class T> struct AdamRule {
  AdamStep<T> step;
  AdamParams params;  // capturable (a source set): read at the step into `step`

  static AdamRule from(const AdamParams& c) {
    const bool capturable = c.lr_source != nullptr || c.step_source != nullptr;
    return {capturable ? AdamStep<T>{} : AdamStep<T>::from(c), c};
  }

  // The rule for one parameter's elements, once per thread per chunk: a capturable step reads
  // its lr and this parameter's step count and computes the bias corrections in double, as
  // the host does (with the device's pow: docs/gpu.md, "Capturable optimizers").
  __device__ __forceinline__ AdamRule for_tensor(const TensorPointers& t) const {
    if (params.lr_source == nullptr && params.step_source == nullptr) return *this;
    AdamParams c = params;
    c.step_source = t.step;
    return {AdamStep<T>::from(read_sources(c)), params};
  }

  __device__ __forceinline__ void update(const TensorPointers& t, int64_t i) const {
    step(static_cast<T*>(t.param)[i], static_cast<const T*>(t.grad)[i], static_cast<T*>(t.state1)[i],
         static_cast<T*>(t.state2)[i]);
  }
};

template <class T> SgdRule<T> rule_for(const SgdParams& c) { return SgdRule<T>::from(c); }
template <class T> AdamRule<T> rule_for(const AdamParams& c) { return AdamRule<T>::from(c); }

// One parameter: a grid-stride loop over its elements.
template <class Rule> __global__ void __launch_bounds__(kBlock) update_kernel(TensorPointers t, Rule rule) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  const Rule own = rule.for_tensor(t);
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < t.n; i += step) own.update(t, i);
}

// Many parameters: each is cut into chunks of kTensorChunk elements, numbered across all of them
// (cuda/chunks.h); each block takes chunks in a grid-stride loop and finds its parameter by
// binary search.
template <class Rule>
__global__ void __launch_bounds__(kBlock) update_many_kernel(const TensorPointers* tensors, const int64_t* first_chunk,
                                                              int count, int64_t chunks, Rule rule) {
  for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const ChunkRange range = find_chunk(first_chunk, count, chunk, kTensorChunk, [&](int j) { return tensors[j].n; });
    // A copy in registers: the parameter's stores could alias the table for the compiler.
    const TensorPointers t = tensors[range.tensor];
    const Rule own = rule.for_tensor(t);
    for (int64_t i = range.begin + threadIdx.x; i < range.end; i += blockDim.x) own.update(t, i);
  }
}

template <class Rule> void launch_one(const Context& ctx, const TensorPointers& t, const Rule& rule) {
  update_kernel<Rule><<<grid_for(ctx, t.n), kBlock, 0, ctx.stream>>>(t, rule);
  VGRAD_CUDA_CHECK_LAUNCH();
}

// A table's bytes, written by kernels whose arguments carry them (at most kStoreWords
// 16-byte words a launch, under the 4 KB kernel-argument limit): no host memory is read
// after the launch returns, so a CUDA graph that captured it replays it safely.
constexpr int kStoreWords = 240;
struct StoreWords {
  uint4 words[kStoreWords];
  int count;
};

__global__ void store_words_kernel(uint4* dst, StoreWords piece) {
  for (int i = threadIdx.x; i < piece.count; i += blockDim.x) dst[i] = piece.words[i];
}

// One launch per group of `updates` of dtype T whose scalars agree (all are non-empty):
// normally one per dtype. The group's table comes from ctx.tables: uploaded when its
// parameter set is new, reused as it is afterwards.
template <class T, class Update> void launch_many(const Context& ctx, DType dtype, const Update* updates, size_t count) {
  if (ctx.tables == nullptr) detail::throw_error("cuda: internal error: no optimizer tables in the kernel context");
  std::vector<bool> done(count, false);
  for (size_t first = 0; first < count; ++first) {
    if (done[first] || updates[first].param.dtype != dtype) continue;
    std::vector<TensorPointers> tensors;
    for (size_t i = first; i < count; ++i)
      if (!done[i] && updates[i].param.dtype == dtype && same_scalars(updates[i].params, updates[first].params)) {
        done[i] = true;
        tensors.push_back(pointers_of(updates[i]));
      }
    if (tensors.size() > size_t{INT32_MAX})
      detail::throw_error("optimizer step: more than 2^31 parameters in one launch");
    const HostTable table = build_table(tensors, kTensorChunk);
    const auto* device_table = static_cast<const unsigned char*>(ctx.tables->table(ctx, table.bytes));
    // A block per chunk, at most the blocks that fill the GPU (grid_for: kBlock items a block).
    update_many_kernel<<<grid_for(ctx, table.chunks * kBlock), kBlock, 0, ctx.stream>>>(
        reinterpret_cast<const TensorPointers*>(device_table + table.pointers_offset),
        reinterpret_cast<const int64_t*>(device_table), table.count, table.chunks, rule_for<T>(updates[first].params));
    VGRAD_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

void store_table(const Context& ctx, void* dst, const unsigned char* bytes, size_t size) {
  if (size % sizeof(uint4) != 0) detail::throw_error("cuda: internal error: a table is not whole 16-byte words");
  const size_t words = size / sizeof(uint4);
  for (size_t done = 0; done < words; done += kStoreWords) {
    StoreWords piece;
    piece.count = static_cast<int>(words - done < size_t{kStoreWords} ? words - done : size_t{kStoreWords});
    std::memcpy(piece.words, bytes + done * sizeof(uint4), static_cast<size_t>(piece.count) * sizeof(uint4));
    store_words_kernel<<<1, kBlock, 0, ctx.stream>>>(static_cast<uint4*>(dst) + done, piece);
    VGRAD_CUDA_CHECK_LAUNCH();
  }
}

void sgd_update(const Context& ctx, const View& param, const View& grad, const View& momentum_buffer,
                const SgdParams& c) {
  if (param.numel() == 0) return;
  dispatch_floating(param.dtype, "sgd_update", [&](auto tag) {
    launch_one(ctx, pointers_of(SgdUpdate{param, grad, momentum_buffer, c}), SgdRule<decltype(tag)>::from(c));
  });
}

void adam_update(const Context& ctx, const View& param, const View& grad, const View& exp_avg, const View& exp_avg_sq,
                 const AdamParams& c) {
  if (param.numel() == 0) return;
  dispatch_floating(param.dtype, "adam_update", [&](auto tag) {
    launch_one(ctx, pointers_of(AdamUpdate{param, grad, exp_avg, exp_avg_sq, c}), AdamRule<decltype(tag)>::from(c));
  });
}

void sgd_update_many(const Context& ctx, const SgdUpdate* updates, size_t count) {
  launch_many<float>(ctx, DType::Float32, updates, count);
  launch_many<double>(ctx, DType::Float64, updates, count);
}

void adam_update_many(const Context& ctx, const AdamUpdate* updates, size_t count) {
  launch_many<float>(ctx, DType::Float32, updates, count);
  launch_many<double>(ctx, DType::Float64, updates, count);
}

}  // namespace vgrad::cuda::kernels

// Fused optimizer steps, following PyTorch's update rules op for op (torch.optim.SGD and
// Adam/AdamW) so results match closely: one kernel per parameter (sgd_update, adam_update),
// or one launch for many parameters of a dtype (sgd_update_many, adam_update_many: the
// foreach/fused form). Both run the same element rule, one `update(i)` per optimizer, so
// they give the same bits. Adam's rule is core/optim_step.h, shared with the CPU. Scalars
// are rounded to the tensor dtype once, on the host, as PyTorch does.
// Side by side with core/cpu/optim.cpp.
#include <cmath>
#include <cstring>
#include <vector>

#include "core/optim_step.h"
#include "cuda/chunks.h"
#include "cuda/kernel_utils.cuh"

namespace vgrad::cuda::kernels {
namespace {

// One parameter's SGD step, element by element:
// d = g + wd * p
// momentum: buf = first_step ? d : momentum * buf + (1 - dampening) * d
//           d = nesterov ? d + momentum * buf : buf
// p -= lr * d
template <class T> struct SgdTensor {
  using Scalar = T;
  T* param;
  const T* grad;
  T* buffer;  // null without momentum
  int64_t n;
  T lr, momentum, one_minus_dampening, weight_decay;
  bool use_momentum, nesterov, first_step;

  static SgdTensor from(const View& param, const View& grad, const View& buffer, const SgdParams& c) {
    return {static_cast<T*>(param.data),
            static_cast<const T*>(grad.data),
            static_cast<T*>(buffer.data),
            param.numel(),
            static_cast<T>(c.lr),
            static_cast<T>(c.momentum),
            static_cast<T>(1.0 - c.dampening),
            static_cast<T>(c.weight_decay),
            c.momentum != 0.0,
            c.nesterov,
            c.first_step};
  }
  static SgdTensor from(const SgdUpdate& u) { return from(u.param, u.grad, u.momentum_buffer, u.params); }

  __device__ __forceinline__ void update(int64_t i) const {
    const T p = param[i];
    T d = grad[i];
    if (weight_decay != T(0)) d = d + weight_decay * p;
    if (use_momentum) {
      const T b = first_step ? d : buffer[i] * momentum + one_minus_dampening * d;
      buffer[i] = b;
      d = nesterov ? d + momentum * b : b;
    }
    param[i] = p + (-lr) * d;
  }
};

template <class T> struct AdamTensor {
  using Scalar = T;
  T* param;
  const T* grad;
  T *exp_avg, *exp_avg_sq;
  int64_t n;
  AdamStep<T> step;

  static AdamTensor from(const View& param, const View& grad, const View& exp_avg, const View& exp_avg_sq,
                         const AdamParams& c) {
    return {static_cast<T*>(param.data),
            static_cast<const T*>(grad.data),
            static_cast<T*>(exp_avg.data),
            static_cast<T*>(exp_avg_sq.data),
            param.numel(),
            AdamStep<T>::from(c)};
  }
  static AdamTensor from(const AdamUpdate& u) { return from(u.param, u.grad, u.exp_avg, u.exp_avg_sq, u.params); }

  __device__ __forceinline__ void update(int64_t i) const { step(param[i], grad[i], exp_avg[i], exp_avg_sq[i]); }
};

// One parameter: a grid-stride loop over its elements.
template <class Tensor> __global__ void __launch_bounds__(kBlock) update_kernel(Tensor t) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < t.n; i += step) t.update(i);
}

// Many parameters: each is cut into chunks of kChunk elements, numbered across all of them
// (cuda/chunks.h); each block takes chunks in a grid-stride loop and finds its parameter by
// binary search.
constexpr int64_t kChunk = 8 * kBlock;

template <class Tensor>
__global__ void __launch_bounds__(kBlock)
    update_many_kernel(const Tensor* tensors, const int64_t* first_chunk, int count, int64_t chunks) {
  for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const ChunkRange range = find_chunk(first_chunk, count, chunk, kChunk, [&](int j) { return tensors[j].n; });
    // A copy in registers: the parameter's stores could alias the table for the compiler.
    const Tensor t = tensors[range.tensor];
    for (int64_t i = range.begin + threadIdx.x; i < range.end; i += blockDim.x) t.update(i);
  }
}

template <class Tensor> void launch_one(const Context& ctx, const Tensor& t) {
  update_kernel<Tensor><<<grid_for(ctx, t.n), kBlock, 0, ctx.stream>>>(t);
  VGRAD_CUDA_CHECK_LAUNCH();
}

// One launch for every entry of `updates` whose dtype is T's (all are non-empty). The table
// (first chunks, then the parameters) goes to the device with one copy from pageable memory,
// which CUDA stages before cudaMemcpyAsync returns, so the host vector may go at once.
template <class T, template <class> class TensorOf, class Update>
void launch_many(const Context& ctx, DType dtype, const Update* updates, size_t count) {
  using Tensor = TensorOf<T>;
  std::vector<Tensor> tensors;
  std::vector<int64_t> sizes;
  for (size_t i = 0; i < count; ++i) {
    if (updates[i].param.dtype != dtype) continue;
    tensors.push_back(Tensor::from(updates[i]));
    sizes.push_back(tensors.back().n);
  }
  if (tensors.empty()) return;
  if (tensors.size() > size_t{INT32_MAX})
    detail::throw_error("optimizer step: more than 2^31 parameters in one launch");
  std::vector<int64_t> first_chunk(tensors.size());
  const int64_t chunks = number_chunks(sizes.data(), static_cast<int>(sizes.size()), kChunk, first_chunk.data());
  static_assert(alignof(Tensor) <= 16 && alignof(int64_t) <= 16, "the table's parts are 16-byte aligned");
  const size_t chunk_bytes = (first_chunk.size() * sizeof(int64_t) + 15) / 16 * 16;
  std::vector<unsigned char> table(chunk_bytes + tensors.size() * sizeof(Tensor));
  std::memcpy(table.data(), first_chunk.data(), first_chunk.size() * sizeof(int64_t));
  std::memcpy(table.data() + chunk_bytes, tensors.data(), tensors.size() * sizeof(Tensor));
  ScratchBuffer device_table(ctx, table.size());
  VGRAD_CUDA_CHECK(cudaMemcpyAsync(device_table.as<unsigned char>(), table.data(), table.size(), cudaMemcpyHostToDevice,
                                   ctx.stream));
  const int64_t cap = int64_t{ctx.sm_count} * (2048 / kBlock);
  const auto grid = static_cast<unsigned>(chunks < cap ? chunks : cap);
  update_many_kernel<Tensor>
      <<<grid, kBlock, 0, ctx.stream>>>(reinterpret_cast<const Tensor*>(device_table.as<unsigned char>() + chunk_bytes),
                                        device_table.as<const int64_t>(), static_cast<int>(tensors.size()), chunks);
  VGRAD_CUDA_CHECK_LAUNCH();
}

}  // namespace

void sgd_update(const Context& ctx, const View& param, const View& grad, const View& momentum_buffer,
                const SgdParams& c) {
  if (param.numel() == 0) return;
  dispatch_floating(param.dtype, "sgd_update", [&](auto tag) {
    launch_one(ctx, SgdTensor<decltype(tag)>::from(param, grad, momentum_buffer, c));
  });
}

void adam_update(const Context& ctx, const View& param, const View& grad, const View& exp_avg, const View& exp_avg_sq,
                 const AdamParams& c) {
  if (param.numel() == 0) return;
  dispatch_floating(param.dtype, "adam_update", [&](auto tag) {
    launch_one(ctx, AdamTensor<decltype(tag)>::from(param, grad, exp_avg, exp_avg_sq, c));
  });
}

void sgd_update_many(const Context& ctx, const SgdUpdate* updates, size_t count) {
  launch_many<float, SgdTensor>(ctx, DType::Float32, updates, count);
  launch_many<double, SgdTensor>(ctx, DType::Float64, updates, count);
}

void adam_update_many(const Context& ctx, const AdamUpdate* updates, size_t count) {
  launch_many<float, AdamTensor>(ctx, DType::Float32, updates, count);
  launch_many<double, AdamTensor>(ctx, DType::Float64, updates, count);
}

}  // namespace vgrad::cuda::kernels

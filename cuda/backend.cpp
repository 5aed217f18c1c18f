// CudaBackend's life cycle, transfers, and the thin *_impl methods that queue the
// kernels of each op family (cuda/elementwise.cu, reduce.cu, conv.cu, softmax.cu, index.cu,
// random.cu, optim.cu); GEMM is in cuda/gemm.cpp. Uniform and dropout draws come from
// vgrad's counter-based stream (random.cu), normal draws from cuRAND's Philox, both
// positioned at (seed, offset). Compiled by the host compiler, not nvcc.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

#include "core/error.h"
#include "cuda/check.h"
#include "cuda/cuda_backend.h"
#include "cuda/libraries.h"

namespace vgrad::cuda {
namespace {

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

CudaBackend& backend_of(int device) { return static_cast<CudaBackend&>(backend(device)); }

const FenceHooks kUploadPoolFences{
    [](int device) { return backend_of(device).record_compute_fence(); },
    [](void* event, int) { return CudaBackend::fence_done(event); },
    [](void* event, int) { CudaBackend::fence_wait(event); },
    [](void* event, int device) { backend_of(device).release_event(event); },
};

}  // namespace

const FenceHooks* upload_pool_fences() { return &kUploadPoolFences; }

View contiguous_view(void* data, DType dtype, int ndim, const int64_t* shape) {
  View v;
  v.data = data;
  v.dtype = dtype;
  v.ndim = ndim;
  int64_t stride = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    v.shape[d] = shape[d];
    v.strides[d] = stride;
    stride *= shape[d];
  }
  return v;
}

CudaBackend::CudaBackend(int index)
    : index_(index),
      allocator_(&raw_device_alloc, &raw_device_free, index, memory_limit()),
      upload_allocator_(&raw_device_alloc, &raw_device_free, index, memory_limit(), upload_pool_fences()) {
  // Out of memory in either pool gives back both caches (never a CUDA graph's private pool:
  // its free blocks are addresses the graph's replays still use).
  allocator_.set_siblings({&upload_allocator_});
  upload_allocator_.set_siblings({&allocator_});
  try {
    VGRAD_CUDA_CHECK(cudaSetDevice(index));
    VGRAD_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, index));
    if (sm_count_ < 1) sm_count_ = 1;
    VGRAD_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    VGRAD_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
    VGRAD_CUBLAS_CHECK(cublas().create(&cublas_));
    VGRAD_CUBLAS_CHECK(cublas().set_stream(cublas_, stream_));
    // cuBLAS's own workspace, fixed (after set_stream, which resets it): GEMMs choose their
    // algorithms with the same workspace eagerly and in a CUDA graph capture, where cuBLAS
    // would otherwise allocate one per call. Outside the caching allocator, as the results
    // block: it is not a tensor's memory.
    VGRAD_CUDA_CHECK(cudaMalloc(&cublas_workspace_, kCublasWorkspaceBytes));
    VGRAD_CUBLAS_CHECK(cublas().set_workspace(cublas_, cublas_workspace_, kCublasWorkspaceBytes));
    VGRAD_CURAND_CHECK(curand().create_generator(&curand_, CURAND_RNG_PSEUDO_PHILOX4_32_10));
    VGRAD_CURAND_CHECK(curand().set_stream(curand_, stream_));
    VGRAD_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&device_results_), sizeof(kernels::DeviceResults)));
    VGRAD_CUDA_CHECK(
        cudaHostAlloc(reinterpret_cast<void**>(&host_results_), sizeof(kernels::DeviceResults), cudaHostAllocDefault));
    kernels::reset_index_error(context());
  } catch (...) {
    destroy_handles();
    throw;
  }
}

void CudaBackend::destroy_handles() noexcept {
  destroy_cudnn(cudnn_);
  cudnn_ = nullptr;
  destroy_cublas_lt(cublas_lt_);
  cublas_lt_ = nullptr;
  if (curand_ != nullptr) (void)curand().destroy_generator(curand_);
  if (cublas_ != nullptr) (void)cublas().destroy(cublas_);
  if (device_results_ != nullptr) (void)cudaFree(device_results_);
  if (cublas_workspace_ != nullptr) (void)cudaFree(cublas_workspace_);
  cublas_workspace_ = nullptr;
  if (host_results_ != nullptr) (void)cudaFreeHost(host_results_);
  if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  if (copy_stream_ != nullptr) (void)cudaStreamDestroy(copy_stream_);
  for (cudaEvent_t event : spare_events_) (void)cudaEventDestroy(event);
  spare_events_.clear();
  copy_stream_ = nullptr;
  curand_ = nullptr;
  cublas_ = nullptr;
  device_results_ = host_results_ = nullptr;
  stream_ = nullptr;
  (void)cudaGetLastError();
}

// ---- waits and transfers ----

void CudaBackend::wait_locked(bool read_results) {
  refuse_in_capture("a host wait", "the host cannot wait for work that is only being recorded");
  installed_checks_ = nullptr;
  const int pending = std::exchange(pending_count_, 0);
  if (read_results || pending > 0)
    VGRAD_CUDA_CHECK(cudaMemcpyAsync(host_results_, device_results_, sizeof(kernels::DeviceResults),
                                     cudaMemcpyDeviceToHost, stream_));
  host_waits_.fetch_add(1, std::memory_order_relaxed);
  VGRAD_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (pending == 0) return;
  const kernels::IndexErrorRecord found = host_results_->index_error;
  if (found.first == kernels::kNoIndexError) return;
  kernels::reset_index_error(context());  // queued: the next checks start clean
  const auto check = static_cast<int>(found.first >> kernels::kIndexPositionBits);
  const auto position = static_cast<int64_t>(found.first & ((1ull << kernels::kIndexPositionBits) - 1));
  if (check >= pending)
    fail("cuda:{}: internal error: index error record names check {} of {}", index_, check, pending);
  fail_index_out_of_range(pending_checks_[static_cast<size_t>(check)], position, found.value);
}

void CudaBackend::copy_from_host(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  refuse_in_capture("a copy from host memory (a tensor made from host values, to(cuda))",
                    "a replay would read the host memory again, long gone; copy into a static input made before");
  activate();
  std::lock_guard lock(result_mutex_);
  VGRAD_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
  // The host may reuse src at once. The pending index checks stay pending: a copy reads
  // nothing back, and another thread's copy must not report this thread's bad index.
  host_waits_.fetch_add(1, std::memory_order_relaxed);
  VGRAD_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::copy_to_host(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  refuse_in_capture("a copy to host memory (item(), to(kCPU))",
                    "nothing has run yet; read the outputs after replay()");
  activate();
  std::lock_guard lock(result_mutex_);
  VGRAD_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  wait_locked(false);
}

// ---- the copy stream: uploads and their fences (docs/gpu.md, "Streams") ----

cudaEvent_t CudaBackend::acquire_event() {
  {
    std::lock_guard lock(event_mutex_);
    if (!spare_events_.empty()) {
      cudaEvent_t event = spare_events_.back();
      spare_events_.pop_back();
      return event;
    }
  }
  cudaEvent_t event = nullptr;
  VGRAD_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  return event;
}

void CudaBackend::release_event(void* event) noexcept {
  try {
    std::lock_guard lock(event_mutex_);
    spare_events_.push_back(static_cast<cudaEvent_t>(event));
  } catch (...) {
    (void)cudaEventDestroy(static_cast<cudaEvent_t>(event));
  }
}

// The copies run on the copy stream, so they overlap the kernels queued on the compute
// stream; the event after the last one is what the host (to reuse the sources) and the
// compute stream (to read the destinations) wait for.
DeviceFence CudaBackend::upload(std::span<const HostCopy> copies) {
  // The copy stream is never captured: only the capturing thread is refused (a replay would
  // read its batch long after); a loader thread uploads on during another thread's capture.
  if (capture_thread_.load(std::memory_order_acquire) == std::this_thread::get_id())
    refuse_in_capture("an upload (the DataLoader's batches)", "copy each batch into the graph's static inputs instead");
  activate();
  for (const HostCopy& copy : copies)
    if (copy.bytes > 0)
      VGRAD_CUDA_CHECK(cudaMemcpyAsync(copy.dst, copy.src, copy.bytes, cudaMemcpyHostToDevice, copy_stream_));
  cudaEvent_t event = acquire_event();
  const cudaError_t status = cudaEventRecord(event, copy_stream_);
  if (status != cudaSuccess) release_event(event);
  VGRAD_CUDA_CHECK(status);
  return DeviceFence(this, event);
}

// NOTE: waits for the copy stream only. It neither counts as a host wait (those are the
// compute stream's) nor reports a pending bad index of the compute stream's ops.
void CudaBackend::fence_wait_host(void* event) { VGRAD_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event))); }

void CudaBackend::fence_make_compute_wait(void* event) {
  refuse_in_capture("a DataLoader batch", "copy each batch into the graph's static inputs instead");
  activate();
  VGRAD_CUDA_CHECK(cudaStreamWaitEvent(stream_, static_cast<cudaEvent_t>(event), 0));
}

void* CudaBackend::record_compute_fence() noexcept {
  try {
    activate();
    cudaEvent_t event = acquire_event();
    if (cudaEventRecord(event, stream_) == cudaSuccess) return event;
    (void)cudaGetLastError();
    release_event(event);
  } catch (...) {  // no event to be had: fall through
  }
  // No fence: wait for the compute stream now, so the block is free when returned.
  if (cudaStreamSynchronize(stream_) != cudaSuccess) (void)cudaGetLastError();
  return nullptr;
}

bool CudaBackend::fence_done(void* event) noexcept {
  const cudaError_t status = cudaEventQuery(static_cast<cudaEvent_t>(event));
  if (status == cudaSuccess) return true;
  // NOTE: cudaErrorNotReady is not a failure, but clear it from the last-error slot so the
  // next launch check does not report it (PyTorch's allocator does the same). Any other
  // error is the device's, reported by the next checked call; the block is then free.
  (void)cudaGetLastError();
  return status != cudaErrorNotReady;
}

void CudaBackend::fence_wait(void* event) noexcept {
  if (cudaEventSynchronize(static_cast<cudaEvent_t>(event)) != cudaSuccess) (void)cudaGetLastError();
}

void CudaBackend::synchronize() {
  refuse_in_capture("synchronize()", "the host cannot wait for work that is only being recorded");
  activate();
  std::lock_guard lock(result_mutex_);
  wait_locked(false);
}

// ---- the op families: the kernels do the work ----

void CudaBackend::fill_impl(const View& out, double value) {
  activate();
  kernels::fill(context(), out, value);
}

void CudaBackend::copy_impl(const View& src, const View& out) {
  activate();
  kernels::copy(context(), src, out);
}

void CudaBackend::unary_impl(UnaryOp op, const View& x, const View& out, double a, double b) {
  activate();
  kernels::unary(context(), op, x, out, a, b);
}

void CudaBackend::binary_impl(BinaryOp op, const View& a, const View& b, const View& out) {
  activate();
  kernels::binary(context(), op, a, b, out);
}

void CudaBackend::where_impl(const View& cond, const View& a, const View& b, const View& out) {
  activate();
  kernels::where(context(), cond, a, b, out);
}

void CudaBackend::reduce_impl(ReduceOp op, const View& in, const View& out, double scale) {
  activate();
  kernels::reduce(context(), op, in, out, scale);
}

void CudaBackend::unscale_and_check_impl(const View* grads, size_t count, double inverse, const View& found) {
  activate();
  kernels::unscale_and_check(context(), grads, count, inverse, static_cast<float*>(found.data));
}

double CudaBackend::sum_of_squares_impl(const View* xs, size_t count) {
  refuse_in_capture("sum_of_squares (clip_grad_norm)", "the host would read a norm that is only being recorded");
  activate();
  std::lock_guard lock(result_mutex_);
  kernels::sum_of_squares(context(), xs, count);
  wait_locked(true);
  return host_results_->sum_of_squares;
}

void CudaBackend::im2col_impl(const View& x, const WindowGeometry& g, const View& col) {
  activate();
  kernels::im2col(context(), x, g, col);
}

void CudaBackend::col2im_impl(const View& col, const WindowGeometry& g, const View& x) {
  activate();
  kernels::col2im(context(), col, g, x);
}

void CudaBackend::max_pool2d_impl(const View& x, const WindowGeometry& g, const View& out, const View& indices) {
  activate();
  kernels::max_pool2d(context(), x, g, out, indices);
}

void CudaBackend::max_pool2d_backward_impl(const View& grad_out, const View& indices, const WindowGeometry& g,
                                           const View& grad_x) {
  activate();
  kernels::max_pool2d_backward(context(), grad_out, indices, g, grad_x);
}

// No fused batch-norm kernel on the GPU yet (none could be tested here): batch_norm
// composes it from reductions and elementwise kernels (autograd/ops/norm.cpp).
bool CudaBackend::batch_norm_impl(const View&, const View&, const View&, double, const View&, const View&,
                                  const View&) {
  return false;
}

bool CudaBackend::batch_norm_backward_impl(const View&, const View&, const View&, const View&, const View&, double,
                                           const View&, const View&, const View&) {
  return false;
}

void CudaBackend::softmax_impl(const View& x, const View& out, bool log) {
  activate();
  kernels::softmax(context(), x, out, log);
}

void CudaBackend::softmax_backward_impl(const View& y, const View& grad_y, const View& grad_x, bool log) {
  activate();
  kernels::softmax_backward(context(), y, grad_y, grad_x, log);
}

void CudaBackend::cross_entropy_impl(const View& logits, const View& target, double smoothing, const View& probs,
                                     const View& loss_rows) {
  activate();
  kernels::cross_entropy(context(), logits, target, smoothing, probs, loss_rows);
}

void CudaBackend::cross_entropy_backward_impl(const View& probs, const View& target, double smoothing, double scale,
                                              const View& grad_logits) {
  activate();
  kernels::cross_entropy_backward(context(), probs, target, smoothing, scale, grad_logits);
}

void CudaBackend::index_select_impl(const View& x, int dim, const View& index, const View& out) {
  activate();
  kernels::index_select(context(), x, dim, index, out);
}

void CudaBackend::index_add_impl(const View& out, int dim, const View& index, const View& src) {
  activate();
  kernels::index_add(context(), out, dim, index, src);
}

// Queued, never waited for: the error comes at the next wait (Backend::check_index), or
// at this one when kIndexChecksPerWait checks are pending.
void CudaBackend::check_index_impl(const IndexCheck& check, const View& index) {
  activate();
  std::lock_guard lock(result_mutex_);
  if (pending_count_ == kIndexChecksPerWait - 1)
    refuse_in_capture(check.op, "one captured graph holds at most 63 index checks (each replay reports them)");
  kernels::check_index(context(), index, check.limit, pending_count_);
  pending_checks_[static_cast<size_t>(pending_count_++)] = check;
  installed_checks_ = nullptr;  // eager checks now pending (or, in a capture, the graph's own)
  if (pending_count_ == kIndexChecksPerWait) wait_locked(false);
}

void CudaBackend::sgd_update_impl(const View& param, const View& grad, const View& momentum_buffer,
                                  const SgdParams& p) {
  activate();
  kernels::sgd_update(context(), param, grad, momentum_buffer, p);
}

void CudaBackend::adam_update_impl(const View& param, const View& grad, const View& exp_avg,
                                   const View& exp_avg_sq, const AdamParams& p) {
  activate();
  kernels::adam_update(context(), param, grad, exp_avg, exp_avg_sq, p);
}

void CudaBackend::sgd_update_many_impl(std::span<const SgdUpdate> updates) {
  activate();
  kernels::sgd_update_many(context(), updates.data(), updates.size());
}

void CudaBackend::adam_update_many_impl(std::span<const AdamUpdate> updates) {
  activate();
  kernels::adam_update_many(context(), updates.data(), updates.size());
}

// A table lives in the device allocator's memory (never a capture's private pool: the
// cache may keep it past the graph) and goes back to it when the cache and every step
// reading it let go; later work on the stream is ordered after those steps.
// In a capture, a new table comes from the capture's pool, is not kept (it holds nothing
// until a replay writes it) and lives as long as the graph.
const void* CudaBackend::table(const kernels::Context& ctx, const std::vector<unsigned char>& bytes) {
  const std::shared_ptr<CachingAllocator> pool = capture_pool();
  CachingAllocator& memory = pool ? *pool : allocator_;
  const std::shared_ptr<const DeviceTable> table =
      optim_tables_.find_or_upload(bytes, pool == nullptr, [&](const std::vector<unsigned char>& contents) {
        void* data = memory.allocate(contents.size());
        // The pool (if any) is held by the table: the graph may go before it.
        auto uploaded = std::make_shared<const DeviceTable>(
            data, [owner = &memory, pool, data, size = contents.size()] { owner->deallocate(data, size); });
        kernels::store_table(ctx, data, contents.data(), contents.size());
        return uploaded;
      });
  if (pool) {
    std::lock_guard lock(capture_mutex_);
    if (capture_) capture_->keep_alive.push_back(table);
  }
  return table->data();
}

// ---- random numbers ----

// Uniform and dropout draws: one kernel each, vgrad's stream (the CPU's bits); the
// offset advances by one per element, as on the CPU.
void CudaBackend::uniform_impl(const View& out, double low, double high, RandomState& state) {
  refuse_in_capture("random numbers (uniform)", "each replay would draw the same numbers");
  activate();
  kernels::uniform(context(), out, low, high, state.seed, state.offset);
  state.offset += static_cast<uint64_t>(out.numel());
}

void CudaBackend::dropout_mask_impl(const View& out, double p, RandomState& state) {
  refuse_in_capture("random numbers (dropout)", "each replay would draw the same mask");
  activate();
  kernels::dropout_mask(context(), out, p, state.seed, state.offset);
  state.offset += static_cast<uint64_t>(out.numel());
}

// Normal draws: cuRAND's Philox4x32-10 at (seed, offset), where the offset counts 32-bit
// outputs (a double uses two), so state.offset advances by the words consumed.
// cuRAND's Box-Muller makes normals in pairs: an odd count (or an unaligned or strided
// output) goes through an even-sized temporary.
void CudaBackend::normal_impl(const View& out, double mean, double stddev, RandomState& state) {
  const int64_t n = out.numel();
  if (n == 0) return;
  refuse_in_capture("random numbers (normal)", "each replay would draw the same numbers");
  activate();
  std::lock_guard lock(curand_mutex_);
  const int64_t count = n + (n % 2);
  const bool direct = count == n && out.is_contiguous() && aligned16(out.data);
  std::optional<Temp> temp;
  if (!direct) {
    const int64_t shape[1] = {count};
    temp.emplace(allocator_, out.dtype, 1, shape);
  }
  void* data = direct ? out.data : temp->view().data;
  VGRAD_CURAND_CHECK(curand().set_seed(curand_, state.seed));
  VGRAD_CURAND_CHECK(curand().set_offset(curand_, state.offset));
  uint64_t words = 0;
  if (out.dtype == DType::Float32) {
    VGRAD_CURAND_CHECK(curand().generate_normal(curand_, static_cast<float*>(data), static_cast<size_t>(count),
                                                static_cast<float>(mean), static_cast<float>(stddev)));
    words = static_cast<uint64_t>(count);
  } else {
    VGRAD_CURAND_CHECK(
        curand().generate_normal_double(curand_, static_cast<double*>(data), static_cast<size_t>(count), mean, stddev));
    words = 2 * static_cast<uint64_t>(count);
  }
  if (temp) {
    // The first n values, in out's shape and strides.
    const View values = contiguous_view(data, out.dtype, out.ndim, out.shape);
    kernels::copy(context(), values, out);
  }
  state.offset += words;
}

}  // namespace vgrad::cuda

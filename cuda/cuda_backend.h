// CudaBackend: the Backend of one GPU. Its *_impl methods queue the kernels of
// cuda/*.cu (launchers in cuda/kernels.h) on one non-blocking compute stream per device
// (a second one, the copy stream, carries only the DataLoader's uploads), GEMM through cuBLAS
// (cuda/gemm.cpp) and, with an epilogue, cuBLASLt (cuda/gemm_lt.cpp), conv2d through cuDNN
// where the build has it (cuda/cudnn.cpp) and normal draws through cuRAND; the host waits
// only where it needs a value (wait_locked, the one place, counted), and a bad index found by
// check_index is thrown there (Backend::check_index). Arguments were checked by core's
// Backend. Internal to cuda/.
#pragma once
#include <cuda_runtime_api.h>
#include <curand.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cublas_v2.h>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "core/backend.h"
#include "cuda/kernels.h"
#include "cuda/optim_table.h"

namespace vgrad::cuda {

// cuDNN's handle and convolution plans on one device's stream (cuda/cudnn.cpp).
class CudnnConvolutions;
void destroy_cudnn(CudnnConvolutions* convolutions) noexcept;
// cuBLASLt's handle, workspace and matmul plans on one device (cuda/gemm_lt.cpp).
class CublasLtMatmuls;
void destroy_cublas_lt(CublasLtMatmuls* matmuls) noexcept;

// Makes GPU `index` current for this thread (cuda/device.cpp).
void select_device(int index);
// The raw allocator under the device's CachingAllocator (cuda/device.cpp).
void* raw_device_alloc(size_t bytes, int device, bool last_try);
void raw_device_free(void* ptr, int device);
// A contiguous View of `shape` over data.
View contiguous_view(void* data, DType dtype, int ndim, const int64_t* shape);
// The fences of the upload pools: CUDA events on the device's compute stream (backend.cpp).
const FenceHooks* upload_pool_fences();

class CudaBackend final : public Backend, private kernels::Scratch, private kernels::DeviceTables {
 public:
  explicit CudaBackend(int index);
  ~CudaBackend() override { destroy_handles(); }
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  Device device() const override { return cuda_device(index_); }
  cudaStream_t compute_stream() const { return stream_; }  // cuda::compute_stream
  CachingAllocator& allocator() override { return allocator_; }
  CachingAllocator& upload_allocator() override { return upload_allocator_; }
  std::vector<CachingAllocator*> pools() override { return {&allocator_, &upload_allocator_, &table_allocator_}; }
  DeviceFence upload(std::span<const HostCopy> copies) override;
  void copy_from_host(void* dst, const void* src, size_t bytes) override;
  void copy_to_host(void* dst, const void* src, size_t bytes) override;
  void synchronize() override;
  int64_t host_waits() const { return host_waits_.load(std::memory_order_relaxed); }
  // The upload pool's fences (upload_pool_fences): an event after the work queued on the
  // compute stream so far (nullptr when none could be recorded: the stream was waited for
  // instead), polled, waited for and given back. Never throw.
  void* record_compute_fence() noexcept;
  static bool fence_done(void* event) noexcept;
  static void fence_wait(void* event) noexcept;
  void release_event(void* event) noexcept;
  int64_t fused_epilogues() const { return fused_epilogues_.load(std::memory_order_relaxed); }
  int64_t table_uploads() const { return static_cast<int64_t>(optim_tables_.uploads()); }

  // ---- CUDA graph capture (cuda/graph.cpp, for cuda::Graph) ----
  std::shared_ptr<CachingAllocator> capture_pool() override;
  // Waits for the stream (pending index checks are reported now), then records its work,
  // with every allocation from `pool`, until end_capture.
  void begin_capture(std::shared_ptr<CachingAllocator> pool);
  // What a capture recorded: its graph, what its replays read that must stay alive (the
  // optimizer tables written in it), and its index checks, numbered from 0.
  struct CapturedWork {
    cudaGraph_t graph = nullptr;
    std::vector<std::shared_ptr<const void>> keep_alive;
    std::vector<IndexCheck> checks;
  };
  // Ends the capture (also after a failed step: then pass `failed`, and the graph is
  // dropped). Throws if CUDA ends it with an error.
  CapturedWork end_capture(bool failed);
  // Queues `exec` on the stream; its index checks (from `owner`'s capture) become the pending
  // ones, reported at the next wait. Waits once only if other checks are pending.
  void launch_graph(cudaGraphExec_t exec, const void* owner, const std::vector<IndexCheck>& checks);
  // Waits until the stream's work is done (a graph's replays, before its memory goes),
  // leaving pending index checks for the next wait to report. Counted; never throws.
  void finish_work() noexcept;
  // Deletes a graph pool whose last holder went, or, during a capture (where cudaFree is
  // refused), keeps it until end_capture deletes it.
  void release_pool(CachingAllocator* pool) noexcept;

 protected:
  VGRAD_BACKEND_IMPLS(, override)  // cuda/backend.cpp; gemm_impl in cuda/gemm.cpp
  void sgd_update_many_impl(std::span<const SgdUpdate> updates) override;    // one launch per dtype
  void adam_update_many_impl(std::span<const AdamUpdate> updates) override;  // (cuda/optim.cu)
  void gemm_epilogue_impl(const GemmEpilogueArgs& args) override;  // cuBLASLt (cuda/gemm_lt.cpp)

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
      view_ = contiguous_view(ptr_, dtype, ndim, shape);
    }
    ~Temp() { allocator_.deallocate(ptr_, bytes_); }
    Temp(const Temp&) = delete;
    Temp& operator=(const Temp&) = delete;
    const View& view() const { return view_; }

   private:
    CachingAllocator& allocator_;
    size_t bytes_ = 0;
    void* ptr_ = nullptr;
    View view_{};
  };

  // Scratch, for the kernels' own temporaries.
  void* allocate(size_t bytes) override { return temporary_allocator().allocate(bytes); }
  void deallocate(void* ptr, size_t bytes) override { temporary_allocator().deallocate(ptr, bytes); }

  // DeviceTables: the many-tensor launches' device tables (optimizer steps, unscale), from
  // optim_tables_ (cuda/backend.cpp).
  const void* table(const kernels::Context& ctx, const std::vector<unsigned char>& bytes) override;

  // Throws "cuda:0: <what> inside a CUDA graph capture: <why>" while capturing.
  void refuse_in_capture(const char* what, const char* why) const;

  void fence_wait_host(void* event) override;
  void fence_make_compute_wait(void* event) override;
  void fence_release(void* event) noexcept override { release_event(event); }
  cudaEvent_t acquire_event();  // from the pool of spare events (the device active)

  void activate() const { select_device(index_); }
  kernels::Context context() {
    kernels::Context ctx;
    ctx.stream = stream_;
    ctx.sm_count = sm_count_;
    ctx.scratch = this;
    ctx.results = device_results_;
    ctx.tables = this;
    return ctx;
  }
  // Waits for the stream (result_mutex_ held). Copies the device results to
  // host_results_ first when `read_results` or index checks are pending, and throws the
  // first pending bad index, if any (resetting the record, so it is reported once).
  void wait_locked(bool read_results);
  void destroy_handles() noexcept;

  int index_;
  CachingAllocator allocator_;
  // The copy stream's destinations: a block freed here may still be read by kernels queued
  // on the compute stream, so it is reused only after a fence recorded there is done.
  CachingAllocator upload_allocator_;
  // The device tables' own memory: drawn from allocator_, a kept table would hold a block of
  // the small buckets that gradients cycle through, so a training loop's gradient sets (the
  // tables' keys) would never repeat and every step would write new tables.
  CachingAllocator table_allocator_;
  // The tables of the last few parameter sets stepped and gradient sets unscaled
  // (cuda/optim_table.h); after table_allocator_, so they go back to it before it goes.
  TableCache optim_tables_{kTableCacheCapacity};
  int sm_count_ = 1;
  cudaStream_t stream_ = nullptr;       // compute: every kernel, cuBLAS, cuRAND, cuDNN
  cudaStream_t copy_stream_ = nullptr;  // uploads only (Backend::upload)
  std::vector<cudaEvent_t> spare_events_;  // made with cudaEventDisableTiming, reused
  std::mutex event_mutex_;                 // guards spare_events_
  cublasHandle_t cublas_ = nullptr;
  curandGenerator_t curand_ = nullptr;
  kernels::DeviceResults* device_results_ = nullptr;
  static constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;  // PyTorch's default on Hopper
  void* cublas_workspace_ = nullptr;                                 // cudaMalloc'ed; cuBLAS's (cublasSetWorkspace)
  kernels::DeviceResults* host_results_ = nullptr;  // pinned
  // The index checks queued since the last wait; the device record numbers them.
  std::array<IndexCheck, kIndexChecksPerWait> pending_checks_{};
  int pending_count_ = 0;
  std::atomic<int64_t> host_waits_{0};
  std::mutex result_mutex_;        // guards the results, the pending checks and every wait
  std::mutex cublas_mutex_;        // a cuBLAS handle must not be used by two threads at once
  std::mutex curand_mutex_;        // seed/offset/generate (normal) must not interleave
  // Made at the first conv2d that asks for it; nullptr: no cuDNN in this build, or it
  // did not start on this machine (conv2d_impl then declines).
  CudnnConvolutions* cudnn_ = nullptr;
  bool cudnn_tried_ = false;
  std::mutex cudnn_mutex_;  // guards cudnn_ (one handle, one thread at a time)
  // The capture in progress, if any (cuda/graph.cpp).
  struct Capture {
    std::shared_ptr<CachingAllocator> pool;
    std::vector<std::shared_ptr<const void>> keep_alive;
  };
  std::optional<Capture> capture_;
  std::atomic<bool> capturing_{false};  // capture_ is set: the cheap test before the lock
  std::atomic<std::thread::id> capture_thread_{};  // the thread capturing; none between captures
  mutable std::mutex capture_mutex_;  // guards capture_ and parked_pools_; never held while taking result_mutex_
  std::vector<CachingAllocator*> parked_pools_;  // released during a capture: deleted at its end
  // The graph whose index checks are the pending ones (result_mutex_); null: eager checks.
  const void* installed_checks_ = nullptr;
  // Made at the first gemm_epilogue that Lt may take; nullptr: cuBLASLt did not start here.
  CublasLtMatmuls* cublas_lt_ = nullptr;
  bool cublas_lt_tried_ = false;
  std::mutex cublas_lt_mutex_;                // guards cublas_lt_ (handle, plans, workspace)
  std::atomic<int64_t> fused_epilogues_{0};  // gemm_epilogue calls run by cuBLASLt
};

}  // namespace vgrad::cuda

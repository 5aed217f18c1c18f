// The CUDA side of the entry points core declares (core/backend.h): device queries,
// the per-device CudaBackend instances, page-locked host memory; and the raw device
// allocator under each CachingAllocator, which names free memory when it runs out.
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_set>

#include "core/error.h"
#include "cuda/check.h"
#include "cuda/cuda_backend.h"

namespace vgrad::cuda {
namespace {

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

void select_device(int index) {
  int current = -1;
  VGRAD_CUDA_CHECK(cudaGetDevice(&current));
  if (current != index) VGRAD_CUDA_CHECK(cudaSetDevice(index));
}

// The first refusal returns nullptr, so the caching allocator gives its caches back; the
// retry's refusal throws, naming the device's free memory.
void* raw_device_alloc(size_t bytes, int device, bool last_try) {
  select_device(device);
  void* ptr = nullptr;
  const cudaError_t status = cudaMalloc(&ptr, bytes);
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // not sticky: clear it so later launch checks stay clean
    if (last_try) throw_out_of_memory(bytes, device);
    return nullptr;
  }
  VGRAD_CUDA_CHECK(status);
  return ptr;
}

// Never throws: it runs while caches are released, destructors included.
void raw_device_free(void* ptr, int device) {
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current != device) (void)cudaSetDevice(device);
  if (cudaFree(ptr) != cudaSuccess) (void)cudaGetLastError();
}

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

namespace {
// A counter of GPU `index`'s backend; 0 without that GPU, or when its backend did not start.
template <class Read> int64_t backend_counter(int index, Read read) {
  if (index < 0 || index >= device_count() || index >= kMaxDevices) return 0;
  try {
    return read(static_cast<CudaBackend&>(backend(index)));
  } catch (...) {
    return 0;
  }
}
}  // namespace

int64_t host_wait_count(int index) {
  return backend_counter(index, [](const CudaBackend& b) { return b.host_waits(); });
}

int64_t fused_gemm_epilogue_count(int index) {
  return backend_counter(index, [](const CudaBackend& b) { return b.fused_epilogues(); });
}

int64_t table_upload_count(int index) {
  return backend_counter(index, [](const CudaBackend& b) { return b.table_uploads(); });
}

void* compute_stream(int index) { return static_cast<CudaBackend&>(backend(index)).compute_stream(); }

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

// cuda::Graph (core/cuda_graph.h): stream capture of a step on a CudaBackend's one stream,
// with a private memory pool, and its replays. The backend's side of it is here too:
// begin/end of a capture, the refusals, and a replay's index checks. Host code.
#include <cuda_runtime_api.h>

#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "core/cuda_graph.h"
#include "core/error.h"
#include "cuda/check.h"
#include "cuda/cuda_backend.h"

namespace vgrad::cuda {
namespace {

// Why a GPU's pools keep their cache while it captures (CachingAllocator::keep_cache).
constexpr const char* kCaptureUnderway =
    "a CUDA graph capture is underway on this device, and no cudaFree may run inside one; call empty_cache before "
    "the capture or after it";

// cudaMalloc is not stream-ordered, so a thread-local capture refuses it on the capturing
// thread; the pool's fresh blocks are not part of the graph (only their addresses are), so
// this thread relaxes the rule while it allocates one, as cudaThreadExchangeStreamCaptureMode
// documents. Blocks are freed only when the pool goes, after its graph.
class RelaxedCaptureMode {
 public:
  RelaxedCaptureMode() { (void)cudaThreadExchangeStreamCaptureMode(&mode_); }
  ~RelaxedCaptureMode() { (void)cudaThreadExchangeStreamCaptureMode(&mode_); }
  RelaxedCaptureMode(const RelaxedCaptureMode&) = delete;
  RelaxedCaptureMode& operator=(const RelaxedCaptureMode&) = delete;

 private:
  cudaStreamCaptureMode mode_ = cudaStreamCaptureModeRelaxed;
};

// Out of memory here keeps every cache: the pool's own free blocks are the graph's, and
// the device's other pools cannot give theirs back (cudaFree) inside a capture.
void* pool_alloc(size_t bytes, int device, bool last_try) {
  void* ptr = nullptr;
  {
    RelaxedCaptureMode relaxed;
    ptr = raw_device_alloc(bytes, device, false);
  }
  if (ptr == nullptr && last_try)
    fail(
        "cuda::Graph: cuda:{}: out of memory allocating {} bytes for a graph's private pool (no cache can be given "
        "back during a capture; empty_cache(device) before capturing frees the device's other caches)",
        device, bytes);
  return ptr;
}

// Every pool made, to sum the live ones (graph_pool_stats).
std::mutex& pools_mutex() {
  static std::mutex mutex;
  return mutex;
}
std::vector<std::pair<int, std::weak_ptr<CachingAllocator>>>& pools() {
  static auto* list = new std::vector<std::pair<int, std::weak_ptr<CachingAllocator>>>();
  return *list;
}

std::shared_ptr<CachingAllocator> new_pool(int index) {
  // The last holder may go inside a later capture (a tensor of this graph dropped while the
  // next step is captured): the backend then keeps the pool until that capture ends.
  std::shared_ptr<CachingAllocator> pool(
      new CachingAllocator(&pool_alloc, &raw_device_free, index, backend(index).memory_limit()),
      [index](CachingAllocator* p) { static_cast<CudaBackend&>(backend(index)).release_pool(p); });
  pool->keep_cache("it is a CUDA graph's private pool, whose free blocks the graph's replays still write");
  std::lock_guard lock(pools_mutex());
  auto& list = pools();
  std::erase_if(list, [](const auto& entry) { return entry.second.expired(); });
  list.emplace_back(index, pool);
  return pool;
}

CudaBackend& cuda_backend(Device device) {
  if (!device.is_cuda()) fail("cuda::Graph: capture needs a CUDA device, got {}", device.str());
  return static_cast<CudaBackend&>(backend(device.index));
}

}  // namespace

// ---- the backend's side ----

void CudaBackend::refuse_in_capture(const char* what, const char* why) const {
  if (!capturing_.load(std::memory_order_acquire)) return;
  fail("cuda:{}: {} inside a CUDA graph capture: {}", index_, what, why);
}

std::shared_ptr<CachingAllocator> CudaBackend::capture_pool() {
  if (!capturing_.load(std::memory_order_acquire)) return nullptr;
  std::lock_guard lock(capture_mutex_);
  return capture_ ? capture_->pool : nullptr;
}

void CudaBackend::begin_capture(std::shared_ptr<CachingAllocator> pool) {
  if (capturing_.load()) fail("cuda:{}: cuda::Graph: a capture is already in progress on this device", index_);
  synchronize();  // reports pending bad indices now; the capture's checks number from 0
  activate();
  {
    std::lock_guard lock(result_mutex_);
    if (pending_count_ != 0) fail("cuda:{}: internal error: index checks pending after a wait", index_);
    installed_checks_ = nullptr;
  }
  // Thread-local: a capture-unsafe call from this thread (a cudaMalloc outside the pool, a
  // synchronous copy) fails the capture; other threads (data loaders) are not affected.
  // Out of memory in the device's pools gives no cache back until the capture ends.
  for (CachingAllocator* device_pool : pools()) device_pool->keep_cache(kCaptureUnderway);
  const cudaError_t begun = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal);
  if (begun != cudaSuccess)
    for (CachingAllocator* device_pool : pools()) device_pool->keep_cache(nullptr);
  VGRAD_CUDA_CHECK(begun);
  std::lock_guard lock(capture_mutex_);
  capture_.emplace(Capture{std::move(pool), {}});
  capture_thread_.store(std::this_thread::get_id(), std::memory_order_release);
  capturing_.store(true, std::memory_order_release);
}

void CudaBackend::release_pool(CachingAllocator* pool) noexcept {
  {
    std::lock_guard lock(capture_mutex_);
    if (capture_) {
      try {
        parked_pools_.push_back(pool);
        return;
      } catch (...) {  // out of host memory: free it now; the capture will report the cudaFree
      }
    }
  }
  delete pool;
}

CudaBackend::CapturedWork CudaBackend::end_capture(bool failed) {
  CapturedWork work;
  std::optional<Capture> ended;  // dropped outside the lock: its pool's deleter takes it
  std::vector<CachingAllocator*> parked;
  {
    std::lock_guard lock(capture_mutex_);
    if (capture_) work.keep_alive = std::move(capture_->keep_alive);
    ended = std::move(capture_);
    capture_.reset();
    parked.swap(parked_pools_);
    capturing_.store(false, std::memory_order_release);
    capture_thread_.store(std::thread::id(), std::memory_order_release);
  }
  {
    // The checks queued in the capture ran nothing: they become the graph's, and the
    // host's list starts empty again.
    std::lock_guard lock(result_mutex_);
    work.checks.assign(pending_checks_.begin(), pending_checks_.begin() + pending_count_);
    pending_count_ = 0;
  }
  activate();
  const cudaError_t status = cudaStreamEndCapture(stream_, &work.graph);
  for (CachingAllocator* pool : parked) delete pool;  // the capture is over: cudaFree is allowed again
  for (CachingAllocator* device_pool : pools()) device_pool->keep_cache(nullptr);
  if (failed || status != cudaSuccess) {
    if (work.graph != nullptr) (void)cudaGraphDestroy(work.graph);
    work.graph = nullptr;
    (void)cudaGetLastError();
    if (!failed)
      fail("cuda:{}: cuda::Graph: the capture failed ({}): a call in the step is not allowed during capture",
           index_, cudaGetErrorString(status));
  }
  return work;
}

void CudaBackend::launch_graph(cudaGraphExec_t exec, const void* owner, const std::vector<IndexCheck>& checks) {
  refuse_in_capture("cuda::Graph::replay()", "replay a graph outside any capture");
  activate();
  std::lock_guard lock(result_mutex_);
  if (!checks.empty() && installed_checks_ != owner) {
    // The graph's kernels number their checks from 0: the pending list must be theirs.
    if (pending_count_ > 0) wait_locked(false);  // reports what is pending, resets the record
    std::copy(checks.begin(), checks.end(), pending_checks_.begin());
    pending_count_ = static_cast<int>(checks.size());
    installed_checks_ = owner;
  }
  VGRAD_CUDA_CHECK(cudaGraphLaunch(exec, stream_));
}

void CudaBackend::finish_work() noexcept {
  if (cudaSetDevice(index_) != cudaSuccess) (void)cudaGetLastError();
  host_waits_.fetch_add(1, std::memory_order_relaxed);
  if (cudaStreamSynchronize(stream_) != cudaSuccess) (void)cudaGetLastError();
}

// ---- cuda::Graph ----

struct Graph::State {
  CudaBackend* backend = nullptr;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  std::shared_ptr<CachingAllocator> pool;
  std::vector<std::shared_ptr<const void>> keep_alive;
  std::vector<IndexCheck> checks;
  int64_t replays = 0;

  ~State() {
    if (exec != nullptr) (void)cudaGraphExecDestroy(exec);
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
  }
};

Graph::Graph() = default;
Graph::~Graph() { reset(); }

void Graph::capture(const std::function<void()>& step, Device device) {
  if (state_) fail("cuda::Graph: capture() on a graph that holds a captured step; reset() it first");
  CudaBackend& backend = cuda_backend(device);
  auto state = std::make_unique<State>();
  state->backend = &backend;
  state->pool = new_pool(device.index);
  backend.begin_capture(state->pool);
  try {
    step();
  } catch (...) {
    (void)backend.end_capture(true);
    throw;
  }
  CudaBackend::CapturedWork work = backend.end_capture(false);
  state->graph = work.graph;
  state->keep_alive = std::move(work.keep_alive);
  state->checks = std::move(work.checks);
  VGRAD_CUDA_CHECK(cudaGraphInstantiate(&state->exec, state->graph, 0));
  state_ = std::move(state);
}

void Graph::replay() {
  if (!state_) fail("cuda::Graph: replay() before capture()");
  state_->backend->launch_graph(state_->exec, state_.get(), state_->checks);
  ++state_->replays;
}

void Graph::reset() {
  if (state_ && state_->replays > 0) state_->backend->finish_work();  // the last replay is done first
  state_.reset();
}

bool Graph::captured() const { return state_ != nullptr; }
int64_t Graph::replay_count() const { return state_ ? state_->replays : 0; }

int64_t Graph::kernel_count() const {
  if (!state_) return 0;
  size_t count = 0;
  VGRAD_CUDA_CHECK(cudaGraphGetNodes(state_->graph, nullptr, &count));  // null nodes: the count only
  std::vector<cudaGraphNode_t> nodes(count);
  VGRAD_CUDA_CHECK(cudaGraphGetNodes(state_->graph, nodes.data(), &count));
  int64_t kernels = 0;
  for (size_t i = 0; i < count; ++i) {
    cudaGraphNodeType type = cudaGraphNodeTypeEmpty;
    VGRAD_CUDA_CHECK(cudaGraphNodeGetType(nodes[i], &type));
    if (type == cudaGraphNodeTypeKernel) ++kernels;
  }
  return kernels;
}

MemoryStats graph_pool_stats(int index) {
  MemoryStats total;
  std::lock_guard lock(pools_mutex());
  for (const auto& [device, weak] : pools()) {
    const std::shared_ptr<CachingAllocator> pool = weak.lock();
    if (!pool || device != index) continue;
    total += pool->stats();
  }
  return total;
}

}  // namespace vgrad::cuda

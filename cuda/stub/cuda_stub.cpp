// The CUDA entry points of a build without CUDA: queries answer "none", and asking
// for a CUDA backend says how to get one.
#include <cstdlib>

#include "core/error.h"
#include "core/backend.h"
#include "core/cuda_graph.h"

namespace vgrad::cuda {

bool is_available() { return false; }
int device_count() { return 0; }
bool built_with_cuda() { return false; }
Backend& backend(int index) {
  fail("cuda:{}: this build has no CUDA support (reconfigure with -DVGRAD_CUDA=ON)", index);
}
void* pinned_alloc(size_t bytes) { return std::malloc(bytes); }
void pinned_free(void* ptr) { std::free(ptr); }
bool built_with_cudnn() { return false; }
bool cudnn_enabled() { return false; }
void set_cudnn_enabled(bool) {}
int64_t host_wait_count(int) { return 0; }
int64_t fused_gemm_epilogue_count(int) { return 0; }
int64_t table_upload_count(int) { return 0; }
void* compute_stream(int index) {
  (void)backend(index);  // throws
  return nullptr;
}
bool tf32_matmul_enabled() { return false; }  // no GPU math to switch
void set_tf32_matmul_enabled(bool) {}
bool tf32_conv_enabled() { return false; }
void set_tf32_conv_enabled(bool) {}


// cuda::Graph: nothing to capture without a GPU.
struct Graph::State {};
Graph::Graph() = default;
Graph::~Graph() = default;
void Graph::capture(const std::function<void()>&, Device device) {
  fail("cuda::Graph: {}: this build has no CUDA support (reconfigure with -DVGRAD_CUDA=ON)", device.str());
}
void Graph::replay() { fail("cuda::Graph: replay() before capture()"); }
void Graph::reset() {}
bool Graph::captured() const { return false; }
int64_t Graph::replay_count() const { return 0; }
int64_t Graph::kernel_count() const { return 0; }
MemoryStats graph_pool_stats(int) { return {}; }

}  // namespace vgrad::cuda

// conv2d on the GPU through cuDNN's convolution API (cudnnConvolutionForward,
// BackwardData, BackwardFilter; deprecated in cuDNN 9 but supported): one plan per
// (pass, dtype, geometry, TF32 or not) with its descriptors and the algorithm cudnnGet*_v7 ranks
// first (for float32 never one that converts to 16 bits; with TF32 on, the first that uses
// tensor cores), made once and cached; the workspace comes from the device's caching allocator.
// A build without cuDNN (VGRAD_CUDNN=OFF) compiles only the switch, and conv2d_impl
// declines so that autograd/ops/conv.cpp uses im2col + cuBLAS (cuda/conv.cu, gemm.cpp).
#include <atomic>
#include <cstdlib>
#include <exception>
#include <string>

#include "cuda/check.h"
#include "cuda/cuda_backend.h"

#ifdef VGRAD_WITH_CUDNN
#include <cudnn.h>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "cuda/libraries.h"
#include "cuda/plan_cache.h"
#endif

namespace vgrad::cuda {
namespace {

// -1: not decided yet (the environment's VGRAD_CUDNN decides at the first question).
std::atomic<int> cudnn_switch{-1};

}  // namespace

#ifdef VGRAD_WITH_CUDNN
bool built_with_cudnn() { return true; }
#else
bool built_with_cudnn() { return false; }
#endif

namespace {

// Whether cuDNN's library opens on this machine: asked once, a failure is an answer here
// (conv2d then runs im2col + cuBLAS), not an error.
bool cudnn_loads() {
#ifdef VGRAD_WITH_CUDNN
  static const bool loads = [] {
    try {
      (void)cudnn();
      return true;
    } catch (const std::exception&) {
      return false;
    }
  }();
  return loads;
#else
  return false;
#endif
}

}  // namespace

bool cudnn_enabled() {
  if (!built_with_cudnn() || !cudnn_loads()) return false;
  int state = cudnn_switch.load();
  if (state < 0) {
    const char* env = std::getenv("VGRAD_CUDNN");
    const std::string value = env == nullptr ? "" : env;
    const int from_env = value == "0" || value == "off" || value == "OFF" || value == "false" ? 0 : 1;
    cudnn_switch.compare_exchange_strong(state, from_env);
    state = cudnn_switch.load();
  }
  return state == 1;
}

void set_cudnn_enabled(bool on) { cudnn_switch.store(on ? 1 : 0); }

#ifndef VGRAD_WITH_CUDNN

class CudnnConvolutions {};
void destroy_cudnn(CudnnConvolutions*) noexcept {}
bool CudaBackend::conv2d_impl(ConvPass, const View&, const View&, const View&, const ConvGeometry&) { return false; }

#else

namespace {

void check_cudnn(cudnnStatus_t status, const char* call, const char* file, int line) {
  if (status == CUDNN_STATUS_SUCCESS) return;
  char message[512] = "see cuDNN's log (CUDNN_LOGERR_DBG=1)";
#if CUDNN_MAJOR >= 9
  cudnn().get_last_error_string(message, sizeof(message));
#endif
  detail::throw_library_error("cuDNN", call, file, line, cudnn().get_error_string(status), message);
}
#define VGRAD_CUDNN_CHECK(call) check_cudnn((call), #call, __FILE__, __LINE__)

// cuDNN's storage type, its compute type and the math it may use for one vgrad dtype:
// float32 and float64 on FMA units only (so the GPU matches the CPU's float32 within
// float32's rounding), unless TF32 is switched on for float32 (cuda::set_tf32_conv_enabled:
// CUDNN_DEFAULT_MATH, which lets cuDNN use TF32 tensor cores, as PyTorch's allow_tf32 does);
// 16-bit on tensor cores with float32 accumulation.
struct CudnnTypes {
  cudnnDataType_t data, compute;
  cudnnMathType_t math;
};
CudnnTypes cudnn_types(DType dtype, bool tf32) {
  switch (dtype) {
    case DType::Float32:
      return {CUDNN_DATA_FLOAT, CUDNN_DATA_FLOAT, tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH};
    case DType::Float64:
      return {CUDNN_DATA_DOUBLE, CUDNN_DATA_DOUBLE, CUDNN_FMA_MATH};
    case DType::BFloat16:
      return {CUDNN_DATA_BFLOAT16, CUDNN_DATA_FLOAT, CUDNN_TENSOR_OP_MATH};
    case DType::Float16:
      return {CUDNN_DATA_HALF, CUDNN_DATA_FLOAT, CUDNN_TENSOR_OP_MATH};
    case DType::Int64:
      break;
  }
  fail("conv2d: cuDNN has no convolution for {}", dtype_name(dtype));
}

// An FMA request keeps FMA whatever the heuristics rank (they may offer TF32); otherwise
// (16-bit, float32 with TF32) the algorithm runs with the math it was ranked with.
cudnnMathType_t math_for(const CudnnTypes& types, cudnnMathType_t ranked) {
  return types.math == CUDNN_FMA_MATH ? CUDNN_FMA_MATH : ranked;
}

int as_int(int64_t v) { return static_cast<int>(v); }  // core checked every size fits an int

}  // namespace

// One geometry's descriptors, algorithm and workspace size, for one pass and dtype.
struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  int algorithm = -1;  // cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t; -1: none usable
  size_t workspace = 0;

  ConvPlan() = default;
  ConvPlan(const ConvPlan&) = delete;
  ConvPlan& operator=(const ConvPlan&) = delete;
  ~ConvPlan() {
    if (x != nullptr) (void)cudnn().destroy_tensor_descriptor(x);
    if (y != nullptr) (void)cudnn().destroy_tensor_descriptor(y);
    if (w != nullptr) (void)cudnn().destroy_filter_descriptor(w);
    if (conv != nullptr) (void)cudnn().destroy_convolution_descriptor(conv);
  }
};

class CudnnConvolutions {
 public:
  // nullptr (with a warning) where cuDNN does not load on this machine.
  static CudnnConvolutions* create(cudaStream_t stream, int device) {
    try {
      (void)cudnn();  // dlopen's libcudnn here, at the first conv2d (cuda/libraries.h)
    } catch (const Error& error) {
      spdlog::warn("cuda:{}: {}; conv2d uses im2col + cuBLAS", device, error.what());
      return nullptr;
    }
    cudnnHandle_t handle = nullptr;
    const cudnnStatus_t status = cudnn().create(&handle);
    if (status != CUDNN_STATUS_SUCCESS) {
      spdlog::warn("cuda:{}: cuDNN did not start ({}); conv2d uses im2col + cuBLAS", device,
                   cudnn().get_error_string(status));
      return nullptr;
    }
    if (cudnn().set_stream(handle, stream) != CUDNN_STATUS_SUCCESS) {
      (void)cudnn().destroy(handle);
      return nullptr;
    }
    return new CudnnConvolutions(handle);
  }
  ~CudnnConvolutions() { (void)cudnn().destroy(handle_); }
  CudnnConvolutions(const CudnnConvolutions&) = delete;
  CudnnConvolutions& operator=(const CudnnConvolutions&) = delete;

  // Runs `pass`; false when cuDNN offers no algorithm for it (the caller falls back).
  bool run(ConvPass pass, const View& x, const View& w, const View& y, const ConvGeometry& g,
           CachingAllocator& allocator) {
    const ConvPlan& plan = plan_for(pass, x.dtype, g);
    if (plan.algorithm < 0) return false;
    void* workspace = plan.workspace > 0 ? allocator.allocate(plan.workspace) : nullptr;
    // Stream-ordered: later work on the one stream runs after the convolution, so the
    // block may go back to the cache as soon as the call is queued.
    struct Release {
      CachingAllocator& allocator;
      void* ptr;
      size_t bytes;
      ~Release() {
        if (ptr != nullptr) allocator.deallocate(ptr, bytes);
      }
    } release{allocator, workspace, plan.workspace};
    const double one_d = 1.0, zero_d = 0.0;
    const float one_f = 1.0f, zero_f = 0.0f;
    const bool wide = x.dtype == DType::Float64;  // alpha/beta are double for double data
    const void* alpha = wide ? static_cast<const void*>(&one_d) : &one_f;
    const void* beta = wide ? static_cast<const void*>(&zero_d) : &zero_f;
    switch (pass) {
      case ConvPass::Forward:
        VGRAD_CUDNN_CHECK(cudnn().convolution_forward(handle_, alpha, plan.x, x.data, plan.w, w.data, plan.conv,
                                                      cudnnConvolutionFwdAlgo_t(plan.algorithm), workspace,
                                                      plan.workspace, beta, plan.y, y.data));
        break;
      case ConvPass::BackwardData:
        VGRAD_CUDNN_CHECK(cudnn().convolution_backward_data(handle_, alpha, plan.w, w.data, plan.y, y.data, plan.conv,
                                                            cudnnConvolutionBwdDataAlgo_t(plan.algorithm), workspace,
                                                            plan.workspace, beta, plan.x, x.data));
        break;
      case ConvPass::BackwardFilter:
        VGRAD_CUDNN_CHECK(cudnn().convolution_backward_filter(handle_, alpha, plan.x, x.data, plan.y, y.data, plan.conv,
                                                              cudnnConvolutionBwdFilterAlgo_t(plan.algorithm),
                                                              workspace, plan.workspace, beta, plan.w, w.data));
        break;
    }
    return true;
  }

 private:
  explicit CudnnConvolutions(cudnnHandle_t handle) : handle_(handle) {}

  const ConvPlan& plan_for(ConvPass pass, DType dtype, const ConvGeometry& g) {
    const bool tf32 = dtype == DType::Float32 && tf32_conv_enabled();
    const ConvPlanKey key = conv_plan_key(pass, dtype, g, tf32);
    if (ConvPlan* found = plans_.find(key)) return *found;
    ConvPlan& plan = plans_.emplace(key);
    try {
      const CudnnTypes types = cudnn_types(dtype, tf32);
      describe(plan, types, g);
      choose_algorithm(plan, pass, types);
    } catch (...) {
      plans_.erase(key);
      throw;
    }
    return plan;
  }

  static void describe(ConvPlan& plan, const CudnnTypes& types, const ConvGeometry& g) {
    const WindowGeometry& s = g.window;
    VGRAD_CUDNN_CHECK(cudnn().create_tensor_descriptor(&plan.x));
    VGRAD_CUDNN_CHECK(cudnn().create_tensor_descriptor(&plan.y));
    VGRAD_CUDNN_CHECK(cudnn().create_filter_descriptor(&plan.w));
    VGRAD_CUDNN_CHECK(cudnn().create_convolution_descriptor(&plan.conv));
    VGRAD_CUDNN_CHECK(cudnn().set_tensor_4d_descriptor(plan.x, CUDNN_TENSOR_NCHW, types.data, as_int(s.batch),
                                                       as_int(s.channels), as_int(s.height), as_int(s.width)));
    VGRAD_CUDNN_CHECK(cudnn().set_tensor_4d_descriptor(plan.y, CUDNN_TENSOR_NCHW, types.data, as_int(s.batch),
                                                       as_int(g.filters), as_int(s.out_h), as_int(s.out_w)));
    VGRAD_CUDNN_CHECK(cudnn().set_filter_4d_descriptor(plan.w, types.data, CUDNN_TENSOR_NCHW, as_int(g.filters),
                                                       as_int(s.channels / g.groups), as_int(s.kernel_h),
                                                       as_int(s.kernel_w)));
    VGRAD_CUDNN_CHECK(cudnn().set_convolution_2d_descriptor(
        plan.conv, as_int(s.pad_h), as_int(s.pad_w), as_int(s.stride_h), as_int(s.stride_w), as_int(s.dilation_h),
        as_int(s.dilation_w), CUDNN_CROSS_CORRELATION, types.compute));
    VGRAD_CUDNN_CHECK(cudnn().set_convolution_group_count(plan.conv, as_int(g.groups)));
    VGRAD_CUDNN_CHECK(cudnn().set_convolution_math_type(plan.conv, types.math));
  }

  // The first algorithm the heuristics rank that runs with our math type, and its
  // workspace under that math type; none leaves algorithm = -1. `descriptors` are the
  // pass's own, in the order its ranking and workspace calls take them.
  template <class Perf, int kCount, class Rank, class Workspace, class... Descriptors>
  void choose(ConvPlan& plan, const CudnnTypes& types, Perf (&perf)[kCount], Rank rank, Workspace workspace,
              Descriptors... descriptors) {
    int count = 0;
    VGRAD_CUDNN_CHECK(rank(handle_, descriptors..., kCount, &count, perf));
    // float32 data never runs an algorithm that may convert it to 16 bits; with TF32 on,
    // the first tensor-core algorithm is taken over better-ranked FMA ones (the switch
    // asks for tensor cores), and an FMA one only when no tensor-core one runs.
    const bool float32 = types.data == CUDNN_DATA_FLOAT;
    const bool tf32 = float32 && types.math != CUDNN_FMA_MATH;
    for (const bool tensor_cores_only : {tf32, false}) {
      for (int i = 0; i < count; ++i) {
        if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
        if (float32 && perf[i].mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) continue;
        if (tensor_cores_only && perf[i].mathType == CUDNN_FMA_MATH) continue;
        VGRAD_CUDNN_CHECK(cudnn().set_convolution_math_type(plan.conv, math_for(types, perf[i].mathType)));
        size_t bytes = 0;
        if (workspace(handle_, descriptors..., perf[i].algo, &bytes) != CUDNN_STATUS_SUCCESS) continue;
        plan.algorithm = int(perf[i].algo);
        plan.workspace = bytes;
        return;
      }
    }
  }

  void choose_algorithm(ConvPlan& plan, ConvPass pass, const CudnnTypes& types) {
    switch (pass) {
      case ConvPass::Forward: {
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        return choose(plan, types, perf, cudnn().get_convolution_forward_algorithm_v7,
                      cudnn().get_convolution_forward_workspace_size, plan.x, plan.w, plan.conv, plan.y);
      }
      case ConvPass::BackwardData: {  // dx from dy
        cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        return choose(plan, types, perf, cudnn().get_convolution_backward_data_algorithm_v7,
                      cudnn().get_convolution_backward_data_workspace_size, plan.w, plan.y, plan.conv, plan.x);
      }
      case ConvPass::BackwardFilter: {  // dweight from x and dy
        cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        return choose(plan, types, perf, cudnn().get_convolution_backward_filter_algorithm_v7,
                      cudnn().get_convolution_backward_filter_workspace_size, plan.x, plan.y, plan.conv, plan.w);
      }
    }
  }

  cudnnHandle_t handle_;
  // A model has a handful of conv shapes, but every batch size (a last partial batch,
  // evaluation batches) and input size adds three plans (one per pass): past
  // kMaxPlans the least recently used goes (its descriptors are host-side; a call
  // already queued does not need them).
  static constexpr size_t kMaxPlans = 256;
  PlanCache<ConvPlanKey, ConvPlan> plans_{kMaxPlans};
};

void destroy_cudnn(CudnnConvolutions* convolutions) noexcept { delete convolutions; }

bool CudaBackend::conv2d_impl(ConvPass pass, const View& x, const View& w, const View& y, const ConvGeometry& g) {
  if (!cudnn_enabled()) return false;
  activate();
  std::lock_guard lock(cudnn_mutex_);  // a cuDNN handle must not be used by two threads at once
  // The handle is made eagerly, never in a graph capture (cudnnCreate allocates, which a
  // capture refuses, and a failed create would leave cuDNN off for good): a capture before
  // any eager convolution takes im2col.
  if (!cudnn_tried_ && !capturing_.load(std::memory_order_acquire)) {
    cudnn_tried_ = true;
    cudnn_ = CudnnConvolutions::create(stream_, index_);
  }
  // The workspace is a temporary: from a CUDA graph's pool while one captures.
  return cudnn_ != nullptr && cudnn_->run(pass, x, w, y, g, temporary_allocator());
}

#endif

}  // namespace vgrad::cuda

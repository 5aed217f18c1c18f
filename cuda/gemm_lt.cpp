// GEMMs with epilogues through cuBLASLt (Backend::gemm_epilogue): linear's bias (linear_relu's
// too, its ReLU then a kernel of its own) and linear's bias gradient from its dW GEMM, each in
// the GEMM's own launch.
// One Lt handle and one workspace per device, made at the first call; one plan (descriptors,
// heuristic's first algorithm) per shape, alignment, dtype and TF32 setting, cached. float64,
// a misaligned bias vector, and shapes Lt has no algorithm for decline to the composed path
// (Backend::gemm_epilogue_impl). Side by side with cuda/gemm.cpp (plain GEMMs, cuBLAS).
#include <spdlog/spdlog.h>

#include <cstring>

#include "core/error.h"
#include "cuda/check.h"
#include "cuda/cuda_backend.h"
#include "cuda/gemm_lt.h"
#include "cuda/libraries.h"
#include "cuda/plan_cache.h"

namespace vgrad::cuda {
namespace {

// Each device's Lt workspace: a matmul may use less, and never allocates (so it never waits,
// and is legal during CUDA graph capture).
constexpr size_t kWorkspaceBytes = size_t(4) << 20;

cublasLtEpilogue_t lt_epilogue(LtEpilogue epilogue) {
  switch (epilogue) {
    case LtEpilogue::Bias:
      return CUBLASLT_EPILOGUE_BIAS;
    case LtEpilogue::BiasGradB: return CUBLASLT_EPILOGUE_BGRADB;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

cudaDataType_t lt_data_type(DType dtype) {
  switch (dtype) {
    case DType::Float32: return CUDA_R_32F;
    case DType::BFloat16: return CUDA_R_16BF;
    case DType::Float16: return CUDA_R_16F;
    default: fail("cuBLASLt epilogue: {} is not taken (lt_declines)", dtype_name(dtype));
  }
}

// Attributes are set from a typed value, so the size Lt checks is always the value's.
template <class T> void set(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute, const T& value) {
  VGRAD_CUBLAS_CHECK(cublas_lt().matmul_desc_set_attribute(desc, attribute, &value, sizeof(value)));
}
template <class T> void set(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attribute, const T& value) {
  VGRAD_CUBLAS_CHECK(cublas_lt().preference_set_attribute(pref, attribute, &value, sizeof(value)));
}

// One shape's descriptors and algorithm; usable == false: Lt has none (the key then declines).
struct LtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t first = nullptr, second = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool usable = false;

  LtPlan() = default;
  LtPlan(const LtPlan&) = delete;
  LtPlan& operator=(const LtPlan&) = delete;
  ~LtPlan() {
    if (desc != nullptr) (void)cublas_lt().matmul_desc_destroy(desc);
    for (cublasLtMatrixLayout_t layout : {first, second, d})
      if (layout != nullptr) (void)cublas_lt().matrix_layout_destroy(layout);
  }
};

// The plan's matmul descriptor and layouts (host-side calls: no GPU needed).
void describe_descriptors(LtPlan& plan, const LtProblem& p, const GemmArgs& g, bool tf32, const void* vector) {
  const cudaDataType_t type = lt_data_type(g.dtype);
  // float32 accumulation for every dtype, as cuda/gemm.cpp; TF32 products when switched on.
  const cublasComputeType_t compute = g.dtype == DType::Float32 && tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  VGRAD_CUBLAS_CHECK(cublas_lt().matmul_desc_create(&plan.desc, compute, CUDA_R_32F));
  set(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, int32_t(p.first.transposed ? CUBLAS_OP_T : CUBLAS_OP_N));
  set(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, int32_t(p.second.transposed ? CUBLAS_OP_T : CUBLAS_OP_N));
  set(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(lt_epilogue(p.epilogue)));
  if (vector != nullptr) {
    set(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, int32_t(type));  // the output's, as Lt requires
    set(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, vector);           // the heuristic reads its alignment
  }
  VGRAD_CUBLAS_CHECK(cublas_lt().matrix_layout_create(&plan.first, type, p.first.rows, p.first.cols, p.first.ld));
  VGRAD_CUBLAS_CHECK(cublas_lt().matrix_layout_create(&plan.second, type, p.second.rows, p.second.cols, p.second.ld));
  VGRAD_CUBLAS_CHECK(cublas_lt().matrix_layout_create(&plan.d, type, p.m, p.n, p.ldd));
}

// The heuristic's search preferences for one plan (host-side: no GPU needed).
struct LtPreference {
  cublasLtMatmulPreference_t pref = nullptr;
  LtPreference(const LtProblem& p, const GemmArgs& g, size_t workspace_bytes) {
    VGRAD_CUBLAS_CHECK(cublas_lt().preference_create(&pref));
    try {
      set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t(workspace_bytes));
      // 16-bit: a split-K product sums its parts in float32 (or is not split), never in the
      // output type, so the result is rounded once, as the CPU's (INPLACE and OUTPUT_TYPE round
      // each part).
      if (g.dtype != DType::Float32)
        set(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, uint32_t(CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE));
      // The operands' real alignment (Lt assumes 256 bytes unless told).
      set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, pointer_alignment(p.first.data));
      set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, pointer_alignment(p.second.data));
      set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, pointer_alignment(g.c));
      set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, pointer_alignment(g.c));
    } catch (...) {
      (void)cublas_lt().preference_destroy(pref);
      throw;
    }
  }
  ~LtPreference() { (void)cublas_lt().preference_destroy(pref); }
  LtPreference(const LtPreference&) = delete;
  LtPreference& operator=(const LtPreference&) = delete;
};

}  // namespace

class CublasLtMatmuls {
 public:
  // nullptr (with a warning) where cuBLASLt does not load or start on this machine.
  static CublasLtMatmuls* create(int device, CachingAllocator& allocator) {
    cublasLtHandle_t handle = nullptr;
    try {
      VGRAD_CUBLAS_CHECK(cublas_lt().create(&handle));  // dlopen's libcublasLt here (cuda/libraries.h)
    } catch (const Error& error) {
      spdlog::warn("cuda:{}: {}; GEMM epilogues run as separate kernels", device, error.what());
      return nullptr;
    }
    return new CublasLtMatmuls(handle, allocator);
  }
  ~CublasLtMatmuls() {
    (void)cublas_lt().destroy(handle_);
    allocator_.deallocate(workspace_, kWorkspaceBytes);
  }
  CublasLtMatmuls(const CublasLtMatmuls&) = delete;
  CublasLtMatmuls& operator=(const CublasLtMatmuls&) = delete;

  // Queues the matmul on `stream`; false (nothing queued) where Lt has no algorithm for it.
  bool run(const GemmEpilogueArgs& args, bool tf32, cudaStream_t stream) {
    const LtProblem p = lt_problem(args);
    const void* vector = p.epilogue == LtEpilogue::BiasGradB ? args.bias_grad : args.bias;
    const LtPlanKey key = lt_plan_key(p, args.gemm.dtype, tf32, args.gemm.c, vector);
    LtPlan* plan = plans_.find(key);
    if (plan == nullptr) {
      plan = &plans_.emplace(key);
      try {
        describe(*plan, p, args.gemm, tf32, vector);
      } catch (...) {
        plans_.erase(key);
        throw;
      }
    }
    if (!plan->usable) return false;
    // The plan was chosen for this alignment; the vector itself is this call's.
    if (vector != nullptr) set(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, vector);
    const float alpha = 1.0f, beta = 0.0f;  // C is not read: D = epilogue(op(first)·op(second))
    const cublasStatus_t status =
        cublas_lt().matmul(handle_, plan->desc, &alpha, p.first.data, plan->first, p.second.data, plan->second, &beta,
                           args.gemm.c, plan->d, args.gemm.c, plan->d, &plan->algo, workspace_, kWorkspaceBytes, stream);
    if (status == CUBLAS_STATUS_NOT_SUPPORTED) {  // queued nothing: decline this key from now on
      plan->usable = false;
      return false;
    }
    VGRAD_CUBLAS_CHECK(status);
    return true;
  }

 private:
  // As cuda/cudnn.cpp's conv plans: every batch size adds plans, so the least recently used go.
  static constexpr size_t kMaxPlans = 256;

  CublasLtMatmuls(cublasLtHandle_t handle, CachingAllocator& allocator)
      : handle_(handle), allocator_(allocator), workspace_(allocator.allocate(kWorkspaceBytes)) {}

  // The heuristic's first algorithm for the plan's descriptors, or usable = false where it has none.
  void describe(LtPlan& plan, const LtProblem& p, const GemmArgs& g, bool tf32, const void* vector) {
    describe_descriptors(plan, p, g, tf32, vector);
    const LtPreference pref(p, g, kWorkspaceBytes);
    cublasLtMatmulHeuristicResult_t result;
    std::memset(&result, 0, sizeof(result));
    int found = 0;
    const cublasStatus_t status = cublas_lt().algo_get_heuristic(handle_, plan.desc, plan.first, plan.second, plan.d,
                                                                 plan.d, pref.pref, 1, &result, &found);
    // NOT_SUPPORTED: no heuristic for this configuration (an epilogue/dtype/layout Lt lacks).
    // Anything else declined is named once per plan, so a GPU run's log says why it was.
    const bool usable = status == CUBLAS_STATUS_SUCCESS && found >= 1 && result.state == CUBLAS_STATUS_SUCCESS &&
                        result.workspaceSize <= kWorkspaceBytes;
    if (!usable) {
      if (status != CUBLAS_STATUS_NOT_SUPPORTED)
        spdlog::warn(
            "cuBLASLt declined a {} GEMM epilogue (m {}, n {}, k {}, transposes {}/{}): heuristic status {}, "
            "{} result(s), state {}, workspace {} bytes; the composed path runs instead",
            dtype_name(g.dtype), p.m, p.n, p.k, p.first.transposed, p.second.transposed, int(status), found,
            int(result.state), result.workspaceSize);
      return;
    }
    plan.algo = result.algo;
    plan.usable = true;
  }

  cublasLtHandle_t handle_;
  CachingAllocator& allocator_;
  void* workspace_;
  PlanCache<LtPlanKey, LtPlan> plans_{kMaxPlans};
};

void destroy_cublas_lt(CublasLtMatmuls* matmuls) noexcept { delete matmuls; }

void check_lt_descriptors(const GemmEpilogueArgs& args, bool tf32) {
  const LtProblem p = lt_problem(args);
  LtPlan plan;
  describe_descriptors(plan, p, args.gemm, tf32, p.epilogue == LtEpilogue::BiasGradB ? args.bias_grad : args.bias);
  const LtPreference pref(p, args.gemm, kWorkspaceBytes);
}

void CudaBackend::gemm_epilogue_impl(const GemmEpilogueArgs& args) {
  if (!lt_declines(args)) {
    activate();
    std::lock_guard lock(cublas_lt_mutex_);  // one thread at a time on the handle, its plans and workspace
    // Lt's handle and workspace are made eagerly, never in a graph capture (cudaMalloc is
    // refused there): a capture before any eager epilogue takes the composed path.
    if (!cublas_lt_tried_ && !capturing_.load(std::memory_order_acquire)) {
      cublas_lt_tried_ = true;
      cublas_lt_ = CublasLtMatmuls::create(index_, allocator_);
    }
    if (cublas_lt_ != nullptr && cublas_lt_->run(args, tf32_matmul_enabled(), stream_)) {
      fused_epilogues_.fetch_add(1, std::memory_order_relaxed);
      const GemmArgs& g = args.gemm;
      if (args.epilogue == GemmEpilogue::BiasRelu) {  // Lt added the bias; relu keeps NaN (LtEpilogue)
        const View c = matrix_view(g.c, g.dtype, g.m, g.n, g.ldc, 1);
        unary(UnaryOp::Relu, c, c);
      }
      return;
    }
  }
  Backend::gemm_epilogue_impl(args);  // composed: copy + cuBLAS + ReLU, or cuBLAS + row sum
}

}  // namespace vgrad::cuda

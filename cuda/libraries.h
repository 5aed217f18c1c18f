// The CUDA libraries vgrad calls besides the runtime (cuBLAS, cuBLASLt, cuRAND, cuDNN, NCCL), opened
// with dlopen at their first use instead of linked, as core/cpu/gemm.cpp does for OpenBLAS.
// Why: the dynamic loader relocates libcublas + libcublasLt (600 MB of files) when a program
// starts, 155 MB of resident memory paid by every program linking vgrad, even one that
// trains on the CPU only. cuRAND, cuDNN and NCCL cost 1-3 MB each linked, but load the same
// way so that a CPU run maps none of them. The CUDA runtime stays linked (statically:
// kernel launches need it, and it costs 0.1 MB).
//
// Each library is a table of function pointers of the types the headers vgrad compiles
// against declare, bound once, by the soname of those headers' major version
// (libcublas.so.13). A missing library or symbol throws vgrad::Error naming both and what to
// install. Call sites read `cublas().gemm_ex(...)`. Host code only; internal to cuda/ (and
// distributed/nccl_communicator.cpp).
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <curand.h>
#if VGRAD_WITH_CUDNN
#include <cudnn.h>
#endif
#if VGRAD_WITH_NCCL
#include <nccl.h>
#endif

#include <string>

namespace vgrad::cuda {

// A shared library opened with dlopen(RTLD_NOW | RTLD_LOCAL) and never closed (the tables
// point into it). Searches the usual way (LD_LIBRARY_PATH, the executable's run path, the
// system's cache), then `fallback_dir`: where CMake found the library at configure time,
// which is what a linked library's run path gave before.
class SharedLibrary {
 public:
  // Throws "CUDA backend: cannot load <soname> (...): <dlerror>; install <what> or put its
  // folder on LD_LIBRARY_PATH".
  SharedLibrary(std::string soname, const std::string& fallback_dir, const std::string& what);
  const std::string& soname() const { return soname_; }
  // The address of `symbol`; throws naming the library, the symbol and dlerror().
  void* address(const char* symbol) const;
  template <class Function> void bind(Function*& function, const char* symbol) const {
    function = reinterpret_cast<Function*>(address(symbol));
  }

 private:
  std::string soname_;
  void* handle_ = nullptr;
};

// X(member, function) lists: the member has the declared type of `function`; where the
// header makes the name a macro (cublasCreate is cublasCreate_v2) both follow the macro.
#define VGRAD_CUDA_FUNCTION_MEMBER(member, function) decltype(&function) member = nullptr;

#define VGRAD_CUBLAS_FUNCTIONS(X)                     \
  X(create, cublasCreate)                             \
  X(destroy, cublasDestroy)                           \
  X(set_stream, cublasSetStream)                      \
  X(set_workspace, cublasSetWorkspace)                \
  X(sgemm, cublasSgemm)                               \
  X(dgemm, cublasDgemm)                               \
  X(sgemm_strided_batched, cublasSgemmStridedBatched) \
  X(dgemm_strided_batched, cublasDgemmStridedBatched) \
  X(get_status_name, cublasGetStatusName)             \
  X(get_status_string, cublasGetStatusString)

struct Cublas {
  VGRAD_CUBLAS_FUNCTIONS(VGRAD_CUDA_FUNCTION_MEMBER)
  // Overloaded in C++ (cublas_api.h adds inline wrappers that take the old cudaDataType
  // compute type), so decltype cannot name them: the C functions' types, written out and
  // checked against the header in libraries.cpp.
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                            const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                            cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
  cublasStatus_t (*gemm_strided_batched_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                            const void*, const void*, cudaDataType, int, long long int, const void*,
                                            cudaDataType, int, long long int, const void*, void*, cudaDataType, int,
                                            long long int, int, cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
};

// cuBLASLt (libcublasLt.so, the library libcublas itself loads): GEMMs with epilogues
// (cuda/gemm_lt.cpp).
#define VGRAD_CUBLASLT_FUNCTIONS(X)                                \
  X(create, cublasLtCreate)                                        \
  X(destroy, cublasLtDestroy)                                      \
  X(matmul, cublasLtMatmul)                                        \
  X(matmul_desc_create, cublasLtMatmulDescCreate)                  \
  X(matmul_desc_destroy, cublasLtMatmulDescDestroy)                \
  X(matmul_desc_set_attribute, cublasLtMatmulDescSetAttribute)     \
  X(matrix_layout_create, cublasLtMatrixLayoutCreate)              \
  X(matrix_layout_destroy, cublasLtMatrixLayoutDestroy)            \
  X(preference_create, cublasLtMatmulPreferenceCreate)             \
  X(preference_destroy, cublasLtMatmulPreferenceDestroy)           \
  X(preference_set_attribute, cublasLtMatmulPreferenceSetAttribute) \
  X(algo_get_heuristic, cublasLtMatmulAlgoGetHeuristic)

struct CublasLt {
  VGRAD_CUBLASLT_FUNCTIONS(VGRAD_CUDA_FUNCTION_MEMBER)
};

#define VGRAD_CURAND_FUNCTIONS(X)                 \
  X(create_generator, curandCreateGenerator)      \
  X(destroy_generator, curandDestroyGenerator)    \
  X(set_stream, curandSetStream)                  \
  X(set_seed, curandSetPseudoRandomGeneratorSeed) \
  X(set_offset, curandSetGeneratorOffset)         \
  X(generate_normal, curandGenerateNormal)        \
  X(generate_normal_double, curandGenerateNormalDouble)

struct Curand {
  VGRAD_CURAND_FUNCTIONS(VGRAD_CUDA_FUNCTION_MEMBER)
};

// Loaded at the first call (thread-safe; a failed load throws, and the next call tries again).
const Cublas& cublas();
const CublasLt& cublas_lt();
const Curand& curand();

#if VGRAD_WITH_CUDNN
#if CUDNN_MAJOR >= 9
#define VGRAD_CUDNN9_FUNCTIONS(X) X(get_last_error_string, cudnnGetLastErrorString)
#else
#define VGRAD_CUDNN9_FUNCTIONS(X)
#endif
#define VGRAD_CUDNN_FUNCTIONS(X)                                                                 \
  VGRAD_CUDNN9_FUNCTIONS(X)                                                                      \
  X(get_error_string, cudnnGetErrorString)                                                       \
  X(create, cudnnCreate)                                                                         \
  X(destroy, cudnnDestroy)                                                                       \
  X(set_stream, cudnnSetStream)                                                                  \
  X(create_tensor_descriptor, cudnnCreateTensorDescriptor)                                       \
  X(destroy_tensor_descriptor, cudnnDestroyTensorDescriptor)                                     \
  X(set_tensor_4d_descriptor, cudnnSetTensor4dDescriptor)                                        \
  X(create_filter_descriptor, cudnnCreateFilterDescriptor)                                       \
  X(destroy_filter_descriptor, cudnnDestroyFilterDescriptor)                                     \
  X(set_filter_4d_descriptor, cudnnSetFilter4dDescriptor)                                        \
  X(create_convolution_descriptor, cudnnCreateConvolutionDescriptor)                             \
  X(destroy_convolution_descriptor, cudnnDestroyConvolutionDescriptor)                           \
  X(set_convolution_2d_descriptor, cudnnSetConvolution2dDescriptor)                              \
  X(set_convolution_group_count, cudnnSetConvolutionGroupCount)                                  \
  X(set_convolution_math_type, cudnnSetConvolutionMathType)                                      \
  X(convolution_forward, cudnnConvolutionForward)                                                \
  X(convolution_backward_data, cudnnConvolutionBackwardData)                                     \
  X(convolution_backward_filter, cudnnConvolutionBackwardFilter)                                 \
  X(get_convolution_forward_algorithm_v7, cudnnGetConvolutionForwardAlgorithm_v7)                \
  X(get_convolution_forward_workspace_size, cudnnGetConvolutionForwardWorkspaceSize)             \
  X(get_convolution_backward_data_algorithm_v7, cudnnGetConvolutionBackwardDataAlgorithm_v7)     \
  X(get_convolution_backward_data_workspace_size, cudnnGetConvolutionBackwardDataWorkspaceSize)  \
  X(get_convolution_backward_filter_algorithm_v7, cudnnGetConvolutionBackwardFilterAlgorithm_v7) \
  X(get_convolution_backward_filter_workspace_size, cudnnGetConvolutionBackwardFilterWorkspaceSize)

struct Cudnn {
  VGRAD_CUDNN_FUNCTIONS(VGRAD_CUDA_FUNCTION_MEMBER)
};
const Cudnn& cudnn();
#endif

#if VGRAD_WITH_NCCL
#define VGRAD_NCCL_FUNCTIONS(X)       \
  X(get_unique_id, ncclGetUniqueId)   \
  X(comm_init_rank, ncclCommInitRank) \
  X(comm_destroy, ncclCommDestroy)    \
  X(comm_abort, ncclCommAbort)        \
  X(all_reduce, ncclAllReduce)        \
  X(broadcast, ncclBroadcast)         \
  X(all_gather, ncclAllGather)        \
  X(get_error_string, ncclGetErrorString)

struct Nccl {
  VGRAD_NCCL_FUNCTIONS(VGRAD_CUDA_FUNCTION_MEMBER)
};
const Nccl& nccl();
#endif

}  // namespace vgrad::cuda

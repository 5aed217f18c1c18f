// Checks for every CUDA runtime, cuBLAS and cuRAND call: a failure throws vgrad::Error
// naming the call as written, the file and line, and the library's own error text.
// Host code only; usable from .cpp (C++20) and .cu (C++17) files alike.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <curand.h>

#include <string>

namespace vgrad::cuda::detail {

// Throws vgrad::Error("<library> call <call> failed at <file>:<line>: <text> (<name>)").
[[noreturn]] void throw_library_error(const char* library, const char* call, const char* file, int line,
                                      const char* name, const char* text);
// Throws vgrad::Error(message): for .cu files, which cannot use vgrad::fail (fmt's
// consteval format strings do not survive nvcc).
[[noreturn]] void throw_error(const std::string& message);

const char* curand_status_name(curandStatus_t status);
const char* curand_status_text(curandStatus_t status);
// Throws for a failed cuBLAS call, with cuBLAS's own name and text of the status.
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line);

inline void check_cuda(cudaError_t status, const char* call, const char* file, int line) {
  if (status == cudaSuccess) return;
  // Reset the runtime's last-error slot, so a later cudaGetLastError() after a kernel
  // launch does not report this failure a second time (sticky errors stay anyway).
  (void)cudaGetLastError();
  throw_library_error("CUDA", call, file, line, cudaGetErrorName(status), cudaGetErrorString(status));
}

inline void check_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw_cublas_error(status, call, file, line);
}

inline void check_curand(curandStatus_t status, const char* call, const char* file, int line) {
  if (status == CURAND_STATUS_SUCCESS) return;
  throw_library_error("cuRAND", call, file, line, curand_status_name(status), curand_status_text(status));
}

}  // namespace vgrad::cuda::detail

#define VGRAD_CUDA_CHECK(call) ::vgrad::cuda::detail::check_cuda((call), #call, __FILE__, __LINE__)
#define VGRAD_CUBLAS_CHECK(call) ::vgrad::cuda::detail::check_cublas((call), #call, __FILE__, __LINE__)
#define VGRAD_CURAND_CHECK(call) ::vgrad::cuda::detail::check_curand((call), #call, __FILE__, __LINE__)
// After a kernel launch: reports a bad launch (configuration, missing kernel image) at once.
#define VGRAD_CUDA_CHECK_LAUNCH() VGRAD_CUDA_CHECK(cudaGetLastError())

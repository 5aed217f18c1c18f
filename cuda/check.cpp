// The throwing half of cuda/check.h: message formatting and the cuRAND status table
// (cuRAND has no status-to-string function of its own).
#include "cuda/check.h"

#include <cstring>

#include "core/error.h"
#include "cuda/libraries.h"

namespace vgrad::cuda::detail {

namespace {
// "/work/main/cuda/backend.cpp" -> "cuda/backend.cpp": the folder and the file.
const char* short_path(const char* file) {
  const char* last = std::strrchr(file, '/');
  if (last == nullptr) return file;
  const char* begin = file;
  for (const char* p = file; p < last; ++p)
    if (*p == '/') begin = p + 1;
  return begin;
}
}  // namespace

void throw_library_error(const char* library, const char* call, const char* file, int line, const char* name,
                         const char* text) {
  fail("{} call {} failed at {}:{}: {} ({})", library, call, short_path(file), line, text, name);
}

void throw_error(const std::string& message) { throw Error(message); }

void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line) {
  throw_library_error("cuBLAS", call, file, line, cublas().get_status_name(status), cublas().get_status_string(status));
}

const char* curand_status_name(curandStatus_t status) {
  switch (status) {
    case CURAND_STATUS_SUCCESS: return "CURAND_STATUS_SUCCESS";
    case CURAND_STATUS_VERSION_MISMATCH: return "CURAND_STATUS_VERSION_MISMATCH";
    case CURAND_STATUS_NOT_INITIALIZED: return "CURAND_STATUS_NOT_INITIALIZED";
    case CURAND_STATUS_ALLOCATION_FAILED: return "CURAND_STATUS_ALLOCATION_FAILED";
    case CURAND_STATUS_TYPE_ERROR: return "CURAND_STATUS_TYPE_ERROR";
    case CURAND_STATUS_OUT_OF_RANGE: return "CURAND_STATUS_OUT_OF_RANGE";
    case CURAND_STATUS_LENGTH_NOT_MULTIPLE: return "CURAND_STATUS_LENGTH_NOT_MULTIPLE";
    case CURAND_STATUS_DOUBLE_PRECISION_REQUIRED: return "CURAND_STATUS_DOUBLE_PRECISION_REQUIRED";
    case CURAND_STATUS_LAUNCH_FAILURE: return "CURAND_STATUS_LAUNCH_FAILURE";
    case CURAND_STATUS_PREEXISTING_FAILURE: return "CURAND_STATUS_PREEXISTING_FAILURE";
    case CURAND_STATUS_INITIALIZATION_FAILED: return "CURAND_STATUS_INITIALIZATION_FAILED";
    case CURAND_STATUS_ARCH_MISMATCH: return "CURAND_STATUS_ARCH_MISMATCH";
    case CURAND_STATUS_INTERNAL_ERROR: return "CURAND_STATUS_INTERNAL_ERROR";
  }
  return "CURAND_STATUS_UNKNOWN";
}

const char* curand_status_text(curandStatus_t status) {
  switch (status) {
    case CURAND_STATUS_SUCCESS: return "no error";
    case CURAND_STATUS_VERSION_MISMATCH: return "header file and linked library version do not match";
    case CURAND_STATUS_NOT_INITIALIZED: return "generator not initialized";
    case CURAND_STATUS_ALLOCATION_FAILED: return "memory allocation failed";
    case CURAND_STATUS_TYPE_ERROR: return "generator is the wrong type";
    case CURAND_STATUS_OUT_OF_RANGE: return "argument out of range";
    case CURAND_STATUS_LENGTH_NOT_MULTIPLE: return "length requested is not a multiple of dimension (or not even)";
    case CURAND_STATUS_DOUBLE_PRECISION_REQUIRED: return "GPU does not have double precision required";
    case CURAND_STATUS_LAUNCH_FAILURE: return "kernel launch failure";
    case CURAND_STATUS_PREEXISTING_FAILURE: return "preexisting failure on library entry";
    case CURAND_STATUS_INITIALIZATION_FAILED: return "initialization of CUDA failed";
    case CURAND_STATUS_ARCH_MISMATCH: return "architecture mismatch, GPU does not support requested feature";
    case CURAND_STATUS_INTERNAL_ERROR: return "internal library error";
  }
  return "unknown cuRAND status";
}

}  // namespace vgrad::cuda::detail

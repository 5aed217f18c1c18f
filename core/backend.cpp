// The single dispatch point from a Device to its Backend.
#include "core/backend.h"

#include "cuda/cuda.h"

namespace vgrad {

Backend& backend_for(Device device) { return device.is_cpu() ? cpu_backend() : cuda::backend(device.index); }
bool cuda_is_available() { return cuda::is_available(); }
int cuda_device_count() { return cuda::device_count(); }

}  // namespace vgrad

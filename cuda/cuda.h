// The CUDA backend's entry points, as seen from core. Implemented in cuda/*.cu when
// vgrad is built with -DVGRAD_CUDA=ON, and by cuda/stub/ (which throws) otherwise.
#pragma once
#include "core/backend.h"

namespace vgrad::cuda {

bool is_available();  // a CUDA build and at least one usable GPU; never throws
int device_count();   // 0 without a build or a GPU; never throws
// The backend of GPU `index`; throws a clear error in a build without CUDA or
// when that GPU does not exist.
Backend& backend(int index);
bool built_with_cuda();

// Page-locked host buffers, so host->device batch copies can be asynchronous.
// Fall back to ordinary memory (never throw) when CUDA is unavailable.
void* pinned_alloc(size_t bytes);
void pinned_free(void* ptr);

}  // namespace vgrad::cuda

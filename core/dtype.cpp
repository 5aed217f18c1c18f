// The dtype table's out-of-line parts: the unknown-dtype error and the safetensors lookup.
#include "core/dtype.h"

#include <cstring>
#include <string>

#include "core/error.h"

namespace vgrad {

void fail_unknown_dtype(int code) {
  std::string known;
  for (const DTypeInfo& info : kDTypes) known += (known.empty() ? "" : ", ") + std::string(info.name);
  fail("dtype: unknown dtype code {} (known: {})", code, known);
}

void fail_half_in_wide_kernel(DType dtype) {
  fail("dtype: a {} tensor reached a kernel that takes float32 copies of 16-bit tensors (a core bug: its "
       "entry point in core/backend.cpp should convert it)", dtype_name(dtype));
}

bool dtype_from_safetensors(const char* code, DType& out) {
  for (const DTypeInfo& info : kDTypes)
    if (std::strcmp(info.safetensors, code) == 0) {
      out = info.dtype;
      return true;
    }
  return false;
}

}  // namespace vgrad

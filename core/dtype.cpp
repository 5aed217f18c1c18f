// The dtype table's out-of-line parts: the unknown-dtype error and the safetensors lookup.
#include "core/dtype.h"

#include <cstring>

#include "core/error.h"

namespace vgrad {

void fail_unknown_dtype(int code) { fail("dtype: unknown dtype code {} (known: int64, float32, float64)", code); }

bool dtype_from_safetensors(const char* code, DType& out) {
  for (const DTypeInfo& info : kDTypes)
    if (std::strcmp(info.safetensors, code) == 0) {
      out = info.dtype;
      return true;
    }
  return false;
}

}  // namespace vgrad

// libFuzzer harness for the IDX reader (plain and gzip): any bytes must read or
// be refused with a vgrad::Error; the header-only reader must agree with the full
// one on the dims. A crash, sanitizer report, other exception, hang or large
// allocation is a finding. Build and run: fuzz_common.h.
#include <cstdlib>

#include "core/error.h"
#include "data/idx.h"
#include "fuzz_common.h"

namespace idx = vgrad::data;

// Small enough that a valid gzip bomb within it stays far below libFuzzer's RSS limit.
constexpr int64_t kFuzzMaxBytes = int64_t{64} << 20;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static InputAsFile input;
  const std::string& path = input.write(data, size);
  idx::IdxArray array;
  try {
    array = idx::read_idx(path, std::nullopt, kFuzzMaxBytes);
  } catch (const vgrad::Error&) {
    try {
      idx::read_idx_header(path);
    } catch (const vgrad::Error&) {
    }
    return 0;
  }
  int64_t count = 1;
  for (int64_t dim : array.dims) count *= dim;
  if (static_cast<int64_t>(array.bytes.size()) != count) std::abort();
  if (idx::read_idx_header(path).dims != array.dims) std::abort();
  return 0;
}

// The CPU backend object: its caching allocator over aligned malloc, host
// transfers (plain copies), and cpu_backend(). The primitives are in one file per
// op family beside this one.
#include "core/cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>

namespace vgrad::cpu {
namespace {

void* raw_alloc(size_t bytes, int, bool) { return std::aligned_alloc(64, (bytes + 63) / 64 * 64); }
void raw_free(void* ptr, int) { std::free(ptr); }

}  // namespace

CpuBackend::CpuBackend() : allocator_(raw_alloc, raw_free, 0, memory_limit()) {}

void CpuBackend::copy_from_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void CpuBackend::copy_to_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }

}  // namespace vgrad::cpu

namespace vgrad {

Backend& cpu_backend() {
  static cpu::CpuBackend backend;
  return backend;
}

}  // namespace vgrad

// The CPU backend: plain loops the compiler vectorises over the scalar functors of
// core/scalar_ops.h, xtensor+xsimd for transcendental functions on contiguous data,
// OpenBLAS for GEMM. One file per op family, as in cuda/. Internal to core; users
// reach it through backend_for(kCPU).
#pragma once
#include "core/backend.h"

namespace vgrad::cpu {

class CpuBackend final : public Backend {
 public:
  CpuBackend();
  Device device() const override { return kCPU; }
  CachingAllocator& allocator() override { return allocator_; }
  void copy_from_host(void* dst, const void* src, size_t bytes) override;
  void copy_to_host(void* dst, const void* src, size_t bytes) override;
  void synchronize() override {}

 protected:
  VGRAD_BACKEND_IMPLS(, override)  // in core/cpu/<family>.cpp, one file per op family

 private:
  void gemm_half(const GemmArgs& g);  // bfloat16/float16 through float32 sgemm (gemm.cpp)
  CachingAllocator allocator_;
};

// Contiguous transcendental kernels through xtensor+xsimd (vector_math.cpp); returns
// false when the op has no vectorised form there or the views are not plain arrays.
bool vector_unary(UnaryOp op, const View& x, const View& out);

}  // namespace vgrad::cpu

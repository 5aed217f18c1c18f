// The CPU backend: plain loops the compiler vectorises, xtensor+xsimd for
// transcendental functions on contiguous data, OpenBLAS for GEMM.
// Internal to core; users reach it through backend_for(kCPU).
#pragma once
#include <string>

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
  void fill(const View& out, double value) override;
  void copy(const View& src, const View& out) override;
  void unary(UnaryOp op, const View& x, const View& out, double a, double b) override;
  void binary(BinaryOp op, const View& a, const View& b, const View& out) override;
  void where(const View& cond, const View& a, const View& b, const View& out) override;
  void reduce(ReduceOp op, const View& in, const View& out, double scale) override;
  void gemm(const GemmArgs& args) override;
  void softmax(const View& x, const View& out, bool log) override;
  void softmax_backward(const View& y, const View& grad_y, const View& grad_x, bool log) override;
  void cross_entropy(const View& logits, const View& target, double smoothing, const View& probs,
                     const View& loss_rows) override;
  void cross_entropy_backward(const View& probs, const View& target, double smoothing, double scale,
                              const View& grad_logits) override;
  void index_select(const View& x, int dim, const View& index, const View& out) override;
  void index_add(const View& out, int dim, const View& index, const View& src) override;
  void uniform(const View& out, double low, double high, RandomState& state) override;
  void normal(const View& out, double mean, double stddev, RandomState& state) override;
  void dropout_mask(const View& out, double p, RandomState& state) override;
  void sgd_update(const View& param, const View& grad, const View& momentum_buffer, const SgdParams& p) override;
  void adam_update(const View& param, const View& grad, const View& exp_avg, const View& exp_avg_sq,
                   const AdamParams& p) override;
  double sum_of_squares(const View& x) override;

 private:
  CachingAllocator allocator_;
};

// Contiguous transcendental kernels through xtensor+xsimd (cpu_vector_math.cpp);
// returns false when the op has no vectorised form there.
bool vector_unary(UnaryOp op, const View& x, const View& out, double a, double b);
// OpenBLAS (cpu_gemm.cpp, its own translation unit: cblas.h clashes with xtensor-blas).
void blas_gemm(const GemmArgs& args);
std::string blas_info();  // "OpenBLAS core SkylakeX, 2 threads" 

}  // namespace vgrad::cpu

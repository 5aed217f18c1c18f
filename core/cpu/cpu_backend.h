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
  // elementwise.cpp
  void fill_impl(const View& out, double value) override;
  void copy_impl(const View& src, const View& out) override;
  void unary_impl(UnaryOp op, const View& x, const View& out, double a, double b) override;
  void binary_impl(BinaryOp op, const View& a, const View& b, const View& out) override;
  void where_impl(const View& cond, const View& a, const View& b, const View& out) override;
  // reduce.cpp
  void reduce_impl(ReduceOp op, const View& in, const View& out, double scale) override;
  double sum_of_squares_impl(const View& x) override;
  // gemm.cpp
  void gemm_impl(const GemmArgs& args) override;
  // conv.cpp
  void im2col_impl(const View& x, const WindowGeometry& g, const View& col) override;
  void col2im_impl(const View& col, const WindowGeometry& g, const View& x) override;
  void max_pool2d_impl(const View& x, const WindowGeometry& g, const View& out, const View& indices) override;
  void max_pool2d_backward_impl(const View& grad_out, const View& indices, const WindowGeometry& g,
                                const View& grad_x) override;
  // softmax.cpp
  void softmax_impl(const View& x, const View& out, bool log) override;
  void softmax_backward_impl(const View& y, const View& grad_y, const View& grad_x, bool log) override;
  void cross_entropy_impl(const View& logits, const View& target, double smoothing, const View& probs,
                          const View& loss_rows) override;
  void cross_entropy_backward_impl(const View& probs, const View& target, double smoothing, double scale,
                                   const View& grad_logits) override;
  // index.cpp
  void index_select_impl(const View& x, int dim, const View& index, const View& out) override;
  void index_add_impl(const View& out, int dim, const View& index, const View& src) override;
  int64_t first_out_of_range_impl(const View& index, int64_t limit, int64_t& value) override;
  // random.cpp
  void uniform_impl(const View& out, double low, double high, RandomState& state) override;
  void normal_impl(const View& out, double mean, double stddev, RandomState& state) override;
  void dropout_mask_impl(const View& out, double p, RandomState& state) override;
  // optim.cpp
  void sgd_update_impl(const View& param, const View& grad, const View& momentum_buffer, const SgdParams& p) override;
  void adam_update_impl(const View& param, const View& grad, const View& exp_avg, const View& exp_avg_sq,
                        const AdamParams& p) override;

 private:
  CachingAllocator allocator_;
};

// Contiguous transcendental kernels through xtensor+xsimd (vector_math.cpp); returns
// false when the op has no vectorised form there or the views are not plain arrays.
bool vector_unary(UnaryOp op, const View& x, const View& out);

}  // namespace vgrad::cpu

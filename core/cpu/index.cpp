// CPU gather (index_select) and scatter-add (index_add) along one dim, and the
// index range check that core runs before either. Side by side with cuda/index.cu.
#include <cstring>

#include "core/cpu/cpu_backend.h"

namespace vgrad::cpu {

// The CPU refuses a bad index at once, naming the first (core's Backend::check_index).
void CpuBackend::check_index_impl(const IndexCheck& check, const View& index) {
  const int64_t* idx = index.ptr<int64_t>();
  const int64_t stride = index.ndim == 0 ? 0 : index.strides[0];
  for (int64_t i = 0; i < index.numel(); ++i)
    if (idx[i * stride] < 0 || idx[i * stride] >= check.limit) fail_index_out_of_range(check, i, idx[i * stride]);
}

void CpuBackend::index_select_impl(const View& x, int dim, const View& index, const View& out) {
  const int64_t* idx = index.ptr<int64_t>();
  if (dim == 0 && x.is_contiguous() && out.is_contiguous()) {  // gathering rows: one memcpy each
    const size_t row_bytes = size_t(x.shape[0] ? x.numel() / x.shape[0] : 0) * dtype_size(x.dtype);
    for (int64_t i = 0; i < index.numel(); ++i)
      std::memcpy(static_cast<char*>(out.data) + size_t(i) * row_bytes,
                  static_cast<const char*>(x.data) + size_t(idx[i * index.strides[0]]) * row_bytes, row_bytes);
    return;
  }
  View src = x, dst = out;
  src.shape[dim] = 1;
  dst.shape[dim] = 1;
  const size_t elem = dtype_size(x.dtype);
  for (int64_t i = 0; i < index.numel(); ++i) {
    src.data = static_cast<char*>(x.data) + idx[i * index.strides[0]] * x.strides[dim] * int64_t(elem);
    dst.data = static_cast<char*>(out.data) + i * out.strides[dim] * int64_t(elem);
    copy_impl(src, dst);
  }
}

void CpuBackend::index_add_impl(const View& out, int dim, const View& index, const View& src) {
  const int64_t* idx = index.ptr<int64_t>();
  View s = src, d = out;
  s.shape[dim] = 1;
  d.shape[dim] = 1;
  const size_t elem = dtype_size(out.dtype);
  for (int64_t i = 0; i < index.numel(); ++i) {
    s.data = static_cast<char*>(src.data) + i * src.strides[dim] * int64_t(elem);
    d.data = static_cast<char*>(out.data) + idx[i * index.strides[0]] * out.strides[dim] * int64_t(elem);
    binary_impl(BinaryOp::Add, d, s, d);
  }
}

}  // namespace vgrad::cpu

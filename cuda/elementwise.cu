// Elementwise kernels: fill, copy (with dtype conversion), unary, binary and where.
// What each op computes is core's scalar functor (core/scalar_ops.h), the same one the
// CPU loops run; here is only the launch: one grid-stride kernel over a collapsed N-d
// geometry (32-bit index math when it fits), a plain pointer kernel when every
// operand is contiguous, and there, when every operand is aligned, 16-byte accesses
// (float4 for float32; the ld/st.v4 the hardware moves fastest) with a scalar tail. bfloat16/float16 (vgrad::BFloat16/Float16, bit-identical to
// __nv_bfloat16/__half and converted with CUDA's __float2bfloat16_rn/__float2half_rn on
// the device) load into float, run the float functor and store rounded, as on the CPU.
// Side by side with core/cpu/elementwise.cpp.
#include <cmath>
#include <string>
#include <type_traits>

#include "cuda/kernel_utils.cuh"

namespace vgrad::cuda::kernels {
namespace {

template <class F> __global__ void __launch_bounds__(kBlock) contiguous_kernel(int64_t n, F f) {
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += step) f.contiguous(i);
}

// V consecutive elements moved as one access: 16 bytes of the output's dtype (V = 16 /
// sizeof), an input of another dtype in as many 16-byte pieces as it takes.
template <class T, int V> struct alignas(sizeof(T) * V < 16 ? sizeof(T) * V : 16) Pack {
  T v[V];
};
template <int V, class T> __device__ __forceinline__ Pack<T, V> load_pack(const T* p, int64_t i) {
  return *reinterpret_cast<const Pack<T, V>*>(p + i);
}
template <int V, class T> __device__ __forceinline__ void store_pack(T* p, int64_t i, const Pack<T, V>& pack) {
  *reinterpret_cast<Pack<T, V>*>(p + i) = pack;
}

// Packs [0, packs) by threads in a grid-stride loop, then the n - packs·V tail element-wise.
template <class F> __global__ void __launch_bounds__(kBlock) packed_kernel(int64_t packs, int64_t n, F f) {
  constexpr int V = F::kPack;
  const int64_t step = int64_t{gridDim.x} * blockDim.x;
  const int64_t first = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  for (int64_t p = first; p < packs; p += step) f.packed(p * V);
  for (int64_t i = packs * V + first; i < n; i += step) f.contiguous(i);
}

template <int N, class Index, class F>
__global__ void __launch_bounds__(kBlock) strided_kernel(Geometry<N> geometry, Index n, F f) {
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    Index off[N];
    geometry.offsets(i, off);
    f.strided(off);
  }
}

// Runs f over out's elements. operands[0] is out; the others have out's shape (core
// broadcast them: 0 strides where they repeat).
template <int N, class F> void launch(const Context& ctx, const View* const (&operands)[N], const F& f) {
  const View& out = *operands[0];
  const int64_t* stride_ptrs[N];
  for (int k = 0; k < N; ++k) stride_ptrs[k] = operands[k]->strides;
  const Geometry<N> geometry = make_geometry<N>(out.ndim, out.shape, stride_ptrs);
  const int64_t n = geometry.numel();
  if (n == 0) return;
  const unsigned grid = grid_for(ctx, n);
  if (geometry.all_contiguous()) {
    constexpr int V = F::kPack;
    bool aligned = true;  // every operand's pointer on its Pack's alignment
    for (int k = 0; k < N; ++k) {
      const size_t bytes = dtype_size(operands[k]->dtype) * V;
      aligned = aligned && reinterpret_cast<uintptr_t>(operands[k]->data) % (bytes < 16 ? bytes : 16) == 0;
    }
    if (aligned && n >= V) {
      packed_kernel<<<grid_for(ctx, n / V), kBlock, 0, ctx.stream>>>(n / V, n, f);
    } else {
      contiguous_kernel<<<grid, kBlock, 0, ctx.stream>>>(n, f);
    }
  } else if (geometry.fits_32bit()) {
    strided_kernel<N, uint32_t><<<grid, kBlock, 0, ctx.stream>>>(geometry, static_cast<uint32_t>(n), f);
  } else {
    strided_kernel<N, int64_t><<<grid, kBlock, 0, ctx.stream>>>(geometry, n, f);
  }
  VGRAD_CUDA_CHECK_LAUNCH();
}

// ---------------- fill and copy ----------------

template <class T> struct FillFn {
  static constexpr int kPack = 16 / sizeof(T);
  T* out;
  T value;
  __device__ void contiguous(int64_t i) const { out[i] = value; }
  __device__ void packed(int64_t i) const {
    Pack<T, kPack> o;
    for (int k = 0; k < kPack; ++k) o.v[k] = value;
    store_pack(out, i, o);
  }
  template <class I> __device__ void strided(const I (&off)[1]) const { out[off[0]] = value; }
};

template <class TSrc, class TDst> struct CopyFn {
  static constexpr int kPack = 16 / sizeof(TDst);
  TDst* out;
  const TSrc* src;
  __device__ void contiguous(int64_t i) const { out[i] = scalar::convert<TDst>(src[i]); }
  __device__ void packed(int64_t i) const {
    const Pack<TSrc, kPack> s = load_pack<kPack>(src, i);
    Pack<TDst, kPack> o;
    for (int k = 0; k < kPack; ++k) o.v[k] = scalar::convert<TDst>(s.v[k]);
    store_pack(out, i, o);
  }
  template <class I> __device__ void strided(const I (&off)[2]) const {
    out[off[0]] = scalar::convert<TDst>(src[off[1]]);
  }
};

// ---------------- unary and binary ops: core's functors, applied per element ----------------

template <class T, class Op> struct UnaryFn {
  static constexpr int kPack = 16 / sizeof(T);
  T* out;
  const T* x;
  Op op;
  __device__ void contiguous(int64_t i) const { out[i] = op(x[i]); }
  __device__ void packed(int64_t i) const {
    const Pack<T, kPack> a = load_pack<kPack>(x, i);
    Pack<T, kPack> o;
    for (int k = 0; k < kPack; ++k) o.v[k] = op(a.v[k]);
    store_pack(out, i, o);
  }
  template <class I> __device__ void strided(const I (&off)[2]) const { out[off[0]] = op(x[off[1]]); }
};

template <class T, class Op> struct BinaryFn {
  static constexpr int kPack = 16 / sizeof(T);
  T* out;
  const T* a;
  const T* b;
  Op op;
  __device__ void contiguous(int64_t i) const { out[i] = op(a[i], b[i]); }
  __device__ void packed(int64_t i) const {
    const Pack<T, kPack> pa = load_pack<kPack>(a, i), pb = load_pack<kPack>(b, i);
    Pack<T, kPack> o;
    for (int k = 0; k < kPack; ++k) o.v[k] = op(pa.v[k], pb.v[k]);
    store_pack(out, i, o);
  }
  template <class I> __device__ void strided(const I (&off)[3]) const { out[off[0]] = op(a[off[1]], b[off[2]]); }
};

// ---------------- where ----------------

template <class TCond, class T> struct WhereFn {
  static constexpr int kPack = 16 / sizeof(T);
  T* out;
  const TCond* cond;
  const T* a;
  const T* b;
  __device__ void contiguous(int64_t i) const { out[i] = cond[i] != TCond(0) ? a[i] : b[i]; }
  __device__ void packed(int64_t i) const {
    const Pack<TCond, kPack> c = load_pack<kPack>(cond, i);
    const Pack<T, kPack> pa = load_pack<kPack>(a, i), pb = load_pack<kPack>(b, i);
    Pack<T, kPack> o;
    for (int k = 0; k < kPack; ++k) o.v[k] = c.v[k] != TCond(0) ? pa.v[k] : pb.v[k];
    store_pack(out, i, o);
  }
  template <class I> __device__ void strided(const I (&off)[4]) const {
    out[off[0]] = cond[off[1]] != TCond(0) ? a[off[2]] : b[off[3]];
  }
};

}  // namespace

void fill(const Context& ctx, const View& out, double value) {
  const View* operands[1] = {&out};
  // +0.0 only: its bits are all zero in every dtype; -0.0 keeps its sign bit (a float
  // comparison cannot tell the two apart).
  if (value == 0.0 && !std::signbit(value) && out.is_contiguous()) {
    const int64_t n = out.numel();
    if (n > 0)
      VGRAD_CUDA_CHECK(cudaMemsetAsync(out.data, 0, static_cast<size_t>(n) * dtype_size(out.dtype), ctx.stream));
    return;
  }
  visit_dtype(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    // int64: truncated, NaN -> 0, saturated: the CPU's rule (core/scalar_ops.h)
    launch<1>(ctx, operands, FillFn<T>{static_cast<T*>(out.data), scalar::convert<T>(value)});
  });
}

void copy(const Context& ctx, const View& src, const View& out) {
  if (src.dtype == out.dtype && src.is_contiguous() && out.is_contiguous() && src.numel() == out.numel() &&
      src.ndim == out.ndim) {
    bool same_shape = true;
    for (int d = 0; d < out.ndim; ++d) same_shape = same_shape && src.shape[d] == out.shape[d];
    if (same_shape) {
      const int64_t n = out.numel();
      if (n > 0 && src.data != out.data)
        VGRAD_CUDA_CHECK(cudaMemcpyAsync(out.data, src.data, static_cast<size_t>(n) * dtype_size(out.dtype),
                                         cudaMemcpyDeviceToDevice, ctx.stream));
      return;
    }
  }
  const View* operands[2] = {&out, &src};
  visit_dtype(src.dtype, [&](auto src_tag) {
    using TSrc = decltype(src_tag);
    visit_dtype(out.dtype, [&](auto dst_tag) {
      using TDst = decltype(dst_tag);
      launch<2>(ctx, operands, CopyFn<TSrc, TDst>{static_cast<TDst*>(out.data), static_cast<const TSrc*>(src.data)});
    });
  });
}

void unary(const Context& ctx, UnaryOp op, const View& x, const View& out, double a, double b) {
  visit_dtype(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    const bool ran = scalar::visit_unary<compute_t<T>>(op, a, b, [&](const auto& f) {
      const View* operands[2] = {&out, &x};
      using F = std::decay_t<decltype(f)>;
      launch<2>(ctx, operands, UnaryFn<T, F>{static_cast<T*>(out.data), static_cast<const T*>(x.data), f});
    });
    if (!ran) detail::throw_error(std::string(op_name(op)) + ": not defined for " + dtype_name(out.dtype));
  });
}

void binary(const Context& ctx, BinaryOp op, const View& a, const View& b, const View& out) {
  visit_dtype(out.dtype, [&](auto tag) {
    using T = decltype(tag);
    const bool ran = scalar::visit_binary<compute_t<T>>(op, [&](const auto& f) {
      const View* operands[3] = {&out, &a, &b};
      using F = std::decay_t<decltype(f)>;
      launch<3>(ctx, operands,
                BinaryFn<T, F>{static_cast<T*>(out.data), static_cast<const T*>(a.data),
                               static_cast<const T*>(b.data), f});
    });
    if (!ran) detail::throw_error(std::string(op_name(op)) + ": not defined for " + dtype_name(out.dtype));
  });
}

void where(const Context& ctx, const View& cond, const View& a, const View& b, const View& out) {
  const View* operands[4] = {&out, &cond, &a, &b};
  visit_dtype(cond.dtype, [&](auto cond_tag) {
    using TCond = decltype(cond_tag);
    visit_dtype(out.dtype, [&](auto tag) {
      using T = decltype(tag);
      launch<4>(ctx, operands,
                WhereFn<TCond, T>{static_cast<T*>(out.data), static_cast<const TCond*>(cond.data),
                                  static_cast<const T*>(a.data), static_cast<const T*>(b.data)});
    });
  });
}

}  // namespace vgrad::cuda::kernels

// Convolution and pooling over NCHW batches, on the im2col/col2im primitives and GEMM:
// one im2col per layer feeds one GEMM (batched over groups), so the BLAS sees the
// whole batch (N·OH·OW columns) instead of one image at a time. Average pooling
// unfolds each channel as its own image and takes the window's mean; max pooling has
// its own primitive (one pass, indices kept for backward).
#include <array>
#include <cmath>

#include "autograd/autocast.h"
#include "autograd/function.h"
#include "autograd/ops.h"
#include "core/error.h"
#include "core/kernels.h"
#include "core/profiler.h"

namespace vgrad {

using autograd::Context;
using autograd::needs_grad;
using autograd::record;

namespace {

std::string pair_str(const Pair2& p) { return fmt::format("{}x{}", p[0], p[1]); }

// The geometry of sliding a KH×KW window over x (N, C, H, W); names `op` in errors.
WindowGeometry window_geometry(const char* op, const Shape& x, int64_t kernel_h, int64_t kernel_w, Pair2 stride,
                               Pair2 padding, Pair2 dilation) {
  if (stride[0] < 1 || stride[1] < 1) fail("{}: stride {} must be >= 1", op, pair_str(stride));
  if (dilation[0] < 1 || dilation[1] < 1) fail("{}: dilation {} must be >= 1", op, pair_str(dilation));
  if (padding[0] < 0 || padding[1] < 0) fail("{}: padding {} must be >= 0", op, pair_str(padding));
  WindowGeometry g;
  g.batch = x[0], g.channels = x[1], g.height = x[2], g.width = x[3];
  g.kernel_h = kernel_h, g.kernel_w = kernel_w;
  g.stride_h = stride[0], g.stride_w = stride[1];
  g.pad_h = padding[0], g.pad_w = padding[1];
  g.dilation_h = dilation[0], g.dilation_w = dilation[1];
  const int64_t span_h = dilation[0] * (kernel_h - 1) + 1, span_w = dilation[1] * (kernel_w - 1) + 1;
  if (span_h > g.height + 2 * g.pad_h || span_w > g.width + 2 * g.pad_w)
    fail("{}: kernel {}x{} (dilation {}) spans {}x{}, larger than the padded input {}x{} of {}", op, kernel_h,
         kernel_w, pair_str(dilation), span_h, span_w, g.height + 2 * g.pad_h, g.width + 2 * g.pad_w, shape_str(x));
  g.out_h = (g.height + 2 * g.pad_h - span_h) / g.stride_h + 1;
  g.out_w = (g.width + 2 * g.pad_w - span_w) / g.stride_w + 1;
  return g;
}

void check_image(const char* op, const Tensor& x) {
  if (x.dim() != 4) fail("{}: input must be 4-D (N, C, H, W), got {}", op, shape_str(x.shape()));
  if (!is_floating(x.dtype()))
    fail("{}: input must be floating point, got {} (convert with .to(vgrad::DType::Float32))", op,
         dtype_name(x.dtype()));
}

// x (N, C, H, W) -> col (C·KH·KW, N·OH·OW);   dx = col2im(dcol)
Tensor unfold_windows(const Tensor& x_in, const WindowGeometry& g) {
  const Tensor x = kernels::contiguous(x_in);
  Tensor col = Tensor::empty({g.col_rows(), g.col_cols()}, x.dtype(), x.device());
  backend_for(x.device()).im2col(x.view(), g, col.view());
  if (!needs_grad({x_in})) return col;
  return record(col, {x_in}, Context("unfold"), [g](Context&, const Tensor& dcol) {
    const Tensor dc = kernels::contiguous(dcol);
    Tensor dx = Tensor::empty({g.batch, g.channels, g.height, g.width}, dc.dtype(), dc.device());
    backend_for(dc.device()).col2im(dc.view(), g, dx.view());
    return std::vector<Tensor>{dx};
  });
}

// Per group: C[g] (M, N) = op(A[g]) · op(B[g]) (+ C[g] when accumulate), batched over groups.
void grouped_gemm(const Tensor& a, bool trans_a, int64_t lda, int64_t stride_a, const Tensor& b, bool trans_b,
                  int64_t ldb, int64_t stride_b, const Tensor& c, int64_t m, int64_t n, int64_t k, int64_t groups,
                  bool accumulate) {
  GemmArgs args;
  args.trans_a = trans_a, args.trans_b = trans_b;
  args.m = m, args.n = n, args.k = k, args.batch = groups;
  args.a = a.data_ptr(), args.lda = lda, args.stride_a = stride_a;
  args.b = b.data_ptr(), args.ldb = ldb, args.stride_b = stride_b;
  args.c = c.data_ptr(), args.ldc = n, args.stride_c = m * n;
  args.beta = accumulate ? 1.0 : 0.0;
  args.dtype = c.dtype();
  backend_for(c.device()).gemm(args);
}

// The im2col + GEMM pieces of conv2d (every device; the CPU's only way), per group G:
//   Y (F, N·OH·OW) = W_g (F/G, C/G·KH·KW) · col_g (C/G·KH·KW, N·OH·OW)
//   dW_g = dY_g · col_gᵀ,   dx = col2im(W_gᵀ · dY_g)
// with col = im2col(x) and dY (F, N·OH·OW) the gradient permuted to the GEMMs' layout.
struct Im2colConv {
  ConvGeometry g;
  int64_t per_group() const { return g.filters / g.groups; }
  int64_t taps() const { return g.window.col_rows() / g.groups; }  // K of the GEMMs: C/G·KH·KW

  Tensor columns(const Tensor& x) const {
    Tensor col = Tensor::empty({g.window.col_rows(), g.window.col_cols()}, x.dtype(), x.device());
    backend_for(x.device()).im2col(x.view(), g.window, col.view());
    return col;
  }
  // y (F, N, OH, OW)
  Tensor forward(const Tensor& col, const Tensor& w) const {
    const WindowGeometry& s = g.window;
    const int64_t cols = s.col_cols(), k = taps(), m = per_group();
    Tensor y = Tensor::empty({g.filters, s.batch, s.out_h, s.out_w}, col.dtype(), col.device());
    grouped_gemm(w, false, k, m * k, col, false, cols, k * cols, y, m, cols, k, g.groups, false);
    return y;
  }
  Tensor input_grad(const Tensor& dy, const Tensor& w) const {
    const WindowGeometry& s = g.window;
    const int64_t cols = s.col_cols(), k = taps(), m = per_group();
    Tensor dcol = Tensor::empty({s.col_rows(), cols}, dy.dtype(), dy.device());
    grouped_gemm(w, true, k, m * k, dy, false, cols, m * cols, dcol, k, cols, m, g.groups, false);
    Tensor dx = Tensor::empty({s.batch, s.channels, s.height, s.width}, dy.dtype(), dy.device());
    backend_for(dy.device()).col2im(dcol.view(), s, dx.view());
    return dx;
  }
  // NOTE: the long inner dimension N·OH·OW is contiguous in both dY and col, so one
  // operand is read transposed, and the CPU's GEMM packs that one by gathering across
  // its rows (its slowest packing: 12% of a training step with col there). The smaller
  // of the two takes it: with more taps than filters (16 -> 32 channels, 3x3: col has
  // 144 rows against dY's 32) the product runs as dWᵀ = col · dYᵀ and is transposed back
  // (a weight-sized copy).
  Tensor weight_grad(const Tensor& dy, const Tensor& col, const Shape& weight_shape) const {
    const int64_t cols = g.window.col_cols(), k = taps(), m = per_group();
    if (k <= m) {
      Tensor dw = Tensor::empty(weight_shape, dy.dtype(), dy.device());
      grouped_gemm(dy, false, cols, m * cols, col, true, cols, k * cols, dw, m, k, cols, g.groups, false);
      return dw;
    }
    Tensor dw_t = Tensor::empty({g.groups, k, m}, dy.dtype(), dy.device());
    grouped_gemm(col, false, cols, k * cols, dy, true, cols, m * cols, dw_t, k, m, cols, g.groups, false);
    return kernels::contiguous(dw_t.permute({0, 2, 1})).reshape(weight_shape);
  }
};

// out of `pass` computed by the device's own convolution (cuDNN), or undefined where it has none.
Tensor direct_conv(ConvPass pass, const Tensor& x, const Tensor& w, const Tensor& y, const ConvGeometry& g) {
  const Tensor& out = pass == ConvPass::Forward ? y : pass == ConvPass::BackwardData ? x : w;
  return backend_for(out.device()).conv2d(pass, x.view(), w.view(), y.view(), g) ? out : Tensor();
}

}  // namespace

// x (N, C, H, W) ⊛ weight (F, C/G, KH, KW) + bias (F) -> (N, F, OH, OW), cross-correlation
// as PyTorch's;   db = Σ_{n,oh,ow} dY, dx and dW as Im2colConv says. The device's own
// convolution (cuDNN, Backend::conv2d) runs where it has one, im2col + GEMM elsewhere.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Pair2 stride, Pair2 padding, Pair2 dilation,
              int64_t groups) {
  VGRAD_PROFILE_OP("conv2d");
  if (const auto low = autograd::autocast::to_low(x, weight, bias); low.changed)
    return conv2d(low.first, low.second, low.third, stride, padding, dilation, groups);
  check_image("conv2d", x);
  if (weight.dim() != 4) fail("conv2d: weight must be 4-D (out, in/groups, KH, KW), got {}", shape_str(weight.shape()));
  kernels::check_same_device(x, weight, "conv2d");
  if (weight.dtype() != x.dtype())
    fail("conv2d: input is {} but weight is {}; convert one with .to()", dtype_name(x.dtype()),
         dtype_name(weight.dtype()));
  const int64_t channels = x.shape()[1], filters = weight.shape()[0];
  if (groups < 1) fail("conv2d: groups {} must be >= 1", groups);
  if (channels % groups != 0 || filters % groups != 0)
    fail("conv2d: groups {} must divide the input channels {} (input {}) and the filters {} (weight {})", groups,
         channels, shape_str(x.shape()), filters, shape_str(weight.shape()));
  if (channels / groups != weight.shape()[1])
    fail("conv2d: input {} has {} channels, weight {} expects {}{}", shape_str(x.shape()), channels,
         shape_str(weight.shape()), weight.shape()[1] * groups,
         groups > 1 ? fmt::format(" ({} per group, {} groups)", weight.shape()[1], groups) : std::string());
  if (bias.defined()) {
    kernels::check_same_device(x, bias, "conv2d");
    if (bias.dim() != 1 || bias.shape()[0] != filters)
      fail("conv2d: bias {} does not match weight {} (expected [{}])", shape_str(bias.shape()),
           shape_str(weight.shape()), filters);
  }
  ConvGeometry cg;
  cg.window = window_geometry("conv2d", x.shape(), weight.shape()[2], weight.shape()[3], stride, padding, dilation);
  cg.filters = filters, cg.groups = groups;
  const WindowGeometry& g = cg.window;
  const Im2colConv im2col_conv{cg};
  const Tensor w = kernels::contiguous(weight.detach());
  const Tensor xc = kernels::contiguous(x.detach());
  Tensor y = direct_conv(ConvPass::Forward, xc, w,
                         Tensor::empty({g.batch, filters, g.out_h, g.out_w}, x.dtype(), x.device()), cg);
  const bool direct = y.defined();
  Tensor col;  // the im2col path keeps the columns for dW; the direct one keeps x
  if (!direct) {
    col = im2col_conv.columns(xc);
    // (F, N, OH, OW) -> (N, F, OH, OW), copied with the bias below.
    const int64_t spatial = g.out_h * g.out_w;
    y = make_view(im2col_conv.forward(col, w), {g.batch, filters, g.out_h, g.out_w},
                  {spatial, g.batch * spatial, g.out_w, 1}, 0);
  }
  Tensor out;
  if (bias.defined()) {
    out = Tensor::empty(y.shape(), x.dtype(), x.device());
    kernels::binary_into(BinaryOp::Add, y, bias.detach().reshape({filters, 1, 1}), out, "conv2d");
  } else {
    out = kernels::contiguous(y);
  }
  if (!needs_grad({x, weight, bias})) return out;
  Context ctx("conv2d");
  ctx.save_for_backward({direct ? xc : col, w});
  return record(out, {x, weight, bias}, std::move(ctx), [im2col_conv, direct](Context& c, const Tensor& dout) {
    const Tensor saved = c.saved(0), w = c.saved(1);
    const ConvGeometry& cg = im2col_conv.g;
    const WindowGeometry& g = cg.window;
    const Tensor dy = kernels::contiguous(dout);  // (N, F, OH, OW)
    Tensor dx, dw, db, dy_gemm;
    // dY (N, F, OH, OW) -> (F, N·OH·OW), the GEMMs' layout, made at most once.
    auto gemm_layout = [&]() -> const Tensor& {
      if (!dy_gemm.defined()) dy_gemm = kernels::contiguous(dout.permute({1, 0, 2, 3}));
      return dy_gemm;
    };
    if (c.needs_input_grad(0)) {
      if (direct)
        dx = direct_conv(ConvPass::BackwardData,
                         Tensor::empty({g.batch, g.channels, g.height, g.width}, dy.dtype(), dy.device()), w, dy, cg);
      if (!dx.defined()) dx = im2col_conv.input_grad(gemm_layout(), w);
    }
    if (c.needs_input_grad(1)) {
      if (direct)
        dw = direct_conv(ConvPass::BackwardFilter, saved, Tensor::empty(w.shape(), dy.dtype(), dy.device()), dy, cg);
      // cuDNN switched off since the forward: unfold x now.
      if (!dw.defined())
        dw = im2col_conv.weight_grad(gemm_layout(), direct ? im2col_conv.columns(saved) : saved, w.shape());
    }
    if (c.needs_input_grad(2))  // over whole rows when the GEMMs' layout exists
      db = dy_gemm.defined() ? kernels::reduce(ReduceOp::Sum, dy_gemm, {1, 2, 3}, false, 1.0, "conv2d backward")
                             : kernels::reduce(ReduceOp::Sum, dy, {0, 2, 3}, false, 1.0, "conv2d backward");
    return std::vector<Tensor>{dx, dw, db};
  });
}

// x (N, C, L) ⊛ weight (F, C/G, K) + bias (F) -> (N, F, L_out): conv2d with H = 1.
Tensor conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride, int64_t padding,
              int64_t dilation, int64_t groups) {
  // Cast before unsqueezing, so autocast's cache sees the weight itself.
  if (const auto low = autograd::autocast::to_low(x, weight, bias); low.changed)
    return conv1d(low.first, low.second, low.third, stride, padding, dilation, groups);
  if (x.dim() != 3) fail("conv1d: input must be 3-D (N, C, L), got {}", shape_str(x.shape()));
  if (weight.dim() != 3) fail("conv1d: weight must be 3-D (out, in/groups, K), got {}", shape_str(weight.shape()));
  if (groups >= 1 && x.shape()[1] != weight.shape()[1] * groups)
    fail("conv1d: input {} has {} channels, weight {} expects {}", shape_str(x.shape()), x.shape()[1],
         shape_str(weight.shape()), weight.shape()[1] * groups);
  return squeeze(conv2d(unsqueeze(x, 2), unsqueeze(weight, 2), bias, {1, stride}, {0, padding}, {1, dilation}, groups),
                 2);
}

namespace {

// A pooling op's input and window (PyTorch's limits); returns the stride, the kernel's
// when none (0, 0) is given.
Pair2 check_pool(const char* op, const Tensor& x, Pair2 kernel, Pair2 stride, Pair2 padding) {
  check_image(op, x);
  if (kernel[0] < 1 || kernel[1] < 1) fail("{}: kernel {} must be >= 1", op, pair_str(kernel));
  if (2 * padding[0] > kernel[0] || 2 * padding[1] > kernel[1])
    fail("{}: padding {} must be at most half the kernel {}", op, pair_str(padding), pair_str(kernel));
  return stride[0] == 0 && stride[1] == 0 ? kernel : stride;
}

}  // namespace

// x (N, C, H, W) -> (N, C, OH, OW), the max of each window; where it is is kept (as h·W + w
// in its plane, PyTorch's indices: the first of tied maxima, the last NaN) and the gradient
// goes to that one element:   dx[n, c, indices] += g
Tensor max_pool2d(const Tensor& x, Pair2 kernel, Pair2 stride, Pair2 padding, Pair2 dilation) {
  VGRAD_PROFILE_OP("max_pool2d");
  stride = check_pool("max_pool2d", x, kernel, stride, padding);
  const WindowGeometry g = window_geometry("max_pool2d", x.shape(), kernel[0], kernel[1], stride, padding, dilation);
  const Tensor xc = kernels::contiguous(x.detach());
  const Shape out_shape{g.batch, g.channels, g.out_h, g.out_w};
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  Tensor indices = Tensor::empty(out_shape, DType::Int64, x.device());
  backend_for(x.device()).max_pool2d(xc.view(), g, out.view(), indices.view());
  if (!needs_grad({x})) return out;
  Context ctx("max_pool2d");
  ctx.save_for_backward({indices});
  return record(out, {x}, std::move(ctx), [g](Context& c, const Tensor& dout) {
    const Tensor go = kernels::contiguous(dout);
    Tensor dx = Tensor::empty({g.batch, g.channels, g.height, g.width}, go.dtype(), go.device());
    backend_for(go.device()).max_pool2d_backward(go.view(), c.saved(0).view(), g, dx.view());
    return std::vector<Tensor>{dx};
  });
}

// x (N, C, H, W) -> (N, C, OH, OW), the mean of each window with padded zeros counted
// (PyTorch's count_include_pad=True):   dx = col2im(g / (KH·KW)) through unfold and mean
Tensor avg_pool2d(const Tensor& x, Pair2 kernel, Pair2 stride, Pair2 padding) {
  VGRAD_PROFILE_OP("avg_pool2d");
  stride = check_pool("avg_pool2d", x, kernel, stride, padding);
  const Shape& s = x.shape();
  const WindowGeometry g =
      window_geometry("avg_pool2d", {s[0] * s[1], 1, s[2], s[3]}, kernel[0], kernel[1], stride, padding, {1, 1});
  const Tensor col = unfold_windows(reshape(x, {s[0] * s[1], 1, s[2], s[3]}), g);
  return reshape(mean(col, {0}), {s[0], s[1], g.out_h, g.out_w});
}

// x (N, C, H, W) -> (N, C, OH, OW): window i spans [⌊i·H/OH⌋, ⌈(i+1)·H/OH⌉), as PyTorch.
// Written as P_h · x · P_wᵀ with averaging matrices P (OH, H), so the gradient is
// P_hᵀ · g · P_w through matmul, on any device.
Tensor adaptive_avg_pool2d(const Tensor& x, Pair2 output_size) {
  VGRAD_PROFILE_OP("adaptive_avg_pool2d");
  check_image("adaptive_avg_pool2d", x);
  if (output_size[0] < 1 || output_size[1] < 1)
    fail("adaptive_avg_pool2d: output size {} must be >= 1", pair_str(output_size));
  auto averaging = [&](int64_t out, int64_t in) {
    std::vector<double> p(size_t(out * in), 0.0);
    for (int64_t i = 0; i < out; ++i) {
      const int64_t start = i * in / out, end = ((i + 1) * in + out - 1) / out;
      for (int64_t j = start; j < end; ++j) p[size_t(i * in + j)] = 1.0 / double(end - start);
    }
    return tensor(p, {out, in}).to(x.dtype()).to(x.device());
  };
  const Tensor ph = averaging(output_size[0], x.shape()[2]), pw = averaging(output_size[1], x.shape()[3]);
  return matmul(matmul(ph, x), transpose(pw, 0, 1));
}

}  // namespace vgrad

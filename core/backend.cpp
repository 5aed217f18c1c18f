// The Backend's public entry points: every argument check, written once for every
// device, then the device's *_impl; and the one dispatch point from a Device.
// A check that fails throws before any device writes anything.
#include "core/backend.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/int64_scalar.h"
#include "core/scalar_ops.h"

namespace vgrad {
namespace {

std::string dims(const View& v) {
  std::string s = "[";
  for (int d = 0; d < v.ndim; ++d) {
    if (d > 0) s += ", ";
    s += std::to_string(v.shape[d]);
  }
  return s + "]";
}

// `in` seen with out's shape under NumPy's rule (trailing dims aligned, size-1 or
// stride-0 dims repeat): same ndim as out, stride 0 where it repeats. Devices then
// walk every operand with out's shape.
View broadcast_to(const char* op, const char* what, const View& in, const View& out) {
  bool ok = in.ndim <= out.ndim;
  View b = in;
  b.ndim = out.ndim;
  const int lead = out.ndim - in.ndim;
  for (int d = out.ndim - 1; ok && d >= 0; --d) {
    const int src = d - lead;
    const int64_t size = src >= 0 ? in.shape[src] : 1, stride = src >= 0 ? in.strides[src] : 0;
    ok = size == out.shape[d] || size == 1 || stride == 0;
    b.shape[d] = out.shape[d];
    b.strides[d] = size == out.shape[d] && size != 1 ? stride : 0;
  }
  if (!ok) fail("{}: {} {} does not broadcast to the output {}", op, what, dims(in), dims(out));
  return b;
}

void check_same_shape(const char* op, const char* what, const View& v, const View& like, const char* like_name) {
  bool same = v.ndim == like.ndim;
  for (int d = 0; same && d < v.ndim; ++d) same = v.shape[d] == like.shape[d];
  if (!same) fail("{}: {} {} does not match {} {}", op, what, dims(v), like_name, dims(like));
}

void check_floating(const char* op, const char* what, const View& v) {
  if (!is_floating(v.dtype))
    fail("{}: {} must be floating point, got {} (convert with .to(vgrad::DType::Float32))", op, what,
         dtype_name(v.dtype));
}

void check_dtype(const char* op, const char* what, const View& v, DType dtype) {
  if (v.dtype != dtype) fail("{}: {} must be {}, got {}", op, what, dtype_name(dtype), dtype_name(v.dtype));
}

void check_contiguous(const char* op, const char* what, const View& v) {
  if (!v.is_contiguous()) fail("{}: {} {} must be contiguous", op, what, dims(v));
}

// A contiguous tensor of like's dtype and shape (an output or a gradient beside its input).
void check_like(const char* op, const char* what, const View& v, const View& like, const char* like_name) {
  check_dtype(op, what, v, like.dtype);
  check_same_shape(op, what, v, like, like_name);
  check_contiguous(op, what, v);
}

// A contiguous floating-point input with at least `min_dims` dims.
void check_floating_input(const char* op, const char* what, const View& v, int min_dims) {
  check_floating(op, what, v);
  check_contiguous(op, what, v);
  if (v.ndim < min_dims) fail("{}: {} {} needs at least {} dims", op, what, dims(v), min_dims);
}

void check_same_size(const char* op, const char* what, const View& v, const View& like) {
  check_dtype(op, what, v, like.dtype);
  check_contiguous(op, what, v);
  if (v.numel() != like.numel()) fail("{}: {} {} does not match parameter {}", op, what, dims(v), dims(like));
}

// A 1-D int64 index (a 0-d one counts as one element).
void check_index_vector(const char* op, const char* what, const View& index) {
  check_dtype(op, what, index, DType::Int64);
  if (index.ndim > 1) fail("{}: {} must be 1-D, got {}", op, what, dims(index));
}

// index_select and index_add: `table` indexed along `dim` by `index`; `rows` holds one
// slice per index (the output of index_select, the source of index_add).
void check_indexed(const char* op, const char* rows_name, const View& table, int dim, const View& index,
                   const View& rows) {
  if (dim < 0 || dim >= table.ndim) fail("{}: dim {} out of range for {}", op, dim, dims(table));
  check_index_vector(op, "index", index);
  check_dtype(op, rows_name, rows, table.dtype);
  if (rows.ndim != table.ndim) fail("{}: {} {} and {} differ in rank", op, rows_name, dims(rows), dims(table));
  for (int d = 0; d < table.ndim; ++d) {
    const int64_t want = d == dim ? index.numel() : table.shape[d];
    if (rows.shape[d] != want)
      fail("{}: {} {} should be {} in dim {} ({} indices into {})", op, rows_name, dims(rows), want, d, index.numel(),
           dims(table));
  }
}

}  // namespace

// The whole-row kernels (reductions, softmax, losses, index_add, random, optimizer steps)
// see 16-bit operands as float32 copies from the device's allocator: they accumulate in
// float32 anyway, and neither device needs a 16-bit variant of each. The price is one
// conversion pass per operand; elementwise ops and GEMM handle 16-bit natively.
class Backend::Float32Scratch {
 public:
  enum Access { kRead, kWrite, kReadWrite };
  explicit Float32Scratch(Backend& backend) : backend_(backend) {}
  ~Float32Scratch() {
    for (const Block& block : blocks_) backend_.temporary_allocator().deallocate(block.data, block.bytes);
  }
  Float32Scratch(const Float32Scratch&) = delete;
  Float32Scratch& operator=(const Float32Scratch&) = delete;

  // v itself unless it is 16-bit; else a contiguous float32 buffer of its shape, filled
  // from v when read, and converted back into v by finish() when written.
  View operator()(const View& v, Access access) {
    if (!is_half(v.dtype) || v.data == nullptr) return v;
    View scratch = v;
    scratch.dtype = DType::Float32;
    int64_t stride = 1;
    for (int d = v.ndim - 1; d >= 0; --d) {
      scratch.strides[d] = stride;
      stride *= v.shape[d];
    }
    const size_t bytes = static_cast<size_t>(v.numel()) * sizeof(float);
    scratch.data = backend_.temporary_allocator().allocate(bytes == 0 ? 1 : bytes);
    blocks_.push_back({scratch.data, bytes == 0 ? 1 : bytes});
    if (access != kWrite && v.numel() > 0) backend_.copy_impl(v, scratch);
    if (access != kRead) written_.push_back({scratch, v});
    return scratch;
  }
  void finish() {
    for (const auto& [scratch, target] : written_)
      if (target.numel() > 0) backend_.copy_impl(scratch, target);
    written_.clear();
  }

 private:
  struct Block {
    void* data;
    size_t bytes;
  };
  Backend& backend_;
  std::vector<Block> blocks_;
  std::vector<std::pair<View, View>> written_;  // (float32 scratch, 16-bit target)
};

// ---- elementwise ----

void Backend::fill(const View& out, double value) {
  if (out.numel() > 0) fill_impl(out, value);
}

void Backend::copy(const View& src, const View& out) {
  const View source = broadcast_to("copy", "source", src, out);
  if (out.numel() > 0) copy_impl(source, out);
}

void Backend::unary(UnaryOp op, const View& x, const View& out, double a, double b) {
  const char* name = op_name(op);
  const View input = broadcast_to(name, "input", x, out);
  check_dtype(name, "output", out, x.dtype);
  if (x.dtype == DType::Int64 && !scalar::defined_on_int64(op))
    fail("{}: not defined for int64 tensors (convert with .to(vgrad::DType::Float32))", name);
  if (x.dtype == DType::Int64 && !(scalar::is_int64_value(a) && scalar::is_int64_value(b)))
    fail("{}: parameters {} and {} must be whole numbers in int64's range for an int64 tensor", name, a, b);
  if (out.numel() > 0) unary_impl(op, input, out, a, b);
}

void Backend::binary(BinaryOp op, const View& a, const View& b, const View& out) {
  const char* name = op_name(op);
  const View first = broadcast_to(name, "first operand", a, out);
  const View second = broadcast_to(name, "second operand", b, out);
  check_dtype(name, "first operand", a, out.dtype);
  check_dtype(name, "second operand", b, out.dtype);
  if (out.dtype == DType::Int64 && !scalar::defined_on_int64(op))
    fail("{}: not defined for int64 tensors (convert with .to(vgrad::DType::Float32))", name);
  if (out.numel() > 0) binary_impl(op, first, second, out);
}

void Backend::where(const View& cond, const View& a, const View& b, const View& out) {
  const View condition = broadcast_to("where", "condition", cond, out);
  const View first = broadcast_to("where", "first operand", a, out);
  const View second = broadcast_to("where", "second operand", b, out);
  check_dtype("where", "condition", cond, out.dtype);
  check_dtype("where", "first operand", a, out.dtype);
  check_dtype("where", "second operand", b, out.dtype);
  if (out.numel() > 0) where_impl(condition, first, second, out);
}

// ---- reductions ----

void Backend::reduce(ReduceOp op, const View& in, const View& out, double scale) {
  const char* name = op_name(op);
  if (in.ndim != out.ndim)
    fail("{}: output {} must keep the input's {} dims (1 in reduced dims), input {}", name, dims(out), in.ndim,
         dims(in));
  int64_t reduced = 1;
  int reduced_dims = 0;
  for (int d = 0; d < in.ndim; ++d) {
    if (out.shape[d] != in.shape[d] && out.shape[d] != 1)
      fail("{}: output {} does not fit input {} (dim {}: {} vs {})", name, dims(out), dims(in), d, out.shape[d],
           in.shape[d]);
    if (out.shape[d] != in.shape[d]) {
      reduced *= in.shape[d];
      ++reduced_dims;
    }
  }
  const bool arg = op == ReduceOp::ArgMax || op == ReduceOp::ArgMin;
  check_dtype(name, "output", out, arg ? DType::Int64 : in.dtype);
  if (arg && reduced_dims > 1) fail("{}: reduces over one dim, got input {} and output {}", name, dims(in), dims(out));
  if (op == ReduceOp::Sum && scale != 1.0 && in.dtype == DType::Int64)
    fail("mean: not defined for int64 tensors (convert with .to(vgrad::DType::Float32))");
  if (out.numel() == 0) return;
  if (reduced == 0) {  // an empty sum is 0; an empty max has no value
    if (op != ReduceOp::Sum) fail("{}: reducing an empty dimension of {} has no result", name, dims(in));
    return fill_impl(out, 0.0);
  }
  Float32Scratch f32(*this);
  const View out32 = f32(out, Float32Scratch::kWrite);
  reduce_impl(op, f32(in, Float32Scratch::kRead), out32, scale);
  f32.finish();
}

double Backend::sum_of_squares(const View* xs, size_t count) {
  std::vector<View> inputs;  // the non-empty ones, 16-bit as float32 copies
  Float32Scratch f32(*this);
  for (size_t i = 0; i < count; ++i) {
    check_floating("sum_of_squares", "input", xs[i]);
    check_contiguous("sum_of_squares", "input", xs[i]);
    if (xs[i].numel() > 0) inputs.push_back(f32(xs[i], Float32Scratch::kRead));
  }
  return inputs.empty() ? 0.0 : sum_of_squares_impl(inputs.data(), inputs.size());
}

void Backend::unscale_and_check(const View* grads, size_t count, double inverse, const View& found) {
  check_dtype("unscale_and_check", "flag", found, DType::Float32);
  if (found.numel() != 1) fail("unscale_and_check: the flag must be one value, got {}", dims(found));
  if (!std::isfinite(inverse)) fail("unscale_and_check: inverse scale {} is not finite", inverse);
  std::vector<View> nonempty;
  for (size_t i = 0; i < count; ++i) {
    check_floating("unscale_and_check", "gradient", grads[i]);
    check_contiguous("unscale_and_check", "gradient", grads[i]);
    if (grads[i].numel() > 0) nonempty.push_back(grads[i]);
  }
  if (!nonempty.empty()) unscale_and_check_impl(nonempty.data(), nonempty.size(), inverse, found);
}

// ---- GEMM ----

namespace {

void check_gemm_sizes(const GemmArgs& args) {
  if (!is_floating(args.dtype))
    fail("matmul: {} tensors are not supported (use a floating dtype)", dtype_name(args.dtype));
  if (args.m < 0 || args.n < 0 || args.k < 0 || args.batch < 0)
    fail("gemm: negative size (m={}, n={}, k={}, batch={})", args.m, args.n, args.k, args.batch);
}

// args with every leading dimension checked (BLAS's form) and every size within BLAS's int.
GemmArgs with_leading_dims(const GemmArgs& args) {
  // A leading dimension is the distance between rows; it must cover a row, except when
  // there is a single row (then it is never read, but BLAS still wants it >= the row).
  auto leading = [](const char* what, int64_t ld, int64_t rows, int64_t row_length) -> int64_t {
    const int64_t need = std::max<int64_t>(1, row_length);
    if (ld >= need) return ld;
    if (rows <= 1) return need;
    fail("gemm: {} = {} is smaller than the row length {}", what, ld, row_length);
  };
  GemmArgs g = args;
  g.lda = leading("lda", g.lda, g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k);
  g.ldb = leading("ldb", g.ldb, g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n);
  g.ldc = leading("ldc", g.ldc, g.m, g.n);
  for (int64_t v : {g.m, g.n, g.k, g.lda, g.ldb, g.ldc, g.batch})
    if (v > INT_MAX) fail("matmul: size {} exceeds BLAS's 32-bit limit (m={}, n={}, k={})", v, g.m, g.n, g.k);
  return g;
}

}  // namespace

void Backend::gemm(const GemmArgs& args) {
  check_gemm_sizes(args);
  if (args.m == 0 || args.n == 0 || args.batch == 0) return;
  if (args.k == 0) {  // C = beta * C: an empty sum
    View c;
    c.data = args.c;
    c.dtype = args.dtype;
    c.ndim = 3;
    c.shape[0] = args.batch, c.shape[1] = args.m, c.shape[2] = args.n;
    c.strides[0] = args.stride_c, c.strides[1] = args.ldc, c.strides[2] = 1;
    return args.beta == 0.0 ? fill_impl(c, 0.0) : unary_impl(UnaryOp::Affine, c, c, args.beta, 0.0);
  }
  gemm_impl(with_leading_dims(args));
}

void Backend::gemm_epilogue(const GemmEpilogueArgs& args) {
  const GemmArgs& g = args.gemm;
  const char* name = op_name(args.epilogue);
  check_gemm_sizes(g);
  if (g.batch != 1 || g.alpha != 1.0 || g.beta != 0.0)
    fail("gemm ({} epilogue): needs batch 1, alpha 1 and beta 0, got batch {}, alpha {}, beta {}", name, g.batch,
         g.alpha, g.beta);
  if (args.epilogue == GemmEpilogue::Bias && args.bias == nullptr) fail("gemm (bias epilogue): no bias vector given");
  if (args.epilogue == GemmEpilogue::BiasGrad && args.bias_grad == nullptr)
    fail("gemm (bias gradient epilogue): no bias gradient vector given");
  // Empty sizes: the composed form, whose primitives know what an empty product gives.
  if (g.m == 0 || g.n == 0 || g.k == 0) return Backend::gemm_epilogue_impl(args);
  GemmEpilogueArgs checked = args;
  checked.gemm = with_leading_dims(g);
  gemm_epilogue_impl(checked);
}

// The composed epilogue, through the checked entry points (a 16-bit row sum widens to
// float32 there, as every reduction does).
void Backend::gemm_epilogue_impl(const GemmEpilogueArgs& args) {
  const GemmArgs& g = args.gemm;
  const View c = matrix_view(g.c, g.dtype, g.m, g.n, g.ldc, 1);
  GemmArgs product = g;
  if (args.epilogue != GemmEpilogue::BiasGrad && args.bias != nullptr) {
    copy(matrix_view(args.bias, g.dtype, g.m, g.n, 0, 1), c);  // the bias row broadcast over C's rows
    product.beta = 1.0;
  }
  gemm(product);
  if (args.epilogue == GemmEpilogue::BiasRelu) unary(UnaryOp::Relu, c, c);
  if (args.epilogue == GemmEpilogue::BiasGrad) {  // Σ_k op(A): A is (m, k), or (k, m) when trans_a
    const View a = g.trans_a ? matrix_view(g.a, g.dtype, g.m, g.k, 1, g.lda) : matrix_view(g.a, g.dtype, g.m, g.k, g.lda, 1);
    reduce(ReduceOp::Sum, a, matrix_view(args.bias_grad, g.dtype, g.m, 1, 1, 1));
  }
}

// ---- sliding windows ----

namespace {

// x (N, C, H, W) contiguous floating, and a geometry whose output size follows from it.
void check_image_geometry(const char* op, const View& x, const WindowGeometry& g) {
  check_floating(op, "image", x);
  check_contiguous(op, "image", x);
  if (x.ndim != 4 || x.shape[0] != g.batch || x.shape[1] != g.channels || x.shape[2] != g.height ||
      x.shape[3] != g.width)
    fail("{}: image {} does not match the geometry [{}, {}, {}, {}]", op, dims(x), g.batch, g.channels, g.height,
         g.width);
  if (g.kernel_h < 1 || g.kernel_w < 1 || g.stride_h < 1 || g.stride_w < 1 || g.dilation_h < 1 ||
      g.dilation_w < 1 || g.pad_h < 0 || g.pad_w < 0)
    fail("{}: kernel {}x{}, stride {}x{}, dilation {}x{} must be >= 1 and padding {}x{} >= 0", op, g.kernel_h,
         g.kernel_w, g.stride_h, g.stride_w, g.dilation_h, g.dilation_w, g.pad_h, g.pad_w);
  const int64_t out_h = (g.height + 2 * g.pad_h - g.dilation_h * (g.kernel_h - 1) - 1) / g.stride_h + 1;
  const int64_t out_w = (g.width + 2 * g.pad_w - g.dilation_w * (g.kernel_w - 1) - 1) / g.stride_w + 1;
  if (g.out_h != out_h || g.out_w != out_w || out_h < 1 || out_w < 1)
    fail("{}: output {}x{} does not follow from input {}x{} (expected {}x{})", op, g.out_h, g.out_w, g.height,
         g.width, out_h, out_w);
}

// ... and col (C·KH·KW, N·OH·OW) contiguous, of x's dtype.
void check_windows(const char* op, const View& x, const WindowGeometry& g, const View& col) {
  check_image_geometry(op, x, g);
  check_dtype(op, "columns", col, x.dtype);
  check_contiguous(op, "columns", col);
  if (col.ndim != 2 || col.shape[0] != g.col_rows() || col.shape[1] != g.col_cols())
    fail("{}: columns {} should be [{}, {}] (C·KH·KW, N·OH·OW)", op, dims(col), g.col_rows(), g.col_cols());
}

}  // namespace

void Backend::im2col(const View& x, const WindowGeometry& g, const View& col) {
  check_windows("im2col", x, g, col);
  if (col.numel() == 0) return;
  Float32Scratch f32(*this);  // 16-bit images (autocast's conv on the im2col path)
  im2col_impl(f32(x, Float32Scratch::kRead), g, f32(col, Float32Scratch::kWrite));
  f32.finish();
}

void Backend::col2im(const View& col, const WindowGeometry& g, const View& x) {
  check_windows("col2im", x, g, col);
  if (x.numel() == 0) return;
  if (col.numel() == 0) return fill_impl(x, 0.0);
  Float32Scratch f32(*this);
  col2im_impl(f32(col, Float32Scratch::kRead), g, f32(x, Float32Scratch::kWrite));
  f32.finish();
}

// x, weight and y of one dtype, contiguous, with the shapes the geometry gives; cuDNN
// counts in int, so every size must fit one.
bool Backend::conv2d(ConvPass pass, const View& x, const View& weight, const View& y, const ConvGeometry& g) {
  const char* op = pass == ConvPass::Forward        ? "conv2d"
                   : pass == ConvPass::BackwardData ? "conv2d backward (input)"
                                                    : "conv2d backward (weight)";
  const WindowGeometry& w = g.window;
  check_image_geometry(op, x, w);
  if (g.groups < 1 || w.channels % g.groups != 0 || g.filters % g.groups != 0)
    fail("{}: groups {} must divide the channels {} and the filters {}", op, g.groups, w.channels, g.filters);
  check_dtype(op, "weight", weight, x.dtype);
  check_dtype(op, "output", y, x.dtype);
  check_contiguous(op, "weight", weight);
  check_contiguous(op, "output", y);
  if (weight.ndim != 4 || weight.shape[0] != g.filters || weight.shape[1] != w.channels / g.groups ||
      weight.shape[2] != w.kernel_h || weight.shape[3] != w.kernel_w)
    fail("{}: weight {} should be [{}, {}, {}, {}]", op, dims(weight), g.filters, w.channels / g.groups, w.kernel_h,
         w.kernel_w);
  if (y.ndim != 4 || y.shape[0] != w.batch || y.shape[1] != g.filters || y.shape[2] != w.out_h || y.shape[3] != w.out_w)
    fail("{}: output {} should be [{}, {}, {}, {}]", op, dims(y), w.batch, g.filters, w.out_h, w.out_w);
  for (const View* v : {&x, &weight, &y})
    if (v->numel() > INT_MAX) fail("{}: {} elements exceed the 32-bit limit of a direct convolution", op, dims(*v));
  if (x.numel() == 0 || weight.numel() == 0 || y.numel() == 0) return false;
  return conv2d_impl(pass, x, weight, y, g);
}

namespace {

// Pooling: x as for im2col; out and indices (N, C, OH, OW), contiguous, of x's dtype and
// int64; windows never lie wholly in the padding (padding <= half the kernel).
void check_pool(const char* op, const View& x, const WindowGeometry& g, const View& out, const View& indices) {
  check_image_geometry(op, x, g);
  if (2 * g.pad_h > g.kernel_h || 2 * g.pad_w > g.kernel_w)
    fail("{}: padding {}x{} must be at most half the kernel {}x{}", op, g.pad_h, g.pad_w, g.kernel_h, g.kernel_w);
  check_dtype(op, "output", out, x.dtype);
  check_dtype(op, "indices", indices, DType::Int64);
  check_contiguous(op, "output", out);
  check_contiguous(op, "indices", indices);
  check_same_shape(op, "indices", indices, out, "output");
  if (out.ndim != 4 || out.shape[0] != g.batch || out.shape[1] != g.channels || out.shape[2] != g.out_h ||
      out.shape[3] != g.out_w)
    fail("{}: output {} should be [{}, {}, {}, {}]", op, dims(out), g.batch, g.channels, g.out_h, g.out_w);
}

}  // namespace

void Backend::max_pool2d(const View& x, const WindowGeometry& g, const View& out, const View& indices) {
  check_pool("max_pool2d", x, g, out, indices);
  if (out.numel() == 0) return;
  Float32Scratch f32(*this);
  max_pool2d_impl(f32(x, Float32Scratch::kRead), g, f32(out, Float32Scratch::kWrite), indices);
  f32.finish();
}

// The indices come from max_pool2d with this geometry, so they are in range.
void Backend::max_pool2d_backward(const View& grad_out, const View& indices, const WindowGeometry& g,
                                  const View& grad_x) {
  check_pool("max_pool2d backward", grad_x, g, grad_out, indices);
  if (grad_x.numel() == 0) return;
  if (grad_out.numel() == 0) return fill_impl(grad_x, 0.0);
  Float32Scratch f32(*this);
  max_pool2d_backward_impl(f32(grad_out, Float32Scratch::kRead), indices, g, f32(grad_x, Float32Scratch::kWrite));
  f32.finish();
}

// ---- normalization ----

namespace {

// A per-channel View beside x (N, C, ...): C contiguous values of x's dtype; an optional
// one (weight) may be empty (data null).
void check_per_channel(const char* op, const char* what, const View& v, const View& x, bool optional = false) {
  if (optional && v.data == nullptr) return;
  check_dtype(op, what, v, x.dtype);
  check_contiguous(op, what, v);
  if (v.numel() != x.shape[1])
    fail("{}: {} {} should have {} values, one per channel of input {}", op, what, dims(v), x.shape[1], dims(x));
}

// Float32 and float64 only: 16-bit data composes (a fused kernel would gain little there).
bool fused_norm_dtype(DType dtype) { return dtype == DType::Float32 || dtype == DType::Float64; }

}  // namespace

bool Backend::batch_norm(const View& x, const View& weight, const View& bias, double eps, const View& y,
                         const View& mean, const View& var) {
  if (!fused_norm_dtype(x.dtype)) return false;
  const char* op = "batch_norm";
  check_floating_input(op, "input", x, 2);
  if (x.numel() == 0) fail("{}: input {} has no values to take statistics of", op, dims(x));
  check_like(op, "output", y, x, "input");
  check_per_channel(op, "mean", mean, x);
  check_per_channel(op, "var", var, x);
  check_per_channel(op, "weight", weight, x, true);
  check_per_channel(op, "bias", bias, x, true);
  return batch_norm_impl(x, weight, bias, eps, y, mean, var);
}

bool Backend::batch_norm_backward(const View& grad_y, const View& x, const View& mean, const View& var,
                                  const View& weight, double eps, const View& grad_x, const View& grad_weight,
                                  const View& grad_bias) {
  if (!fused_norm_dtype(x.dtype)) return false;
  const char* op = "batch_norm backward";
  check_floating_input(op, "input", x, 2);
  if (x.numel() == 0) fail("{}: input {} has no values", op, dims(x));
  check_like(op, "grad_output", grad_y, x, "input");
  check_like(op, "grad_input", grad_x, x, "input");
  check_per_channel(op, "mean", mean, x);
  check_per_channel(op, "var", var, x);
  check_per_channel(op, "weight", weight, x, true);
  check_per_channel(op, "grad_weight", grad_weight, x);
  check_per_channel(op, "grad_bias", grad_bias, x);
  return batch_norm_backward_impl(grad_y, x, mean, var, weight, eps, grad_x, grad_weight, grad_bias);
}

// ---- softmax and cross-entropy ----

void Backend::softmax(const View& x, const View& out, bool log) {
  const char* name = log ? "log_softmax" : "softmax";
  check_floating_input(name, "input", x, 1);
  check_like(name, "output", out, x, "input");
  if (x.numel() == 0) return;
  Float32Scratch f32(*this);
  softmax_impl(f32(x, Float32Scratch::kRead), f32(out, Float32Scratch::kWrite), log);
  f32.finish();
}

void Backend::softmax_backward(const View& y, const View& grad_y, const View& grad_x, bool log) {
  const char* name = log ? "log_softmax backward" : "softmax backward";
  check_floating_input(name, "output", y, 1);
  check_like(name, "gradient", grad_y, y, "output");
  check_like(name, "input gradient", grad_x, y, "output");
  if (y.numel() == 0) return;
  Float32Scratch f32(*this);
  softmax_backward_impl(f32(y, Float32Scratch::kRead), f32(grad_y, Float32Scratch::kRead),
                        f32(grad_x, Float32Scratch::kWrite), log);
  f32.finish();
}

namespace {

// Scores (N, C), floating and contiguous, an output like them, and an int64 target of N.
void check_scores_and_target(const char* op, const char* what, const View& scores, const char* out_what,
                             const View& out, const View& target) {
  if (scores.ndim != 2) fail("{}: {} must be (N, C), got {}", op, what, dims(scores));
  check_floating_input(op, what, scores, 2);
  check_like(op, out_what, out, scores, what);
  check_index_vector(op, "target", target);
  if (target.numel() != scores.shape[0])
    fail("{}: target {} has {} entries for {} rows of {} {}", op, dims(target), target.numel(), scores.shape[0], what,
         dims(scores));
}

}  // namespace

void Backend::cross_entropy(const View& logits, const View& target, double smoothing, const View& probs,
                            const View& loss_rows) {
  const char* name = "cross_entropy";
  check_scores_and_target(name, "logits", logits, "probs", probs, target);
  check_dtype(name, "loss", loss_rows, logits.dtype);
  if (loss_rows.ndim > 1) fail("cross_entropy: loss must be 1-D, got {}", dims(loss_rows));
  const int64_t rows = logits.shape[0], classes = logits.shape[1];
  if (loss_rows.numel() != rows)
    fail("cross_entropy: loss {} has {} entries for {} rows", dims(loss_rows), loss_rows.numel(), rows);
  if (!(smoothing >= 0.0 && smoothing <= 1.0)) fail("cross_entropy: label smoothing {} is outside [0, 1]", smoothing);
  if (rows == 0) return;
  check_index({.op = name, .limit = classes, .class_targets = true}, target);
  Float32Scratch f32(*this);
  cross_entropy_impl(f32(logits, Float32Scratch::kRead), target, smoothing, f32(probs, Float32Scratch::kWrite),
                     f32(loss_rows, Float32Scratch::kWrite));
  f32.finish();
}

// The targets were range-checked by the forward that made `probs`.
void Backend::cross_entropy_backward(const View& probs, const View& target, double smoothing, double scale,
                                     const View& grad_logits) {
  check_scores_and_target("cross_entropy backward", "probs", probs, "gradient", grad_logits, target);
  if (probs.numel() == 0) return;
  Float32Scratch f32(*this);
  cross_entropy_backward_impl(f32(probs, Float32Scratch::kRead), target, smoothing, scale,
                              f32(grad_logits, Float32Scratch::kWrite));
  f32.finish();
}

// ---- gather / scatter ----

void fail_index_out_of_range(const IndexCheck& check, int64_t position, int64_t value) {
  if (check.probabilities)
    fail(
        "{}: input element {} (flat index) is outside [0, 1]: it takes probabilities (logits go to "
        "binary_cross_entropy_with_logits)",
        check.op, position);
  if (check.class_targets)
    fail("{}: target {} out of range for {} classes (row {})", check.op, value, check.limit, position);
  fail("{}: index {} out of range for dim {} of size {} (position {})", check.op, value, check.dim, check.limit,
       position);
}

void Backend::check_index(const IndexCheck& check, const View& index) {
  check_index_vector(check.op, check.class_targets ? "target" : "index", index);
  if (index.numel() > 0) check_index_impl(check, index);
}

void Backend::index_select(const View& x, int dim, const View& index, const View& out) {
  check_indexed("index_select", "output", x, dim, index, out);
  check_index({.op = "index_select", .limit = x.shape[dim], .dim = dim}, index);
  if (out.numel() > 0) index_select_impl(x, dim, index, out);
}

void Backend::index_add(const View& out, int dim, const View& index, const View& src) {
  check_indexed("index_add", "source", out, dim, index, src);
  check_index({.op = "index_add", .limit = out.shape[dim], .dim = dim}, index);
  if (src.numel() == 0) return;
  Float32Scratch f32(*this);
  index_add_impl(f32(out, Float32Scratch::kReadWrite), dim, index, f32(src, Float32Scratch::kRead));
  f32.finish();
}

// ---- random numbers ----

void Backend::uniform(const View& out, double low, double high, RandomState& state) {
  check_floating("uniform", "output", out);
  if (out.numel() == 0) return;
  Float32Scratch f32(*this);
  uniform_impl(f32(out, Float32Scratch::kWrite), low, high, state);
  f32.finish();
}

void Backend::normal(const View& out, double mean, double stddev, RandomState& state) {
  check_floating("normal", "output", out);
  if (!(stddev >= 0.0)) fail("normal: standard deviation {} must be >= 0", stddev);
  if (out.numel() == 0) return;
  Float32Scratch f32(*this);
  normal_impl(f32(out, Float32Scratch::kWrite), mean, stddev, state);
  f32.finish();
}

void Backend::dropout_mask(const View& out, double p, RandomState& state) {
  check_floating("dropout", "mask", out);
  if (!(p >= 0.0 && p <= 1.0)) fail("dropout: probability {} is outside [0, 1]", p);
  if (out.numel() == 0) return;
  Float32Scratch f32(*this);
  dropout_mask_impl(f32(out, Float32Scratch::kWrite), p, state);
  f32.finish();
}

// ---- optimizers ----

namespace {

void check_sgd_update(const char* name, const View& param, const View& grad, const View& momentum_buffer,
                      const SgdParams& p) {
  check_floating(name, "parameter", param);
  check_contiguous(name, "parameter", param);
  check_same_size(name, "gradient", grad, param);
  if (p.momentum != 0.0) {
    if (momentum_buffer.data == nullptr && param.numel() > 0)
      fail("{}: momentum {} needs a momentum buffer", name, p.momentum);
    check_same_size(name, "momentum buffer", momentum_buffer, param);
  }
  if (p.nesterov && (p.momentum <= 0.0 || p.dampening != 0.0))
    fail("{}: Nesterov momentum requires a momentum and zero dampening", name);
}

void check_adam_update(const char* name, const View& param, const View& grad, const View& exp_avg,
                       const View& exp_avg_sq, const AdamParams& p) {
  check_floating(name, "parameter", param);
  check_contiguous(name, "parameter", param);
  check_same_size(name, "gradient", grad, param);
  check_same_size(name, "exp_avg", exp_avg, param);
  check_same_size(name, "exp_avg_sq", exp_avg_sq, param);
  // A capturable step's count is in device memory (AdamParams::step_source): not read here.
  if (p.step_source == nullptr && p.step < 1)
    fail("{}: step {} must be >= 1 (bias correction is 1-based)", name, p.step);
}

// One launch updates every parameter at once, so no two may overlap (a parameter listed
// twice would be updated twice in sequence by the one-parameter form, racing in a launch).
template <class Update> void check_disjoint_params(const char* op, std::span<const Update> updates) {
  struct Range {
    uintptr_t begin, end;
    size_t entry;
  };
  std::vector<Range> ranges;
  for (size_t i = 0; i < updates.size(); ++i) {
    const View& p = updates[i].param;
    if (p.numel() == 0) continue;
    const auto begin = reinterpret_cast<uintptr_t>(p.data);
    ranges.push_back({begin, begin + static_cast<uintptr_t>(p.numel()) * dtype_size(p.dtype), i});
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].begin < ranges[i - 1].end)
      fail("{}: parameters {} and {} share memory (a parameter may be listed only once)", op,
           std::min(ranges[i - 1].entry, ranges[i].entry), std::max(ranges[i - 1].entry, ranges[i].entry));
}

// "op (parameter i)", for the checks' messages: on the stack, since a step checks every
// parameter and only a failing check reads it.
struct EntryName {
  EntryName(const char* op, size_t i) { std::snprintf(text, sizeof text, "%s (parameter %zu)", op, i); }
  char text[48];
};

}  // namespace

void Backend::sgd_update(const View& param, const View& grad, const View& momentum_buffer, const SgdParams& p) {
  check_sgd_update("sgd_update", param, grad, momentum_buffer, p);
  if (param.numel() == 0) return;
  Float32Scratch f32(*this);
  sgd_update_impl(f32(param, Float32Scratch::kReadWrite), f32(grad, Float32Scratch::kRead),
                  f32(momentum_buffer, Float32Scratch::kReadWrite), p);
  f32.finish();
}

void Backend::adam_update(const View& param, const View& grad, const View& exp_avg, const View& exp_avg_sq,
                          const AdamParams& p) {
  check_adam_update(p.decoupled ? "adamw_update" : "adam_update", param, grad, exp_avg, exp_avg_sq, p);
  if (param.numel() == 0) return;
  Float32Scratch f32(*this);
  adam_update_impl(f32(param, Float32Scratch::kReadWrite), f32(grad, Float32Scratch::kRead),
                   f32(exp_avg, Float32Scratch::kReadWrite), f32(exp_avg_sq, Float32Scratch::kReadWrite), p);
  f32.finish();
}

void Backend::sgd_update_many(std::span<const SgdUpdate> updates) {
  for (size_t i = 0; i < updates.size(); ++i) {
    const SgdUpdate& u = updates[i];
    check_sgd_update(EntryName("sgd_update", i).text, u.param, u.grad, u.momentum_buffer, u.params);
  }
  check_disjoint_params("sgd_update", updates);
  std::vector<SgdUpdate> wide;
  for (const SgdUpdate& u : updates) {
    if (u.param.numel() == 0) continue;
    if (is_half(u.param.dtype)) sgd_update(u.param, u.grad, u.momentum_buffer, u.params);
    else wide.push_back(u);
  }
  if (!wide.empty()) sgd_update_many_impl(wide);
}

void Backend::adam_update_many(std::span<const AdamUpdate> updates) {
  for (size_t i = 0; i < updates.size(); ++i) {
    const AdamUpdate& u = updates[i];
    check_adam_update(EntryName(u.params.decoupled ? "adamw_update" : "adam_update", i).text, u.param, u.grad,
                      u.exp_avg, u.exp_avg_sq, u.params);
  }
  check_disjoint_params("adam_update", updates);
  std::vector<AdamUpdate> wide;
  for (const AdamUpdate& u : updates) {
    if (u.param.numel() == 0) continue;
    if (is_half(u.param.dtype)) adam_update(u.param, u.grad, u.exp_avg, u.exp_avg_sq, u.params);
    else wide.push_back(u);
  }
  if (!wide.empty()) adam_update_many_impl(wide);
}

void Backend::sgd_update_many_impl(std::span<const SgdUpdate> updates) {
  for (const SgdUpdate& u : updates) sgd_update_impl(u.param, u.grad, u.momentum_buffer, u.params);
}

void Backend::adam_update_many_impl(std::span<const AdamUpdate> updates) {
  for (const AdamUpdate& u : updates) adam_update_impl(u.param, u.grad, u.exp_avg, u.exp_avg_sq, u.params);
}

// ---- asynchronous uploads: the CPU copies at once, so its fences are always empty ----

DeviceFence Backend::upload(std::span<const HostCopy> copies) {
  for (const HostCopy& copy : copies) copy_from_host(copy.dst, copy.src, copy.bytes);
  return {};
}

void Backend::fence_wait_host(void*) { fail("{}: internal error: a fence this device never made", device().str()); }
void Backend::fence_make_compute_wait(void* handle) { fence_wait_host(handle); }
void Backend::fence_release(void*) noexcept {}

DeviceFence& DeviceFence::operator=(DeviceFence&& other) noexcept {
  if (this != &other) {
    if (handle_ != nullptr) backend_->fence_release(handle_);
    backend_ = other.backend_;
    handle_ = std::exchange(other.handle_, nullptr);
  }
  return *this;
}

DeviceFence::~DeviceFence() {
  if (handle_ != nullptr) backend_->fence_release(handle_);
}

void DeviceFence::wait_host() const {
  if (handle_ != nullptr) backend_->fence_wait_host(handle_);
}

void DeviceFence::make_compute_wait() const {
  if (handle_ != nullptr) backend_->fence_make_compute_wait(handle_);
}

// ---- dispatch ----

Backend& backend_for(Device device) { return device.is_cpu() ? cpu_backend() : cuda::backend(device.index); }

}  // namespace vgrad

// matmul (2-D, batched, broadcast batch dims), linear and einsum, with backward
// rules as GEMMs: da = g·bᵀ, db = aᵀ·g. Transposed operands reach BLAS as flags.
#include <algorithm>
#include <map>
#include <optional>

#include "autograd/autocast.h"
#include "autograd/function.h"
#include "core/error.h"
#include "core/kernels.h"
#include "core/profiler.h"
#include "autograd/ops.h"

namespace vgrad {

using autograd::Context;
using autograd::needs_grad;
using autograd::record;

namespace {

// How one operand's matrices are laid out for GEMM: row-major with leading
// dimension ld, or transposed (column-major) — both without a copy.
struct MatrixLayout {
  Tensor tensor;  // possibly a contiguous copy when the strides fit neither layout
  bool transposed = false;
  int64_t ld = 0;
  int64_t batch_stride = 0;
};

// Can the batch dims [0, nb) be walked with one stride? (contiguous over batch, or all 0)
bool single_batch_stride(const Tensor& t, int64_t nb, int64_t* stride) {
  std::vector<int64_t> dims;  // batch dims of size > 1
  for (int64_t d = 0; d < nb; ++d)
    if (t.shape()[d] != 1) dims.push_back(d);
  *stride = 0;
  if (std::all_of(dims.begin(), dims.end(), [&](int64_t d) { return t.strides()[d] == 0; })) return true;
  for (size_t i = 0; i + 1 < dims.size(); ++i)
    if (t.strides()[dims[i]] != t.strides()[dims[i + 1]] * t.shape()[dims[i + 1]]) return false;
  *stride = t.strides()[dims.back()];
  return true;
}

MatrixLayout layout_of(const Tensor& t) {
  const int64_t nd = t.dim(), rows = t.shape()[nd - 2], cols = t.shape()[nd - 1];
  const int64_t rs = t.strides()[nd - 2], cs = t.strides()[nd - 1];
  // NOTE: an empty matrix (its strides may be 0) fits neither test below, and copying it
  // would not help: recursing forever. BLAS never reads it, so any valid ld will do.
  if (rows == 0 || cols == 0) return {t, false, std::max<int64_t>(cols, 1), 0};
  MatrixLayout layout;
  int64_t batch_stride = 0;
  const bool batch_ok = single_batch_stride(t, nd - 2, &batch_stride);
  if (batch_ok && (cs == 1 || cols == 1) && rs >= std::max<int64_t>(cols, 1)) {
    layout = {t, false, rs, batch_stride};
  } else if (batch_ok && (rs == 1 || rows == 1) && cs >= std::max<int64_t>(rows, 1)) {
    layout = {t, true, cs, batch_stride};
  } else {
    const Tensor copy = kernels::contiguous(t.is_contiguous() ? t : clone(t.detach()));
    return layout_of(copy);
  }
  if (rows == 1 && cols == 1) layout.ld = 1;
  return layout;
}

void check_matmul(const Tensor& a, const Tensor& b) {
  kernels::check_same_device(a, b, "matmul");
  if (!is_floating(a.dtype()) || !is_floating(b.dtype()))
    fail("matmul: {} @ {}: needs float32 or float64 tensors, got {} and {}", shape_str(a.shape()),
         shape_str(b.shape()), dtype_name(a.dtype()), dtype_name(b.dtype()));
  if (a.dtype() != b.dtype())  // matmul and linear promote first; this guards the backward's GEMMs
    fail("matmul: {} @ {}: dtypes differ ({} vs {})", shape_str(a.shape()), shape_str(b.shape()),
         dtype_name(a.dtype()), dtype_name(b.dtype()));
  if (a.shape()[a.dim() - 1] != b.shape()[b.dim() - 2])
    fail("matmul: {} @ {}: inner dimensions differ ({} vs {})", shape_str(a.shape()), shape_str(b.shape()),
         a.shape()[a.dim() - 1], b.shape()[b.dim() - 2]);
}

// C = A·B for operands of >= 2 dims with broadcast batch dims; no graph.
Tensor matmul_forward(const Tensor& a_in, const Tensor& b_in) {
  check_matmul(a_in, b_in);
  const int64_t m = a_in.shape()[a_in.dim() - 2], k = a_in.shape()[a_in.dim() - 1], n = b_in.shape()[b_in.dim() - 1];
  const Shape a_batch(a_in.shape().begin(), a_in.shape().end() - 2), b_batch(b_in.shape().begin(), b_in.shape().end() - 2);
  Shape batch = broadcast_shapes(a_batch, b_batch, "matmul");
  Shape out_shape = batch;
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor a = a_in, b = b_in;
  int64_t rows = m;
  // (…, M, K) @ (K, N): fold the batch into M when A's rows are evenly spaced — one GEMM.
  if (b_in.dim() == 2 && a_in.dim() > 2 && a_in.is_contiguous()) {
    a = make_view(a_in, {numel(batch) * m, k}, {k, 1}, a_in.offset());
    rows = numel(batch) * m;
    batch = {};
  }
  Shape a_full = batch, b_full = batch;
  a_full.insert(a_full.end(), {rows, k});
  b_full.insert(b_full.end(), {k, n});
  a = expand(a.detach(), a_full);
  b = expand(b.detach(), b_full);
  const MatrixLayout la = layout_of(a), lb = layout_of(b);
  Tensor out = Tensor::empty(out_shape, a_in.dtype(), a_in.device());
  if (out.numel() == 0) return out;
  if (k == 0) return out.fill_(0.0);
  GemmArgs g;
  g.trans_a = la.transposed;
  g.trans_b = lb.transposed;
  g.m = rows;
  g.n = n;
  g.k = k;
  g.batch = numel(batch);
  g.a = la.tensor.data_ptr();
  g.lda = la.ld;
  g.stride_a = la.batch_stride;
  g.b = lb.tensor.data_ptr();
  g.ldb = lb.ld;
  g.stride_b = lb.batch_stride;
  g.c = out.data_ptr();
  g.ldc = n;
  g.stride_c = rows * n;
  g.dtype = out.dtype();
  backend_for(out.device()).gemm(g);
  return out;
}

}  // namespace

namespace {

// How a float32 master weight W multiplies x: linear's W (D_out, D_in) as x·Wᵀ, matmul's W
// (D_in, D_out) as x·W, or matmul's W (D_out, D_in) first, as W·x.
enum class MasterLayout { OutIn, InOut, WeightFirst };

// t as rows of `features` values, (R, features): t (…, features), or for W·x, x (…, features, N)
// as its transpose's rows (a 1-D x is one row).
Tensor feature_rows(const Tensor& t, int64_t features, MasterLayout layout) {
  if (layout == MasterLayout::WeightFirst && t.dim() >= 2) return reshape(transpose(t, -1, -2), {-1, features});
  return reshape(t, {-1, features});
}

// x in the low dtype when `weight` is a float32 master weight under autocast (a 2-D leaf that
// requires grad, while autograd records) and x casts to the low dtype; undefined otherwise,
// and the op takes its composed path (cast node, then 16-bit operands).
Tensor low_input_for_master(const Tensor& x, const Tensor& weight) {
  if (!autograd::autocast::is_enabled() || weight.dtype() != DType::Float32 || weight.dim() != 2 ||
      !weight.is_leaf() || !weight.requires_grad() || !autograd::GradMode::is_enabled())
    return Tensor();
  const Tensor low_x = autograd::autocast::to_low(x);
  return low_x.dtype() == autograd::autocast::low_dtype() ? low_x : Tensor();
}

// linear or matmul under autocast on a float32 master weight: the GEMMs run on its 16-bit
// cast (cached: once per step), as PyTorch's, but the node's input is the float32 weight
// itself, so backward never holds a 16-bit dW beside its float32 copy, nor the cast after its
// last use: dx first (only when x needs a gradient: otherwise the cast is not kept at all),
// then the cast is let go, then dW (16-bit GEMMs, float32 accumulation) is widened into the
// float32 gradient a block of W's rows at a time. Same values as the composed path (cast node
// + linear or matmul), but for W·x on a batched x, where the composed dW rounds each batch's
// product to 16-bit before summing them and this one rounds the float32 sum once; a step's
// peak memory about float32's, below the composed path's (tests/amp/test_autocast.cpp).
// low_bias: linear's, or undefined.
//   OutIn (linear):        x (…, D_in)·Wᵀ + b;  dx = g·W,   dW = gᵀ·x,   db = Σ_rows g
//   InOut (matmul):        x (…, D_in)·W;       dx = g·Wᵀ,  dW = xᵀ·g
//   WeightFirst (matmul):  W·x (…, D_in, N);    dx = Wᵀ·g,  dW = g·xᵀ (OutIn's, with x's and g's
//                          columns as rows: a batched x and g are copied to rows first)
Tensor on_master_weight(MasterLayout layout, const Tensor& low_x, const Tensor& weight, const Tensor& low_bias) {
  const bool in_out = layout == MasterLayout::InOut, weight_first = layout == MasterLayout::WeightFirst;
  const Tensor low_weight = autograd::autocast::to_low(weight);
  Tensor out;
  {
    NoGradGuard no_grad;  // the op itself checks the shapes, naming them
    out = in_out ? matmul(low_x, low_weight)
          : weight_first ? matmul(low_weight, low_x)
                         : linear(low_x, low_weight, low_bias);
  }
  Context ctx(layout == MasterLayout::OutIn ? "linear" : "matmul");
  ctx.save_for_backward({low_x, weight});
  auto cast = std::make_shared<Tensor>(needs_grad({low_x}) ? low_weight : Tensor());  // for dx only
  return record(out, {low_x, weight, low_bias}, std::move(ctx), [cast, layout](Context& c, const Tensor& grad_output) {
    const bool in_out = layout == MasterLayout::InOut, weight_first = layout == MasterLayout::WeightFirst;
    const Tensor input = c.saved(0), master = c.saved(1);
    const int64_t in_features = master.shape()[in_out ? 0 : 1], out_features = master.shape()[in_out ? 1 : 0];
    Tensor dx, dw, db;
    if (c.needs_input_grad(0)) {
      // A second backward (retain_graph) finds the cast gone and casts again.
      const Tensor low_w = cast->defined() ? *cast : kernels::cast(master, grad_output.dtype());
      if (weight_first)  // as matmul's own backward: Wᵀ·g over g's batch (a 1-D x: g is one column)
        dx = reshape(matmul_forward(transpose(low_w, 0, 1), input.dim() == 1 ? reshape(grad_output, {-1, 1}) : grad_output),
                     input.shape());
      else
        dx = reshape(matmul_forward(reshape(grad_output, {-1, out_features}), in_out ? transpose(low_w, 0, 1) : low_w),
                     input.shape());
    }
    *cast = Tensor();
    if (!c.needs_input_grad(1) && !c.needs_input_grad(2)) return std::vector<Tensor>{dx, dw, db};
    const Tensor g = feature_rows(grad_output, out_features, layout), x = feature_rows(input, in_features, layout);
    // db before dW: the row sum widens g to float32 scratch, which should not meet the float32 dW.
    if (c.needs_input_grad(2)) db = kernels::reduce(ReduceOp::Sum, g, {0}, false, 1.0, "linear backward");  // linear's only
    if (c.needs_input_grad(1)) {  // dW's rows: 256 KiB (at least 128 rows) of 16-bit rows at a time
      const Tensor& row_side = in_out ? x : g;  // dW = row_sideᵀ·col_side
      const Tensor& col_side = in_out ? g : x;
      dw = Tensor::empty(master.shape(), DType::Float32, master.device());
      const int64_t rows = std::max<int64_t>(128, (int64_t(256) << 10) / std::max<int64_t>(1, master.shape()[1] * 2));
      for (int64_t first = 0; first < master.shape()[0]; first += rows) {
        const int64_t count = std::min(rows, master.shape()[0] - first);
        dw.narrow(0, first, count).copy_(matmul_forward(transpose(row_side.narrow(1, first, count), 0, 1), col_side));
      }
    }
    return std::vector<Tensor>{dx, dw, db};
  });
}

}  // namespace

// a (…, N, K) @ b (…, K, M) -> (…, N, M);   da = g·bᵀ,   db = aᵀ·g   (batch dims broadcast;
// the engine sums gradients over broadcast batch dims)
Tensor matmul(const Tensor& a, const Tensor& b) {
  VGRAD_PROFILE_OP("matmul");
  if (const Tensor low_a = low_input_for_master(a, b); low_a.defined())
    return on_master_weight(MasterLayout::InOut, low_a, b, Tensor());
  if (const Tensor low_b = low_input_for_master(b, a); low_b.defined())
    return on_master_weight(MasterLayout::WeightFirst, low_b, a, Tensor());
  if (const auto low = autograd::autocast::to_low(a, b); low.changed) return matmul(low.first, low.second);
  if (a.dim() == 0 || b.dim() == 0)
    fail("matmul: {} @ {}: both operands need at least 1 dim", shape_str(a.shape()), shape_str(b.shape()));
  // Mixed dtypes promote as elementwise ops do (int64 < float32 < float64); the
  // conversion is differentiable, so each gradient comes back in its operand's dtype.
  if (a.dtype() != b.dtype()) {
    const DType dtype = promote(a.dtype(), b.dtype());
    return matmul(to_dtype(a, dtype), to_dtype(b, dtype));
  }
  // 1-D a is a row (1, K); the inner call already dropped b's column when b is 1-D too.
  if (a.dim() == 1) return squeeze(matmul(unsqueeze(a, 0), b), b.dim() == 1 ? -1 : -2);
  if (b.dim() == 1) return squeeze(matmul(a, unsqueeze(b, 1)), -1);
  Tensor out = matmul_forward(a, b);
  if (!needs_grad({a, b})) return out;
  Context ctx("matmul");
  ctx.save_for_backward({a, b});
  return record(out, {a, b}, std::move(ctx), [](Context& c, const Tensor& g) {
    const Tensor x = c.saved(0), w = c.saved(1);
    Tensor ga, gb;
    if (c.needs_input_grad(0)) ga = matmul_forward(g, transpose(w, -1, -2));
    if (c.needs_input_grad(1)) {
      if (w.dim() == 2 && x.dim() > 2) {  // fold the batch: one (K, rows)·(rows, M) GEMM
        const int64_t k = x.shape()[x.dim() - 1], n = g.shape()[g.dim() - 1];
        gb = matmul_forward(transpose(reshape(x, {-1, k}), 0, 1), reshape(g, {-1, n}));
      } else {
        gb = matmul_forward(transpose(x, -1, -2), g);
      }
    }
    return std::vector<Tensor>{ga, gb};
  });
}

namespace {

// a (M, K) · b (K, N) -> (M, N) for 2-D operands in any layout layout_of takes, as one GEMM
// with its epilogue (Backend::gemm_epilogue): `bias` (N, contiguous) added [then ReLU], or
// `bias_grad` (M, contiguous) = Σ_k a. Without an epilogue: the plain GEMM.
Tensor product_2d(const Tensor& a, const Tensor& b, std::optional<GemmEpilogue> epilogue, const Tensor& bias = Tensor(),
                  const Tensor& bias_grad = Tensor()) {
  check_matmul(a, b);
  if (!epilogue) return matmul_forward(a, b);
  const MatrixLayout la = layout_of(a.detach()), lb = layout_of(b.detach());
  Tensor out = Tensor::empty({a.shape()[0], b.shape()[1]}, a.dtype(), a.device());
  GemmEpilogueArgs e;
  e.gemm.trans_a = la.transposed;
  e.gemm.trans_b = lb.transposed;
  e.gemm.m = a.shape()[0];
  e.gemm.n = b.shape()[1];
  e.gemm.k = a.shape()[1];
  e.gemm.a = la.tensor.data_ptr();
  e.gemm.lda = la.ld;
  e.gemm.b = lb.tensor.data_ptr();
  e.gemm.ldb = lb.ld;
  e.gemm.c = out.data_ptr();
  e.gemm.ldc = std::max<int64_t>(1, b.shape()[1]);
  e.gemm.dtype = out.dtype();
  e.epilogue = *epilogue;
  e.bias = bias.defined() ? bias.data_ptr() : nullptr;
  e.bias_grad = bias_grad.defined() ? bias_grad.data_ptr() : nullptr;
  backend_for(out.device()).gemm_epilogue(e);
  return out;
}

// linear's gradients from Δ = ∂L/∂Z (Z = x·Wᵀ + b, before any ReLU):  dx = Δ·W,  dW = Δᵀ·x,
// db = Σ_rows Δ — taken from dW's GEMM by its epilogue when both are asked for.
std::vector<Tensor> linear_gradients(Context& c, const Tensor& delta) {
  const Tensor input = c.saved(0), w = c.saved(1);
  Tensor dx, dw, db;
  if (c.needs_input_grad(0)) dx = matmul_forward(delta, w);
  if (c.needs_input_grad(1) && c.needs_input_grad(2)) {
    db = Tensor::empty({w.shape()[0]}, delta.dtype(), delta.device());
    dw = product_2d(transpose(delta, 0, 1), input, GemmEpilogue::BiasGrad, Tensor(), db);
  } else if (c.needs_input_grad(1)) {
    dw = matmul_forward(transpose(delta, 0, 1), input);
  } else if (c.needs_input_grad(2)) {
    db = kernels::reduce(ReduceOp::Sum, delta, {0}, false, 1.0, "linear backward");
  }
  return {dx, dw, db};
}

// linear and linear_relu: x (…, D_in) · weight (D_out, D_in)ᵀ + bias (D_out) [then ReLU], one
// GEMM whose epilogue adds the bias [and applies the ReLU].
Tensor linear_op(const Tensor& x, const Tensor& weight, const Tensor& bias, bool relu_after) {
  const char* name = relu_after ? "linear_relu" : "linear";
  if (weight.dim() != 2) fail("{}: weight must be 2-D (out, in), got {}", name, shape_str(weight.shape()));
  if (x.dim() < 1 || x.shape()[x.dim() - 1] != weight.shape()[1])
    fail("{}: input {} has {} features, expected {} (weight {})", name, shape_str(x.shape()),
         x.dim() ? x.shape()[x.dim() - 1] : 0, weight.shape()[1], shape_str(weight.shape()));
  if (bias.defined() && (bias.dim() != 1 || bias.shape()[0] != weight.shape()[0]))
    fail("{}: bias {} does not match weight {} (expected [{}])", name, shape_str(bias.shape()),
         shape_str(weight.shape()), weight.shape()[0]);
  // Mixed dtypes promote as in matmul (int64 < float32 < float64).
  const DType dtype = promote(promote(x.dtype(), weight.dtype()), bias.defined() ? bias.dtype() : x.dtype());
  if (x.dtype() != dtype || weight.dtype() != dtype || (bias.defined() && bias.dtype() != dtype))
    return linear_op(to_dtype(x, dtype), to_dtype(weight, dtype), bias.defined() ? to_dtype(bias, dtype) : bias,
                     relu_after);
  const int64_t in_features = weight.shape()[1], out_features = weight.shape()[0];
  if (x.dim() != 2) {  // (…, D_in): fold leading dims into the batch
    Shape out_shape = x.shape();
    out_shape.back() = out_features;
    return reshape(linear_op(reshape(x, {-1, in_features}), weight, bias, relu_after), out_shape);
  }
  check_matmul(x, transpose(weight, 0, 1));
  if (bias.defined()) kernels::check_same_device(x, bias, name);
  const Tensor bias_vector = bias.defined() ? kernels::contiguous(bias.detach()) : Tensor();
  Tensor out;
  if (relu_after) out = product_2d(x, transpose(weight, 0, 1), GemmEpilogue::BiasRelu, bias_vector);
  else if (bias.defined()) out = product_2d(x, transpose(weight, 0, 1), GemmEpilogue::Bias, bias_vector);
  else out = product_2d(x, transpose(weight, 0, 1), std::nullopt);
  if (!needs_grad({x, weight, bias})) return out;
  Context ctx(name);
  ctx.save_for_backward(relu_after ? std::vector<Tensor>{x, weight, out} : std::vector<Tensor>{x, weight});
  return record(out, {x, weight, bias}, std::move(ctx), [relu_after](Context& c, const Tensor& g) {
    // NOTE: ReLU's gradient from its output (y > 0 exactly where Z > 0, NaN included, and 0 at
    // Z = 0, as PyTorch's threshold_backward): no mask is kept beside y.
    return linear_gradients(c, relu_after ? kernels::binary(BinaryOp::ReluBackward, g, c.saved(2), "linear_relu backward") : g);
  });
}

}  // namespace

// x (N, D_in) · weight (D_out, D_in)ᵀ + bias (D_out) -> (N, D_out), one GEMM whose epilogue adds
// the bias;   dx = g·W,   dW = gᵀ·x,   db = Σ_rows g (from dW's GEMM, by its epilogue)
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  VGRAD_PROFILE_OP("linear");
  if (const Tensor low_x = low_input_for_master(x, weight); low_x.defined())
    return on_master_weight(MasterLayout::OutIn, low_x, weight, autograd::autocast::to_low(bias));
  if (const auto low = autograd::autocast::to_low(x, weight, bias); low.changed)
    return linear(low.first, low.second, low.third);
  return linear_op(x, weight, bias, false);
}

// relu(x·Wᵀ + b) -> (N, D_out), one GEMM whose epilogue adds the bias and applies the ReLU;
// Δ = g where y > 0, else 0 (y the output);   dx = Δ·W,   dW = Δᵀ·x,   db = Σ_rows Δ
Tensor linear_relu(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  VGRAD_PROFILE_OP("linear_relu");
  // A float32 master weight under autocast: linear's own path (the 16-bit cast is not kept),
  // then the ReLU as its own op.
  if (const Tensor low_x = low_input_for_master(x, weight); low_x.defined())
    return relu(on_master_weight(MasterLayout::OutIn, low_x, weight, autograd::autocast::to_low(bias)));
  if (const auto low = autograd::autocast::to_low(x, weight, bias); low.changed)
    return linear_relu(low.first, low.second, low.third);
  return linear_op(x, weight, bias, true);
}

// Two-operand einsum, lowered to permute/reshape/batched matmul (all differentiable).
Tensor einsum(const std::string& equation_in, const Tensor& a, const Tensor& b) {
  VGRAD_PROFILE_OP("einsum");
  if (const auto low = autograd::autocast::to_low(a, b); low.changed) return einsum(equation_in, low.first, low.second);
  std::string equation;
  for (char ch : equation_in)
    if (ch != ' ') equation += ch;
  const auto comma = equation.find(','), arrow = equation.find("->");
  if (comma == std::string::npos) fail("einsum: '{}' needs two operands separated by ','", equation_in);
  const std::string sa = equation.substr(0, comma);
  const std::string sb = equation.substr(comma + 1, arrow == std::string::npos ? std::string::npos : arrow - comma - 1);
  std::string so;
  std::map<char, int> count;
  for (char ch : sa + sb) {
    if (!std::isalpha(static_cast<unsigned char>(ch))) fail("einsum: '{}': bad character '{}'", equation_in, ch);
    count[ch]++;
  }
  if (arrow != std::string::npos) {
    so = equation.substr(arrow + 2);
  } else {  // implicit output: letters that appear once, in alphabetical order
    for (auto [ch, n] : count)
      if (n == 1) so += ch;
  }
  auto check_operand = [&](const std::string& s, const Tensor& t, const char* which) {
    if (static_cast<int64_t>(s.size()) != t.dim())
      fail("einsum: '{}': operand {} has {} dims but '{}' names {}", equation_in, which, t.dim(), s, s.size());
    for (size_t i = 0; i < s.size(); ++i)
      if (s.find(s[i]) != i) fail("einsum: '{}': repeated index '{}' within one operand is not supported", equation_in, s[i]);
  };
  check_operand(sa, a, "a");
  check_operand(sb, b, "b");
  std::map<char, int64_t> size;
  for (size_t i = 0; i < sa.size(); ++i) size[sa[i]] = a.shape()[i];
  for (size_t i = 0; i < sb.size(); ++i) {
    if (size.count(sb[i]) && size[sb[i]] != b.shape()[i])
      fail("einsum: '{}': index '{}' has size {} in a but {} in b", equation_in, sb[i], size[sb[i]], b.shape()[i]);
    size[sb[i]] = b.shape()[i];
  }
  for (char ch : so)
    if (!size.count(ch)) fail("einsum: '{}': output index '{}' is in no operand", equation_in, ch);
  auto in = [](const std::string& s, char ch) { return s.find(ch) != std::string::npos; };
  // Letters in one operand only and not in the output are summed out first.
  Tensor x = a, y = b;
  std::string xa = sa, yb = sb;
  auto sum_out = [&](Tensor& t, std::string& s, const std::string& other) {
    std::vector<int64_t> axes;
    std::string kept;
    for (size_t i = 0; i < s.size(); ++i) {
      if (!in(other, s[i]) && !in(so, s[i])) axes.push_back(static_cast<int64_t>(i));
      else kept += s[i];
    }
    if (!axes.empty()) t = sum(t, axes);
    s = kept;
  };
  sum_out(x, xa, yb);
  sum_out(y, yb, xa);
  std::string batch, left, right, contracted;
  for (char ch : xa) {
    if (in(yb, ch) && in(so, ch)) batch += ch;
    else if (in(yb, ch)) contracted += ch;
    else left += ch;
  }
  for (char ch : yb)
    if (!in(xa, ch)) right += ch;
  auto order = [](const std::string& s, const std::string& target) {
    std::vector<int64_t> perm;
    for (char ch : target) perm.push_back(static_cast<int64_t>(s.find(ch)));
    return perm;
  };
  auto product = [&](const std::string& s) {
    int64_t p = 1;
    for (char ch : s) p *= size[ch];
    return p;
  };
  const int64_t nb = product(batch), m = product(left), k = product(contracted), n = product(right);
  const Tensor x3 = reshape(permute(x, order(xa, batch + left + contracted)), {nb, m, k});
  const Tensor y3 = reshape(permute(y, order(yb, batch + contracted + right)), {nb, k, n});
  Shape result_shape;
  for (char ch : batch + left + right) result_shape.push_back(size[ch]);
  const Tensor result = reshape(matmul(x3, y3), result_shape);
  return permute(result, order(batch + left + right, so));
}

}  // namespace vgrad

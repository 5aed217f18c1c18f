// The public differentiable tensor operations, each defined beside its backward
// rule in autograd/ops/<family>.cpp (creation ops are in core/creation.h).
// Binary ops broadcast like NumPy; mixed dtypes promote int64 < float32 < float64 in
// elementwise ops, comparisons, where, cat, matmul, linear and einsum alike.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/creation.h"
#include "core/tensor.h"

namespace vgrad {

// ---------------- elementwise (autograd/ops/elementwise.cpp) ----------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, double exponent);
Tensor pow(double base, const Tensor& exponent);
Tensor maximum(const Tensor& a, const Tensor& b);  // ties: the gradient goes half to each
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor abs(const Tensor& x);  // subgradient 0 at 0
Tensor relu(const Tensor& x);  // subgradient 0 at 0 (as PyTorch)
Tensor leaky_relu(const Tensor& x, double negative_slope = 0.01);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor gelu(const Tensor& x);  // exact (erf) form, as PyTorch's default
Tensor clamp(const Tensor& x, double min, double max);  // gradient 1 inside [min, max], 0 outside
Tensor square(const Tensor& x);
Tensor log1p(const Tensor& x);  // log(1 + x), accurate near 0
Tensor expm1(const Tensor& x);  // exp(x) - 1, accurate near 0
Tensor affine(const Tensor& x, double scale, double shift);  // scale*x + shift, one pass
// Comparisons give masks of 1/0 in the promoted dtype (not differentiable).
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
// Against a number: a mask in x's dtype (an int64 x against 0.5 compares exactly).
Tensor eq(const Tensor& x, double value);
Tensor ne(const Tensor& x, double value);
Tensor lt(const Tensor& x, double value);
Tensor le(const Tensor& x, double value);
Tensor gt(const Tensor& x, double value);
Tensor ge(const Tensor& x, double value);
// cond (any dtype, nonzero = true) ? a : b, broadcasting all three.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& x);
Tensor operator+(const Tensor& a, double b);
Tensor operator-(const Tensor& a, double b);
Tensor operator*(const Tensor& a, double b);
Tensor operator/(const Tensor& a, double b);
Tensor operator+(double a, const Tensor& b);
Tensor operator-(double a, const Tensor& b);
Tensor operator*(double a, const Tensor& b);
Tensor operator/(double a, const Tensor& b);
// Comparison operators are the masks above: x > 0, 0.5 <= x, a == b.
Tensor operator==(const Tensor& a, const Tensor& b);
Tensor operator!=(const Tensor& a, const Tensor& b);
Tensor operator<(const Tensor& a, const Tensor& b);
Tensor operator<=(const Tensor& a, const Tensor& b);
Tensor operator>(const Tensor& a, const Tensor& b);
Tensor operator>=(const Tensor& a, const Tensor& b);
Tensor operator==(const Tensor& x, double value);
Tensor operator!=(const Tensor& x, double value);
Tensor operator<(const Tensor& x, double value);
Tensor operator<=(const Tensor& x, double value);
Tensor operator>(const Tensor& x, double value);
Tensor operator>=(const Tensor& x, double value);
Tensor operator==(double value, const Tensor& x);
Tensor operator!=(double value, const Tensor& x);
Tensor operator<(double value, const Tensor& x);
Tensor operator<=(double value, const Tensor& x);
Tensor operator>(double value, const Tensor& x);
Tensor operator>=(double value, const Tensor& x);

// ---------------- reductions (autograd/ops/reduce.cpp) ----------------
// axes may be negative; an empty list reduces over everything.
Tensor sum(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdim = false);
Tensor amax(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdim = false);  // ties share the gradient equally
Tensor amin(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdim = false);
// The values of PyTorch's max(dim)/min(dim): the gradient goes to the first extreme only.
Tensor max(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor min(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor argmax(const Tensor& x, int64_t axis, bool keepdim = false);  // first maximum; int64
Tensor argmin(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor var(const Tensor& x, const std::vector<int64_t>& axes = {}, int64_t correction = 1, bool keepdim = false);
// Sums `grad` over broadcast dims down to `shape` (the engine's unbroadcast).
Tensor sum_to(const Tensor& grad, const Shape& shape);

// ---------------- matmul (autograd/ops/matmul.cpp) ----------------
// Like torch.matmul: 1-D/2-D/batched with broadcast batch dims. Transposed operands
// go to BLAS as flags, never copied.
Tensor matmul(const Tensor& a, const Tensor& b);
// Two-operand einsum ("bqd,bkd->bqk", "ij,jk->ik", "ij->ji", ...), on permute/reshape/matmul.
Tensor einsum(const std::string& equation, const Tensor& a, const Tensor& b);
// x (N, D_in) · weight (D_out, D_in)ᵀ + bias (D_out), one GEMM whose epilogue adds the bias.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
// relu(linear(x, weight, bias)) as one op: one GEMM whose epilogue adds the bias (cuBLASLt on
// CUDA; its ReLU epilogue would turn NaN into 0), then the ReLU, with exactly relu(linear)'s
// values and gradients (0 at 0, as PyTorch). For layers a ReLU follows: nn::LinearReLU;
// nn::functional::linear_relu.
Tensor linear_relu(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---------------- shape (autograd/ops/shape.cpp) ----------------
Tensor reshape(const Tensor& x, const Shape& shape);  // one dim may be -1
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1);
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor squeeze(const Tensor& x, int64_t axis);
Tensor unsqueeze(const Tensor& x, int64_t axis);
Tensor narrow(const Tensor& x, int64_t axis, int64_t start, int64_t length);
Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end, int64_t step = 1);
Tensor expand(const Tensor& x, const Shape& shape);
Tensor index_select(const Tensor& x, int64_t axis, const Tensor& index);
Tensor contiguous(const Tensor& x);
Tensor clone(const Tensor& x);
Tensor cat(const std::vector<Tensor>& tensors, int64_t axis);
// torch.stack: the tensors (one shape; dtypes promote as in cat) along a new axis in
// [-(d+1), d];  each input's gradient is its select of g.
Tensor stack(const std::vector<Tensor>& tensors, int64_t axis = 0);
// torch.split / torch.chunk: views (narrow) along axis. split_size pieces, the last one
// smaller; or explicit sizes that sum to the axis. chunk: pieces of ceil(size / chunks),
// so fewer than `chunks` may come back (chunk(5 rows, 4) gives 2, 2, 1).
// NOTE: x.split({5}) is split_size 5, as in LibTorch; write std::vector<int64_t>{5} for sizes.
std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t axis = 0);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis = 0);
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t axis = 0);

// ---------------- index (autograd/ops/index.cpp) ----------------
// torch.gather: out[i][j] = x[index[i][j]][j] (axis 0; likewise along any axis). index is
// int64 with x's number of dims and index.size(d) <= x.size(d) for d != axis; out has
// index's shape. dx = scatter_add(zeros, axis, index, g).
Tensor gather(const Tensor& x, int64_t axis, const Tensor& index);
// torch.scatter_add: x with src[i][j] added at [index[i][j]][j] (axis 0), repeated indices
// accumulating. index.size(d) <= src.size(d) for every d, <= x.size(d) for d != axis; src
// entries outside index's shape are unused. dx = g, dsrc = gather(g, axis, index), 0 where
// unused (PyTorch refuses that backward when src is larger than index).
// Bad index values in both: refused naming the op, the value and the size (on a GPU at the
// next host wait, as index_select: docs/gpu.md, "Bad indices on a GPU").
Tensor scatter_add(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src);
// torch.masked_fill: value where mask is nonzero, x elsewhere; mask (any dtype: vgrad has
// no bool, so comparisons' 0/1 masks serve; NaN counts as nonzero) broadcasts with x, as
// torch's out-of-place form (whose mask must be bool). dx = g where not filled, 0 where filled.
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);
Tensor to_device(const Tensor& x, Device device);
Tensor to_dtype(const Tensor& x, DType dtype);

// ---------------- convolution and pooling (autograd/ops/conv.cpp), NCHW ----------------
using Pair2 = std::array<int64_t, 2>;  // (height, width)
// x (N, C, H, W), weight (F, C/groups, KH, KW), bias (F) or undefined -> (N, F, OH, OW),
// OH = (H + 2·padding − dilation·(KH − 1) − 1) / stride + 1. Same arguments as torch's.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), Pair2 stride = {1, 1},
              Pair2 padding = {0, 0}, Pair2 dilation = {1, 1}, int64_t groups = 1);
// x (N, C, L), weight (F, C/groups, K) -> (N, F, L_out).
Tensor conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), int64_t stride = 1,
              int64_t padding = 0, int64_t dilation = 1, int64_t groups = 1);
// stride {0, 0} means the kernel size (torch's default). Padding at most half the kernel.
Tensor max_pool2d(const Tensor& x, Pair2 kernel, Pair2 stride = {0, 0}, Pair2 padding = {0, 0},
                  Pair2 dilation = {1, 1});
Tensor avg_pool2d(const Tensor& x, Pair2 kernel, Pair2 stride = {0, 0}, Pair2 padding = {0, 0});
Tensor adaptive_avg_pool2d(const Tensor& x, Pair2 output_size);

// ---------------- embedding (autograd/ops/embedding.cpp) ----------------
constexpr int64_t kNoPadding = INT64_MIN;
// weight (V, D) looked up at int64 indices (any shape) -> (indices..., D). The row
// padding_idx (negative counts from the end) gets no gradient.
Tensor embedding(const Tensor& weight, const Tensor& indices, int64_t padding_idx = kNoPadding);

// ---------------- softmax (autograd/ops/softmax.cpp) ----------------
Tensor softmax(const Tensor& x, int64_t axis);
Tensor log_softmax(const Tensor& x, int64_t axis);

}  // namespace vgrad

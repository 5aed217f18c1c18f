// Tests for the shape ops: reshape/view, transpose/t/permute, squeeze/unsqueeze,
// narrow/slice/select, expand, index_select, contiguous, clone, cat, stack, split and chunk. Views must
// share storage (writes show through); contiguous() and clone() copy as documented.
// Gradients of each (autograd/ops/shape.cpp) on every device.
#include "op_check.h"

namespace {

using namespace vgrad;
using namespace vgrad_test;  // the op tests' shared helpers (op_check.h, support.h)

// 0..n-1 as float32 with the given shape.
Tensor iota(const Shape& shape) { return arange(0, double(numel(shape)), 1).reshape(shape); }

bool shares_storage(const Tensor& a, const Tensor& b) { return a.storage() == b.storage(); }

// ---------------- reshape / view ----------------

TEST(Reshape, ValuesAndInference) {
  const Tensor x = iota({2, 3, 4});
  const Tensor r = x.reshape({4, 6});
  EXPECT_EQ(r.shape(), (Shape{4, 6}));
  EXPECT_EQ(vals(r), vals(x));
  EXPECT_EQ(x.reshape({-1}).shape(), (Shape{24}));
  EXPECT_EQ(x.reshape({3, -1}).shape(), (Shape{3, 8}));
  EXPECT_EQ(x.reshape({-1, 2, 2}).shape(), (Shape{6, 2, 2}));
  EXPECT_EQ(x.reshape({2, 3, 4}).is_same(x), true);  // same shape: the tensor itself
  EXPECT_EQ(tensor({7.f}, {1, 1}).reshape({}).dim(), 0);
  EXPECT_EQ(scalar_tensor(7).reshape({1, 1, 1}).shape(), (Shape{1, 1, 1}));
  EXPECT_EQ(zeros({0, 3}).reshape({3, 0}).shape(), (Shape{3, 0}));
  EXPECT_EQ(zeros({0, 3}).reshape({-1}).shape(), (Shape{0}));
  EXPECT_EQ(reshape(x, {24}).shape(), (Shape{24}));
}

TEST(Reshape, ContiguousIsAViewStridedIsACopy) {
  Tensor x = iota({2, 6});
  Tensor r = x.reshape({3, 4});
  EXPECT_TRUE(shares_storage(r, x));
  EXPECT_EQ(r.data_ptr(), x.data_ptr());
  r.fill_(1);
  EXPECT_EQ(vals(x), std::vector<double>(12, 1.0));
  // A row range of a contiguous tensor is still contiguous: reshaped in place.
  const Tensor rows = iota({4, 3}).narrow(0, 1, 2);
  const Tensor rows_flat = rows.reshape({6});
  EXPECT_EQ(rows_flat.data_ptr(), rows.data_ptr());
  EXPECT_EQ(vals(rows_flat), (std::vector<double>{3, 4, 5, 6, 7, 8}));
  // A transpose must be copied to be reshaped, in logical (row-major) order.
  const Tensor t = iota({2, 3}).t();
  const Tensor flat = t.reshape({6});
  EXPECT_FALSE(shares_storage(flat, t));
  EXPECT_EQ(vals(flat), (std::vector<double>{0, 3, 1, 4, 2, 5}));
}

TEST(Reshape, Errors) {
  const Tensor x = zeros({2, 3});
  EXPECT_ERROR((x.reshape({4})), "reshape: cannot reshape [2, 3] (6 elements) to [4] (4 elements)");
  EXPECT_ERROR((x.reshape({4, -1})), "reshape: cannot reshape [2, 3] (6 elements) to [4, -1]");
  EXPECT_ERROR((x.reshape({-1, -1})), "reshape: only one dimension can be -1 in [-1, -1]");
  EXPECT_ERROR((x.reshape({-2, -3})), "reshape: negative size in [-2, -3]");
  EXPECT_ERROR((zeros({0, 3}).reshape({0, -1})), "reshape", "[0, 3]");
  EXPECT_ERROR((x.reshape({1, 1, 1, 1, 1, 1, 2, 3, 1})), "9 dims exceed the maximum of 8");
}

TEST(View, SharesStorageAndRefusesStrided) {
  Tensor x = iota({4, 3});
  Tensor v = x.view({2, 6});
  EXPECT_TRUE(shares_storage(v, x));
  EXPECT_EQ(v.data_ptr(), x.data_ptr());
  EXPECT_EQ(vals(v), vals(x));
  EXPECT_EQ(x.view({-1}).shape(), (Shape{12}));
  EXPECT_ERROR((x.t().view({12})), "view: tensor of shape [3, 4] is not contiguous", "reshape()");
  EXPECT_ERROR((x.slice(1, 0, 3, 2).view({8})), "view", "not contiguous");
  EXPECT_ERROR((x.view({5})), "cannot reshape [4, 3] (12 elements) to [5]");
}

// ---------------- transpose / permute ----------------

TEST(Transpose, ValuesStridesAndSharing) {
  const Tensor x = iota({2, 3});
  const Tensor t = x.t();
  EXPECT_EQ(t.shape(), (Shape{3, 2}));
  EXPECT_EQ(t.strides(), (Strides{1, 3}));
  EXPECT_TRUE(shares_storage(t, x));
  EXPECT_EQ(t.data_ptr(), x.data_ptr());
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(vals(t), (std::vector<double>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(vals(t.t()), vals(x));
  EXPECT_TRUE(t.t().is_contiguous());
  const Tensor y = iota({2, 3, 4});
  const Tensor yt = y.transpose(0, 2);  // (4, 3, 2): [k][j][i] = y[i][j][k]
  EXPECT_EQ(yt.shape(), (Shape{4, 3, 2}));
  const auto vy = vals(y), vyt = vals(yt);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) EXPECT_EQ(vyt[k * 6 + j * 2 + i], vy[i * 12 + j * 4 + k]);
  EXPECT_EQ(vals(y.transpose(-1, 0)), vyt);
  EXPECT_EQ(vals(transpose(y, 1, 1)), vy);
  // t() of 0-d and 1-d tensors is the tensor itself.
  const Tensor v = iota({5});
  EXPECT_TRUE(v.t().is_same(v));
  EXPECT_ERROR(y.t(), "t: expects a tensor of at most 2 dims, got [2, 3, 4]");
  EXPECT_ERROR((y.transpose(0, 3)), "transpose: axis 3 out of range for a tensor of 3 dims");
}

TEST(Permute, ValuesAndErrors) {
  const Tensor y = iota({2, 3, 4});
  const Tensor p = y.permute({1, 2, 0});  // (3, 4, 2): [j][k][i] = y[i][j][k]
  EXPECT_EQ(p.shape(), (Shape{3, 4, 2}));
  EXPECT_EQ(p.strides(), (Strides{4, 1, 12}));
  EXPECT_TRUE(shares_storage(p, y));
  const auto vy = vals(y), vp = vals(p);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) EXPECT_EQ(vp[j * 8 + k * 2 + i], vy[i * 12 + j * 4 + k]);
  EXPECT_EQ(vals(y.permute({-2, -1, -3})), vp);
  EXPECT_EQ(vals(p.permute({2, 0, 1})), vy);  // the inverse permutation
  EXPECT_ERROR((y.permute({0, 1})), "permute: 2 dims given for a tensor of shape [2, 3, 4]");
  EXPECT_ERROR((y.permute({0, 1, 1})), "permute: dim 1 repeated");
  EXPECT_ERROR((y.permute({0, 1, 3})), "permute: axis 3 out of range");
}

// ---------------- squeeze / unsqueeze ----------------

TEST(Squeeze, DropsOnlySizeOneDims) {
  const Tensor x = iota({1, 3, 1, 2});
  EXPECT_EQ(x.squeeze(0).shape(), (Shape{3, 1, 2}));
  EXPECT_EQ(x.squeeze(2).shape(), (Shape{1, 3, 2}));
  EXPECT_EQ(x.squeeze(-2).shape(), (Shape{1, 3, 2}));
  EXPECT_EQ(x.squeeze(1).shape(), (Shape{1, 3, 1, 2}));  // not size 1: unchanged (as PyTorch)
  EXPECT_EQ(x.squeeze().shape(), (Shape{3, 2}));
  EXPECT_TRUE(shares_storage(x.squeeze(0), x));
  EXPECT_EQ(vals(x.squeeze(2)), vals(x));
  EXPECT_EQ(tensor({4.f}, {1, 1}).squeeze().dim(), 0);
  // Squeezing a view keeps the view's strides.
  const Tensor col = iota({3, 4}).narrow(1, 2, 1);  // (3, 1), stride 4
  EXPECT_EQ(col.squeeze(1).strides(), (Strides{4}));
  EXPECT_EQ(vals(col.squeeze(1)), (std::vector<double>{2, 6, 10}));
  EXPECT_ERROR(x.squeeze(4), "squeeze: axis 4 out of range for a tensor of 4 dims");
}

TEST(Unsqueeze, InsertsSizeOneDims) {
  const Tensor x = iota({2, 3});
  EXPECT_EQ(x.unsqueeze(0).shape(), (Shape{1, 2, 3}));
  EXPECT_EQ(x.unsqueeze(1).shape(), (Shape{2, 1, 3}));
  EXPECT_EQ(x.unsqueeze(2).shape(), (Shape{2, 3, 1}));
  EXPECT_EQ(x.unsqueeze(-1).shape(), (Shape{2, 3, 1}));
  EXPECT_EQ(x.unsqueeze(-3).shape(), (Shape{1, 2, 3}));
  EXPECT_EQ(scalar_tensor(1).unsqueeze(0).shape(), (Shape{1}));
  EXPECT_TRUE(shares_storage(x.unsqueeze(1), x));
  EXPECT_TRUE(x.unsqueeze(1).is_contiguous());
  EXPECT_EQ(vals(x.t().unsqueeze(1)), vals(x.t()));
  EXPECT_EQ(x.unsqueeze(0).squeeze(0).shape(), x.shape());
  EXPECT_ERROR(x.unsqueeze(3), "unsqueeze: axis 3 out of range for a tensor of 3 dims");
  EXPECT_ERROR(x.unsqueeze(-4), "unsqueeze: axis -4");
}

TEST(Unsqueeze, TooManyDimsIsAnErrorNotACrash) {
  const Tensor x = zeros({1, 1, 1, 1, 1, 1, 1, 2});  // 8 dims: the maximum
  EXPECT_ERROR(x.unsqueeze(0), "9 dims exceed the maximum of 8");
  EXPECT_ERROR((x.expand({2, 1, 1, 1, 1, 1, 1, 1, 2})), "9 dims exceed the maximum of 8");
}

// ---------------- narrow / slice / select ----------------

TEST(Narrow, ValuesSharingAndErrors) {
  const Tensor x = iota({4, 5});
  const Tensor n = x.narrow(1, 1, 3);
  EXPECT_EQ(n.shape(), (Shape{4, 3}));
  EXPECT_TRUE(shares_storage(n, x));
  EXPECT_EQ(n.data<float>(), x.data<float>() + 1);
  EXPECT_EQ(vals(n), (std::vector<double>{1, 2, 3, 6, 7, 8, 11, 12, 13, 16, 17, 18}));
  EXPECT_EQ(vals(x.narrow(0, -2, 2)), (std::vector<double>{10, 11, 12, 13, 14, 15, 16, 17, 18, 19}));
  EXPECT_EQ(x.narrow(0, 4, 0).shape(), (Shape{0, 5}));
  EXPECT_EQ(vals(narrow(x, -1, 4, 1)), (std::vector<double>{4, 9, 14, 19}));
  EXPECT_ERROR((x.narrow(1, 3, 3)), "narrow: range [3, 6) out of bounds for axis 1 of size 5 (shape [4, 5])");
  EXPECT_ERROR((x.narrow(0, -5, 1)), "narrow", "out of bounds");
  EXPECT_ERROR((x.narrow(0, 0, -1)), "narrow", "out of bounds");
  EXPECT_ERROR((x.narrow(2, 0, 1)), "narrow: axis 2 out of range");
}

TEST(Slice, StepsNegativeIndicesAndClipping) {
  const Tensor x = iota({10});
  EXPECT_EQ(vals(x.slice(0, 1, 8, 3)), (std::vector<double>{1, 4, 7}));
  EXPECT_EQ(x.slice(0, 1, 8, 3).strides(), (Strides{3}));
  EXPECT_EQ(vals(x.slice(0, 0, 10, 4)), (std::vector<double>{0, 4, 8}));
  EXPECT_EQ(vals(x.slice(0, -3, 10)), (std::vector<double>{7, 8, 9}));
  EXPECT_EQ(vals(x.slice(0, -4, -1)), (std::vector<double>{6, 7, 8}));
  EXPECT_EQ(vals(x.slice(0, -100, 2)), (std::vector<double>{0, 1}));  // clipped like Python
  EXPECT_EQ(vals(x.slice(0, 8, 100)), (std::vector<double>{8, 9}));
  EXPECT_EQ(x.slice(0, 5, 3).numel(), 0);
  EXPECT_EQ(x.slice(0, 20, 30).numel(), 0);
  EXPECT_TRUE(shares_storage(x.slice(0, 1, 8, 3), x));
  const Tensor m = iota({4, 6});
  const Tensor s = m.slice(1, 1, 6, 2).slice(0, 0, 4, 3);  // rows 0, 3; cols 1, 3, 5
  EXPECT_EQ(s.shape(), (Shape{2, 3}));
  EXPECT_EQ(vals(s), (std::vector<double>{1, 3, 5, 19, 21, 23}));
  EXPECT_EQ(vals(slice(m, -1, -2, 6)), (std::vector<double>{4, 5, 10, 11, 16, 17, 22, 23}));
  EXPECT_ERROR((x.slice(0, 0, 5, 0)), "slice: step must be positive, got 0");
  EXPECT_ERROR((x.slice(0, 0, 5, -1)), "slice: step must be positive, got -1");
  EXPECT_ERROR((x.slice(1, 0, 5)), "slice: axis 1 out of range");
}

TEST(Select, ValuesAndErrors) {
  const Tensor x = iota({3, 4});
  EXPECT_EQ(x.select(0, 1).shape(), (Shape{4}));
  EXPECT_EQ(vals(x.select(0, 1)), (std::vector<double>{4, 5, 6, 7}));
  EXPECT_EQ(vals(x.select(1, 2)), (std::vector<double>{2, 6, 10}));
  EXPECT_EQ(vals(x.select(1, -1)), (std::vector<double>{3, 7, 11}));
  EXPECT_EQ(vals(x[2]), (std::vector<double>{8, 9, 10, 11}));
  EXPECT_EQ(x[2][3].item(), 11);
  EXPECT_EQ(x[2][3].dim(), 0);
  EXPECT_TRUE(shares_storage(x[1], x));
  EXPECT_ERROR((x.select(0, 3)), "select: index 3 out of range for axis 0 of size 3 (shape [3, 4])");
  EXPECT_ERROR((x.select(1, -5)), "select: index -5 out of range for axis 1 of size 4");
  EXPECT_ERROR(x[7], "select", "index 7");
  EXPECT_ERROR((x.select(2, 0)), "select: axis 2 out of range");
}

// ---------------- expand ----------------

TEST(Expand, RepeatsWithStrideZero) {
  const Tensor row = tensor({1.f, 2.f, 3.f});
  const Tensor e = row.expand({2, 3});
  EXPECT_EQ(e.shape(), (Shape{2, 3}));
  EXPECT_EQ(e.strides(), (Strides{0, 1}));
  EXPECT_TRUE(shares_storage(e, row));
  EXPECT_EQ(vals(e), (std::vector<double>{1, 2, 3, 1, 2, 3}));
  const Tensor col = tensor({1.f, 2.f}, {2, 1});
  EXPECT_EQ(vals(col.expand({2, 3})), (std::vector<double>{1, 1, 1, 2, 2, 2}));
  EXPECT_EQ(vals(col.expand({-1, 2})), (std::vector<double>{1, 1, 2, 2}));
  EXPECT_EQ(col.expand({3, 2, 4}).shape(), (Shape{3, 2, 4}));
  EXPECT_EQ(scalar_tensor(5).expand({2, 2}).strides(), (Strides{0, 0}));
  EXPECT_EQ(vals(scalar_tensor(5).expand({2, 2})), std::vector<double>(4, 5.0));
  EXPECT_EQ(row.expand({0, 3}).numel(), 0);
  // A transposed column expanded: strides follow the view.
  const Tensor tcol = iota({1, 3}).t();  // (3, 1)
  EXPECT_EQ(vals(tcol.expand({3, 2})), (std::vector<double>{0, 0, 1, 1, 2, 2}));
}

TEST(Expand, Errors) {
  const Tensor row = tensor({1.f, 2.f, 3.f});
  EXPECT_ERROR((row.expand({4})), "expand: cannot expand [3] to [4] (dim 0: 3 vs 4)");
  EXPECT_ERROR((row.expand({2, 4})), "expand: cannot expand [3] to [2, 4] (dim 1: 3 vs 4)");
  EXPECT_ERROR((zeros({2, 3}).expand({3})), "expand: cannot expand [2, 3] to fewer dims [3]");
  EXPECT_ERROR((tensor({1.f}, {1}).expand({-2})), "expand: invalid size -2 in [-2] (dim 0)");
  EXPECT_ERROR((row.expand({-1, 3})), "expand", "[-1, 3]");
}

// ---------------- index_select ----------------

TEST(IndexSelect, GathersRowsAndColumns) {
  const Tensor x = iota({4, 3});
  const Tensor rows = x.index_select(0, tensor(std::vector<int64_t>{3, 0, 3}));
  EXPECT_EQ(rows.shape(), (Shape{3, 3}));
  EXPECT_EQ(vals(rows), (std::vector<double>{9, 10, 11, 0, 1, 2, 9, 10, 11}));
  EXPECT_FALSE(shares_storage(rows, x));
  const Tensor cols = index_select(x, -1, tensor(std::vector<int64_t>{2, 1}));
  EXPECT_EQ(vals(cols), (std::vector<double>{2, 1, 5, 4, 8, 7, 11, 10}));
  // Strided source and strided index.
  EXPECT_EQ(vals(x.t().index_select(0, tensor(std::vector<int64_t>{1}, {1}))), (std::vector<double>{1, 4, 7, 10}));
  const Tensor stepped_index = tensor(std::vector<int64_t>{0, 9, 2, 9, 1}).slice(0, 0, 5, 2);  // {0, 2, 1}
  EXPECT_EQ(vals(x.index_select(0, stepped_index)), (std::vector<double>{0, 1, 2, 6, 7, 8, 3, 4, 5}));
  EXPECT_EQ(x.index_select(0, zeros({0}, {.dtype = DType::Int64})).shape(), (Shape{0, 3}));
  // int64 and float64 data, 3-D.
  const Tensor labels = tensor(std::vector<int64_t>{10, 11, 12, 13});
  EXPECT_EQ(labels.index_select(0, tensor(std::vector<int64_t>{3, 1})).to_vector<int64_t>(),
            (std::vector<int64_t>{13, 11}));
  const Tensor cube = iota({2, 3, 2}).to(DType::Float64);
  EXPECT_EQ(vals(cube.index_select(1, tensor(std::vector<int64_t>{2}, {1}))), (std::vector<double>{4, 5, 10, 11}));
}

TEST(IndexSelect, Errors) {
  const Tensor x = iota({3, 2});
  EXPECT_ERROR((x.index_select(0, tensor(std::vector<int64_t>{0, 5}))),
               "index_select: index 5 out of range for dim 0 of size 3 (position 1)");
  EXPECT_ERROR((x.index_select(1, tensor(std::vector<int64_t>{-1}, {1}))), "index_select: index -1 out of range");
  EXPECT_ERROR((x.index_select(0, tensor({0.f, 1.f}))), "index_select: index must be a 1-D int64 tensor", "float32");
  EXPECT_ERROR((x.index_select(0, tensor(std::vector<int64_t>{0, 1}, {2, 1}))), "index_select", "1-D", "[2, 1]");
  EXPECT_ERROR((x.index_select(2, tensor(std::vector<int64_t>{0}, {1}))), "index_select: axis 2 out of range");
}

// ---------------- contiguous / clone ----------------

TEST(Contiguous, CopiesOnlyWhenNeeded) {
  const Tensor x = iota({3, 4});
  const Tensor same = x.contiguous();
  EXPECT_EQ(same.data_ptr(), x.data_ptr());
  EXPECT_TRUE(shares_storage(same, x));
  EXPECT_EQ(contiguous(x).data_ptr(), x.data_ptr());
  // Views that are still contiguous: a row range, a select of a row, an unsqueeze.
  const Tensor rows = x.narrow(0, 1, 2);
  EXPECT_TRUE(rows.is_contiguous());
  EXPECT_EQ(rows.contiguous().data_ptr(), rows.data_ptr());
  EXPECT_EQ(x[2].contiguous().data_ptr(), x[2].data_ptr());
  EXPECT_EQ(x.unsqueeze(0).contiguous().data_ptr(), x.data_ptr());
  // Strided views are copied into row-major order.
  for (const Tensor& view : {x.t(), x.slice(1, 0, 4, 2), x.narrow(1, 1, 2), tensor({1.f, 2.f}).expand({3, 2})}) {
    ASSERT_FALSE(view.is_contiguous());
    const Tensor c = view.contiguous();
    EXPECT_TRUE(c.is_contiguous());
    EXPECT_NE(c.data_ptr(), view.data_ptr());
    EXPECT_FALSE(shares_storage(c, view));
    EXPECT_EQ(c.shape(), view.shape());
    EXPECT_EQ(c.strides(), contiguous_strides(view.shape()));
    EXPECT_EQ(vals(c), vals(view));
  }
  EXPECT_EQ(vals(x.t().contiguous()), (std::vector<double>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
}

TEST(Clone, IsIndependent) {
  Tensor x = iota({2, 3});
  Tensor c = x.clone();
  EXPECT_FALSE(shares_storage(c, x));
  EXPECT_EQ(vals(c), vals(x));
  c.fill_(-1);
  EXPECT_EQ(vals(x), (std::vector<double>{0, 1, 2, 3, 4, 5}));
  x.fill_(9);
  EXPECT_EQ(vals(c), std::vector<double>(6, -1.0));
  // Clone of a view: contiguous, with the view's values.
  const Tensor ct = iota({2, 3}).t().clone();
  EXPECT_TRUE(ct.is_contiguous());
  EXPECT_EQ(vals(ct), (std::vector<double>{0, 3, 1, 4, 2, 5}));
  const Tensor ci = arange(3).clone();
  EXPECT_EQ(ci.dtype(), DType::Int64);
  EXPECT_EQ(ci.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2}));
}

// ---------------- views share storage ----------------

TEST(Views, WritesShowThrough) {
  Tensor base = zeros({3, 4});
  base.select(0, 1).fill_(1);                         // row 1
  base.t().select(0, 3).fill_(2);                     // column 3
  base.slice(1, 0, 4, 2).narrow(0, 2, 1).fill_(3);    // row 2, cols 0 and 2
  base.reshape({12}).narrow(0, 0, 1).fill_(4);        // element 0
  base.unsqueeze(0).squeeze(0).select(1, 1).narrow(0, 0, 1).copy_(full({1}, 5));  // element (0, 1)
  EXPECT_EQ(vals(base), (std::vector<double>{4, 5, 0, 2, 1, 1, 1, 2, 3, 0, 3, 2}));
  // And the other way: a view sees writes to its base.
  const Tensor view = base.t().slice(0, 1, 3);
  base.fill_(7);
  EXPECT_EQ(vals(view), std::vector<double>(6, 7.0));
  // add_ through a strided view.
  Tensor y = zeros({2, 2});
  y.t().select(0, 0).add_(tensor({1.f, 2.f}));
  EXPECT_EQ(vals(y), (std::vector<double>{1, 0, 2, 0}));
}

// ---------------- cat ----------------

TEST(Cat, ValuesAlongEveryAxis) {
  const Tensor a = iota({2, 3}), b = iota({2, 3}) + 10, c = iota({1, 3}) + 20;
  const Tensor rows = cat({a, c, b}, 0);
  EXPECT_EQ(rows.shape(), (Shape{5, 3}));
  EXPECT_EQ(vals(rows), (std::vector<double>{0, 1, 2, 3, 4, 5, 20, 21, 22, 10, 11, 12, 13, 14, 15}));
  const Tensor cols = cat({a, b.narrow(1, 0, 1)}, -1);
  EXPECT_EQ(cols.shape(), (Shape{2, 4}));
  EXPECT_EQ(vals(cols), (std::vector<double>{0, 1, 2, 10, 3, 4, 5, 13}));
  // Strided inputs, a single input, an empty input.
  EXPECT_EQ(vals(cat({a.t(), b.t()}, 1)), (std::vector<double>{0, 3, 10, 13, 1, 4, 11, 14, 2, 5, 12, 15}));
  EXPECT_EQ(vals(cat({a}, 0)), vals(a));
  EXPECT_EQ(vals(cat({a, zeros({0, 3})}, 0)), vals(a));
  // 3-D along the middle axis.
  const Tensor x = iota({2, 1, 2}), y = iota({2, 2, 2}) + 100;
  EXPECT_EQ(vals(cat({x, y}, 1)), (std::vector<double>{0, 1, 100, 101, 102, 103, 2, 3, 104, 105, 106, 107}));
}

TEST(Cat, Errors) {
  EXPECT_ERROR((cat({}, 0)), "cat: no tensors given");
  EXPECT_ERROR((cat({zeros({2, 3}), zeros({2, 4})}, 0)), "cat: tensor 1 has shape [2, 4], incompatible with [2, 3] (dim 1)");
  EXPECT_ERROR((cat({zeros({2, 3}), zeros({3})}, 0)), "cat: tensor 1 has shape [3], expected 2 dims");
  EXPECT_ERROR((cat({zeros({2, 3}), zeros({2, 3})}, 2)), "cat: axis 2 out of range");
  EXPECT_ERROR((cat({scalar_tensor(1), scalar_tensor(2)}, 0)), "cat", "0-d");
}

// ---------------- stack / split / chunk ----------------
// PyTorch's numbers (torch 2.15.0, CPU): printed by tests/reference/index_ops_reference.py.

// Each piece's shape and values.
void expect_pieces(const std::vector<Tensor>& pieces, const std::vector<std::pair<Shape, std::vector<double>>>& want) {
  ASSERT_EQ(pieces.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(pieces[i].shape(), want[i].first) << "piece " << i;
    EXPECT_EQ(vals(pieces[i]), want[i].second) << "piece " << i;
  }
}

TEST(Stack, NewAxisAsPyTorch) {
  const Tensor a = iota({2, 3}), b = iota({2, 3}) + 10;
  const Tensor s0 = stack({a, b});
  EXPECT_EQ(s0.shape(), (Shape{2, 2, 3}));
  EXPECT_EQ(vals(s0), (std::vector<double>{0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15}));
  const Tensor s1 = stack({a, b}, 1);
  EXPECT_EQ(s1.shape(), (Shape{2, 2, 3}));
  EXPECT_EQ(vals(s1), (std::vector<double>{0, 1, 2, 10, 11, 12, 3, 4, 5, 13, 14, 15}));
  const Tensor last = stack({a, b}, -1);
  EXPECT_EQ(last.shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(vals(last), (std::vector<double>{0, 10, 1, 11, 2, 12, 3, 13, 4, 14, 5, 15}));
  EXPECT_EQ(vals(stack({a, b}, 2)), vals(last));
  EXPECT_EQ(vals(stack({a, b}, -3)), vals(s0));
  // 0-d tensors give a 1-D result; strided inputs; dtypes promote as in cat; one input.
  const Tensor scalars = stack({scalar_tensor(1), scalar_tensor(2)}, -1);
  EXPECT_EQ(scalars.shape(), (Shape{2}));
  EXPECT_EQ(vals(scalars), (std::vector<double>{1, 2}));
  EXPECT_EQ(vals(stack({a.t(), b.t()}, 0)), (std::vector<double>{0, 3, 1, 4, 2, 5, 10, 13, 11, 14, 12, 15}));
  EXPECT_EQ(stack({a, b.to(DType::Float64)}).dtype(), DType::Float64);
  EXPECT_EQ(stack({a}).shape(), (Shape{1, 2, 3}));
  EXPECT_EQ(stack({zeros({0, 3}), zeros({0, 3})}, 1).shape(), (Shape{0, 2, 3}));
}

TEST(Stack, Errors) {
  EXPECT_ERROR(stack({}, 0), "stack: no tensors given");
  EXPECT_ERROR(stack({zeros({2}), zeros({2}), zeros({3})}),
               "stack: tensor 2 has shape [3], tensor 0 has [2] (all must be equal)");
  EXPECT_ERROR(stack({zeros({2, 3}), zeros({3, 2})}), "stack: tensor 1 has shape [3, 2], tensor 0 has [2, 3]");
  EXPECT_ERROR(stack({zeros({2}), zeros({2})}, 2), "stack: axis 2 out of range");
  EXPECT_ERROR(stack({zeros({2}), zeros({2})}, -3), "stack: axis -3 out of range");
}

TEST(Split, PiecesAreViewsAsPyTorch) {
  const Tensor x = iota({5});
  const std::vector<Tensor> pieces = split(x, 2);
  expect_pieces(pieces, {{{2}, {0, 1}}, {{2}, {2, 3}}, {{1}, {4}}});
  for (const Tensor& piece : pieces) EXPECT_TRUE(shares_storage(piece, x));
  EXPECT_EQ(pieces[2].data_ptr(), static_cast<const char*>(x.data_ptr()) + 4 * sizeof(float));
  const Tensor a = iota({2, 3});
  expect_pieces(a.split(std::vector<int64_t>{1, 2}, 1), {{{2, 1}, {0, 3}}, {{2, 2}, {1, 2, 4, 5}}});
  expect_pieces(split(a, std::vector<int64_t>{0, 2, 0}, 0), {{{0, 3}, {}}, {{2, 3}, {0, 1, 2, 3, 4, 5}}, {{0, 3}, {}}});
  expect_pieces(a.split(3, -1), {{{2, 3}, {0, 1, 2, 3, 4, 5}}});
  expect_pieces(a.split(7, 1), {{{2, 3}, {0, 1, 2, 3, 4, 5}}});
  // An empty axis: one empty piece (also for split_size 0, as PyTorch).
  expect_pieces(split(zeros({0}), 2), {{{0}, {}}});
  expect_pieces(split(zeros({0}), 0), {{{0}, {}}});
  // Writes through a piece show in x.
  Tensor y = iota({4});
  y.split(2)[1].fill_(9);
  EXPECT_EQ(vals(y), (std::vector<double>{0, 1, 9, 9}));
}

TEST(Chunk, CeilSizedPiecesAsPyTorch) {
  expect_pieces(chunk(iota({5}), 4), {{{2}, {0, 1}}, {{2}, {2, 3}}, {{1}, {4}}});  // fewer than asked
  expect_pieces(iota({6}).chunk(4), {{{2}, {0, 1}}, {{2}, {2, 3}}, {{2}, {4, 5}}});
  expect_pieces(chunk(iota({2, 3}).t(), 2, 0), {{{2, 2}, {0, 3, 1, 4}}, {{1, 2}, {2, 5}}});
  expect_pieces(chunk(iota({2, 3}), 1, -1), {{{2, 3}, {0, 1, 2, 3, 4, 5}}});
  expect_pieces(chunk(iota({3}), 5), {{{1}, {0}}, {{1}, {1}}, {{1}, {2}}});
  expect_pieces(chunk(zeros({0, 2}), 3), {{{0, 2}, {}}, {{0, 2}, {}}, {{0, 2}, {}}});  // an empty axis: `chunks` pieces
}

TEST(Split, Errors) {
  const Tensor x = iota({5, 2});
  EXPECT_ERROR(split(x, 0),
               "split: split_size 0 must be positive (0 only for an empty axis; axis 0 of [5, 2] has size 5)");
  EXPECT_ERROR(split(x, -1, 1), "split: split_size -1 must be positive");
  EXPECT_ERROR(split(x, std::vector<int64_t>{2, 2}),
               "split: sizes [2, 2] sum to 4, not to 5, the size of axis 0 of [5, 2]");
  EXPECT_ERROR(split(x, std::vector<int64_t>{4, 4}),
               "split: sizes [4, 4] sum to more than 5, the size of axis 0 of [5, 2]");
  EXPECT_ERROR(split(x, std::vector<int64_t>{6, -1}), "split: sizes [6, -1] sum to more than 5");
  EXPECT_ERROR(split(x, std::vector<int64_t>{3, -1, 3}), "split: size -1 (position 1) is negative in sizes [3, -1, 3]");
  EXPECT_ERROR(split(x, std::vector<int64_t>{INT64_MAX, INT64_MAX}), "split: sizes", "sum to more than 5");
  EXPECT_ERROR(split(x, 2, 2), "split: axis 2 out of range for a tensor of 2 dims");
  EXPECT_ERROR(split(scalar_tensor(1), 1), "split: axis 0 out of range for a tensor of 0 dims");
  EXPECT_ERROR(chunk(x, 0), "chunk: chunks must be positive, got 0");
  EXPECT_ERROR(chunk(x, -2, 1), "chunk: chunks must be positive, got -2");
  EXPECT_ERROR(chunk(x, 2, -3), "chunk: axis -3 out of range");
  EXPECT_ERROR(chunk(scalar_tensor(1), 1), "chunk: axis 0 out of range for a tensor of 0 dims");
}

// ---------------- 0-d tensors ----------------

TEST(ZeroDim, AxisOpsOnAScalar) {
  const Tensor s = scalar_tensor(3);
  // Ops that keep a 0-d tensor as it is (as PyTorch).
  EXPECT_TRUE(s.squeeze(0).is_same(s));
  EXPECT_EQ(s.squeeze().dim(), 0);
  EXPECT_EQ(s.transpose(0, -1).dim(), 0);
  EXPECT_EQ(s.transpose(0, -1).item(), 3);
  EXPECT_EQ(s.t().item(), 3);
  EXPECT_EQ(s.permute({}).item(), 3);
  EXPECT_EQ(s.unsqueeze(-1).shape(), (Shape{1}));
  // Ops that need an existing dim: errors, not out-of-bounds reads.
  EXPECT_ERROR(s.size(0), "size: axis 0 out of range for a tensor of 0 dims");
  EXPECT_ERROR(s.narrow(0, 0, 1), "narrow: axis 0 out of range for a tensor of 0 dims");
  EXPECT_ERROR(s.slice(0, 0, 1), "slice: axis 0 out of range for a tensor of 0 dims");
  EXPECT_ERROR(s.select(0, 0), "select: axis 0 out of range for a tensor of 0 dims");
  EXPECT_ERROR(s[0], "select: axis 0 out of range");
  EXPECT_ERROR((s.index_select(0, tensor(std::vector<int64_t>{0}, {1}))), "index_select: axis 0 out of range for a tensor of 0 dims");
}

TEST(Squeeze, AllDimsOfAViewIsAView) {
  Tensor base = zeros({3, 1, 4});
  Tensor v = base.transpose(0, 2).squeeze();  // (4, 3), strided
  EXPECT_EQ(v.shape(), (Shape{4, 3}));
  EXPECT_EQ(v.storage(), base.storage());
  v.select(0, 1).fill_(2);  // base[:, 0, 1] = 2
  EXPECT_EQ(vgrad_test::vals(base), (std::vector<double>{0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0}));
}

// Gradients against central differences (float64), on every device present.
Tensor indices(const std::vector<int64_t>& values) { return tensor(values); }

class ShapeOp : public vgrad_test::OnEachDevice {};

TEST_P(ShapeOp, GradientReshapeAndViews) {
  check_gradient("reshape", [](const Inputs& in) { return reshape(in[0], {6, 4}); }, {rnd({2, 3, 4})});
  check_gradient("reshape -1", [](const Inputs& in) { return in[0].reshape({4, -1, 2}); }, {rnd({2, 3, 4})});
  check_gradient("reshape non-contiguous", [](const Inputs& in) { return reshape(transpose(in[0], 0, 2), {-1}); }, {rnd({2, 3, 4})});
  check_gradient("view", [](const Inputs& in) { return in[0].view({3, 8}); }, {rnd({2, 3, 4})});
  check_gradient("flatten", [](const Inputs& in) { return in[0].flatten(1); }, {rnd({2, 3, 4})});
  check_gradient("transpose", [](const Inputs& in) { return transpose(in[0], 0, 2); }, {rnd({2, 3, 4})});
  check_gradient("transpose negative", [](const Inputs& in) { return in[0].transpose(-1, -2); }, {rnd({2, 3, 4})});
  check_gradient("t", [](const Inputs& in) { return in[0].t(); }, {rnd({3, 4})});
  check_gradient("permute", [](const Inputs& in) { return permute(in[0], {2, 0, 1}); }, {rnd({2, 3, 4})});
  check_gradient("squeeze axis", [](const Inputs& in) { return squeeze(in[0], 1); }, {rnd({3, 1, 4})});
  check_gradient("squeeze all", [](const Inputs& in) { return in[0].squeeze(); }, {rnd({1, 3, 1, 4})});
  check_gradient("unsqueeze 0", [](const Inputs& in) { return unsqueeze(in[0], 0); }, {rnd({3, 4})});
  check_gradient("unsqueeze 1", [](const Inputs& in) { return unsqueeze(in[0], 1); }, {rnd({3, 4})});
  check_gradient("unsqueeze -1", [](const Inputs& in) { return in[0].unsqueeze(-1); }, {rnd({3, 4})});
  check_gradient("unsqueeze of transposed", [](const Inputs& in) { return in[0].t().unsqueeze(1) * in[1]; },
        {rnd({3, 4}), rnd({4, 2, 3})});
}

TEST_P(ShapeOp, GradientNarrowSliceSelect) {
  check_gradient("narrow", [](const Inputs& in) { return narrow(in[0], 1, 1, 2); }, {rnd({2, 4, 3})});
  check_gradient("narrow negative start", [](const Inputs& in) { return in[0].narrow(0, -2, 2); }, {rnd({4, 3})});
  check_gradient("slice", [](const Inputs& in) { return slice(in[0], 2, 0, 5, 2); }, {rnd({2, 3, 5})});
  check_gradient("slice negative", [](const Inputs& in) { return in[0].slice(0, -3, -1); }, {rnd({5, 2})});
  check_gradient("slice step 3", [](const Inputs& in) { return in[0].slice(1, 1, 7, 3); }, {rnd({2, 7})});
  check_gradient("slice of slice", [](const Inputs& in) { return in[0].slice(0, 1, 5).slice(0, 0, 4, 2); }, {rnd({6, 2})});
  check_gradient("select", [](const Inputs& in) { return in[0].select(1, 2); }, {rnd({2, 4, 3})});
  check_gradient("operator[]", [](const Inputs& in) { return in[0][1] * in[0][0]; }, {rnd({3, 4})});
  // Overlapping uses of one input through different slices add up.
  check_gradient("overlapping slices", [](const Inputs& in) { return in[0].narrow(0, 0, 3) * in[0].narrow(0, 1, 3); },
        {rnd({4, 2})});
}

TEST_P(ShapeOp, GradientExpand) {
  check_gradient("expand (3,1)->(2,3,4)", [](const Inputs& in) { return expand(in[0], {2, 3, 4}); }, {rnd({3, 1})});
  check_gradient("expand -1", [](const Inputs& in) { return in[0].expand({5, -1}); }, {rnd({1, 4})});
  check_gradient("expand 0-d", [](const Inputs& in) { return expand(in[0], {2, 3}); }, {rnd({})});
  check_gradient("expand then mul", [](const Inputs& in) { return expand(in[0], {3, 4}) * in[1]; }, {rnd({4}), rnd({3, 4})});
}

TEST_P(ShapeOp, GradientIndexSelect) {
  // Repeated indices: their gradients add up (index_add).
  check_gradient("index_select axis 0", [](const Inputs& in) { return index_select(in[0], 0, in[1]); },
        {rnd({4, 3}), indices({2, 0, 2, 3, 2})});
  check_gradient("index_select axis 1", [](const Inputs& in) { return in[0].index_select(1, in[1]); },
        {rnd({2, 4, 3}), indices({1, 1, 0})});
  check_gradient("index_select axis -1", [](const Inputs& in) { return index_select(in[1], -1, in[0]); },
        {indices({3, 0}), rnd({2, 4})});
  check_gradient("index_select of transposed", [](const Inputs& in) { return index_select(in[0].t(), 0, in[1]); },
        {rnd({3, 4}), indices({3, 1, 3})});
}

TEST_P(ShapeOp, GradientCat) {
  check_gradient("cat axis 0", [](const Inputs& in) { return cat({in[0], in[1], in[2]}, 0); }, {rnd({2, 3}), rnd({1, 3}), rnd({4, 3})});
  check_gradient("cat axis 1", [](const Inputs& in) { return cat({in[0], in[1]}, 1); }, {rnd({2, 3}), rnd({2, 5})});
  check_gradient("cat axis -1", [](const Inputs& in) { return cat({in[0], in[1]}, -1); }, {rnd({2, 2, 3}), rnd({2, 2, 1})});
  check_gradient("cat same tensor twice", [](const Inputs& in) { return cat({in[0], in[0] * 2.0}, 0); }, {rnd({2, 3})});
  check_gradient("cat with constant", [](const Inputs& in) { return cat({in[0], ones({1, 3}, {.dtype = DType::Float64, .device = in[0].device()})}, 0); }, {rnd({2, 3})});
}

TEST_P(ShapeOp, GradientStackSplitChunk) {
  check_gradient("stack axis 0",
                 [](const Inputs& in) {
                   return stack({in[0], in[1], in[0]});
                 },
                 {rnd({2, 3}), rnd({2, 3})});
  check_gradient("stack axis -1",
                 [](const Inputs& in) {
                   return stack({in[0], in[1]}, -1);
                 },
                 {rnd({2, 3}), rnd({2, 3})});
  check_gradient("stack 0-d", [](const Inputs& in) { return stack({in[0], in[1] * in[0]}); }, {rnd({}), rnd({})});
  // The pieces combined unevenly, so each one's gradient lands in its own range.
  check_gradient("split_size",
                 [](const Inputs& in) {
                   const std::vector<Tensor> p = split(in[0], 2, 1);
                   return p[0] * p[1] + p[2] * 3.0;
                 },
                 {rnd({3, 5})});
  check_gradient("split sizes",
                 [](const Inputs& in) {
                   const std::vector<Tensor> p = in[0].split(std::vector<int64_t>{1, 3}, 0);
                   return p[1] * p[0];
                 },
                 {rnd({4, 2})});
  check_gradient("chunk, one piece unused", [](const Inputs& in) { return chunk(in[0].t(), 3, 0)[1] * 2.0; },
                 {rnd({2, 5})});
}

TEST_P(ShapeOp, GradientContiguousCloneAndDType) {
  check_gradient("contiguous of contiguous", [](const Inputs& in) { return contiguous(in[0]); }, {rnd({3, 4})});
  check_gradient("contiguous of transposed", [](const Inputs& in) { return in[0].t().contiguous() * 2.0; }, {rnd({3, 4})});
  check_gradient("clone", [](const Inputs& in) { return clone(in[0]); }, {rnd({3, 4})});
  check_gradient("clone method of expanded", [](const Inputs& in) { return in[0].expand({3, 4}).clone(); }, {rnd({4})});
  check_gradient("to float64 (no-op)", [](const Inputs& in) { return in[0].to(DType::Float64) * 2.0; }, {rnd({3, 4})});
  check_gradient("to_dtype float64", [](const Inputs& in) { return to_dtype(in[0], DType::Float64); }, {rnd({2, 2})});
  // Through float32 the numeric derivative carries float32 rounding: a wider step and tolerances.
  check_gradient("to float32 and back", [](const Inputs& in) { return square(in[0].to(DType::Float32)).to(DType::Float64); },
        {rnd({3, 4})}, {.eps = 1e-2, .atol = 1e-3, .rtol = 1e-2});
  check_gradient("to float32 output", [](const Inputs& in) { return in[0].to(DType::Float32) * 3.0; }, {rnd({3, 4})},
        {.eps = 1e-2, .atol = 1e-3, .rtol = 1e-2});
}

INSTANTIATE_ON_EACH_DEVICE(ShapeOp);

}  // namespace

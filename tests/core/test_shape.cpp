// Tests for core/shape: element counts, contiguous strides, shape printing,
// the NumPy broadcasting rule and axis wrapping (values and error messages).
#include "support.h"

namespace {

using vgrad::broadcast_shapes;
using vgrad::Shape;
using vgrad::wrap_axis;

TEST(Shape, NumelAndStrides) {
  EXPECT_EQ(vgrad::numel({}), 1);
  EXPECT_EQ(vgrad::numel({3, 4, 5}), 60);
  EXPECT_EQ(vgrad::numel({3, 0, 5}), 0);
  EXPECT_EQ(vgrad::contiguous_strides({3, 4, 5}), (vgrad::Strides{20, 5, 1}));
  EXPECT_EQ(vgrad::contiguous_strides({7}), (vgrad::Strides{1}));
  EXPECT_TRUE(vgrad::contiguous_strides({}).empty());
  EXPECT_EQ(vgrad::shape_str({64, 10}), "[64, 10]");
  EXPECT_EQ(vgrad::shape_str({}), "[]");
}

// Counts and strides past int64 are errors, not signed overflow (UB): a shape with a zero dim has
// no elements, yet [0, 2^62, 2^62] still has strides of 2^62 and 2^124.
TEST(Shape, OverflowingCountsAndStridesAreRefused) {
  const int64_t big = int64_t(1) << 62;
  EXPECT_EQ(vgrad::numel({big, big, 0}), 0);
  EXPECT_EQ(vgrad::numel({0, big, big}), 0);
  EXPECT_ERROR(vgrad::numel({big, 4}), "shape [4611686018427387904, 4]: its element count overflows int64");
  EXPECT_EQ(vgrad::contiguous_strides({big, 2}), (vgrad::Strides{2, 1}));  // the count overflows, no stride does
  EXPECT_TRUE(vgrad::contiguous_strides_fit({big, 2}));
  EXPECT_FALSE(vgrad::contiguous_strides_fit({0, big, big}));
  EXPECT_ERROR(vgrad::contiguous_strides({0, big, big}), "shape [0, 4611686018427387904, 4611686018427387904]",
               "contiguous strides overflow int64");
  EXPECT_EQ(vgrad::contiguous_strides({big, big, 0}), (vgrad::Strides{0, 0, 1}));
  EXPECT_ERROR(vgrad::Tensor::empty({0, big, big}), "contiguous strides overflow int64");
  EXPECT_ERROR(vgrad::Tensor::empty({big, 2}), "shape [4611686018427387904, 2]: its element count overflows int64");
  EXPECT_ERROR(vgrad::Tensor::empty({big / 2, 2}),
               "tensor: shape [2305843009213693952, 2] of float32 needs more than 2^63 bytes");
  EXPECT_EQ(vgrad::Tensor::empty({big, big, 0}).numel(), 0);
}

TEST(Broadcast, TableFromTheIssue) {
  EXPECT_EQ(broadcast_shapes({100, 1}, {4}, "add"), (Shape{100, 4}));
  EXPECT_EQ(broadcast_shapes({100, 4}, {1, 4}, "add"), (Shape{100, 4}));
  EXPECT_EQ(broadcast_shapes({4, 1}, {1, 5}, "add"), (Shape{4, 5}));
  EXPECT_ERROR((broadcast_shapes({100, 4}, {100}, "add")), "add", "[100, 4]", "[100]", "dim 1", "4 vs 100");
}

TEST(Broadcast, MoreCases) {
  EXPECT_EQ(broadcast_shapes({}, {}, "op"), (Shape{}));
  EXPECT_EQ(broadcast_shapes({}, {2, 3}, "op"), (Shape{2, 3}));
  EXPECT_EQ(broadcast_shapes({2, 3}, {}, "op"), (Shape{2, 3}));
  EXPECT_EQ(broadcast_shapes({5, 1, 3}, {4, 1}, "op"), (Shape{5, 4, 3}));
  EXPECT_EQ(broadcast_shapes({1}, {7}, "op"), (Shape{7}));
  EXPECT_EQ(broadcast_shapes({2, 1, 3, 4}, {5, 3, 4}, "op"), (Shape{2, 5, 3, 4}));
  // A 0-size dim broadcasts against 1 (NumPy), and is kept.
  EXPECT_EQ(broadcast_shapes({0, 3}, {1, 3}, "op"), (Shape{0, 3}));
  EXPECT_EQ(broadcast_shapes({0}, {1}, "op"), (Shape{0}));
  // Symmetric.
  EXPECT_EQ(broadcast_shapes({4}, {100, 1}, "op"), (Shape{100, 4}));
}

TEST(Broadcast, ErrorsNameOpShapesAndDim) {
  EXPECT_ERROR((broadcast_shapes({64, 10}, {32, 10}, "add")), "add: cannot broadcast [64, 10] with [32, 10] (dim 0: 64 vs 32)");
  EXPECT_ERROR((broadcast_shapes({3}, {4}, "mul")), "mul: cannot broadcast [3] with [4] (dim 0: 3 vs 4)");
  // The dim is counted in the broadcast (output) shape.
  EXPECT_ERROR((broadcast_shapes({2, 3, 4}, {5, 4}, "sub")), "sub", "dim 1: 3 vs 5");
  EXPECT_ERROR((broadcast_shapes({0}, {2}, "div")), "div", "dim 0: 0 vs 2");
}

TEST(WrapAxis, PositiveAndNegative) {
  EXPECT_EQ(wrap_axis(0, 3, "op"), 0);
  EXPECT_EQ(wrap_axis(2, 3, "op"), 2);
  EXPECT_EQ(wrap_axis(-1, 3, "op"), 2);
  EXPECT_EQ(wrap_axis(-3, 3, "op"), 0);
  // A 0-d tensor accepts axis 0 and -1, as PyTorch does.
  EXPECT_EQ(wrap_axis(0, 0, "op"), 0);
  EXPECT_EQ(wrap_axis(-1, 0, "op"), 0);
}

TEST(WrapAxis, OutOfRangeErrors) {
  EXPECT_ERROR((wrap_axis(3, 3, "sum")), "sum: axis 3 out of range for a tensor of 3 dims");
  EXPECT_ERROR((wrap_axis(-4, 3, "softmax")), "softmax", "axis -4", "3 dims");
  EXPECT_ERROR((wrap_axis(1, 0, "mean")), "mean", "axis 1", "0 dims");
  EXPECT_ERROR((wrap_axis(-2, 0, "mean")), "mean", "axis -2");
}

}  // namespace

// Shapes, strides and the NumPy broadcasting rule, written once.
// Legend used across vgrad: N batch, D features, C classes.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace vgrad {

using Shape = std::vector<int64_t>;
using Strides = std::vector<int64_t>;

int64_t numel(const Shape& shape);
Strides contiguous_strides(const Shape& shape);
std::string shape_str(const Shape& shape);  // "[64, 10]"

// NumPy broadcasting: align trailing dims; each pair equal or one of them 1.
// Throws "OP: cannot broadcast [64, 10] with [32, 10] (dim 0: 64 vs 32)".
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// Wraps a possibly negative axis into [0, ndim); throws naming the op on error.
// A 0-d tensor accepts 0 and -1 (reductions and softmax over "its" axis).
int64_t wrap_axis(int64_t axis, int64_t ndim, const char* op);
// The same for ops that index the axis (narrow, select, ...): a 0-d tensor has none.
int64_t wrap_existing_axis(int64_t axis, int64_t ndim, const char* op);

}  // namespace vgrad

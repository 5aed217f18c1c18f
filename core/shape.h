// Shapes, strides and the NumPy broadcasting rule, written once.
// Legend used across vgrad: N batch, D features, C classes.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace vgrad {

using Shape = std::vector<int64_t>;
using Strides = std::vector<int64_t>;

// The element count; throws naming the shape when it overflows int64 (a shape with a 0 dim has
// none, however large the others).
int64_t numel(const Shape& shape);
// Row-major strides; throws naming the shape when one overflows int64, which a shape without
// elements can do too: [0, 2^62, 2^62].
Strides contiguous_strides(const Shape& shape);
// False where contiguous_strides would throw (for callers that name a file in the error).
bool contiguous_strides_fit(const Shape& shape);
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

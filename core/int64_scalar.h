// Whether a double scalar is an int64 value: the check before an int64 op takes a scalar
// parameter (x * a + b, as scalar::Affine<int64_t>) as int64. Not the element conversion
// of copy and fill (scalar_ops.h's saturating convert).
#pragma once
#include <cmath>

namespace vgrad::scalar {

// Whole and in [-2^63, 2^63); false for NaN and +-Inf. Converting any other double to int64
// is undefined behaviour (1e19, Inf), or truncates silently (0.5).
inline bool is_int64_value(double x) { return x >= -0x1p63 && x < 0x1p63 && std::trunc(x) == x; }

}  // namespace vgrad::scalar

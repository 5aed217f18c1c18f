// The autocast dtypes and the closeness a low-precision result keeps to float32's, shared by
// tests/amp/test_autocast.cpp (CPU) and tests/cuda/test_amp_cuda.cpp (GPU).
#pragma once
#include "core/dtype.h"

namespace vgrad_test {

inline constexpr vgrad::DType kLowTypes[] = {vgrad::DType::BFloat16, vgrad::DType::Float16};
// Inputs rounded to the low dtype once, products summed in float32, the result rounded
// once: a few units of the low dtype's roundoff, relative to the result's size.
inline double low_precision_tolerance(vgrad::DType low) { return low == vgrad::DType::BFloat16 ? 3e-2 : 4e-3; }

}  // namespace vgrad_test

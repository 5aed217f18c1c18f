// Element types of vgrad tensors and the promotion rule between them.
// Not a general type system: three dtypes, chosen for training (float32),
// gradient checks (float64) and labels/indices (int64).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace vgrad {

enum class DType : uint8_t { Int64 = 0, Float32 = 1, Float64 = 2 };

constexpr size_t dtype_size(DType dtype) { return dtype == DType::Float32 ? 4 : 8; }
constexpr bool is_floating(DType dtype) { return dtype != DType::Int64; }
std::string dtype_name(DType dtype);

// Promotion for mixed binary ops: int64 < float32 < float64 (as in PyTorch for
// tensors of equal rank). The result is the higher of the two.
constexpr DType promote(DType a, DType b) { return static_cast<uint8_t>(a) > static_cast<uint8_t>(b) ? a : b; }

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::Float32; }
template <> constexpr DType dtype_of<double>() { return DType::Float64; }
template <> constexpr DType dtype_of<int64_t>() { return DType::Int64; }

// Calls fn(T{}) with T the C++ type of dtype.
template <class Fn> decltype(auto) visit_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::Float32: return fn(float{});
    case DType::Float64: return fn(double{});
    case DType::Int64: break;
  }
  return fn(int64_t{});
}

}  // namespace vgrad

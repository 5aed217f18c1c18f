// Element types of vgrad tensors, described by one table: name, size, whether it is
// floating point, promotion rank and safetensors code. Adding a dtype is one row here
// plus the kernels that support it. C++17 and host/device-clean: cuda/ includes it.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/half.h"

namespace vgrad {

enum class DType : uint8_t { Int64, Float32, Float64, BFloat16, Float16 };

struct DTypeInfo {
  DType dtype;
  const char* name;         // "float32"
  size_t size;              // bytes per element
  bool floating;
  int rank;                 // promotion: the result of a mixed op is the higher rank (see promote)
  const char* safetensors;  // the dtype code in safetensors headers
};

inline constexpr DTypeInfo kDTypes[] = {
    {DType::Int64, "int64", 8, false, 0, "I64"},
    {DType::BFloat16, "bfloat16", 2, true, 1, "BF16"},
    {DType::Float16, "float16", 2, true, 1, "F16"},
    {DType::Float32, "float32", 4, true, 2, "F32"},
    {DType::Float64, "float64", 8, true, 3, "F64"},
};

// Throws vgrad::Error for a value that is not in kDTypes (a corrupt or foreign enum).
[[noreturn]] void fail_unknown_dtype(int code);
[[noreturn]] void fail_half_in_wide_kernel(DType dtype);

constexpr const DTypeInfo& dtype_info(DType dtype) {
  for (const DTypeInfo& info : kDTypes)
    if (info.dtype == dtype) return info;
  fail_unknown_dtype(static_cast<int>(dtype));
}
constexpr size_t dtype_size(DType dtype) { return dtype_info(dtype).size; }
constexpr bool is_floating(DType dtype) { return dtype_info(dtype).floating; }
constexpr const char* dtype_name(DType dtype) { return dtype_info(dtype).name; }
constexpr const char* dtype_safetensors(DType dtype) { return dtype_info(dtype).safetensors; }
// bfloat16 and float16: stored in 2 bytes, computed in float32.
constexpr bool is_half(DType dtype) { return is_floating(dtype) && dtype_size(dtype) == 2; }
// The dtype whose safetensors code is `code`; false when vgrad has none.
bool dtype_from_safetensors(const char* code, DType& out);

// Promotion for mixed binary ops, as PyTorch's for tensors of equal rank:
// int64 < bfloat16, float16 < float32 < float64. The result is the higher of the two;
// bfloat16 with float16 (equal rank, neither holds the other) gives float32.
constexpr DType promote(DType a, DType b) {
  const int rank_a = dtype_info(a).rank, rank_b = dtype_info(b).rank;
  if (a != b && rank_a == rank_b) return DType::Float32;
  return rank_a >= rank_b ? a : b;
}

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::Float32; }
template <> constexpr DType dtype_of<double>() { return DType::Float64; }
template <> constexpr DType dtype_of<int64_t>() { return DType::Int64; }
template <> constexpr DType dtype_of<BFloat16>() { return DType::BFloat16; }
template <> constexpr DType dtype_of<Float16>() { return DType::Float16; }

// Calls fn(T{}) with T the C++ type of dtype (BFloat16/Float16 for the 16-bit floats:
// compute in compute_t<T>); an unknown dtype is an error.
template <class Fn> decltype(auto) visit_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::Float32: return fn(float{});
    case DType::Float64: return fn(double{});
    case DType::Int64: return fn(int64_t{});
    case DType::BFloat16: return fn(BFloat16{});
    case DType::Float16: return fn(Float16{});
  }
  fail_unknown_dtype(static_cast<int>(dtype));
}

// visit_dtype without the 16-bit floats, for the whole-row kernels (reductions, softmax,
// losses, random, optimizer steps): core hands them float32 copies of 16-bit operands
// (core/backend.cpp, Float32Scratch), so a 16-bit dtype here is an error.
template <class Fn> decltype(auto) visit_wide_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::Float32: return fn(float{});
    case DType::Float64: return fn(double{});
    case DType::Int64: return fn(int64_t{});
    case DType::BFloat16:
    case DType::Float16: fail_half_in_wide_kernel(dtype);
  }
  fail_unknown_dtype(static_cast<int>(dtype));
}

}  // namespace vgrad

// Element types of vgrad tensors, described by one table: name, size, whether it is
// floating point, promotion rank and safetensors code. Adding a dtype is one row here
// plus the kernels that support it. C++17 and host/device-clean: cuda/ includes it.
#pragma once
#include <cstddef>
#include <cstdint>

namespace vgrad {

enum class DType : uint8_t { Int64, Float32, Float64 };

struct DTypeInfo {
  DType dtype;
  const char* name;         // "float32"
  size_t size;              // bytes per element
  bool floating;
  int rank;                 // promotion: the result of a mixed op is the higher rank
  const char* safetensors;  // the dtype code in safetensors headers
};

inline constexpr DTypeInfo kDTypes[] = {
    {DType::Int64, "int64", 8, false, 0, "I64"},
    {DType::Float32, "float32", 4, true, 1, "F32"},
    {DType::Float64, "float64", 8, true, 2, "F64"},
};

// Throws vgrad::Error for a value that is not in kDTypes (a corrupt or foreign enum).
[[noreturn]] void fail_unknown_dtype(int code);

constexpr const DTypeInfo& dtype_info(DType dtype) {
  for (const DTypeInfo& info : kDTypes)
    if (info.dtype == dtype) return info;
  fail_unknown_dtype(static_cast<int>(dtype));
}
constexpr size_t dtype_size(DType dtype) { return dtype_info(dtype).size; }
constexpr bool is_floating(DType dtype) { return dtype_info(dtype).floating; }
constexpr const char* dtype_name(DType dtype) { return dtype_info(dtype).name; }
// The dtype whose safetensors code is `code`; false when vgrad has none.
bool dtype_from_safetensors(const char* code, DType& out);

// Promotion for mixed binary ops: int64 < float32 < float64 (as PyTorch for tensors
// of equal rank). The result is the higher of the two.
constexpr DType promote(DType a, DType b) { return dtype_info(a).rank >= dtype_info(b).rank ? a : b; }

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::Float32; }
template <> constexpr DType dtype_of<double>() { return DType::Float64; }
template <> constexpr DType dtype_of<int64_t>() { return DType::Int64; }

// Calls fn(T{}) with T the C++ type of dtype; an unknown dtype is an error.
template <class Fn> decltype(auto) visit_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::Float32: return fn(float{});
    case DType::Float64: return fn(double{});
    case DType::Int64: return fn(int64_t{});
  }
  fail_unknown_dtype(static_cast<int>(dtype));
}

}  // namespace vgrad

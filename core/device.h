// Where a tensor's storage lives: the CPU, or one CUDA device by index.
// The backend for a device is found in one place: backend_for() in core/backend.h.
#pragma once
#include <string>

namespace vgrad {

enum class DeviceType : unsigned char { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  constexpr Device() = default;
  constexpr Device(DeviceType device_type, int device_index = 0) : type(device_type), index(device_index) {}
  // Parses "cpu", "cuda", "cuda:1"; throws on anything else.
  explicit Device(const std::string& spec);

  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  std::string str() const;
  // Written out, not defaulted: this header stays C++17 for nvcc.
  friend constexpr bool operator==(const Device& a, const Device& b) { return a.type == b.type && a.index == b.index; }
  friend constexpr bool operator!=(const Device& a, const Device& b) { return !(a == b); }
};

inline constexpr Device kCPU{DeviceType::CPU, 0};
inline Device cuda_device(int index = 0) { return Device{DeviceType::CUDA, index}; }

}  // namespace vgrad

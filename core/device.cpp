// Device parsing and printing.
#include "core/device.h"

#include "core/error.h"

namespace vgrad {

Device::Device(const std::string& spec) {
  if (spec == "cpu") return;
  if (spec.rfind("cuda", 0) == 0) {
    type = DeviceType::CUDA;
    if (spec.size() == 4) return;
    // At most 4 digits: a GPU index past 9999 is a typo, and std::stoi would overflow.
    if (spec[4] == ':' && spec.size() > 5 && spec.size() <= 9 &&
        spec.find_first_not_of("0123456789", 5) == std::string::npos) {
      index = std::stoi(spec.substr(5));
      return;
    }
  }
  fail("device: cannot parse '{}' (expected cpu, cuda or cuda:N)", spec);
}

std::string Device::str() const { return is_cpu() ? "cpu" : fmt::format("cuda:{}", index); }

}  // namespace vgrad

// vgrad's exceptions: every bad input raises one whose message names the op,
// the shapes and why, in release builds too. No asserts on user input.
#pragma once
#include <stdexcept>
#include <string>

#include <spdlog/fmt/fmt.h>

namespace vgrad {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace vgrad

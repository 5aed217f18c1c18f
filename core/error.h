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

// Errors quote at most this much of a bad value.
inline constexpr size_t kMaxQuotedChars = 64;

// `text` cut to `limit` characters, with its full length noted when cut: an error quotes a
// bad value without copying a 10 MB one into its message.
inline std::string truncated(std::string text, size_t limit = kMaxQuotedChars) {
  if (text.size() <= limit) return text;
  const size_t full = text.size();
  text.resize(limit);
  return text + "... (" + std::to_string(full) + " characters)";
}

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace vgrad

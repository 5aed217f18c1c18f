// Whether ops record the graph, per thread. NoGradGuard turns recording off for a
// scope (evaluation, optimizer updates); EnableGradGuard turns it back on. In core
// (ops consult it before recording), in the autograd namespace (where users look).
#pragma once

namespace vgrad::autograd {

class GradMode {
 public:
  static bool is_enabled();
  static void set_enabled(bool enabled);
};

class NoGradGuard {
 public:
  NoGradGuard() : previous_(GradMode::is_enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

class EnableGradGuard {
 public:
  EnableGradGuard() : previous_(GradMode::is_enabled()) { GradMode::set_enabled(true); }
  ~EnableGradGuard() { GradMode::set_enabled(previous_); }
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace vgrad::autograd

namespace vgrad {
using autograd::EnableGradGuard;
using autograd::NoGradGuard;
}  // namespace vgrad

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

// Sets grad mode for a scope and restores the previous mode when it ends.
template <bool kEnabled> class GradModeGuard {
 public:
  GradModeGuard() : previous_(GradMode::is_enabled()) { GradMode::set_enabled(kEnabled); }
  ~GradModeGuard() { GradMode::set_enabled(previous_); }
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool previous_;
};
using NoGradGuard = GradModeGuard<false>;
using EnableGradGuard = GradModeGuard<true>;

}  // namespace vgrad::autograd

namespace vgrad {
using autograd::EnableGradGuard;
using autograd::NoGradGuard;
}  // namespace vgrad

// Gradient checking: compares the gradients the backward rules compute with
// central differences in float64. For people who write their own ops (see Function
// in function.h) and for vgrad's own tests. Not a speed tool: it runs fn twice per element.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"  // vgrad::Error, thrown with raise = true
#include "core/tensor.h"

namespace vgrad::autograd {

struct GradcheckOptions {
  double eps = 1e-6;   // central-difference step
  double atol = 1e-5;  // an element passes when |analytic - numeric| <= atol + rtol * |numeric|
  double rtol = 1e-3;
  bool raise = false;  // throw vgrad::Error with the message when the check fails
};

// The outcome, naming the element with the worst error relative to its tolerance.
struct GradcheckReport {
  bool ok = true;
  size_t worst_input = 0;     // index into the inputs given to gradcheck; inputs.size() + j: parameter j
  int64_t worst_element = 0;  // flat (row-major) index into that input or parameter
  double analytic = 0;        // the backward rule's value there
  double numeric = 0;         // the central difference there
  double abs_error = 0;       // |analytic - numeric|
  double rel_error = 0;       // abs_error / max(|analytic|, |numeric|), 0 when both are 0
  // "gradcheck: input 1 element 7: analytic 0.5 vs numeric 0.49 (abs 0.01, rel 0.02)"
  std::string message;
};

// Checks d/d(inputs) of L = sum(fn(inputs) * R), where R is a fixed random weighting
// of the output (a seeded Generator), so every entry of a non-scalar output's
// Jacobian counts, and a rule that is right only for sum() (softmax's, say) fails.
//
// Each floating-point input is replaced by a float64 copy that requires grad (the
// caller's tensors are never changed); int64 inputs (indices, targets) are passed
// through unchanged and not checked. The analytic gradient comes from
// vgrad::autograd::grad(); the numeric one is (L(x + eps) - L(x - eps)) / (2 eps)
// per element, evaluated under NoGradGuard. Keep inputs away from kinks (relu and
// abs at 0, clamp's bounds, ties of max) by much more than eps.
//
//   using namespace vgrad;
//   auto report = autograd::gradcheck(
//       [](const std::vector<Tensor>& in) { return Swish::apply(in[0]) * in[1]; },  // in[1] broadcasts
//       {randn({4, 3}), randn({3})});
//   if (!report.ok) std::cerr << report.message << "\n";
//   // or: gradcheck(fn, inputs, {.raise = true}) throws vgrad::Error on failure.
//
// Throws vgrad::Error when fn returns an undefined or non-floating tensor, or
// when no input is floating point (nothing to check).
//
// `parameters` are also checked: tensors fn uses directly rather than through its inputs
// (a module's, by name). They must be float64 leaves that require grad; each element is
// perturbed in place and restored. Report indices past the inputs count the parameters,
// and the message names the parameter. nn::gradcheck (nn/gradcheck.h) does this for a module.
GradcheckReport gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, GradcheckOptions options = {},
                          const std::vector<std::pair<std::string, Tensor>>& parameters = {});

}  // namespace vgrad::autograd

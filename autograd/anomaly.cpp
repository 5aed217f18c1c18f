// The two anomaly checks; record() and the engine call them when the mode is on.
#include "autograd/anomaly.h"

#include <cmath>

#include "core/backend.h"
#include "core/error.h"

namespace vgrad::autograd {
namespace {

std::string shapes_str(const std::vector<Shape>& shapes) {
  std::string text;
  for (const Shape& shape : shapes) text += (text.empty() ? "" : ", ") + shape_str(shape);
  return text.empty() ? "none" : text;
}

}  // namespace

const char* non_finite_kind(const Tensor& t) {
  if (!t.defined() || !is_floating(t.dtype()) || t.numel() == 0) return "";
  // The sum of squares (accumulated in double) is NaN iff an element is NaN, and infinite iff
  // one is infinite: one reduction on any device. NOTE: float32 squares cannot overflow a
  // double, but float64 values beyond ~1e154 would be reported as Inf.
  const double squares = backend_for(t.device()).sum_of_squares(t.contiguous().view());
  if (std::isnan(squares)) return "NaN";
  if (std::isinf(squares)) return "Inf";
  return "";
}

void check_forward_output(const std::string& op, const Tensor& output, const std::vector<Tensor>& inputs) {
  const char* kind = non_finite_kind(output);
  if (*kind == '\0') return;
  std::vector<Shape> shapes;
  for (const Tensor& t : inputs)
    if (t.defined()) shapes.push_back(t.shape());
  fail("anomaly: {} produced {} in its forward output {} (inputs: {})", op, kind, shape_str(output.shape()),
       shapes_str(shapes));
}

void check_backward_gradient(const Node& node, const Tensor& gradient, size_t input) {
  const char* kind = non_finite_kind(gradient);
  if (*kind == '\0') return;
  std::vector<Shape> shapes;
  for (const Edge& edge : node.edges()) shapes.push_back(edge.shape);
  fail("anomaly: backward of {} produced {} in the gradient of input {} {} (inputs: {})", node.name(), kind, input,
       shape_str(gradient.shape()), shapes_str(shapes));
}

}  // namespace vgrad::autograd

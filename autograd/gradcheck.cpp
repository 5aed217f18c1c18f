// gradcheck: analytic gradients (the engine) against central differences, in float64.
// Works on any device: inputs are perturbed one element at a time through a view.
#include "autograd/gradcheck.h"

#include <cmath>
#include <limits>

#include "autograd/engine.h"
#include "core/grad_mode.h"
#include "core/error.h"
#include "autograd/ops.h"

namespace vgrad::autograd {
namespace {

constexpr uint64_t kWeightSeed = 0x67adc0de;  // fixed: the same weighting R on every run

Tensor call(const std::function<Tensor(const std::vector<Tensor>&)>& fn, const std::vector<Tensor>& inputs) {
  Tensor out = fn(inputs);
  if (!out.defined()) fail("gradcheck: fn returned an undefined tensor");
  if (!is_floating(out.dtype()))
    fail("gradcheck: fn returned a {} tensor of shape {}; its output must be floating point", dtype_name(out.dtype()),
         shape_str(out.shape()));
  return out;
}

// L = sum(out * R), accumulated in double on the host.
double weighted_sum(const Tensor& out, const std::vector<double>& weights) {
  const std::vector<double> values = out.to_vector<double>();
  if (values.size() != weights.size())
    fail("gradcheck: fn returned {} elements on a perturbed input but {} at first (shape {})", values.size(),
         weights.size(), shape_str(out.shape()));
  double total = 0;
  for (size_t i = 0; i < values.size(); ++i) total += values[i] * weights[i];
  return total;
}

std::string index_str(int64_t flat, const Shape& shape) {
  Shape index(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    index[d] = shape[d] ? flat % shape[d] : 0;
    flat = shape[d] ? flat / shape[d] : 0;
  }
  return shape_str(index);
}

}  // namespace

GradcheckReport gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, GradcheckOptions options,
                          const std::vector<std::pair<std::string, Tensor>>& parameters) {
  if (!(options.eps > 0)) fail("gradcheck: eps must be positive, got {}", options.eps);
  // float64 leaf copies of the floating inputs; int64 inputs go through as they are.
  std::vector<Tensor> work;
  std::vector<size_t> checked;  // positions in `inputs` of the copies that are checked
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& input = inputs[i];
    if (!input.defined() || !is_floating(input.dtype())) {
      work.push_back(input);
      continue;
    }
    NoGradGuard no_grad;
    Tensor copy = clone(input.detach().to(DType::Float64));
    copy.requires_grad_(true);
    work.push_back(copy);
    checked.push_back(i);
  }
  // What is checked, in report order: the float64 input copies, then the parameters in place.
  std::vector<Tensor> leaves;
  std::vector<std::string> labels;
  for (size_t i : checked) {
    leaves.push_back(work[i]);
    labels.push_back(fmt::format("input {}", i));
  }
  for (const auto& [name, p] : parameters) {
    if (!p.defined() || p.dtype() != DType::Float64 || !p.requires_grad() || !p.is_leaf() || !p.is_contiguous())
      fail("gradcheck: parameter '{}' must be a contiguous float64 leaf that requires grad (it is {}{}); convert a "
           "module with to(DType::Float64), or use nn::gradcheck",
           name, p.defined() ? dtype_name(p.dtype()) : "undefined", p.defined() && !p.requires_grad() ? ", no grad" : "");
    leaves.push_back(p);
    labels.push_back("parameter " + name);
  }
  if (leaves.empty())
    fail("gradcheck: none of the {} inputs is floating point, so there is nothing to check (int64 inputs are "
         "passed through unchanged)",
         inputs.size());

  // Analytic: grad of sum(out * R) is the backward of out seeded with R.
  std::vector<Tensor> analytic;
  std::vector<double> weights;
  {
    EnableGradGuard enable_grad;
    const Tensor out = call(fn, work);
    Generator generator(kWeightSeed);
    const Tensor r = randn(out.shape(), {.dtype = DType::Float64, .device = out.device()}, &generator);
    weights = r.to_vector<double>();
    if (out.requires_grad()) {
      analytic = grad({out}, leaves, {r.to(out.dtype())}, /*retain_graph=*/false, /*allow_unused=*/true);
      for (size_t k = 0; k < analytic.size(); ++k)  // an input fn ignores has gradient 0
        if (!analytic[k].defined()) analytic[k] = zeros_like(leaves[k]);
    } else {  // fn does not depend on any input: every gradient is 0
      for (const Tensor& leaf : leaves) analytic.push_back(zeros_like(leaf));
    }
  }

  GradcheckReport report;
  double worst_score = -1;  // error / tolerance of the worst element so far; > 1 fails
  bool any = false;
  NoGradGuard no_grad;
  size_t worst_leaf = 0;
  for (size_t k = 0; k < leaves.size(); ++k) {
    const Tensor& x = leaves[k];
    const std::vector<double> original = x.to_vector<double>();
    const std::vector<double> rule = analytic[k].to_vector<double>();
    if (rule.size() != original.size())
      fail("gradcheck: {} has {} elements but its gradient has {}", labels[k], original.size(), rule.size());
    const Tensor flat = x.detach().reshape({-1});  // a view: x is contiguous
    for (size_t j = 0; j < original.size(); ++j) {
      Tensor element = flat.narrow(0, static_cast<int64_t>(j), 1);
      element.fill_(original[j] + options.eps);
      const double plus = weighted_sum(call(fn, work), weights);
      element.fill_(original[j] - options.eps);
      const double minus = weighted_sum(call(fn, work), weights);
      element.fill_(original[j]);
      const double numeric = (plus - minus) / (2 * options.eps);
      const double abs_error = std::abs(rule[j] - numeric);
      const double scale = std::max(std::abs(rule[j]), std::abs(numeric));
      double score = abs_error / (options.atol + options.rtol * std::abs(numeric));
      if (!std::isfinite(rule[j]) || !std::isfinite(numeric) || std::isnan(score))
        score = std::numeric_limits<double>::infinity();
      if (!any || score > worst_score) {
        any = true;
        worst_score = score;
        worst_leaf = k;
        report.worst_input = k < checked.size() ? checked[k] : inputs.size() + (k - checked.size());
        report.worst_element = static_cast<int64_t>(j);
        report.analytic = rule[j];
        report.numeric = numeric;
        report.abs_error = abs_error;
        report.rel_error = scale > 0 ? abs_error / scale : 0.0;
      }
    }
  }
  if (!any) {
    report.message = "gradcheck: ok (the checked inputs have no elements)";
    return report;
  }
  report.ok = worst_score <= 1.0;
  const Tensor& worst = leaves[worst_leaf];
  report.message = fmt::format(
      "gradcheck: {} element {} (index {} of {}): analytic {:.8g} vs numeric {:.8g} (abs {:.3g}, rel {:.3g}); "
      "{} the tolerance atol {} + rtol {} * |numeric|",
      labels[worst_leaf], report.worst_element, index_str(report.worst_element, worst.shape()),
      shape_str(worst.shape()), report.analytic, report.numeric, report.abs_error, report.rel_error,
      report.ok ? "worst element, within" : "exceeds", options.atol, options.rtol);
  if (options.raise && !report.ok) throw Error(report.message);
  return report;
}

}  // namespace vgrad::autograd

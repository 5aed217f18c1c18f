// Recording an op into the graph, and custom differentiable ops.
// Every built-in op calls record(); users write a Function (like
// torch.autograd.Function) and check it with gradcheck (gradcheck.h).
#pragma once
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/grad_mode.h"
#include "autograd/node.h"

namespace vgrad::autograd {

// True when recording is on and some input requires grad.
bool needs_grad(const std::vector<Tensor>& inputs);

// Attaches `backward` to `out` when needs_grad(inputs); returns out. The rule gets
// ctx (with what was saved) and dL/d(out), and returns one gradient per input,
// which the engine sums back to the input's shape if the op broadcast it.
Tensor record(Tensor out, const std::vector<Tensor>& inputs, Context ctx, BackwardFn backward);

// A custom op: derive, define static forward(Context&, inputs...) and
// static backward(Context&, const Tensor& grad_output) -> std::vector<Tensor>
// (one gradient per tensor input, in order), then call Derived::apply(inputs...).
//
//   // swish(x) = x * sigmoid(x);  d/dx = s + x * s * (1 - s)
//   struct Swish : vgrad::autograd::Function<Swish> {
//     static const char* name() { return "swish"; }  // errors name the op (default "custom")
//     static Tensor forward(Context& ctx, const Tensor& x) {
//       ctx.save_for_backward({x});
//       return x * vgrad::sigmoid(x);
//     }
//     static std::vector<Tensor> backward(Context& ctx, const Tensor& grad) {
//       Tensor x = ctx.saved(0), s = vgrad::sigmoid(x);
//       return {grad * (s + x * s * (1.0 - s))};
//     }
//   };
//   Tensor y = Swish::apply(x);
//
// forward runs with recording off; backward too (no double backward).
template <class Derived>
struct Function {
  template <class... Args>
  static Tensor apply(const Args&... args) {
    std::vector<Tensor> inputs;
    (collect(inputs, args), ...);
    Context ctx(Derived::name());
    Tensor out;
    {
      NoGradGuard no_grad;
      out = Derived::forward(ctx, args...);
    }
    return record(out, inputs, std::move(ctx),
                  [](Context& c, const Tensor& grad_output) { return Derived::backward(c, grad_output); });
  }
  static const char* name() { return "custom"; }

 private:
  template <class T> static void collect(std::vector<Tensor>& inputs, const T& arg) {
    if constexpr (std::is_same_v<T, Tensor>) inputs.push_back(arg);
  }
};

}  // namespace vgrad::autograd

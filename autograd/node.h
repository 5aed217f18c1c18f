// A node of the recorded graph: the backward rule of one op application, the
// tensors it saved (checked against in-place changes), and edges to its inputs.
// Written by record() in function.h; run by the engine in engine.cpp.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace vgrad::autograd {

class Node;

// Where an input's gradient goes: into another node, or into a leaf's .grad.
struct Edge {
  std::shared_ptr<Node> node;         // set when the input was produced by a recorded op
  std::shared_ptr<TensorImpl> leaf;   // set when the input is a leaf that requires grad
  Shape shape;                        // the input's shape, for unbroadcasting
  DType dtype = DType::Float32;
  bool active() const { return node || leaf; }
};

// What a backward rule may use: tensors saved in forward (version-checked on access)
// and scalars. Also the `ctx` of custom ops (see Function in function.h).
class Context {
 public:
  explicit Context(std::string op = "op") : op_(std::move(op)) {}
  void save_for_backward(const std::vector<Tensor>& tensors);
  // The i-th saved tensor; throws if it was modified in place since it was saved.
  Tensor saved(size_t i) const;
  size_t saved_count() const { return saved_.size(); }
  std::map<std::string, double> values;  // scalars a rule needs (an exponent, a slope)
  std::vector<int64_t> ints;             // axes, shapes
  const std::string& op() const { return op_; }
  // Whether input i needs a gradient (set by record()); rules may skip work for the others.
  bool needs_input_grad(size_t i) const { return i < input_needs_grad.size() && input_needs_grad[i]; }
  std::vector<bool> input_needs_grad;
  void release() { saved_.clear(); }

 private:
  struct SavedTensor {
    Tensor tensor;  // detached: saving an op's own output must not create a cycle
    uint64_t version;
  };
  std::string op_;
  std::vector<SavedTensor> saved_;
};

// grad_output -> one gradient per input (an undefined Tensor where none flows).
using BackwardFn = std::function<std::vector<Tensor>(Context& ctx, const Tensor& grad_output)>;

class Node {
 public:
  Node(Context ctx, BackwardFn backward, std::vector<Edge> edges)
      : ctx_(std::move(ctx)), backward_(std::move(backward)), edges_(std::move(edges)) {}
  const std::string& name() const { return ctx_.op(); }
  const std::vector<Edge>& edges() const { return edges_; }
  std::vector<Tensor> apply(const Tensor& grad_output);
  // Drops saved tensors and the rule once backward has run without retain_graph.
  void release();
  bool released() const { return released_; }

 private:
  Context ctx_;
  BackwardFn backward_;
  std::vector<Edge> edges_;
  bool released_ = false;
};

}  // namespace vgrad::autograd

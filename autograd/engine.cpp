// The backward engine. Shared work lives here so no rule repeats it: topological
// order, += accumulation (within a pass and across backward() calls), summing a
// gradient back to its input's shape after broadcasting, and recording off.
#include "autograd/engine.h"

#include <unordered_map>
#include <unordered_set>

#include "autograd/autocast.h"
#include "autograd/anomaly.h"
#include "core/grad_mode.h"
#include "autograd/node.h"
#include "core/error.h"
#include "core/kernels.h"
#include "core/profiler.h"
#include "autograd/ops.h"

namespace vgrad::autograd {
namespace {

// Reverse postorder of the nodes reachable from `roots`: every node comes after
// all nodes that consume its output.
std::vector<Node*> topological_order(const std::vector<Node*>& roots) {
  std::vector<Node*> postorder;
  std::unordered_set<Node*> visited;
  std::vector<std::pair<Node*, size_t>> stack;
  for (Node* root : roots) {
    if (!visited.insert(root).second) continue;
    stack.push_back({root, 0});
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      if (next < node->edges().size()) {
        Node* child = node->edges()[next++].node.get();
        if (child && visited.insert(child).second) stack.push_back({child, 0});
      } else {
        postorder.push_back(node);
        stack.pop_back();
      }
    }
  }
  return {postorder.rbegin(), postorder.rend()};
}

Tensor check_gradient(const Tensor& root, const Tensor& gradient) {
  if (!root.requires_grad())
    fail("backward: tensor {} does not require grad and has no grad_fn (did you forget requires_grad_(), "
         "or run under NoGradGuard?)", shape_str(root.shape()));
  if (!gradient.defined()) {
    if (root.numel() != 1)
      fail("backward: gradient can be implicit only for one-element outputs; this output has shape {} "
           "(pass backward(gradient))", shape_str(root.shape()));
    return ones(root.shape(), {.dtype = root.dtype(), .device = root.device()});
  }
  if (gradient.shape() != root.shape())
    fail("backward: gradient shape {} does not match output shape {}", shape_str(gradient.shape()),
         shape_str(root.shape()));
  if (gradient.dtype() != root.dtype())
    fail("backward: gradient dtype {} does not match output dtype {}", dtype_name(gradient.dtype()),
         dtype_name(root.dtype()));
  if (gradient.device() != root.device())
    fail("backward: gradient on {} but output on {}", gradient.device().str(), root.device().str());
  return gradient;
}

// The gradient a rule returned, summed back to the input's shape and dtype.
Tensor fit_to_input(const Tensor& grad, const Edge& edge, const Node& node, size_t input) {
  Tensor g = grad;
  if (g.shape() != edge.shape) {
    // Unbroadcast: the input was broadcast to the output's shape in forward.
    if (broadcast_shapes(edge.shape, g.shape(), node.name().c_str()) != g.shape())
      fail("{}: backward returned a gradient of shape {} for input {} of shape {}", node.name(),
           shape_str(g.shape()), input, shape_str(edge.shape));
    g = sum_to(g, edge.shape);
  }
  return kernels::cast(g, edge.dtype);
}

// Adds g into a leaf's .grad; a fresh gradient (after zero_grad) is adopted without a copy.
void accumulate_into_leaf(TensorImpl& leaf, const Tensor& g) {
  if (!leaf.grad) {
    // A fresh gradient nobody else holds is adopted; otherwise copied, so that
    // a later += never writes into a tensor the user or another node owns.
    const bool exclusive = g.impl_shared().use_count() <= 2 && g.storage().use_count() == 1 && g.is_contiguous() &&
                           g.offset() == 0;
    leaf.grad = exclusive ? g.impl_shared() : kernels::contiguous(g.clone()).impl_shared();
    if (exclusive) {
      leaf.grad->grad_fn = nullptr;
      leaf.grad->requires_grad = false;
    }
    return;
  }
  Tensor existing(leaf.grad);
  kernels::binary_into(BinaryOp::Add, existing, g, existing, "backward (accumulate grad)");
  existing.storage()->bump_version();
}

void run(const std::vector<Tensor>& roots, const std::vector<Tensor>& gradients, bool retain_graph,
         std::unordered_map<TensorImpl*, Tensor>* capture) {
  if (!gradients.empty() && gradients.size() != roots.size())
    fail("backward: {} gradients given for {} outputs", gradients.size(), roots.size());
  NoGradGuard no_grad;  // rules compose ops; none of that is recorded (nor anomaly-checked as forward ops)
  autocast::Suspend no_autocast;  // nor re-cast: a rule keeps the dtypes its forward chose
  const bool detect_anomaly = AnomalyMode::is_enabled();

  std::unordered_map<Node*, Tensor> pending;
  std::vector<Node*> root_nodes;
  auto deliver_to_leaf = [&](TensorImpl& leaf, const Tensor& g) {
    if (capture) {
      auto it = capture->find(&leaf);
      if (it == capture->end()) return;
      it->second = it->second.defined() ? add(it->second, g) : g;
    } else {
      accumulate_into_leaf(leaf, g);
    }
  };
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor g = check_gradient(roots[i], gradients.empty() ? Tensor() : gradients[i]);
    if (detect_anomaly && *non_finite_kind(g) != '\0')
      fail("anomaly: the gradient given to backward() for output {} {} holds {}", i, shape_str(g.shape()),
           non_finite_kind(g));
    if (Node* node = roots[i].grad_fn().get()) {
      auto [it, inserted] = pending.try_emplace(node, g);
      if (!inserted) it->second = add(it->second, g);
      root_nodes.push_back(node);
    } else {
      deliver_to_leaf(*roots[i].impl_ptr(), g);
    }
  }

  const std::vector<Node*> order = topological_order(root_nodes);
  // Leaves with post-accumulate hooks: how many edges of this pass still lead to each, so
  // its hooks run once, after the pass's last gradient for it (and only if one arrived).
  std::unordered_map<TensorImpl*, int64_t> edges_left;
  std::unordered_set<TensorImpl*> reached;
  if (!capture) {
    for (Node* node : order)
      for (const Edge& edge : node->edges())
        if (edge.leaf && !edge.leaf->post_accumulate_grad_hooks.empty()) ++edges_left[edge.leaf.get()];
    for (const Tensor& root : roots)
      if (!root.grad_fn() && !root.impl_ptr()->post_accumulate_grad_hooks.empty()) reached.insert(root.impl_ptr());
  }
  auto run_hooks = [&](TensorImpl& leaf) {
    if (!reached.erase(&leaf)) return;
    for (auto& [id, hook] : std::vector(leaf.post_accumulate_grad_hooks)) hook(leaf);
  };
  auto leaf_edge_done = [&](const Edge& edge) {
    if (!edge.leaf) return;
    auto left = edges_left.find(edge.leaf.get());
    if (left != edges_left.end() && --left->second == 0) run_hooks(*edge.leaf);
  };
  for (const Tensor& root : roots)  // a root that is itself a hooked leaf and feeds no node
    if (reached.count(root.impl_ptr()) && !edges_left.count(root.impl_ptr())) run_hooks(*root.impl_ptr());

  for (Node* node : order) {
    auto it = pending.find(node);
    if (it == pending.end()) {  // no gradient reached it
      for (const Edge& edge : node->edges()) leaf_edge_done(edge);
      continue;
    }
    const Tensor grad_output = std::move(it->second);
    pending.erase(it);
    std::vector<Tensor> input_grads;
    {
      profiler::Scope scope(node->name().c_str(), "backward");
      input_grads = node->apply(grad_output);
    }
    const auto& edges = node->edges();
    if (input_grads.size() != edges.size())
      fail("{}: backward returned {} gradients for {} inputs", node->name(), input_grads.size(), edges.size());
    for (size_t i = 0; i < edges.size(); ++i) {
      const Edge& edge = edges[i];
      if (!edge.active() || !input_grads[i].defined()) {
        leaf_edge_done(edge);
        continue;
      }
      const Tensor g = fit_to_input(input_grads[i], edge, *node, i);
      // Nodes run in topological order, so the first non-finite gradient names the op that made it.
      if (detect_anomaly) check_backward_gradient(*node, g, i);
      if (edge.node) {
        auto [slot, inserted] = pending.try_emplace(edge.node.get(), g);
        if (!inserted) slot->second = add(slot->second, g);
      } else {
        deliver_to_leaf(*edge.leaf, g);
        if (edges_left.count(edge.leaf.get())) reached.insert(edge.leaf.get());
        leaf_edge_done(edge);
      }
    }
    if (!retain_graph) node->release();
  }
}

}  // namespace

void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& gradients, bool retain_graph) {
  run(roots, gradients, retain_graph, nullptr);
}

std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& gradients, bool retain_graph, bool allow_unused) {
  std::unordered_map<TensorImpl*, Tensor> capture;
  for (const Tensor& input : inputs) {
    if (!input.requires_grad() || !input.is_leaf())
      fail("grad: every input must be a leaf tensor that requires grad");
    capture[input.impl_ptr()] = Tensor();
  }
  run(outputs, gradients, retain_graph, &capture);
  std::vector<Tensor> result;
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor g = capture[inputs[i].impl_ptr()];
    if (!g.defined() && !allow_unused)
      fail("grad: input {} {} was not used to compute the outputs (no gradient reaches it); pass "
           "allow_unused=true to get an undefined tensor for it",
           i, shape_str(inputs[i].shape()));
    result.push_back(g);
  }
  return result;
}

}  // namespace vgrad::autograd

namespace vgrad {

// Declared with Tensor in core; defined here, where the engine is.
void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  autograd::backward({*this}, {gradient}, retain_graph);
}

}  // namespace vgrad

"""What make_conv_reference.py and make_loss_reference.py share: a case is a function's
float64 inputs, its output, and the gradients of sum(out * R) for a stored random R."""
import torch


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def entry(t):
    return {"shape": list(t.shape), "values": flat(t)}


def run(fn, inputs, grads_of):
    """out = fn(*inputs); grads of sum(out * R) for the inputs named in grads_of."""
    for name in grads_of:
        inputs[name].requires_grad_(True)
    out = fn(**inputs)
    r = torch.rand_like(out) * 2 - 1
    (out * r).sum().backward()
    case = {"inputs": {k: entry(v) for k, v in inputs.items() if v.dtype != torch.int64},
            "indices": {k: [int(i) for i in v.reshape(-1).tolist()] for k, v in inputs.items() if v.dtype == torch.int64},
            "index_shapes": {k: list(v.shape) for k, v in inputs.items() if v.dtype == torch.int64},
            "weighting": entry(r), "output": entry(out),
            "grads": {k: entry(inputs[k].grad) for k in grads_of}}
    return case

#!/usr/bin/env python3
"""Prints PyTorch's values for the index and shape ops that vgrad copies (gather,
scatter_add, masked_fill, stack, split, chunk). The numbers are written into
tests/autograd/ops/test_index.cpp and test_shape.cpp; CI needs no PyTorch: rerun this
only to change cases.

    python3 tests/reference/index_ops_reference.py   # printed with torch 2.15.0, CPU

Each line: a name, the shape, the flat values."""
import torch
torch.set_printoptions(precision=10)
def p(name, t): print(name, list(t.shape), t.flatten().tolist())
x = torch.arange(12.).reshape(3, 4) * 1.5 - 2
p("gather1", torch.gather(x, 1, torch.tensor([[0, 3, 3], [1, 0, 2]])))
p("gather0", torch.gather(x, 0, torch.tensor([[2, 0, 1, 2], [0, 0, 0, 1]])))
c = torch.arange(24.).reshape(2, 3, 4)
p("gather3d", torch.gather(c, -1, torch.tensor([[[3, 0], [1, 1]], [[2, 2], [0, 3]]])))
p("gatherT", torch.gather(x.t(), 0, torch.tensor([[2, 1, 0], [0, 2, 2]])))
xg = x.clone().requires_grad_()
torch.gather(xg, 1, torch.tensor([[0, 3, 3], [1, 0, 2]])).backward(torch.tensor([[1., 2, 3], [4, 5, 6]]))
p("gather1_grad", xg.grad)
s = torch.arange(15.).reshape(3, 5) + 100
p("scatter1", torch.scatter_add(x, 1, torch.tensor([[0, 0, 3], [2, 1, 2]]), s))
p("scatter0", torch.scatter_add(x, 0, torch.tensor([[2, 2, 0, 1], [2, 0, 0, 1]]), s[:2, :4]))
xg = x.clone().requires_grad_(); sg = s[:2, :3].clone().requires_grad_()  # torch has no gradient for a src larger than index
torch.scatter_add(xg, 1, torch.tensor([[0, 0, 3], [2, 1, 2]]), sg).backward(torch.arange(12.).reshape(3, 4) + 1)
p("scatter1_gx", xg.grad); p("scatter1_gs", sg.grad)
p("scatter3d", torch.scatter_add(torch.zeros(2, 3, 2), 1, torch.tensor([[[2, 0], [2, 2]], [[1, 1], [0, 2]]]), torch.arange(8.).reshape(2, 2, 2) + 1))
p("scatter0d", torch.scatter_add(torch.tensor(1.), 0, torch.tensor(0), torch.tensor(2.5)))
p("gather0d", torch.gather(torch.tensor(5.), 0, torch.tensor([0, 0])))
m = torch.tensor([[1., 0, float('nan')], [2, float('nan'), 4]])
p("masked1", m.masked_fill(torch.tensor([True, False, True]), -1.))
p("masked_nan", m.masked_fill(torch.tensor([[False], [True]]), float('nan')))
p("masked_bigger", torch.tensor([1., 2.]).masked_fill(torch.tensor([[True, False], [False, False], [False, True]]), 9.))
p("masked_int", torch.tensor([3, 4, 5]).masked_fill(torch.tensor([True, False, True]), 7))
p("masked_int_frac", torch.tensor([3, 4, 5]).masked_fill(torch.tensor([True, False, True]), 2.7))
mg = torch.tensor([[1., 2, 3], [4, 5, 6]], requires_grad=True)
mg.masked_fill(mg > 2.5, 0.).backward(torch.tensor([[1., 2, 3], [4, 5, 6]]))
p("masked_grad", mg.grad)
a = torch.arange(6.).reshape(2, 3); b = a + 10
p("stack0", torch.stack([a, b])); p("stack1", torch.stack([a, b], 1)); p("stack-1", torch.stack([a, b], -1))
p("stack0d", torch.stack([torch.tensor(1.), torch.tensor(2.)], -1))
print("stackdtype", torch.stack([a, b.double()]).dtype)
for name, parts in [("split2", torch.split(torch.arange(5.), 2)), ("split_sizes", torch.split(a, [1, 2], 1)),
                    ("chunk54", torch.chunk(torch.arange(5.), 4)), ("chunk64", torch.chunk(torch.arange(6.), 4)),
                    ("chunk_axis", torch.chunk(a.t(), 2, 0)), ("split_empty", torch.split(torch.empty(0), 2)), ("chunk_empty", torch.chunk(torch.empty(0, 2), 3))]:
    print(name, [(list(t.shape), t.flatten().tolist()) for t in parts])
# Edges.
p("gather_longer_along_axis", torch.gather(x, 1, torch.tensor([[0, 1, 2, 0, 3, 3]])))
p("gather_int64", torch.gather(torch.tensor([[10, 11, 12], [13, 14, 15]]), 1, torch.tensor([[2], [0]])))
p("scatter_transposed", torch.scatter_add(x.t(), 0, torch.tensor([[2, 2, 0]]), torch.ones(1, 3)))
p("masked_inf", m.masked_fill(torch.tensor([[False, True, False]]), float('-inf')))
p("masked_0d", torch.tensor(3.).masked_fill(torch.tensor(True), 4.))
for name, parts in [("split_zero_sizes", torch.split(a, [0, 2, 0], 0)), ("split_whole", a.split(3, -1)),
                    ("split_larger", torch.split(a, 7, 1)), ("chunk35", torch.chunk(torch.arange(3.), 5)),
                    ("chunk_one", torch.chunk(a, 1, -1)), ("split_empty_0", torch.split(torch.empty(0), 0))]:
    print(name, [(list(t.shape), t.flatten().tolist()) for t in parts])

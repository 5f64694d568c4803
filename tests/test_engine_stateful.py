"""Random graphs built step by step, each step mirrored in torch: reuse of tensors, unused
branches, several backward calls with retain_graph, accumulation, zeroing, no_grad
regions. After every step, every leaf's grad must equal torch.autograd's."""

import torch
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import tinygraph as tg

SHAPES = [(3,), (2, 3), (2, 1), (1, 3), ()]
UNARY = {
    "tanh": lambda x: x.tanh(),
    "sigmoid": lambda x: x.sigmoid(),
    "square": lambda x: x * x,
    "softmax": lambda x: x.softmax(-1) if x.ndim else x,
    "sum_keep": lambda x: x.sum(-1, keepdim=True) if x.ndim else x,
    "exp_small": lambda x: (x * 0.1).exp(),
}
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "max": lambda a, b: a.maximum(b),
}


def broadcastable(a, b):
    return all(x == y or x == 1 or y == 1 for x, y in zip(reversed(a), reversed(b)))


class RandomGraphs(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2**16))
    def start(self, seed):
        self.gen = torch.Generator().manual_seed(seed)
        self.leaves = []  # (tinygraph leaf, torch leaf)
        self.nodes = []  # (tinygraph tensor, torch tensor), anything made so far

    def _pair(self, shape, requires_grad):
        data = torch.randn(shape, generator=self.gen, dtype=torch.float64)
        return tg.Tensor(data.clone(), requires_grad=requires_grad), data.clone().requires_grad_(requires_grad)

    @rule(shape=st.sampled_from(SHAPES), requires_grad=st.booleans())
    def new_leaf(self, shape, requires_grad):
        pair = self._pair(shape, requires_grad)
        if requires_grad:
            self.leaves.append(pair)
        self.nodes.append(pair)

    @precondition(lambda self: self.nodes)
    @rule(op=st.sampled_from(sorted(UNARY)), pick=st.integers(0, 10**6), no_grad=st.booleans())
    def unary(self, op, pick, no_grad):
        x, xt = self.nodes[pick % len(self.nodes)]
        with tg.set_grad_enabled(not no_grad), torch.set_grad_enabled(not no_grad):
            self.nodes.append((UNARY[op](x), UNARY[op](xt)))

    @precondition(lambda self: len(self.nodes) >= 2)
    @rule(op=st.sampled_from(sorted(BINARY)), i=st.integers(0, 10**6), j=st.integers(0, 10**6))
    def binary(self, op, i, j):
        (a, at), (b, bt) = self.nodes[i % len(self.nodes)], self.nodes[j % len(self.nodes)]
        if broadcastable(a.shape, b.shape):
            self.nodes.append((BINARY[op](a, b), BINARY[op](at, bt)))

    @precondition(lambda self: any(t.requires_grad for t, _ in self.nodes))
    @rule(pick=st.integers(0, 10**6))
    def backward(self, pick):
        live = [(t, tt) for t, tt in self.nodes if t.requires_grad]
        t, tt = live[pick % len(live)]
        v = torch.randn(t.shape, generator=self.gen, dtype=torch.float64)
        t.backward(tg.Tensor(v), retain_graph=True)
        tt.backward(v, retain_graph=True)

    @rule()
    def zero_grads(self):
        for leaf, leaf_t in self.leaves:
            leaf.grad = None
            leaf_t.grad = None

    @invariant()
    def grads_match_torch(self):
        for leaf, leaf_t in getattr(self, "leaves", []):
            if leaf_t.grad is None:
                assert leaf.grad is None
            else:
                torch.testing.assert_close(leaf.grad.data, leaf_t.grad, rtol=1e-10, atol=1e-12)

    @invariant()
    def values_match_torch(self):
        for t, tt in getattr(self, "nodes", [])[-1:]:
            assert t.requires_grad == tt.requires_grad
            torch.testing.assert_close(t.data, tt.detach(), rtol=1e-12, atol=1e-12)


TestRandomGraphs = RandomGraphs.TestCase

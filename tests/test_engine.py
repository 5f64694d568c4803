"""The engine's semantics, PyTorch's wherever PyTorch has them."""

import contextlib
import gc
import weakref
from typing import ClassVar

import pytest
import torch

import tinygraph as tg
import tinygraph.nn.functional as F


def test_grads_accumulate_into_leaves_across_backward_calls():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    (x * 3).sum().backward()
    assert x.grad.tolist() == [5.0, 7.0]
    x.grad = None
    (x * 3).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_non_leaf_grads_are_dropped_unless_retained():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    z = x * 3
    z.retain_grad()
    (y * z).sum().backward()
    assert y.grad is None and not y.is_leaf
    assert z.grad.tolist() == [2.0, 4.0]


def test_second_backward_through_a_freed_graph_names_retain_graph():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_retain_graph_allows_a_second_backward():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp()).sum()
    y.backward(retain_graph=True)
    y.backward()
    torch.testing.assert_close(x.grad.data, 2 * x.data.exp())


def test_non_scalar_backward_needs_a_gradient():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="gradient"):
        (x * 2).backward()
    (x * 2).backward(tg.tensor([1.0, -1.0]))
    assert x.grad.tolist() == [2.0, -2.0]
    with pytest.raises(RuntimeError, match="shape"):
        (x * 2).backward(tg.tensor([1.0, -1.0, 0.0]))


def test_backward_of_something_that_needs_no_grad_is_a_clear_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tg.tensor([1.0]).sum().backward()


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(RuntimeError, match="floating-point"):
        tg.tensor([1, 2], requires_grad=True)
    with pytest.raises(RuntimeError, match="floating-point"):
        tg.arange(3).requires_grad_()


def test_requires_grad_is_for_leaves_only():
    x = tg.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaves"):
        (x * 2).requires_grad_(False)


def test_in_place_change_of_a_saved_tensor_names_the_op():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    y = h.exp()  # Exp saves its output
    e = y.sum()
    with tg.no_grad():
        y.mul_(2)
    with pytest.raises(RuntimeError, match=r"Exp.*modified in place"):
        e.backward()
    w = tg.tensor([1.0, 2.0], requires_grad=True)
    a = tg.tensor([3.0, 4.0])
    out = (w * a).sum()  # Mul saves `a` to compute w's grad
    a.data.add_(1)
    with pytest.raises(RuntimeError, match="Mul"):
        out.backward()


def test_in_place_ops_on_a_tensor_that_requires_grad_are_refused_outside_no_grad():
    x = tg.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        x.add_(1)
    with tg.no_grad():
        x.add_(1)
    assert x.item() == 2.0


def test_a_chain_of_100000_ops_backpropagates_without_recursion():
    x = tg.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.backward()
    assert x.grad.item() == 1.0


def test_unused_branches_and_reused_tensors():
    x = tg.tensor([0.5, -1.0], requires_grad=True)
    w = tg.tensor([2.0, 3.0], requires_grad=True)
    unused = (w * 10).exp()  # never reaches the loss
    y = x * x * x + x * w + x
    y.sum().backward()
    assert unused.requires_grad and w.grad.tolist() == x.data.tolist()
    torch.testing.assert_close(x.grad.data, 3 * x.data**2 + w.data + 1)


def test_leaf_grads_never_alias_each_other_or_the_given_gradient():
    a = tg.tensor([1.0, 2.0], requires_grad=True)
    b = tg.tensor([3.0, 4.0], requires_grad=True)
    g = tg.tensor([1.0, 1.0])
    (a + b).backward(g)
    a.grad.zero_()
    assert b.grad.tolist() == [1.0, 1.0] and g.tolist() == [1.0, 1.0]
    c = tg.tensor([[1.0, 2.0]], requires_grad=True)
    c.reshape(2).backward(g)
    c.grad.data.add_(5)
    assert g.tolist() == [1.0, 1.0]


def test_saved_tensors_are_freed_as_soon_as_their_node_has_run():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    y = x.exp()
    saved = weakref.ref(y.grad_fn._saved[0])
    seen = []

    class Probe(tg.Function):
        @staticmethod
        def forward(ctx, t):
            return t.clone()

        @staticmethod
        def backward(ctx, g):
            return g

    z = Probe.apply(y.sum() * 1.0)
    exp_node = y.grad_fn

    def spy(grad_fn_backward):
        def wrapped(ctx, g):
            seen.append(exp_node._released)  # Exp has not run yet when Probe runs
            return grad_fn_backward(ctx, g)

        return staticmethod(wrapped)

    Probe.backward = spy(Probe.backward)
    del y
    z.backward()
    gc.collect()
    assert seen == [False] and exp_node._released and saved() is None


def test_retain_graph_keeps_saved_tensors():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    y = x.exp()
    y.sum().backward(retain_graph=True)
    assert not y.grad_fn._released and len(y.grad_fn._saved) == 1


def test_hessian_vector_product_with_create_graph():
    xt = torch.randn(4, dtype=torch.float64, requires_grad=True)
    vt = torch.randn(4, dtype=torch.float64)
    f = lambda lib, x: (x.tanh() * x.exp()).sum() + (x * x).sum() ** 2  # noqa: E731
    (gt,) = torch.autograd.grad(f(torch, xt), xt, create_graph=True)
    (hvp_t,) = torch.autograd.grad(gt, xt, vt)

    x = tg.tensor(xt.detach(), requires_grad=True)
    (g,) = tg.grad(f(tg, x), x, create_graph=True)
    assert g.requires_grad and g.grad_fn is not None
    (hvp,) = tg.grad(g, x, tg.tensor(vt))
    torch.testing.assert_close(hvp.data, hvp_t)


def test_without_create_graph_nothing_is_recorded():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    (x.tanh() * x).sum().backward()
    assert x.grad.grad_fn is None and not x.grad.requires_grad


def test_create_graph_through_fused_ops_uses_their_composites():
    x = tg.randn(3, 5, dtype=tg.float64, requires_grad=True)
    w = tg.randn(5, dtype=tg.float64, requires_grad=True)
    target = tg.tensor([0, 4, 2])
    loss = F.cross_entropy(F.layer_norm(x, 5, w), target)
    (g,) = tg.grad(loss, x, create_graph=True)
    (gg,) = tg.grad(g.square().sum(), w)

    xt, wt = x.data.clone().requires_grad_(), w.data.clone().requires_grad_()
    loss_t = torch.nn.functional.cross_entropy(torch.nn.functional.layer_norm(xt, (5,), wt), target.data)
    (gt,) = torch.autograd.grad(loss_t, xt, create_graph=True)
    (ggt,) = torch.autograd.grad(gt.square().sum(), wt)
    torch.testing.assert_close(gg.data, ggt)


def test_detect_anomaly_names_the_op_and_the_user_line():
    x = tg.tensor([0.0, 1.0], requires_grad=True)
    with tg.detect_anomaly():
        y = x.sqrt()  # the sqrt's grad at 0 is inf
        with pytest.raises(RuntimeError, match=r"Sqrt(.|\n)*test_engine.py"):
            y.sum().backward()
    z = x.sqrt().sum()
    z.backward()  # outside anomaly mode: no check
    assert torch.isinf(x.grad.data[0])


def test_mixing_devices_is_a_clear_error():
    a = tg.ones(2)
    b = tg.Tensor(torch.ones(2, device="meta"))
    with pytest.raises(RuntimeError, match=r"different devices.*to\(device\)"):
        a * b


def test_no_grad_and_enable_grad_as_context_and_decorator():
    x = tg.tensor([1.0], requires_grad=True)
    with tg.no_grad():
        assert not (x * 2).requires_grad
        with tg.enable_grad():
            assert (x * 2).requires_grad
        assert not tg.is_grad_enabled()

    @tg.no_grad()
    def evaluate(t):
        return t * 2

    assert not evaluate(x).requires_grad and tg.is_grad_enabled()
    with tg.set_grad_enabled(False):
        assert not (x * 2).requires_grad


def test_grad_returns_grads_without_touching_dot_grad():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    y = tg.tensor([3.0], requires_grad=True)
    h = x * 2  # a non-leaf input
    out = (h * h).sum() + y.sum()
    gx, gh = tg.grad(out, [x, h], retain_graph=True)
    assert gx.tolist() == [8.0, 16.0] and gh.tolist() == [4.0, 8.0]
    assert x.grad is None and y.grad is None
    unused = tg.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="allow_unused=True"):
        tg.grad(out, [x, unused], retain_graph=True)
    assert tg.grad(out, [x, unused], allow_unused=True)[1] is None
    (gv,) = tg.grad(x * 2, x, grad_outputs=tg.tensor([1.0, -1.0]))
    assert gv.tolist() == [2.0, -2.0]


def test_broadcasting_and_mixed_dtypes_send_grads_back_in_each_inputs_shape_and_dtype():
    a = tg.randn(3, 1, dtype=tg.float32, requires_grad=True)
    b = tg.randn(4, dtype=tg.float64, requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.shape == (3, 1) and a.grad.dtype == tg.float32
    assert b.grad.shape == (4,) and b.grad.dtype == tg.float64
    torch.testing.assert_close(a.grad.data, b.data.sum().float().expand(3, 1))


def test_tie_rules_match_torch():
    values = [[1.0, 3.0, 3.0, 2.0]]
    x = tg.tensor(values, requires_grad=True)
    x.max(1).values.sum().backward()
    assert x.grad.tolist() == [[0.0, 1.0, 0.0, 0.0]]  # max(dim): the first maximum
    x.grad = None
    x.amax(1).sum().backward()
    assert x.grad.tolist() == [[0.0, 0.5, 0.5, 0.0]]  # amax: shared evenly
    x.grad = None
    x.max().backward()
    assert x.grad.tolist() == [[0.0, 0.5, 0.5, 0.0]]
    a, b = tg.tensor([1.0, 2.0], requires_grad=True), tg.tensor([1.0, 3.0], requires_grad=True)
    a.maximum(b).sum().backward()
    assert a.grad.tolist() == [0.5, 0.0] and b.grad.tolist() == [0.5, 1.0]  # maximum: halves


def test_factories_and_conversions():
    assert tg.zeros(2, 3).shape == (2, 3) and tg.ones(2).dtype == tg.float32
    assert tg.arange(4).dtype == tg.int64 and tg.randn(2, 2, requires_grad=True).requires_grad
    assert tg.tensor(torch.ones(2, requires_grad=True)).data.requires_grad is False
    import numpy as np

    assert tg.tensor(np.ones(3)).dtype == tg.float64
    assert tg.zeros_like(tg.ones(2, dtype=tg.float64)).dtype == tg.float64
    x = tg.tensor([1.5, 2.5], requires_grad=True)
    x.double().sum().backward()
    assert x.grad.dtype == tg.float32
    assert x.long().tolist() == [1, 2] and not x.long().requires_grad
    assert x.item if x.numel() > 1 else True
    assert repr(x).startswith("tensor([1.5000, 2.5000]") and "requires_grad=True" in repr(x)
    assert "grad_fn=<Mul>" in repr(x * 2)
    assert f"{x.sum():.1f}" == "4.0"


def test_a_training_step_leaves_no_reference_cycles():
    """Graphs must die by reference counting: a cycle would keep every saved tensor alive
    until Python's garbage collector happened to run."""
    import tinygraph.nn.functional as F

    w = tg.randn(8, 8, requires_grad=True)
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            x = tg.randn(4, 8)
            h = F.layer_norm(F.gelu(F.linear(x, w)), 8).exp()  # fused ops and a saved output
            F.cross_entropy(h, tg.tensor([0, 1, 2, 3])).backward()
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_backward_releases_a_fused_ops_inputs():
    x = tg.randn(3, 4, requires_grad=True)
    h = x * 2
    y = F.layer_norm(h, 4)
    node = y.grad_fn
    assert node.args[0] is h
    y.sum().backward()
    assert node.args is None and node._released
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        tg.grad(y.sum(), h, create_graph=True)


def test_post_accumulate_hooks_fire_once_when_a_leafs_grad_is_complete():
    w = tg.randn(3, 3, requires_grad=True)  # used at every step of a recurrence, and once more
    b = tg.randn(3, requires_grad=True)
    seen = []
    w.register_post_accumulate_grad_hook(lambda t: seen.append(("w", t.grad.data.clone())))
    remove = b.register_post_accumulate_grad_hook(lambda t: seen.append(("b", t.grad.data.clone())))
    h = tg.zeros(3)
    for _ in range(5):
        h = (h @ w + b).tanh()
    loss = (h * h).sum() + w.sum()
    loss.backward()
    assert [name for name, _ in seen] == ["w", "b"] or [name for name, _ in seen] == ["b", "w"]
    final = {"w": w.grad.data, "b": b.grad.data}
    assert all(torch.equal(grad, final[name]) for name, grad in seen)  # the complete grad, not a part
    remove()
    seen.clear()
    loss2 = ((tg.zeros(3) @ w + b).tanh()).sum()
    loss2.backward()
    assert [name for name, _ in seen] == ["w"]


class FoldingSum(tg.Function):
    """a + b, whose backward adds what waits for either input into that input's grad itself
    (as layer norm's does for the residual stream): the engine's `folds` protocol."""

    folds = True
    waited: ClassVar[list] = []

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        waiting = ctx.waiting or (None, None)
        FoldingSum.waited.append(tuple(w is not None for w in waiting))
        ctx.folded = tuple(w is not None for w in waiting)
        return tuple(g * 1 if w is None else g + w for w in waiting)


@pytest.mark.parametrize(
    "how", ["backward", "hook", "retain_grad", "grad", "create_graph", "one node twice", "anomaly"]
)
def test_a_grad_that_waits_is_folded_into_an_ops_backward_without_changing_any_grad(how):
    FoldingSum.waited.clear()
    x0 = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)

    def program(lib, x, fold):
        h = x.exp()
        if how == "hook":
            h.register_hook(lambda g: g * 10)
        if how == "retain_grad":
            h.retain_grad()
        summed = fold(h, x.sin() if how != "one node twice" else h)
        # backward runs the second term's nodes first: their grad for h waits when fold's runs
        return (summed * lib.arange(3.0, dtype=torch.float64)).sum() + (h * 3).sin().sum(), h

    x = tg.Tensor(x0.clone(), requires_grad=True)
    # (in anomaly mode a bad grad that waited must not be blamed on the op that folds it in)
    with tg.detect_anomaly() if how == "anomaly" else contextlib.nullcontext():
        out, h = program(tg, x, FoldingSum.apply)
        xt = x0.clone().requires_grad_()
        out_t, h_t = program(torch, xt, torch.add)
        if how in ("grad", "create_graph"):
            (ours,) = tg.grad(out, x, create_graph=how == "create_graph")
            (theirs,) = torch.autograd.grad(out_t, xt)
        else:
            out.backward()
            out_t.backward()
            ours, theirs = x.grad, xt.grad
    torch.testing.assert_close(ours.data, theirs)
    if how == "retain_grad":
        torch.testing.assert_close(h.grad.data, h_t.grad)
    # folded where it can be: a plain backward, and h fed to only one of the op's inputs
    assert FoldingSum.waited == [(how in ("backward", "hook", "retain_grad"), False)]
    nodes, fold = [out.grad_fn], None
    while fold is None:  # (breadth first from the output)
        node = nodes.pop(0)
        fold = node if node.name == "FoldingSum" else None
        nodes += [e[0] for e in node.edges if e is not None and isinstance(e[0], tg.Node)]
    assert fold.waiting == ()  # the graph, still alive here, holds no grad that waited


@pytest.mark.parametrize("how", ["an output of unbind", "a retained graph, then grad()"])
def test_layer_norm_folds_only_what_it_may(how):
    # found by review: a multi-output producer's pending grads are a list (folding read its
    # shape), and a fold of one backward was handed again to the next (then counted twice)
    x0 = torch.randn(2, 4, 8, dtype=torch.float64)

    def program(lib, F, x):
        a, b = x.unbind(0) if how == "an output of unbind" else (x * 2, x * 2)
        loss = (F.layer_norm(a, (8,)) ** 2 * lib.arange(8.0, dtype=torch.float64)).sum()
        return loss + (b * 3).sin().sum()

    x, xt = tg.Tensor(x0.clone(), requires_grad=True), x0.clone().requires_grad_()
    loss, loss_t = program(tg, F, x), program(torch, torch.nn.functional, xt)
    (theirs,) = torch.autograd.grad(loss_t, xt)
    loss.backward(retain_graph=True)
    torch.testing.assert_close(x.grad.data, theirs)
    (again,) = tg.grad(loss, x)
    torch.testing.assert_close(again.data, theirs)

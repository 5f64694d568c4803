"""Check an op the way tinygraph checks its own: `check(spec)` draws inputs with hypothesis
and, for each drawn example,

1. compares the hand-written grads with float64 central finite differences (gradcheck),
2. compares forward values, every input's grad and whether each output requires grad
   with torch.autograd's on the same inputs and a random output grad,
3. asserts the engine's invariants after that backward: no input and no output grad was
   changed, no `.grad` shares memory with another `.grad` or with a given output grad,
   and the graph was freed,
4. checks second-order grads (gradgradcheck), unless the spec says not to.

A spec's `call(lib, F, *args, **kwargs)` runs with lib = tinygraph (F its nn.functional)
and with lib = torch (F = torch.nn.functional): the two share names, so one expression
serves both. `args` hold `Diff` arrays (float64 inputs that require grad), `Const`
arrays (indices, masks) and plain Python values.

    from tinygraph.testing import Spec, check, unary
    check(unary(lambda lib, F, x: F.softplus(x)))

Needs hypothesis (`pip install hypothesis`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as torch_F
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from . import grad_mode
from .autograd import backward
from .function import Node
from .gradcheck import gradcheck, gradgradcheck
from .tensor import Tensor


@dataclass
class Diff:
    """A float64 input that requires grad."""

    value: np.ndarray


@dataclass
class Const:
    """An input that needs no grad (integer indices, boolean masks, constants)."""

    value: np.ndarray


@dataclass
class Spec:
    """How to draw an op's inputs and how to call it (see the module docstring)."""

    inputs: st.SearchStrategy  # draws (args, kwargs)
    call: Callable[..., Any]
    torch_call: Callable[..., Any] | None = None  # when torch spells it differently
    second_order: bool = True
    finite_differences: bool = True  # False where torch defines a grad the derivative is not (padding_idx)
    tolerances: dict = field(default_factory=dict)  # gradcheck's eps/atol/rtol, when the default won't do


# ---- value and shape strategies ------------------------------------------------------------

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
nonscalar_shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


def values(shape, lo=-2.0, hi=2.0) -> st.SearchStrategy:
    return hnp.arrays(np.float64, shape, elements=st.floats(lo, hi, allow_nan=False, allow_infinity=False))


def grid(shape, offset=0.0) -> st.SearchStrategy:
    """Distinct values 0.1 apart (plus `offset`): no ties, no value within 0.05 of a kink."""
    return hnp.arrays(np.float64, shape, elements=st.integers(-25, 25).map(lambda i: i / 10 + offset), unique=True)


def away_from_zero(shape, lo=0.3, hi=2.0) -> st.SearchStrategy:
    magnitude = st.floats(lo, hi)
    return hnp.arrays(
        np.float64, shape, elements=st.tuples(st.booleans(), magnitude).map(lambda t: t[1] * (1 - 2 * t[0]))
    )


def positive(shape) -> st.SearchStrategy:
    return values(shape, 0.3, 2.5)


def diff(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return strategy.map(Diff)


@st.composite
def dims_of(draw, ndim: int, allow_none=True, allow_tuple=True):
    options = [st.integers(-ndim, ndim - 1)] if ndim else []
    if allow_none:
        options.append(st.none())
    if allow_tuple and ndim:
        options.append(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple))
    return draw(st.one_of(options))


@st.composite
def shrunk_to_broadcast(draw, shape):
    """A shape that broadcasts to `shape` without growing it: some sides 1, leading dims dropped."""
    kept = draw(st.integers(0, len(shape)))
    return tuple(1 if draw(st.booleans()) else s for s in shape[len(shape) - kept :])


def unary(call, elements=values, **kw) -> Spec:
    """A spec for a one-input op drawn over `shapes` with `elements` values."""
    return Spec(shapes.flatmap(lambda s: diff(elements(s))).map(lambda x: ((x,), {})), call, **kw)


@st.composite
def binary_inputs(draw, left=values, right=values, scalars=True):
    a_shape, b_shape = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3)).input_shapes
    a, b = Diff(draw(left(a_shape))), Diff(draw(right(b_shape)))
    if scalars:
        which = draw(st.sampled_from(["none", "left", "right"]))
        if which == "left":
            a = float(draw(left(())))
        elif which == "right":
            b = float(draw(right(())))
    return (a, b), {}


def binary(call, **kw) -> Spec:
    """A spec for a two-input broadcasting op (either side may be a Python number)."""
    strategies = {k: kw.pop(k) for k in ("left", "right", "scalars") if k in kw}
    return Spec(binary_inputs(**strategies), call, **kw)


@st.composite
def reduction_inputs(draw, elements=values, allow_none=True, allow_tuple=True):
    shape = draw(nonscalar_shapes)
    dim = draw(dims_of(len(shape), allow_none, allow_tuple))
    return (Diff(draw(elements(shape))),), {"dim": dim, "keepdim": draw(st.booleans())}


def reduction(call, elements=values, allow_none=True, allow_tuple=True, **kw) -> Spec:
    """A spec for a reduction called as call(lib, F, x, dim=..., keepdim=...)."""
    return Spec(reduction_inputs(elements, allow_none, allow_tuple), call, **kw)


# ---- running a spec ------------------------------------------------------------------------


def materialize(value, lib, device):
    """Turn a drawn argument into tinygraph or torch tensors on `device`."""
    if isinstance(value, Diff):
        data = torch.tensor(value.value, dtype=torch.float64, device=device)
        return Tensor(data, requires_grad=True) if lib is not torch else data.requires_grad_()
    if isinstance(value, Const):
        data = torch.as_tensor(np.asarray(value.value), device=device)
        return Tensor(data) if lib is not torch else data
    if isinstance(value, tuple):
        return tuple(materialize(v, lib, device) for v in value)
    if isinstance(value, list):
        return [materialize(v, lib, device) for v in value]
    return value


def outputs(result) -> list:
    """The floating-point tensors among an op's results."""
    items = result if isinstance(result, (tuple, list)) else (result,)
    return [r for r in items if isinstance(r, (Tensor, torch.Tensor)) and r.is_floating_point()]


def _leaves(args, kind) -> list:
    found = []
    for a in args:
        if isinstance(a, (tuple, list)):
            found += _leaves(a, kind)
        elif isinstance(a, kind) and a.requires_grad:
            found.append(a)
    return found


def check_case(spec: Spec, args, kwargs, device="cpu", seed=0) -> None:
    """The checks of the module docstring on one drawn input."""
    import tinygraph
    import tinygraph.nn.functional as tg_F

    tg_args = materialize(tuple(args), tinygraph, device)
    torch_args = materialize(tuple(args), torch, device)
    tg_kwargs = {k: materialize(v, tinygraph, device) for k, v in kwargs.items()}
    torch_kwargs = {k: materialize(v, torch, device) for k, v in kwargs.items()}

    def tg_fn(*a):
        return spec.call(tinygraph, tg_F, *a, **tg_kwargs)

    # (1) finite differences
    if spec.finite_differences:
        gradcheck(tg_fn, tg_args, **spec.tolerances)

    # (2) torch.autograd on the same inputs, random output grads
    tg_out = outputs(tg_fn(*tg_args))
    torch_out = outputs((spec.torch_call or spec.call)(torch, torch_F, *torch_args, **torch_kwargs))
    assert len(tg_out) == len(torch_out), f"{len(tg_out)} outputs, torch gives {len(torch_out)}"
    for a, b in zip(tg_out, torch_out):
        assert a.shape == b.shape and a.dtype == b.dtype, f"{a.shape} {a.dtype} vs torch's {b.shape} {b.dtype}"
        assert a.requires_grad == b.requires_grad, f"requires_grad is {a.requires_grad}, torch's {b.requires_grad}"
        torch.testing.assert_close(a.data, b.detach(), rtol=1e-10, atol=1e-12, equal_nan=True)
    gen = torch.Generator().manual_seed(seed)
    vs = [torch.randn(o.shape, generator=gen, dtype=o.dtype).to(device) for o in torch_out]
    tg_leaves, torch_leaves = _leaves(tg_args, Tensor), _leaves(torch_args, torch.Tensor)
    live = [k for k, o in enumerate(torch_out) if o.requires_grad]
    before = [a.data.clone() for a in tg_leaves]
    given_grads = [vs[k].clone() for k in live]
    if live:
        backward([tg_out[k] for k in live], [given_grads[j] for j in range(len(live))])
        torch.autograd.backward([torch_out[k] for k in live], [vs[k] for k in live])
    for a, b in zip(tg_leaves, torch_leaves):
        if b.grad is None:
            assert a.grad is None or not a.grad.data.any(), "a grad where torch has none"
        else:
            assert a.grad is not None, "no grad where torch has one"
            torch.testing.assert_close(a.grad.data, b.grad, rtol=1e-9, atol=1e-10)

    # (3) the engine's invariants
    check_invariants(tg_leaves, before, given_grads, [vs[k] for k in live], [tg_out[k] for k in live])

    # (4) second order
    if spec.second_order and spec.finite_differences:
        for a in tg_leaves:
            a.grad = None
        gradgradcheck(tg_fn, tg_args, **spec.tolerances)


def check_invariants(leaves, before, given_grads, given_values, roots, retained=False) -> None:
    """After a backward: inputs and given grads unchanged, no shared memory among `.grad`s
    and given grads, and (unless retained) every node behind `roots` freed."""
    for leaf, old in zip(leaves, before):
        assert _same(leaf.data, old), "backward changed an input"
    for g, old in zip(given_grads, given_values):
        assert _same(g, old), "backward changed a given output grad"
    distinct = {id(leaf): (i, leaf) for i, leaf in enumerate(leaves)}.values()  # a tensor may be listed twice
    held = [("given grad", g) for g in given_grads] + [
        (f"grad of input {i}", leaf.grad.data) for i, leaf in distinct if leaf.grad is not None
    ]
    for i, (name_a, a) in enumerate(held):
        for name_b, b in held[i + 1 :]:
            assert not _overlap(a, b), f"the {name_a} and the {name_b} share memory"
    for node in nodes_behind(roots):
        unchecked = unchecked_tensors(node)
        assert not unchecked, (
            f"{node.name} keeps {unchecked} outside save_for_backward: not checked for in-place changes"
        )
    if not retained:
        for node in nodes_behind(roots):
            assert node._released or not node._saved, f"{node.name} still holds its saved tensors"
            assert node.args is None, f"{node.name} still holds its inputs"


def unchecked_tensors(node: Node) -> list[str]:
    """The attributes an op keeps on its node that hold tensors outside save_for_backward (so
    an in-place change of them would go unnoticed). An op's own internal tensors, made in
    forward and never seen by the user, are named with a leading underscore and allowed."""

    def holds_tensor(value: Any) -> bool:
        if isinstance(value, (tuple, list)):
            return any(holds_tensor(v) for v in value)
        return isinstance(value, (torch.Tensor, Tensor))

    engine = {"fn", "name", "args", "edges", "needs_input_grad", "build_graph", "outputs", "kwargs", "stack"}
    return sorted(k for k, v in vars(node).items() if k not in engine and not k.startswith("_") and holds_tensor(v))


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal, NaN where the other is NaN."""
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    if not a.numel() or not b.numel() or a.device != b.device:
        return False
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False
    a0, b0 = a.storage_offset() * a.element_size(), b.storage_offset() * b.element_size()
    a_end = a0 + (1 + sum((s - 1) * st for s, st in zip(a.shape, a.stride()))) * a.element_size()
    b_end = b0 + (1 + sum((s - 1) * st for s, st in zip(b.shape, b.stride()))) * b.element_size()
    return a0 < b_end and b0 < a_end


def nodes_behind(roots) -> Iterator[Node]:
    """Every node reachable from the roots' grad_fns."""
    stack = [r.grad_fn for r in roots if isinstance(r, Tensor) and r.grad_fn is not None]
    seen = set(stack)
    while stack:
        node = stack.pop()
        yield node
        for edge in node.edges:
            if edge is not None and type(edge[0]) is Node and edge[0] not in seen:
                seen.add(edge[0])
                stack.append(edge[0])


def check(spec: Spec, device="cpu", **settings: Any) -> None:
    """Run the checks on hypothesis-drawn inputs of one spec (settings: hypothesis's, e.g.
    max_examples=50; by default the active profile's)."""
    from hypothesis import settings as hypothesis_settings

    @given(data=st.data())
    def run(data):
        args, kwargs = data.draw(spec.inputs)
        check_case(spec, args, kwargs, device, data.draw(st.integers(0, 2**31)))

    (hypothesis_settings(**settings)(run) if settings else run)()


@contextlib.contextmanager
def use_composites() -> Iterator[None]:
    """Inside, every fused op runs its composite of primitive ops instead of its own forward
    and backward (for comparing the two)."""
    state = grad_mode.local.state
    before, state.composites = state.composites, True
    try:
        yield
    finally:
        state.composites = before


def check_composite_case(spec: Spec, args, kwargs, device="cpu", seed=0) -> None:
    """A fused op against its composite: the same values and the same grads of every input."""
    import tinygraph
    import tinygraph.nn.functional as tg_F

    tg_args = materialize(tuple(args), tinygraph, device)
    kwargs = {k: materialize(v, tinygraph, device) for k, v in kwargs.items()}
    leaves = _leaves(tg_args, Tensor)
    fused = outputs(spec.call(tinygraph, tg_F, *tg_args, **kwargs))
    with use_composites():
        composed = outputs(spec.call(tinygraph, tg_F, *tg_args, **kwargs))
    gen = torch.Generator().manual_seed(seed)
    vs = [torch.randn(o.shape, generator=gen, dtype=o.dtype).to(device) for o in fused]
    for a, b in zip(fused, composed):
        torch.testing.assert_close(a.data, b.data, rtol=1e-10, atol=1e-12, equal_nan=True)
    live = [k for k, o in enumerate(fused) if o.requires_grad]
    if not live:
        return
    from .autograd import grad

    got = grad([fused[k] for k in live], leaves, [vs[k] for k in live], allow_unused=True)
    want = grad([composed[k] for k in live], leaves, [vs[k] for k in live], allow_unused=True)
    for a, b in zip(got, want):
        if b is None:
            assert a is None or not a.data.any()
        else:
            torch.testing.assert_close(a.data, b.data, rtol=1e-9, atol=1e-11)


__all__ = [
    "Const", "Diff", "Spec", "assume", "away_from_zero", "binary", "binary_inputs", "check", "check_case",
    "check_composite_case", "check_invariants", "diff", "dims_of", "grid", "materialize", "nodes_behind",
    "nonscalar_shapes", "outputs", "positive", "reduction", "reduction_inputs", "shapes", "shrunk_to_broadcast",
    "unary", "unchecked_tensors", "use_composites", "values",
]  # fmt: skip

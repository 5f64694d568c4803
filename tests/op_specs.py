"""One hypothesis spec per registered op: how to draw its inputs and how to call it.

A spec's `call(lib, F, *args, **kwargs)` runs with lib = tinygraph (F its nn.functional)
and with lib = torch (F = torch.nn.functional): the two libraries share names, so one
expression serves both, and torch.autograd checks tinygraph's hand-written backward.
`args` hold `Diff` arrays (float64 inputs that require grad), `Const` arrays (indices,
masks) and plain Python values. A new op needs an entry in SPECS, or the meta-test fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


@dataclass
class Diff:
    """A float64 input that requires grad."""

    value: np.ndarray


@dataclass
class Const:
    """An input that needs no grad (integer indices, boolean masks)."""

    value: np.ndarray


@dataclass
class Spec:
    inputs: st.SearchStrategy  # draws (args, kwargs)
    call: Callable[..., Any]
    torch_call: Callable[..., Any] | None = None  # when torch spells it differently
    second_order: bool = True
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


# ---- specs by family -----------------------------------------------------------------------


def unary(call, elements=lambda s: values(s), **kw) -> Spec:
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
    strategies = {k: kw.pop(k) for k in ("left", "right", "scalars") if k in kw}
    return Spec(binary_inputs(**strategies), call, **kw)


@st.composite
def reduction_inputs(draw, elements=values, allow_none=True, allow_tuple=True):
    shape = draw(nonscalar_shapes)
    dim = draw(dims_of(len(shape), allow_none, allow_tuple))
    return (Diff(draw(elements(shape))),), {"dim": dim, "keepdim": draw(st.booleans())}


@st.composite
def var_inputs(draw, elements=values, at_least=1):
    """`at_least`: elements per reduced group beyond the correction (std's grad needs two distinct ones)."""
    (x,), kw = draw(reduction_inputs(elements))
    correction = draw(st.sampled_from([0, 1]))
    dims = range(x.value.ndim) if kw["dim"] is None else np.atleast_1d(kw["dim"])
    assume(int(np.prod([x.value.shape[d] for d in dims])) >= correction + at_least)
    return (x,), {**kw, "correction": correction}


@st.composite
def maxdim_inputs(draw):
    shape = draw(nonscalar_shapes)
    return (Diff(draw(grid(shape))),), {
        "dim": draw(st.integers(-len(shape), len(shape) - 1)),
        "keepdim": draw(st.booleans()),
    }


@st.composite
def reshape_inputs(draw):
    shape = draw(shapes)
    n = int(np.prod(shape))
    targets = [(-1,), (n, 1), (1, n), tuple(reversed(shape)), (1, *shape), *([()] if n == 1 else [])]
    target = draw(st.sampled_from(targets))
    return (Diff(draw(values(shape))),), {"shape": target}


@st.composite
def permute_inputs(draw):
    shape = draw(nonscalar_shapes)
    return (Diff(draw(values(shape))),), {"dims": tuple(draw(st.permutations(range(len(shape)))))}


@st.composite
def expand_inputs(draw):
    target = draw(nonscalar_shapes)
    return (Diff(draw(values(draw(shrunk_to_broadcast(target))))),), {"shape": target}


@st.composite
def basic_index(draw, shape):
    parts = []
    for size in shape:
        kind = draw(st.sampled_from(["slice", "int", "all"]))
        if kind == "int":
            parts.append(draw(st.integers(-size, size - 1)))
        elif kind == "slice":
            start = draw(st.integers(0, size - 1))
            parts.append(slice(start, draw(st.integers(start + 1, size)), draw(st.integers(1, 2))))
        else:
            parts.append(slice(None))
    if parts and draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), None)
    if len(parts) > 1 and draw(st.booleans()):
        parts = [Ellipsis, *parts[len(parts) // 2 :]]
    return tuple(parts)


@st.composite
def getitem_inputs(draw):
    shape = draw(nonscalar_shapes)
    kind = draw(st.sampled_from(["basic", "ints", "ints_dim1", "mask"]))
    if kind == "basic":
        index = draw(basic_index(shape))
    elif kind == "ints":  # repeated ids must add up
        index = Const(np.array(draw(st.lists(st.integers(0, shape[0] - 1), min_size=1, max_size=5))))
    elif kind == "ints_dim1" and len(shape) > 1:
        index = (slice(None), Const(np.array(draw(st.lists(st.integers(0, shape[1] - 1), min_size=1, max_size=4)))))
    else:
        index = Const(draw(hnp.arrays(np.bool_, shape[:1])))
    return (Diff(draw(values(shape))), index), {}


def _getitem_backward_torch(lib, F, g, shape, index):
    # torch reference: the VJP of x[index], kept differentiable in g
    x = torch.zeros(shape, dtype=g.dtype, device=g.device, requires_grad=True)
    return torch.autograd.grad((x[index] * g).sum(), x, create_graph=True)[0]


@st.composite
def getitem_backward_inputs(draw):
    (x, index), _ = draw(getitem_inputs())
    probe = torch.zeros(x.value.shape)[_values(index)]
    return (Diff(draw(values(tuple(probe.shape)))), x.value.shape, index), {}


def _values(index):
    if isinstance(index, tuple):
        return tuple(torch.as_tensor(p.value) if isinstance(p, Const) else p for p in index)
    return torch.as_tensor(index.value) if isinstance(index, Const) else index


@st.composite
def join_inputs(draw, same_shape):
    shape = list(draw(nonscalar_shapes))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        if not same_shape:
            shape[dim] = draw(st.integers(1, 3))
        parts.append(Diff(draw(values(tuple(shape)))))
    return tuple(parts), {"dim": dim}


@st.composite
def gather_inputs(draw):
    shape = draw(nonscalar_shapes)
    dim = draw(st.integers(0, len(shape) - 1))
    index_shape = tuple(draw(st.integers(1, 4)) if d == dim else draw(st.integers(1, s)) for d, s in enumerate(shape))
    index = draw(hnp.arrays(np.int64, index_shape, elements=st.integers(0, shape[dim] - 1)))
    return (Diff(draw(values(shape))), dim, Const(index)), {}


@st.composite
def scatter_add_inputs(draw):
    (x, dim, index), _ = draw(gather_inputs())
    assume(all(i <= s for d, (i, s) in enumerate(zip(index.value.shape, x.value.shape)) if d != dim))
    return (x, dim, index, Diff(draw(values(index.value.shape)))), {}


@st.composite
def index_select_inputs(draw, add=False):
    shape = draw(nonscalar_shapes)
    dim = draw(st.integers(0, len(shape) - 1))
    index = np.array(draw(st.lists(st.integers(0, shape[dim] - 1), min_size=1, max_size=5)))
    if not add:
        return (Diff(draw(values(shape))), dim, Const(index)), {}
    source_shape = tuple(len(index) if d == dim else s for d, s in enumerate(shape))
    return (Diff(draw(values(shape))), dim, Const(index), Diff(draw(values(source_shape)))), {}


@st.composite
def matmul_inputs(draw):
    n, k, m = (draw(st.integers(1, 3)) for _ in range(3))
    batch_a, batch_b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=2)).input_shapes
    kind = draw(st.sampled_from(["batched", "vector_left", "vector_right", "dot", "shared_weight"]))
    a_shape = {"vector_left": (k,), "dot": (k,)}.get(kind, (*batch_a, n, k))
    b_shape = {"vector_right": (k,), "dot": (k,), "shared_weight": (k, m)}.get(kind, (*batch_b, k, m))
    return (Diff(draw(values(a_shape))), Diff(draw(values(b_shape)))), {}


@st.composite
def linear_inputs(draw):
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
    fan_in, fan_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    bias = Diff(draw(values((fan_out,)))) if draw(st.booleans()) else None
    return (Diff(draw(values((*lead, fan_in)))), Diff(draw(values((fan_out, fan_in)))), bias), {}


@st.composite
def embedding_inputs(draw):
    vocab, width = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    ids = draw(
        hnp.arrays(
            np.int64, draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=4)), elements=st.integers(0, vocab - 1)
        )
    )
    return (Const(ids), Diff(draw(values((vocab, width))))), {}


@st.composite
def softmax_inputs(draw):
    shape = draw(nonscalar_shapes)
    return (Diff(draw(values(shape))),), {"dim": draw(st.integers(-len(shape), len(shape) - 1))}


@st.composite
def layer_norm_inputs(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=2, max_side=4))
    normalized = shape[len(shape) - draw(st.integers(1, len(shape))) :]
    affine = [Diff(draw(values(normalized))) if draw(st.booleans()) else None for _ in range(2)]
    return (Diff(draw(values(shape))), normalized, *affine), {}


@st.composite
def cross_entropy_inputs(draw):
    kind = draw(st.sampled_from(["rows", "rows", "unbatched", "spatial"]))
    classes = draw(st.integers(1, 4))
    target_shape = {
        "rows": (draw(st.integers(1, 4)),),
        "unbatched": (),
        "spatial": (draw(st.integers(1, 2)), draw(st.integers(1, 3))),
    }[kind]
    logits_shape = (classes,) if kind == "unbatched" else (target_shape[0], classes, *target_shape[1:])
    target = draw(hnp.arrays(np.int64, target_shape, elements=st.integers(0, classes - 1)))
    if kind != "unbatched" and draw(st.booleans()):
        target.reshape(-1)[draw(st.integers(0, target.size - 1))] = -100  # one ignored target
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    if reduction == "mean":
        assume((target != -100).any())
    return (Diff(draw(values(logits_shape))), Const(target)), {"reduction": reduction}


@st.composite
def attention_inputs(draw):
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=2))
    L, S, E, Ev = (draw(st.integers(1, 3)) for _ in range(4))
    kind = draw(st.sampled_from(["plain", "causal", "bool_mask", "float_mask"]))
    kwargs: dict = {"is_causal": kind == "causal"}
    if kind == "causal":
        S = L
    args = [Diff(draw(values((*batch, L, E)))), Diff(draw(values((*batch, S, E)))), Diff(draw(values((*batch, S, Ev))))]
    if kind == "bool_mask":
        mask = draw(hnp.arrays(np.bool_, (L, S)))
        mask[:, 0] = True  # every query sees at least one key
        args.append(Const(mask))
    elif kind == "float_mask":
        args.append(Const(draw(values((L, S)))))
    if draw(st.booleans()):
        kwargs["scale"] = draw(st.floats(0.2, 1.5))
    return tuple(args), kwargs


@st.composite
def dropout_inputs(draw):
    shape = draw(nonscalar_shapes)
    return (Diff(draw(values(shape))),), {"p": draw(st.sampled_from([0.2, 0.5])), "seed": draw(st.integers(0, 2**16))}


def _dropout_tg(lib, F, x, p, seed):
    torch.manual_seed(seed)
    return F.dropout(x, p)


def _dropout_torch(lib, F, x, p, seed):
    torch.manual_seed(seed)  # the same random draws as tinygraph's forward: one rand_like
    return x * (torch.rand_like(x) >= p) / (1 - p)


@st.composite
def clamp_inputs(draw):
    shape = draw(shapes)
    lo, hi = sorted(draw(st.lists(st.integers(-20, 20), min_size=2, max_size=2, unique=True)))
    which = draw(st.sampled_from(["both", "min", "max"]))
    bounds = {"min": lo / 10 + 0.05 if which != "max" else None, "max": hi / 10 + 0.05 if which != "min" else None}
    return (Diff(draw(grid(shape))),), bounds


@st.composite
def where_inputs(draw):
    shapes3 = draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3)).input_shapes
    cond = Const(draw(hnp.arrays(np.bool_, shapes3[0])))
    a, b = Diff(draw(values(shapes3[1]))), Diff(draw(values(shapes3[2])))
    if draw(st.booleans()):
        b = draw(st.floats(-2, 2))
    return (cond, a, b), {}


@st.composite
def masked_fill_inputs(draw):
    shape = draw(shapes)
    mask = Const(draw(hnp.arrays(np.bool_, draw(shrunk_to_broadcast(shape)))))
    return (Diff(draw(values(shape))), mask, draw(st.floats(-3, 3))), {}


@st.composite
def lstm_cell_inputs(draw):
    B, H = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    shapes4 = [(B, 4 * H), (B, H), (B, H), (4 * H, H)]
    return tuple(Diff(draw(values(s, -1.5, 1.5))) for s in shapes4), {}


def _lstm_cell_torch(lib, F, gates_x, h, c, w):
    from tinygraph.ops.nn import lstm_cell_composite  # written with methods torch shares

    return lstm_cell_composite(gates_x, h, c, w)


def _positive(s):
    return values(s, 0.3, 2.5)


SPECS: dict[str, list[Spec]] = {
    "Add": [binary(lambda lib, F, a, b: a + b)],
    "Sub": [binary(lambda lib, F, a, b: a - b)],
    "Mul": [binary(lambda lib, F, a, b: a * b)],
    "Div": [binary(lambda lib, F, a, b: a / b, right=lambda s: away_from_zero(s, 0.5))],
    "Pow": [
        binary(lambda lib, F, a, b: a**b, left=_positive, right=lambda s: values(s, -2, 2)),
        unary(lambda lib, F, x: x**2, elements=lambda s: values(s)),
        unary(lambda lib, F, x: x**-1.5, elements=_positive),
    ],
    "Neg": [unary(lambda lib, F, x: -x)],
    "Exp": [unary(lambda lib, F, x: x.exp())],
    "Log": [unary(lambda lib, F, x: x.log(), elements=_positive)],
    "Sqrt": [unary(lambda lib, F, x: x.sqrt(), elements=_positive)],
    "Rsqrt": [unary(lambda lib, F, x: x.rsqrt(), elements=_positive)],
    "Abs": [unary(lambda lib, F, x: x.abs(), elements=lambda s: grid(s, 0.05))],
    "Tanh": [unary(lambda lib, F, x: x.tanh())],
    "Sigmoid": [unary(lambda lib, F, x: x.sigmoid())],
    "Relu": [unary(lambda lib, F, x: x.relu(), elements=lambda s: grid(s, 0.05))],
    "Erf": [unary(lambda lib, F, x: x.erf())],
    "Gelu": [
        unary(lambda lib, F, x: F.gelu(x)),
        unary(lambda lib, F, x: F.gelu(x, approximate="tanh")),
    ],
    "Maximum": [
        binary(lambda lib, F, a, b: a.maximum(b), left=grid, right=lambda s: grid(s, 0.05), scalars=False),
        binary(lambda lib, F, a, b: a.minimum(b), left=grid, right=lambda s: grid(s, 0.05), scalars=False),
    ],
    "Clamp": [Spec(clamp_inputs(), lambda lib, F, x, **kw: x.clamp(**kw))],
    "Where": [Spec(where_inputs(), lambda lib, F, c, a, b: lib.where(c, a, b))],
    "MaskedFill": [Spec(masked_fill_inputs(), lambda lib, F, x, m, v: x.masked_fill(m, v))],
    "Cast": [
        unary(lambda lib, F, x: (x.to(torch.float32) * 3).to(torch.float64), tolerances={"eps": 1e-3, "atol": 1e-3}),
    ],
    "Clone": [
        unary(lambda lib, F, x: x.clone() * 2),
        Spec(permute_inputs(), lambda lib, F, x, dims: x.permute(dims).contiguous()),
    ],
    "Sum": [Spec(reduction_inputs(), lambda lib, F, x, **kw: x.sum(**kw))],
    "Mean": [Spec(reduction_inputs(), lambda lib, F, x, **kw: x.mean(**kw))],
    "Var": [
        Spec(var_inputs(), lambda lib, F, x, **kw: x.var(**kw)),
        Spec(var_inputs(grid, at_least=2), lambda lib, F, x, **kw: x.std(**kw), tolerances={"atol": 1e-4}),
    ],
    "MaxDim": [
        Spec(maxdim_inputs(), lambda lib, F, x, dim, keepdim: x.max(dim, keepdim).values),
        Spec(maxdim_inputs(), lambda lib, F, x, dim, keepdim: x.min(dim, keepdim).values),
    ],
    "Amax": [
        Spec(reduction_inputs(grid, allow_none=False), lambda lib, F, x, dim, keepdim: x.amax(dim, keepdim)),
        Spec(reduction_inputs(grid, allow_none=False), lambda lib, F, x, dim, keepdim: x.amin(dim, keepdim)),
        unary(lambda lib, F, x: x.max(), elements=grid),
    ],
    "LogSumExp": [Spec(reduction_inputs(allow_none=False), lambda lib, F, x, dim, keepdim: x.logsumexp(dim, keepdim))],
    "Reshape": [
        Spec(reshape_inputs(), lambda lib, F, x, shape: x.reshape(shape)),
        Spec(reshape_inputs(), lambda lib, F, x, shape: x.view(shape)),
        Spec(permute_inputs(), lambda lib, F, x, dims: x.flatten().unsqueeze(0).squeeze()),
    ],
    "Permute": [
        Spec(permute_inputs(), lambda lib, F, x, dims: x.permute(dims)),
        Spec(permute_inputs(), lambda lib, F, x, dims: x.transpose(0, -1).mT if x.ndim > 1 else x.t()),
    ],
    "Expand": [Spec(expand_inputs(), lambda lib, F, x, shape: x.expand(shape))],
    "GetItem": [
        Spec(getitem_inputs(), lambda lib, F, x, index: x[index]),
        Spec(join_inputs(same_shape=True), lambda lib, F, *xs, dim: xs[0].narrow(dim, 0, 1)),
    ],
    "Split": [
        Spec(join_inputs(same_shape=True), lambda lib, F, *xs, dim: xs[0].split(2, dim)),
        Spec(join_inputs(same_shape=True), lambda lib, F, *xs, dim: xs[0].chunk(3, dim)[-1]),  # unused pieces
    ],
    "Unbind": [Spec(join_inputs(same_shape=True), lambda lib, F, *xs, dim: xs[0].unbind(dim)[::2])],
    "GetItemBackward": [
        Spec(
            getitem_backward_inputs(),
            lambda lib, F, g, shape, index: _getitem_backward_tg(g, shape, index),
            torch_call=_getitem_backward_torch,
        )
    ],
    "Cat": [Spec(join_inputs(same_shape=False), lambda lib, F, *xs, dim: lib.cat(xs, dim))],
    "Stack": [Spec(join_inputs(same_shape=True), lambda lib, F, *xs, dim: lib.stack(xs, dim))],
    "Gather": [Spec(gather_inputs(), lambda lib, F, x, dim, index: x.gather(dim, index))],
    "ScatterAdd": [Spec(scatter_add_inputs(), lambda lib, F, x, dim, index, src: x.scatter_add(dim, index, src))],
    "IndexSelect": [Spec(index_select_inputs(), lambda lib, F, x, dim, index: x.index_select(dim, index))],
    "IndexAdd": [Spec(index_select_inputs(add=True), lambda lib, F, x, dim, index, src: x.index_add(dim, index, src))],
    "MatMul": [Spec(matmul_inputs(), lambda lib, F, a, b: a @ b)],
    "Linear": [Spec(linear_inputs(), lambda lib, F, x, w, b: F.linear(x, w, b))],
    "Embedding": [Spec(embedding_inputs(), lambda lib, F, ids, w: F.embedding(ids, w))],
    "Softmax": [Spec(softmax_inputs(), lambda lib, F, x, dim: F.softmax(x, dim))],
    "LogSoftmax": [Spec(softmax_inputs(), lambda lib, F, x, dim: F.log_softmax(x, dim))],
    "Dropout": [Spec(dropout_inputs(), _dropout_tg, torch_call=_dropout_torch)],
    "LayerNorm": [
        Spec(
            layer_norm_inputs(), lambda lib, F, x, shape, w, b: F.layer_norm(x, shape, w, b), tolerances={"atol": 1e-4}
        )
    ],
    "CrossEntropy": [
        Spec(cross_entropy_inputs(), lambda lib, F, x, t, reduction: F.cross_entropy(x, t, reduction=reduction))
    ],
    "LSTMCell": [
        Spec(lstm_cell_inputs(), lambda lib, F, gx, h, c, w: F.lstm_cell(gx, h, c, w), torch_call=_lstm_cell_torch),
        Spec(
            lstm_cell_inputs(),
            lambda lib, F, gx, h, c, w: F.lstm_cell(gx, h, c, w)[1],
            torch_call=lambda lib, F, *a: _lstm_cell_torch(lib, F, *a)[1],
        ),
    ],
    "ScaledDotProductAttention": [
        Spec(
            attention_inputs(),
            lambda lib, F, q, k, v, mask=None, **kw: F.scaled_dot_product_attention(q, k, v, mask, **kw),
        )
    ],
}


def _getitem_backward_tg(g, shape, index):
    from tinygraph.ops.shape import GetItemBackward
    from tinygraph.tensor import _unwrap

    return GetItemBackward.apply(g, torch.Size(shape), _unwrap(index))
